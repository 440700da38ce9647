"""Hostile inputs around task files: a split named in a task's own ``data_files`` is read from that file, so
neither the local-data check nor the hub check may ask for it elsewhere (docs/yaml_tasks.md: "with or without
--data-dir")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.runner import run
from evalkit.types import RunConfig
from tests.conftest import TOKENIZER_JSON

ROWS = [{"q": f"question {i}", "a": f"yes{i}", "b": f"no{i}", "label": i % 2} for i in range(6)]
TASK_YAML = """name: own_file
version: "1"
dataset:
  hub_id: nobody/none
  config: null
  split: test
  n: 6
  data_files: {test: rows.jsonl}
context: "Q: {{ q }}\\nA:"
continuations:
  - " {{ a }}"
  - " {{ b }}"
gold: "{{ label }}"
scoring: multiple_choice
metrics: [acc]
"""


@pytest.fixture
def task_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "own_file.yaml").write_text(TASK_YAML)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)


@pytest.mark.parametrize("with_data_dir", [False, True])
def test_a_split_in_data_files_runs_with_or_without_a_data_folder(tmp_path, task_folder, with_data_dir):
    empty = tmp_path / "empty_data"
    empty.mkdir()
    config = RunConfig(model="random:pythia-14m", tasks=("own_file",), tokenizer=str(TOKENIZER_JSON),
                       include_paths=(str(task_folder),), data_dir=str(empty) if with_data_dir else None,
                       bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)
    out = run(config, progress=False, write=False)
    task = out.results["tasks"]["own_file"]
    assert task["n"] == 6
    assert task["requests"] == 12
