"""Hostile inputs around task files: a split named in a task's own ``data_files`` is read from that file, so
neither the local-data check nor the hub check may ask for it elsewhere (docs/yaml_tasks.md: "with or without
--data-dir")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.run.pipeline import run
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


FEWSHOT_YAML = TASK_YAML.replace("name: own_file", "name: overlapping").replace(
    "  data_files: {test: rows.jsonl}", "  data_files: {test: rows.jsonl, train: rows.jsonl}") + "fewshot_split: train\n"


def test_a_fewshot_split_holding_the_evaluated_documents_is_warned_about(task_folder):
    """Both splits name one file: a separate few-shot split is drawn from as is (no document removed), so some
    documents show themselves, with their answer, as an example; the warning counts exactly those."""
    from evalkit.tasks.registry import load_registry
    from evalkit.run.prepare import prepare_task

    (task_folder / "overlapping.yaml").write_text(FEWSHOT_YAML)
    task = load_registry((str(task_folder),)).get("overlapping")
    prepared = prepare_task(task, None, None, 1234, 3, 42)
    shows_itself = [r for r in prepared.doc_ids if r in prepared.fewshot.examples[r]]  # same file: same row ids
    assert shows_itself  # 3 of 6 rows drawn per document: the seed-42 draw hits some documents themselves
    expected = (f"overlapping: {len(shows_itself)} of 6 documents show themselves, answer included, among their "
                f"few-shot examples: the few-shot split 'train' holds copies of evaluated documents; rows "
                f"{sorted(shows_itself)}")
    assert expected in prepared.warnings


def test_a_separate_fewshot_split_without_copies_gives_no_such_warning(task_folder):
    from evalkit.tasks.registry import load_registry
    from evalkit.run.prepare import prepare_task

    (task_folder / "other.jsonl").write_text("".join(json.dumps(r | {"q": r["q"] + "?"}) + "\n" for r in ROWS))
    (task_folder / "overlapping.yaml").write_text(FEWSHOT_YAML.replace("train: rows.jsonl", "train: other.jsonl"))
    task = load_registry((str(task_folder),)).get("overlapping")
    prepared = prepare_task(task, None, None, 1234, 3, 42)
    assert not [w for w in prepared.warnings if "show themselves" in w]
