"""Hostile inputs that used to end in a traceback where the README promises one clear message: each now stops
with a message naming the file, line or key path and field, and finished work (results, cache rows) is kept."""

from __future__ import annotations

import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import EvalkitError, RunConfig
from tests.conftest import DATA_DIR, TOKENIZER_JSON
from tests.test_bad_input import edit, real_lines, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_model(monkeypatch):
    """Loading the weights fails the test: the input check must come first."""
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model weights were loaded although the input was bad")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON), data_dir=str(DATA_DIR),
                limit=4, bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)
    return RunConfig(**(base | changes))


# --- results files given to report and compare are validated against one schema ----------------------------------

@pytest.fixture(scope="module")
def good_results(tmp_path_factory) -> Path:
    from evalkit.run.pipeline import run

    return run(_config(tmp_path_factory.mktemp("good")), progress=False).results_path


def _drop(*keys):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


EDITS = [
    ("no_model_dtype", _drop("model", "dtype"), "missing key 'model.dtype'"),
    ("no_timing", _drop("timing"), "missing key 'timing'"),
    ("no_config", _drop("config"), "missing key 'config'"),
    ("no_versions", _drop("versions"), "missing key 'versions'"),
    ("no_stderr_bootstrap", _drop("tasks", "piqa", "metrics", "acc", "stderr_bootstrap"),
     "missing key 'tasks.piqa.metrics.acc.stderr_bootstrap'"),
    ("no_metrics", _drop("tasks", "piqa", "metrics"), "missing key 'tasks.piqa.metrics'"),
    ("no_primary_metric", _drop("tasks", "piqa", "primary_metric"), "missing key 'tasks.piqa.primary_metric'"),
    ("tasks_as_a_list", lambda d: d.update(tasks=list(d["tasks"].values())), "'tasks': expected an object, got a list"),
    ("per_document_array_one_short", lambda d: d["tasks"]["piqa"]["documents"]["acc_norm"].pop(),
     "'tasks.piqa.documents.acc_norm': 3 values for 4 documents ('tasks.piqa.n'); the file is truncated or edited"),
    ("per_document_acc_of_7", lambda d: d["tasks"]["piqa"]["documents"]["acc"].__setitem__(2, 7.0),
     "'tasks.piqa.documents.acc[2]': 7.0 is not an accuracy (0 or 1)"),
    ("stderr_as_text", lambda d: d["tasks"]["piqa"]["metrics"]["acc"].update(stderr="0.1"),
     "'tasks.piqa.metrics.acc.stderr': expected a finite number or null, got a string ('0.1')"),
]


