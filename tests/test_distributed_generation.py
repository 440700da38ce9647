"""A run with log-likelihood and generation tasks under torchrun on CPU (gloo): 2 ranks give what one process gives
(every generation, metric, sample line and the report), each rank generating its share through the request cache,
and a 2-rank run killed (SIGKILL) mid-generation resumes from what its ranks committed.

Every run is a real subprocess of ``random:pythia-14m`` over MATH (2 shots, 3 documents), lm-eval 0.4.13's gsm8k
YAML (1 shot, 12 hand-made documents) and PIQA (12 documents, 24 requests), with ``--batch-size 1``: each request
runs alone through the model, so a rank computes exactly what the single process computes and the comparison is
exact.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TOKENIZER_JSON
from tests.test_distributed import _env, _free_port, _outputs, _torchrun
from tests.test_lmeval_generate import GSM8K_TRAIN
from tests.test_math_tasks import TEST_DOCS, TRAIN_DOCS, write_split

LMEVAL = REPO / "tests" / "task_yaml" / "lmeval_0413"
GSM8K_TEST = [{"question": f"Sam has {i} pens and buys {2 * i + 1} more. How many pens has Sam now?",
               "answer": f"{i}+{2 * i + 1} = <<{i}+{2 * i + 1}={3 * i + 1}>>{3 * i + 1}.\n#### {3 * i + 1}"}
              for i in range(12)]
GENERATIONS = 3 + 12  # MATH's 3 documents and gsm8k's 12: one request each, all distinct


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist_gen_data")
    write_split(root / "math_algebra", "test", TEST_DOCS)
    write_split(root / "math_algebra", "train", TRAIN_DOCS)
    write_split(root / "gsm8k", "test", GSM8K_TEST)
    write_split(root / "gsm8k", "train", GSM8K_TRAIN)
    (root / "piqa").symlink_to(data_dir / "piqa")
    return root


def _args(data: Path, out: Path, cache: Path) -> list[str]:
    return ["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON),
            "--tasks", "math_algebra:2,lm_eval.gsm8k:1,piqa", "--include-path", str(LMEVAL),
            "--data-dir", str(data), "--limit", "12", "--max-gen-toks", "32", "--batch-size", "1",
            "--bootstrap-iters", "50", "--output-dir", str(out), "--cache-dir", str(cache), "--log-samples",
            "--no-progress"]


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> dict:
    """The run in one process, on a cache of its own."""
    root = tmp_path_factory.mktemp("dist_gen_single")
    proc = subprocess.run([sys.executable, "-m", "evalkit", *_args(data, root / "out", root / "cache")], env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _outputs(root / "out")


def _assert_same_run(got: dict, single: dict) -> None:
    """Everything but run facts (times, cache, distributed figures) equals the single process's."""
    assert got["samples"] == single["samples"]  # every generation, answer, metric and log-likelihood, in order
    facts = ("- Requests: ", "- Generations: ")  # the report's lines of cache counts and seconds taken
    assert [x for x in got["report"] if not x.startswith(facts)] == [x for x in single["report"]
                                                                      if not x.startswith(facts)]
    ours, theirs = got["results"], single["results"]
    assert list(ours["tasks"]) == ["math_algebra", "lm_eval.gsm8k", "piqa"]
    for name, task in theirs["tasks"].items():
        assert ours["tasks"][name] == task, name
    assert ours["groups"] == theirs["groups"]
    assert ours["timing"]["generation"]["requests"] == theirs["timing"]["generation"]["requests"] == GENERATIONS


def _generated_rows(cache: Path) -> int:
    db = cache / "loglikelihood.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Linux ``/proc``), children before grandchildren."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            out += [int(c) for c in children]
            todo += [int(c) for c in children]
    return out


def test_two_ranks_generate_and_score_what_one_process_does(single, data, tmp_path):
    rows = [json.loads(line) for line in single["samples"].splitlines()]
    assert [r["task"] for r in rows] == ["math_algebra"] * 3 + ["lm_eval.gsm8k"] * 12 + ["piqa"] * 12
    gsm = [r["generation"] for r in rows if r["task"] == "lm_eval.gsm8k"]
    assert len(set(gsm)) > 1 and all(gsm)  # real, differing generations are compared, not empty strings
    assert single["results"]["timing"]["generation"]["requests_generated"] == GENERATIONS

    proc = _torchrun(2, ["-m", "evalkit"], _args(data, tmp_path / "out", tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("results: ") == 1  # rank 0 alone writes
    got = _outputs(tmp_path / "out")
    _assert_same_run(got, single)
    results = got["results"]
    assert results["distributed"]["world_size"] == 2 and results["distributed"]["backend"] == "gloo"
    gen_ranks = results["distributed"]["generation_ranks"]
    assert [r["rank"] for r in gen_ranks] == [0, 1]
    assert all(r["requests"] > 0 for r in gen_ranks) and sum(r["requests"] for r in gen_ranks) == GENERATIONS
    generation = results["timing"]["generation"]
    assert generation["requests_generated"] == sum(r["requests_generated"] for r in gen_ranks) == GENERATIONS
    assert generation["forward_calls"] == sum(r["forward_calls"] for r in gen_ranks)
    assert generation["requests_cached"] == 0
    # the log-likelihood counters stay those of the scoring passes alone
    assert results["timing"]["forward_calls"] == sum(r["forward_calls"] for r in results["distributed"]["ranks"])
    assert results["timing"]["requests_scored"] == single["results"]["timing"]["requests_scored"] == 24
    assert _generated_rows(tmp_path / "cache") == GENERATIONS  # both ranks wrote their answers to the cache


def test_a_two_rank_run_killed_mid_generation_resumes_from_the_cache(single, data, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = _args(data, out, cache)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "evalkit", *args]
    child = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 300
    while _generated_rows(cache) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    ranks = _descendants(child.pid)  # torchrun starts each rank in a session of its own
    for pid in [child.pid, *ranks]:  # a crash of the machine: every process dies at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone
            pass
    child.wait(timeout=60)
    assert len(ranks) >= 2, ranks
    kept = _generated_rows(cache)
    assert 2 <= kept < GENERATIONS, kept  # killed in the middle of the generations
    assert not (out / "results").exists() or not list((out / "results").rglob("*.json"))

    proc = _torchrun(2, ["-m", "evalkit"], args)  # the same command again
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = _outputs(out)
    _assert_same_run(got, single)
    generation = got["results"]["timing"]["generation"]
    gen_ranks = got["results"]["distributed"]["generation_ranks"]
    assert generation["requests_cached"] == sum(r["requests_cached"] for r in gen_ranks) == kept
    assert generation["requests_generated"] == GENERATIONS - kept  # only the missing ones ran through the model
    assert generation["generated_tokens"] == 32 * (GENERATIONS - kept) < 32 * GENERATIONS
    assert got["results"]["timing"]["requests_cached"] == 24  # PIQA's scores were committed before the kill
    assert _generated_rows(cache) == GENERATIONS
