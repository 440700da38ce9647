"""Hand-edited results files: a metric whose stored value disagrees with the file's own per-document values is
refused by ``report`` and ``compare`` (report would print the edited number, compare the per-document one), and a
group whose members were scored at different few-shot counts is warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import RunConfig
from tests.conftest import DATA_DIR, TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("piqa", "copa"), tokenizer=str(TOKENIZER_JSON),
                data_dir=str(DATA_DIR), limit=6, bootstrap_iters=0, output_dir=str(tmp_path / "out"),
                use_cache=False)
    return RunConfig(**(base | changes))


@pytest.fixture(scope="module")
def good_results(tmp_path_factory) -> Path:
    from evalkit.run.pipeline import run

    return run(_config(tmp_path_factory.mktemp("good")), progress=False).results_path


@pytest.mark.parametrize("task, metric", [("piqa", "acc"), ("piqa", "acc_norm"), ("copa", "acc")])
def test_a_metric_value_edited_away_from_its_documents_is_refused(good_results, tmp_path, capsys, task, metric):
    data = json.loads(good_results.read_text(encoding="utf-8"))
    docs = data["tasks"][task]["documents"][metric]
    true_value = sum(docs) / len(docs)
    assert data["tasks"][task]["metrics"][metric]["value"] == pytest.approx(true_value)
    edited = 0.99 if true_value < 0.5 else 0.01
    data["tasks"][task]["metrics"][metric]["value"] = edited
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    expected = (f"evalkit: error: {bad}: not a valid evalkit results file: 'tasks.{task}.metrics.{metric}.value': "
                f"{edited!r} is not the {metric} of the file's own per-document values ({true_value!r}); the file "
                f"is edited")
    assert main(["report", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert main(["compare", str(good_results), str(bad), "--output", str(tmp_path / "c.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]


def test_an_unedited_results_file_still_reports(good_results, tmp_path, capsys):
    assert main(["report", str(good_results), "--output", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").is_file()
