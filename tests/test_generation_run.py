"""Generation tasks through ``evalkit run`` on a tiny random model: MATH (v0.2.0, two shots), lm-eval 0.4.13's
gsm8k YAML and a log-likelihood task in one run; results, samples, the cache on a second run, and the refusals
that come before any weight is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.stats.math_answers import math_acc
from evalkit.types import EvalkitError

from .conftest import REPO, TOKENIZER_JSON
from .test_lmeval_generate import GSM8K_TEST, GSM8K_TRAIN
from .test_math_tasks import TEST_DOCS, TRAIN_DOCS, write_split

LMEVAL = REPO / "tests" / "task_yaml" / "lmeval_0413"


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen_data")
    write_split(root / "math_algebra", "test", TEST_DOCS)
    write_split(root / "math_algebra", "train", TRAIN_DOCS)
    write_split(root / "gsm8k", "test", GSM8K_TEST)
    write_split(root / "gsm8k", "train", GSM8K_TRAIN)
    (root / "piqa").symlink_to(data_dir / "piqa")
    return root


def run(data: Path, out: Path, *extra: str) -> int:
    return main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON),
                 "--tasks", "math_algebra:2,lm_eval.gsm8k:1,piqa", "--include-path", str(LMEVAL),
                 "--data-dir", str(data), "--limit", "3", "--max-gen-toks", "8", "--bootstrap-iters", "0",
                 "--output-dir", str(out), "--log-samples", "--no-progress", *extra])


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("gen_cache")
    out = tmp_path_factory.mktemp("gen_out")
    assert run(data, out, "--cache-dir", str(cache)) == 0
    [path] = (out / "results" / "random_pythia-14m").glob("*Z.json")
    samples = [json.loads(line) for line in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    return json.loads(path.read_text()), samples, cache


def test_results_and_samples_of_a_mixed_run(first_run):
    results, samples, _ = first_run
    assert list(results["tasks"]) == ["math_algebra", "lm_eval.gsm8k", "piqa"]
    math = results["tasks"]["math_algebra"]
    assert math["output_type"] == "generate_until" and math["n"] == 3 and math["num_fewshot"] == 2
    assert math["until"] == ["\n"] and math["max_new_tokens"] == [8]
    rows = [s for s in samples if s["task"] == "math_algebra"]
    assert len(rows) == 3
    for row in rows:
        assert "\n" not in row["generation"]
        assert row["context"].endswith("Problem: " + TEST_DOCS[row["doc_id"]]["problem"] + "\nAnswer:")
        assert row["context"].count("\nAnswer: ") == 2  # two examples with their answers, then the question
        assert row["metrics"]["acc"] == math_acc(row["generation"], TEST_DOCS[row["doc_id"]]["solution"])
    assert math["metrics"]["acc"]["value"] == pytest.approx(sum(r["metrics"]["acc"] for r in rows) / 3)
    gsm = results["tasks"]["lm_eval.gsm8k"]
    assert set(gsm["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert {tuple(s["answers"]) for s in samples if s["task"] == "lm_eval.gsm8k"} == {
        ("strict-match", "flexible-extract")}
    assert results["tasks"]["piqa"]["metrics"]["acc"]["n"] == 3


def test_a_second_run_is_answered_from_the_cache(first_run, data, tmp_path):
    results, samples, cache = first_run
    assert run(data, tmp_path, "--cache-dir", str(cache)) == 0
    [path] = (tmp_path / "results" / "random_pythia-14m").glob("*Z.json")
    again = json.loads(path.read_text())
    for name in results["tasks"]:
        assert again["tasks"][name]["metrics"] == results["tasks"][name]["metrics"]
    assert again["timing"]["generation"]["requests_cached"] == 6
    assert [json.loads(x)["generation"] for x in path.with_suffix(".samples.jsonl").read_text().splitlines()
            if "generation" in json.loads(x)] == [s["generation"] for s in samples if "generation" in s]


def test_a_generation_length_filling_the_window_is_refused_before_the_weights_load(data, tmp_path, monkeypatch):
    from evalkit.models import hf_loading

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(hf_loading, "load_model", no_weights)
    with pytest.raises(EvalkitError, match="8 new tokens leave no room for the prompt in the model's window of 8"):
        from evalkit.api import evaluate

        evaluate("random:pythia-14m", "math_algebra", tokenizer=TOKENIZER_JSON, data_dir=data, max_length=8,
                 max_gen_toks=8, use_cache=False)
