"""Data-parallel runs under torchrun on CPU (gloo): 2 and 3 ranks give what one process gives, and a failing
rank stops the job with a message naming it and no results.

Each run is a real ``python -m torch.distributed.run`` subprocess of ``random:pythia-70m`` over the five tasks
on a seeded subset of 8 documents each. ``--batch-size 1`` scores every packed group in its own forward pass,
so a rank computes exactly what the single process computes for that group: the comparison is exact, not
approximate (batch-composition effects are covered by the batching tests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TOKENIZER_JSON

TASKS = "lambada_openai,sciq,piqa,arc_challenge,triviaqa"
VOLATILE = ("Generated ", "- Created: ", "- Wall time: ", "- Results file: ", "![Accuracy")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def _run_args(out_dir: Path, data_dir: Path) -> list[str]:
    return [
        "run", "--model", "random:pythia-70m", "--tasks", TASKS, "--tokenizer", str(TOKENIZER_JSON),
        "--data-dir", str(data_dir), "--limit", "8", "--batch-size", "1", "--bootstrap-iters", "200",
        "--output-dir", str(out_dir), "--log-samples", "--no-progress",
        "--no-cache",  # the module-scoped single run is made before a test's own cache exists: score everything
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(n_ranks: int, entry: list[str], args: list[str], **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n_ranks),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *entry, *args]
    return subprocess.run(command, env=_env(**env), capture_output=True, text=True, timeout=600, cwd=REPO)


def _outputs(out_dir: Path) -> dict:
    """The run's files; exactly one results file, one samples file and one report."""
    (results,) = (out_dir / "results").glob("*/*.json")
    (samples,) = (out_dir / "results").glob("*/*.samples.jsonl")
    (report,) = (out_dir / "reports").glob("*.md")
    stable = [line for line in report.read_text().splitlines() if not line.startswith(VOLATILE)]
    return {"results": json.loads(results.read_text()), "samples": samples.read_text(), "report": stable}


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir) -> dict:
    """The same run in one process."""
    out = tmp_path_factory.mktemp("single")
    proc = subprocess.run([sys.executable, "-m", "evalkit", *_run_args(out, data_dir)], env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return _outputs(out)


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_ranks_reproduce_the_single_process_run(single, data_dir, tmp_path, n_ranks):
    proc = _torchrun(n_ranks, ["-m", "evalkit"], _run_args(tmp_path, data_dir))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("results: ") == 1  # rank 0 alone writes and prints
    got = _outputs(tmp_path)
    ours, theirs = got["results"], single["results"]
    assert list(ours["tasks"]) == TASKS.split(",")
    for name, task in theirs["tasks"].items():
        for key in ("n", "requests", "tokens", "truncated_requests", "prompt_sha256", "documents", "metrics"):
            assert ours["tasks"][name][key] == task[key], (name, key)
    assert got["samples"] == single["samples"]  # every document's log-likelihoods and greedy flags, bit for bit
    assert got["report"] == single["report"]
    assert "distributed" not in theirs
    ranks = ours["distributed"]["ranks"]
    assert ours["distributed"]["world_size"] == n_ranks and ours["distributed"]["backend"] == "gloo"
    assert [r["rank"] for r in ranks] == list(range(n_ranks))
    assert all(r["requests"] > 0 for r in ranks)
    # 8 documents each (rule 2 draw): LAMBADA 8, SciQ 32, PIQA 16, ARC 32 and TriviaQA 53 kept aliases
    assert sum(r["requests"] for r in ranks) == theirs["timing"]["requests"] == 141
    for counter in ("forward_calls", "forward_tokens", "padded_tokens", "scored_positions"):  # summed over ranks
        assert ours["timing"][counter] == sum(r[counter] for r in ranks) == theirs["timing"][counter], counter


def test_a_failing_rank_stops_the_job_and_names_itself(data_dir, tmp_path):
    entry = [str(REPO / "tests" / "rank_fault.py")]
    args = _run_args(tmp_path, data_dir)
    args[args.index("random:pythia-70m")] = "random:pythia-14m"
    args[args.index(TASKS)] = "piqa,sciq"
    proc = _torchrun(2, entry, args, EVALKIT_TEST_FAIL_RANK="1")
    assert proc.returncode != 0
    assert "evalkit: error (rank 1 of 2): RuntimeError: injected fault in the forward pass" in proc.stderr
    # rank 0 is stopped by torchrun, or, if it reached the gather first, says why the gather failed
    rank0 = [line for line in proc.stderr.splitlines() if line.startswith("evalkit: error (rank 0 of 2)")]
    assert all("most likely because another rank failed first" in line for line in rank0), rank0
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.md"))
