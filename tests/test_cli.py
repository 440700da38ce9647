"""The command line end to end on real data with a seeded random pythia-14m."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from evalkit.cli.main import main

from .conftest import REPO, TOKENIZER_JSON

CARD_ROWS = ["GPT-J-6B", "FairSeq 6.7B", "GPT-3 Curie", "FairSeq 13B", "GPT-NeoX-20B", "GPT-3 DaVinci"]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run")
    code = main([
        "run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "neox20b_card",
        "--data-dir", str(data_dir), "--limit", "50", "--bootstrap-iters", "1000", "--output-dir", str(out),
        "--log-samples", "--no-progress",
    ])
    assert code == 0
    return out


def test_run_writes_one_results_file_samples_and_report(card_run):
    results = list((card_run / "results" / "random_pythia-14m").glob("*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    assert list(data["tasks"]) == ["lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge"]
    assert data["model"]["name"] == "random:pythia-14m" and data["model"]["dtype"] == "float32"
    assert data["tokenizer"]["sha256"] and data["versions"]["torch"].startswith("2.")
    for name, task in data["tasks"].items():
        assert task["n"] == 50 and task["subset"] is True
        assert len(task["prompt_sha256"]) == 64
        assert task["truncated_requests"] == 0
        for metric in task["metrics"].values():
            assert metric["n"] == 50 and metric["stderr_bootstrap"] is not None
    assert data["tasks"]["lambada_openai"]["metrics"]["perplexity"]["stderr"] is None
    reports = list((card_run / "reports").glob("*.md"))
    assert [r.stem for r in reports] == [f"random_pythia-14m-{results[0].stem}"]


def test_samples_recompute_the_aggregates(card_run):
    [samples] = (card_run / "results" / "random_pythia-14m").glob("*.samples.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 250
    assert set(rows[0]) >= {"task", "doc_id", "context", "continuations", "loglikelihoods", "greedy", "metrics"}
    [results] = [p for p in (card_run / "results" / "random_pythia-14m").glob("*.json")]
    data = json.loads(results.read_text())
    for name, task in data["tasks"].items():
        mine = [r for r in rows if r["task"] == name]
        assert [r["doc_id"] for r in mine] == task["documents"]["doc_id"]
        acc = np.mean([r["metrics"]["acc"] for r in mine])
        assert task["metrics"]["acc"]["value"] == pytest.approx(acc)
        for r in mine:
            assert len(r["loglikelihoods"]) == len(r["greedy"]) == len(r["continuations"])
            assert all(isinstance(g, bool) for g in r["greedy"])
    lam = [r for r in rows if r["task"] == "lambada_openai"]
    ppl = np.exp(-np.mean([r["loglikelihoods"][0] for r in lam]))
    assert data["tasks"]["lambada_openai"]["metrics"]["perplexity"]["value"] == pytest.approx(ppl)


def test_report_sets_the_run_among_every_reference_row(card_run):
    [report] = (card_run / "reports").glob("*.md")
    text = report.read_text()
    for row in CARD_ROWS:
        assert f"| {row} |" in text
    assert "| **random:pythia-14m (float32)** | **0-shot** |" in text
    assert "whole-word greedy match" in text  # the LAMBADA column names its metric variant
    assert "| GPT-NeoX-20B | 0-shot | 0.720 ± 0.006 | 0.928 ± 0.008 | 0.779 ± 0.010 | 0.259 ± 0.004 | 0.380 ± 0.014 |" in text
    assert "--limit 50" in text  # the subset is flagged
    assert "| pythia-70m | 0-shot | 0.185 | 0.601 | 0.595 | 0.181 |" in text


def test_report_command_rerenders_from_saved_results(card_run, capsys, tmp_path):
    [results] = [p for p in (card_run / "results" / "random_pythia-14m").glob("*.json")]
    out = tmp_path / "again.md"
    code, stdout, _ = run_cli(["report", str(results), "--output", str(out)], capsys)
    assert code == 0 and f"report: {out}" in stdout
    [original] = (card_run / "reports").glob("*.md")
    assert f"![Accuracy per task with 95% intervals]({out.stem}.png)" in out.read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    strip = lambda text: [line for line in text.splitlines() if not line.startswith(("Generated", "![Accuracy"))]
    assert strip(out.read_text()) == strip(original.read_text())


def test_unknown_task_suggests_close_names(capsys, data_dir, tmp_path):
    code, _, err = run_cli([
        "run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "lambada_opena",
        "--data-dir", str(data_dir), "--output-dir", str(tmp_path),
    ], capsys)
    assert code == 2
    assert "unknown task 'lambada_opena'; did you mean lambada_openai" in err
    assert not (tmp_path / "results").exists()


def test_unknown_random_model_alias(capsys, data_dir, tmp_path):
    code, _, err = run_cli([
        "run", "--model", "random:pythia-15m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
        "--data-dir", str(data_dir), "--output-dir", str(tmp_path),
    ], capsys)
    assert code == 2 and "unknown model alias 'pythia-15m'" in err and "random:pythia-14m" in err


def test_trimmed_local_copy_runs_with_a_warning(capsys, data_dir, tmp_path, caplog):
    (tmp_path / "data" / "piqa").mkdir(parents=True)
    lines = (data_dir / "piqa" / "validation.jsonl").read_text().splitlines()[:12]
    (tmp_path / "data" / "piqa" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    code, _, _ = run_cli([
        "run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
        "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path), "--bootstrap-iters", "100",
        "--no-progress",
    ], capsys)
    assert code == 0
    assert "piqa: split has 12 documents, expected 1838" in caplog.text
    [report] = (tmp_path / "reports").glob("*.md")
    assert "> **Warning:** piqa: split has 12 documents, expected 1838" in report.read_text()


def test_include_path_adds_a_task_file(capsys, data_dir, tmp_path):
    source = (REPO / "tasks" / "piqa.py").read_text()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "piqa_caps.py").write_text(
        source.replace('name="piqa"', 'name="piqa_caps"').replace('f"Question: {doc', 'f"QUESTION: {doc')
    )
    (tmp_path / "data" / "piqa_caps").mkdir(parents=True)
    lines = (data_dir / "piqa" / "validation.jsonl").read_text().splitlines()[:5]
    (tmp_path / "data" / "piqa_caps" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    code, stdout, _ = run_cli(["tasks", "--include-path", str(tmp_path / "tasks")], capsys)
    assert code == 0 and "piqa_caps: baber/piqa" in stdout
    code, stdout, _ = run_cli([
        "run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa_caps",
        "--include-path", str(tmp_path / "tasks"), "--data-dir", str(tmp_path / "data"),
        "--output-dir", str(tmp_path), "--log-samples", "--bootstrap-iters", "0", "--no-progress",
    ], capsys)
    assert code == 0
    [samples] = (tmp_path / "results" / "random_pythia-14m").glob("*.samples.jsonl")
    first = json.loads(samples.read_text().splitlines()[0])
    assert first["context"].startswith("QUESTION: How do I ready a guinea pig cage")


def test_module_entry_point_lists_tasks():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "evalkit", "tasks"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert "lambada_openai (aliases: lambada): EleutherAI/lambada_openai default test n=5153; acc, perplexity" in out
    assert "neox20b_card (group): lambada_openai, sciq, piqa, triviaqa, arc_challenge" in out
