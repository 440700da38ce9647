"""A run killed (SIGKILL) or interrupted (SIGINT) mid-way keeps every committed batch; the same command resumes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.cli.main import main
from tests.conftest import REPO, TOKENIZER_JSON

N_DOCS = 80  # LAMBADA, one request a document: 80 forward passes at --batch-size 1, ~1 s on an idle CPU core


# One thread here and in the child (OMP_NUM_THREADS=1): the interrupted, resumed and fresh runs compare bit for bit.
pytestmark = pytest.mark.usefixtures("one_thread")


def command(data_dir: Path, out: Path, cache: Path) -> list[str]:
    """``evalkit run`` arguments of the run that is interrupted and resumed."""
    return ["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "lambada",
            "--data-dir", str(data_dir), "--limit", str(N_DOCS), "--batch-size", "1", "--bootstrap-iters", "100",
            "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"]


def cached_rows(cache: Path) -> int:
    db = cache / "loglikelihood.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def start_and_signal(argv: list[str], cache: Path, sig: int, after_rows: int) -> subprocess.CompletedProcess:
    """Start ``python -m evalkit ARGV``, send ``sig`` once ``after_rows`` requests are cached, wait for the end."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-m", "evalkit", *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while cached_rows(cache) < after_rows and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def without_run_facts(results: dict) -> dict:
    """Results minus what may differ between runs of the same numbers: timestamps, timings, cache and config."""
    return {k: v for k, v in results.items() if k not in ("created", "timing", "cache", "config")}


def results_files(out: Path) -> list[Path]:
    return sorted((out / "results").rglob("*.json")) if (out / "results").exists() else []


def test_kill_9_mid_run_loses_only_the_batch_in_flight_and_the_same_command_resumes(data_dir, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = command(data_dir, out, cache)
    killed = start_and_signal(argv, cache, signal.SIGKILL, after_rows=8)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    kept = cached_rows(cache)
    assert 8 <= kept < N_DOCS
    assert results_files(out) == [] and not (out / "reports").exists()

    assert main(argv) == 0  # the same command, again
    [resumed_path] = results_files(out)
    resumed = json.loads(resumed_path.read_text(encoding="utf-8"))
    timing = resumed["timing"]
    assert (timing["requests"], timing["requests_cached"], timing["requests_scored"]) == (N_DOCS, kept, N_DOCS - kept)
    assert timing["forward_calls"] == N_DOCS - kept  # the model saw only the missing requests
    assert cached_rows(cache) == N_DOCS

    assert main([*argv[:-5], "--output-dir", str(tmp_path / "fresh"), "--no-cache", "--no-progress"]) == 0
    [fresh_path] = results_files(tmp_path / "fresh")
    fresh = json.loads(fresh_path.read_text(encoding="utf-8"))
    assert fresh["timing"]["requests_scored"] == N_DOCS and fresh["cache"] is None
    assert json.dumps(without_run_facts(resumed)) == json.dumps(without_run_facts(fresh))
    assert resumed["tasks"]["lambada_openai"]["documents"]["loglikelihood"] == \
        fresh["tasks"]["lambada_openai"]["documents"]["loglikelihood"]


def test_ctrl_c_stops_cleanly_keeps_the_cache_and_prints_the_command_that_resumes(data_dir, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = command(data_dir, out, cache)
    stopped = start_and_signal(argv, cache, signal.SIGINT, after_rows=5)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    lines = stopped.stderr.splitlines()
    assert f"evalkit: interrupted; every scored batch is kept in the request cache {cache}" in lines
    resume = f"evalkit: resume with: python -m evalkit {shlex.join(argv)}"
    assert resume in lines
    assert results_files(out) == [] and not (out / "reports").exists()
    kept = cached_rows(cache)
    assert 5 <= kept < N_DOCS

    printed = shlex.split(resume.split("resume with: ", 1)[1])
    assert printed[:3] == ["python", "-m", "evalkit"]
    assert main(printed[3:]) == 0
    [path] = results_files(out)
    timing = json.loads(path.read_text(encoding="utf-8"))["timing"]
    assert (timing["requests_cached"], timing["requests_scored"]) == (kept, N_DOCS - kept)


def test_sigterm_from_a_scheduler_is_a_clean_stop_too(data_dir, tmp_path, capsys, monkeypatch):
    from evalkit.scoring import hf_backend

    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = [*command(data_dir, out, cache)]
    argv[argv.index("--limit") + 1] = "6"
    score = hf_backend.HFBackend.score_groups
    calls = []

    def preempted_at_third_batch(self, groups):
        calls.append(len(groups))
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return score(self, groups)

    monkeypatch.setattr(hf_backend.HFBackend, "score_groups", preempted_at_third_batch)
    assert main(argv) == 143
    err = capsys.readouterr().err.splitlines()
    assert f"evalkit: resume with: evalkit {shlex.join(argv)}" in err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed after the run
    assert cached_rows(cache) == 2 and results_files(out) == []
    monkeypatch.setattr(hf_backend.HFBackend, "score_groups", score)
    assert main(argv) == 0
    [path] = results_files(out)
    timing = json.loads(path.read_text(encoding="utf-8"))["timing"]
    assert (timing["requests_cached"], timing["requests_scored"]) == (2, 4)


def test_an_interrupt_while_writing_results_leaves_no_partial_file(tmp_path, monkeypatch):
    from evalkit.results import files as results_io

    path = tmp_path / "results" / "model" / "run.json"
    results_io.atomic_write_text(path, '{"complete": true}\n')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(results_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        results_io.atomic_write_text(path, '{"half": ')
    assert path.read_text(encoding="utf-8") == '{"complete": true}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]


def test_written_files_have_ordinary_permissions(tmp_path):
    import os

    from evalkit.results import files as results_io

    path = tmp_path / "report.md"
    old = os.umask(0o022)
    try:
        results_io.atomic_write_text(path, "x\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: others may read results and reports
