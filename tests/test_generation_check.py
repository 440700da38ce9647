"""``evalkit baseline`` and ``evalkit check`` on generation tasks (a tiny random model): the baseline freezes each
document's context token ids, stop strings, length, generated text and stop reason; a check passes on an unchanged
tree and names every changed generation, request and metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from evalkit.cli.main import main
from evalkit.regression.baseline import load_baseline
from evalkit.regression.generation_freeze import generation_diffs, ids_sha
from evalkit.types import STOP_REASONS

from .conftest import REPO, TOKENIZER_JSON
from .test_lmeval_generate import GSM8K_TEST, GSM8K_TRAIN
from .test_math_tasks import TEST_DOCS, TRAIN_DOCS, write_split

LMEVAL = REPO / "tests" / "task_yaml" / "lmeval_0413"


@pytest.fixture(scope="module")
def frozen(data_dir, tmp_path_factory) -> Path:
    """A baseline of MATH algebra (2-shot), lm-eval's gsm8k YAML (1-shot) and PIQA, 3 documents each."""
    root = tmp_path_factory.mktemp("gen_check")
    data = root / "data"
    write_split(data / "math_algebra", "test", TEST_DOCS)
    write_split(data / "math_algebra", "train", TRAIN_DOCS)
    write_split(data / "gsm8k", "test", GSM8K_TEST)
    write_split(data / "gsm8k", "train", GSM8K_TRAIN)
    (data / "piqa").symlink_to(data_dir / "piqa")
    status = main(["baseline", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON),
                   "--tasks", "math_algebra:2,lm_eval.gsm8k:1,piqa", "--include-path", str(LMEVAL),
                   "--data-dir", str(data), "--limit", "3", "--max-gen-toks", "8", "--bootstrap-iters", "0",
                   "--dtype", "float32", "--device", "cpu", "--output", str(root / "baseline.json"),
                   "--output-dir", str(root / "out")])
    assert status == 0
    return root


def _check(root: Path, baseline: Path, capsys) -> tuple[int, str]:
    status = main(["check", "--baseline", str(baseline), "--data-dir", str(root / "data"),
                   "--output-dir", str(root / "out")])
    return status, capsys.readouterr().out


def _samples(root: Path) -> list[dict]:
    [path] = sorted((root / "out" / "results" / "random_pythia-14m").glob("*Z.samples.jsonl"))[:1]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_baseline_freezes_generation_requests_and_texts(frozen):
    baseline = load_baseline(frozen / "baseline.json")
    assert "--max-gen-toks 8" in baseline["equivalent_run"] and baseline["config"]["max_gen_toks"] == 8
    tokenizer = Tokenizer.from_file(str(TOKENIZER_JSON))
    samples = {(s["task"], s["doc_id"]): s for s in _samples(frozen)}
    for name, until in (("math_algebra", ["\n"]), ("lm_eval.gsm8k", ["Question:", "</s>", "<|im_end|>"])):
        task = baseline["tasks"][name]
        req = task["requests"]
        assert task["output_type"] == "generate_until" and len(req["doc_id"]) == 3
        assert req["doc_id"] == task["documents"]["doc_id"]
        assert req["until"] == [until] * 3 and req["max_new_tokens"] == [8] * 3
        for k, doc_id in enumerate(req["doc_id"]):
            sample = samples[(name, doc_id)]
            # pythia's tokenizer puts nothing before a context: the ids are the context's own encoding
            assert req["context_ids_sha"][k] == ids_sha(tokenizer.encode(sample["context"]).ids)
            assert req["generation"][k] == sample["generation"]
            assert req["stop_reason"][k] in STOP_REASONS
    assert set(baseline["tasks"]["lm_eval.gsm8k"]["metrics"]) == {"exact_match,strict-match",
                                                                  "exact_match,flexible-extract"}
    piqa = baseline["tasks"]["piqa"]
    assert "output_type" not in piqa and len(piqa["requests"]["loglikelihood"]) == 6  # 3 documents x 2 choices


def test_an_unchanged_tree_passes(frozen, capsys):
    status, out = _check(frozen, frozen / "baseline.json", capsys)
    assert status == 0, out
    assert "check passed: 3 tasks, 12 requests match" in out and "generated texts" in out


def test_a_changed_generation_and_a_changed_metric_fail_naming_them(frozen, capsys):
    baseline = json.loads((frozen / "baseline.json").read_text())
    math = baseline["tasks"]["math_algebra"]["requests"]
    doc = math["doc_id"][1]
    old_text = math["generation"][1]
    math["generation"][1] = old_text + " changed"
    gsm = baseline["tasks"]["lm_eval.gsm8k"]["metrics"]["exact_match,strict-match"]
    gsm["value"] = gsm["value"] + 0.5
    path = frozen / "tampered.json"
    path.write_text(json.dumps(baseline))
    status, out = _check(frozen, path, capsys)
    assert status == 1
    assert "FAIL math_algebra: 1 of 3 greedy generations changed" in out
    assert f"generation: doc {doc}: {old_text + ' changed'!r}" in out
    assert "FAIL lm_eval.gsm8k exact_match,strict-match:" in out
    assert "check failed: 2 of 3 tasks differ" in out


def test_generation_diffs_names_changed_requests_texts_and_stop_reasons():
    old = {"doc_id": [0, 1, 2, 3], "context_ids_sha": ["a", "b", "c", "d"], "until": [["\n"]] * 4,
           "max_new_tokens": [8] * 4, "generation": [" 1", " 2", " 3", " 4"],
           "stop_reason": ["stop", "stop", "eot", "length"]}
    new = {k: list(v) for k, v in old.items()}
    assert generation_diffs("t", old, new, 5) == []
    new["context_ids_sha"][0] = "z"
    new["until"][1] = ["\n", "."]
    new["generation"][2] = " 3!"
    new["stop_reason"][3] = "eot"
    lines = generation_diffs("t", old, new, 5)
    assert lines == [
        "FAIL t: 2 of 4 generation requests changed",
        "  request: doc 0: context token ids changed",
        "  request: doc 1: stop strings changed",
        "FAIL t: 2 of 4 greedy generations changed",
        "  generation: doc 2: ' 3' (eot) -> ' 3!' (eot)",
        "  generation: doc 3: ' 4' (length) -> ' 4' (eot)",
    ]
    gone = {k: v[:3] for k, v in new.items()}
    assert "  request: doc 3 no longer exists" in generation_diffs("t", old, gone, 5)