@pytest.mark.parametrize("change, message", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_report_and_compare_name_the_file_and_key_path_of_a_hand_edited_results_file(good_results, tmp_path, capsys,
                                                                                    change, message):
    data = json.loads(good_results.read_text(encoding="utf-8"))
    change(data)
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    expected = f"evalkit: error: {bad}: not a valid evalkit results file: {message}"
    assert main(["report", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert main(["compare", str(good_results), str(bad), "--output", str(tmp_path / "c.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["edited.json"]
    assert json.loads(good_results.read_text(encoding="utf-8"))["tasks"]["piqa"]["n"] == 4  # untouched


def test_a_results_file_with_a_nan_token_is_not_valid_json(good_results, tmp_path, capsys):
    text = good_results.read_text(encoding="utf-8").replace('"stderr_bootstrap": null', '"stderr_bootstrap": NaN', 1)
    assert "NaN" in text
    bad = tmp_path / "nan.json"
    bad.write_text(text, encoding="utf-8")
    assert main(["report", str(bad)]) == 2
    assert (f"evalkit: error: {bad}: not a valid results JSON (NaN is not a JSON number (RFC 8259 section 6))"
            in capsys.readouterr().err)


# --- task code that raises, text no tokenizer takes, continuations too long: all before the model loads -----------

RAISING_TASK = '''
from evalkit.types import DatasetSpec, Task


def context(doc):
    if doc["goal"] == "b":
        return doc["missing"]
    return f"Question: {doc['goal']}\\nAnswer:" if doc["label"] == 0 else 1 / 0


TASK = Task(
    name="fragile", version="1.0", dataset=DatasetSpec("local/fragile", None, "test", 3, {"goal": str, "label": int}),
    context=context, continuations=lambda d: [" yes", " no"], gold=lambda d: d["label"],
    scoring="multiple_choice", metrics=("acc",),
)
'''


def test_a_task_function_raising_on_a_document_names_file_document_and_exception(tmp_path, no_model, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fragile.py").write_text(RAISING_TASK, encoding="utf-8")
    data = tmp_path / "data" / "fragile" / "test.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"goal": "a", "label": 0}\n{"goal": "c", "label": 1}\n', encoding="utf-8")
    status, err = run_cli(capsys, tmp_path, "--include-path", str(tasks), tasks="fragile", data_dir=tmp_path / "data")
    assert status == 2
    assert err == [f"evalkit: error: task file {tasks / 'fragile.py'}: {data} line 2: task 'fragile' context() raised "
                   "ZeroDivisionError: division by zero"]
    data.write_text('{"goal": "a", "label": 0}\n\n{"goal": "b", "label": 0}\n', encoding="utf-8")
    (tmp_path / "again").mkdir()
    status, err = run_cli(capsys, tmp_path / "again", "--include-path", str(tasks), tasks="fragile", data_dir=tmp_path / "data")
    assert status == 2
    assert err == [f"evalkit: error: task file {tasks / 'fragile.py'}: {data} line 3: task 'fragile' context() raised "
                   "KeyError: 'missing'"]


BAD_TEXT = [
    ("lone_surrogate", "piqa", lambda ls: [ls[0], ls[1].replace(b'"goal": "', b'"goal": "\\ud800', 1), ls[2]],
     "{path} line 2: field 'goal' holds a lone surrogate ('\\ud800' at character 0), text no tokenizer can encode"),
    ("nan_inside_a_choices_list", "arc_challenge",
     lambda ls: [edit(ls[0], lambda d: d["choices"]["text"].__setitem__(1, float("nan"))), ls[1], ls[2]],
     "{path} line 1: field 'choices.text[1]' is nan, a number JSON does not have (a missing value written as NaN?)"),
    ("truncated_line_names_its_own_column", "piqa",
     lambda ls: [ls[0], b'{"goal": "Make tea", "sol1": "boil water", "sol2": "freeze water", "label": 0\r\n', ls[2]],
     "{path} line 2: malformed JSON (Expecting ',' delimiter at column 78)"),
    ("control_character_reason_has_one_at", "piqa",
     lambda ls: [b'{"goal": "a\tb", "sol1": "x", "sol2": "y", "label": 0}\n', ls[1], ls[2]],
     "{path} line 1: malformed JSON (Invalid control character at column 12)"),
]


@pytest.mark.parametrize("task, make_lines, message", [c[1:] for c in BAD_TEXT], ids=[c[0] for c in BAD_TEXT])
def test_bad_text_is_named_by_file_line_and_field_before_the_model_loads(capsys, tmp_path, no_model, task, make_lines,
                                                                         message):
    from tests.test_bad_input import SPLITS

    path = tmp_path / "data" / task / f"{SPLITS[task]}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(make_lines(real_lines(task))))
    status, err = run_cli(capsys, tmp_path, tasks=task, data_dir=tmp_path / "data")
    assert status == 2
    assert err == [f"evalkit: error: {message.format(path=path)}"]


def test_a_continuation_longer_than_the_window_is_found_before_the_weights_load(capsys, tmp_path, no_model):
    status, err = run_cli(capsys, tmp_path, "--limit", "3", "--max-length", "16")
    assert status == 2
    # the seeded subset is documents 784, 1029 and 1161; " " + sol1 of document 784 is 17 tokens
    assert err == ["evalkit: error: task piqa doc 784 choice 0: continuation of 17 tokens does not fit the model "
                   "window of 16"]


def test_text_the_tokenizer_refuses_names_the_request():
    from evalkit.scoring.tokenization import tokenize_requests
    from evalkit.types import LoglikelihoodRequest

    def picky(texts):
        if any("\x00" in t for t in texts):
            raise TypeError("cannot encode")
        return [[ord(c) for c in t] for t in texts]

    requests = [LoglikelihoodRequest("t", 0, 0, "ok", " a"), LoglikelihoodRequest("t", 3, 1, "ok", " b\x00")]
    with pytest.raises(EvalkitError) as caught:
        tokenize_requests(requests, picky, 0, 16)
    assert str(caught.value) == ("the tokenizer cannot encode the continuation of task t doc 3 choice 1 (' b\\x00'): "
                                 "cannot encode")


# --- unwritable reports/, read-only cache --------------------------------------------------------------------------

def test_an_unwritable_reports_folder_keeps_the_results_and_prints_how_to_re_render(tmp_path, capsys, monkeypatch):
    from evalkit.reports import report

    reports = tmp_path / "out" / "reports"

    def refuse(runs, path, source_paths=(), draw_figure=True):
        raise PermissionError(13, "Permission denied", str(path))

    argv = ["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
            "--data-dir", str(DATA_DIR), "--limit", "4", "--bootstrap-iters", "0", "--output-dir",
            str(tmp_path / "out"), "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(report, "write_report_file", refuse)
        assert main(argv) == 1
    captured = capsys.readouterr()
    [results] = (tmp_path / "out" / "results").rglob("*.json")
    assert json.loads(results.read_text())["tasks"]["piqa"]["n"] == 4  # complete
    out_lines = captured.out.splitlines()
    assert out_lines[0].startswith("| task ") and any(line.startswith("| piqa ") for line in out_lines)  # the summary
    assert f"results: {results}" in out_lines and not any(line.startswith("report:") for line in out_lines)
    [err] = [line for line in captured.err.splitlines() if line.startswith("evalkit: error")]
    named = reports / f"{results.parent.name}-{results.stem}.md"  # <model>-<time>.md
    assert err == (f"evalkit: error: the report was not written ({named}: Permission denied); the "
                   f"results are complete in {results}; re-render the report with: evalkit report {results} "
                   f"--output REPORT.md")
    assert list(reports.glob("*")) == []  # no empty reserved report left behind
    assert main(["report", str(results), "--output", str(tmp_path / "REPORT.md")]) == 0
    assert "## Run: random:pythia-14m (float32)" in (tmp_path / "REPORT.md").read_text()


def test_a_read_only_cache_is_reported_as_read_only_before_the_model_loads(tmp_path, monkeypatch, no_model):
    from evalkit.scoring import cache
    from evalkit.run.pipeline import run

    folder = tmp_path / "cache"
    with cache.RequestCache(folder) as db:  # an existing cache with work in it
        db.put_many("m", [(b"k" * 32, -1.25, True)])
    real_access = os.access

    def read_only_mount(p, mode):  # what access(2) answers on a read-only mount, even for root
        if mode & os.W_OK and Path(p).is_relative_to(folder):
            return False
        return real_access(p, mode)

    monkeypatch.setattr(cache.os, "access", read_only_mount)
    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, use_cache=True, cache_dir=str(folder)), progress=False)
    assert str(caught.value) == (f"request cache {folder / 'loglikelihood.sqlite3'} is read-only (a read-only mount or "
                                 f"no write permission): the cache stores every scored batch, so it must be writable; "
                                 f"use --cache-dir with a writable folder, or --no-cache")
    monkeypatch.undo()
    with cache.RequestCache(folder) as db:
        assert db.count("m") == 1  # nothing was removed


# --- reports of runs finishing in the same second, and what `evalkit report` writes --------------------------------

def test_reports_of_two_runs_finishing_in_the_same_second_into_one_folder_both_survive(tmp_path, monkeypatch):
    from evalkit.results import files as results_io
    from evalkit.run.pipeline import run

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(results_io, "datetime", Frozen)
    first = run(_config(tmp_path, limit=2), progress=False)
    second = run(_config(tmp_path, limit=2, model="random:pythia-14m@7"), progress=False)
    assert first.results_path.stem == second.results_path.stem == "20261130T120000Z"
    reports = tmp_path / "out" / "reports"
    a, b = "random_pythia-14m-20261130T120000Z", "random_pythia-14m_7-20261130T120000Z"  # <model>-<time>
    assert (first.report_path, second.report_path) == (reports / f"{a}.md", reports / f"{b}.md")
    assert f"`{first.results_path}`" in first.report_path.read_text()
    assert f"`{second.results_path}`" in second.report_path.read_text()
    assert (reports / f"{a}.png").is_file() and (reports / f"{b}.png").is_file()
    third = run(_config(tmp_path, limit=2), progress=False)  # the same model in the same second: -1
    assert third.report_path == reports / f"{a}-1.md" and (reports / f"{a}-1.png").is_file()


def test_report_says_when_it_replaces_a_report_and_honours_the_output_name(good_results, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "results" / "m"
    run_dir.mkdir(parents=True)
    results = run_dir / "run.json"
    shutil.copy(good_results, results)
    own = tmp_path / "reports" / "m-run.md"  # <model>-<results stem>
    assert main(["report", str(results)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"report: {own}"]
    assert main(["report", str(results)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"report: {own} (replaced the report that was there)"]
    assert main(["report", str(results), "--output", str(tmp_path / "x.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"report: {tmp_path / 'x.txt'}"]
    assert (tmp_path / "x.txt").read_text().startswith("# evalkit report")
    assert (tmp_path / "x.png").is_file() and not (tmp_path / "x.md").exists()


# --- baselines whose paths lie outside --data-dir -------------------------------------------------------------------

def _baseline(tokenizer: str | None, include_paths: list[str]) -> dict:
    return {"config": {"model": "random:pythia-14m", "tasks": ["piqa"], "tokenizer": tokenizer, "data_dir": "{data_dir}",
                       "include_paths": include_paths, "limit": 2, "seed": 1, "batch_size": 4, "max_length": None,
                       "dtype": "float32", "device": "cpu", "bootstrap_iters": 0, "extra": {}}}


def test_baseline_paths_outside_the_data_folder_are_absolute_and_check_can_override_them(tmp_path, monkeypatch):
    from evalkit.regression.baseline import config_from_baseline, portable_path
    from evalkit.cli.parser import build_parser

    (tmp_path / "mytasks").mkdir()
    (tmp_path / "tok.json").write_text("{}", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    data = str(DATA_DIR)
    assert portable_path("tok.json", data) == str(tmp_path / "tok.json")
    assert portable_path("mytasks", data) == str(tmp_path / "mytasks")
    assert portable_path(str(TOKENIZER_JSON), data) == "{data_dir}/tokenizers/20B_tokenizer.json"
    assert portable_path("EleutherAI/gpt-neox-20b", data) == "EleutherAI/gpt-neox-20b"  # a hub id

    path = Path("b.json")
    moved = _baseline("/elsewhere/tok.json", ["/elsewhere/mytasks"])
    with pytest.raises(EvalkitError) as caught:
        config_from_baseline(copy.deepcopy(moved), path, data, ".")
    assert str(caught.value) == ("b.json: the baseline's tokenizer file /elsewhere/tok.json does not exist here (it "
                                 "was outside the data folder, so it is stored as written); pass --tokenizer PATH")
    with pytest.raises(EvalkitError) as caught:
        config_from_baseline(copy.deepcopy(moved), path, data, ".", tokenizer=str(TOKENIZER_JSON))
    assert str(caught.value) == ("b.json: the baseline's task folder /elsewhere/mytasks does not exist here (it was "
                                 "outside the data folder, so it is stored as written); pass --include-path DIR")
    config = config_from_baseline(moved, path, data, ".", tokenizer=str(TOKENIZER_JSON),
                                  include_paths=[str(tmp_path / "mytasks")])
    assert (config.tokenizer, config.include_paths) == (str(TOKENIZER_JSON), (str(tmp_path / "mytasks"),))
    args = build_parser().parse_args(["check", "--baseline", "b.json", "--tokenizer", "t.json", "--include-path", "a",
                                      "--include-path", "b"])
    assert (args.tokenizer, args.include_path) == ("t.json", ["a", "b"])


def test_an_existing_read_only_reports_folder_stops_the_run_before_the_model_loads(tmp_path, monkeypatch, no_model):
    from evalkit.run import plan
    from evalkit.run.pipeline import run

    reports = tmp_path / "out" / "reports"
    reports.mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(plan.os, "access",
                        lambda p, mode: False if Path(p) == reports and mode & os.W_OK else real_access(p, mode))
    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path), progress=False)
    assert str(caught.value) == (f"--output-dir {tmp_path / 'out'}: {reports} is not a writable folder, so the report "
                                 f"could not be written after scoring")
    assert not (tmp_path / "out" / "results").exists()


def test_report_and_compare_name_a_report_they_cannot_write(good_results, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    assert main(["report", str(good_results), "--output", str(blocker / "r.md")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"evalkit: error: cannot write the report {blocker}")
    assert main(["compare", str(good_results), str(good_results), "--output", str(blocker / "c.md"),
                 "--bootstrap-iters", "20", "--no-references"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("evalkit: error: cannot write the comparison ")
