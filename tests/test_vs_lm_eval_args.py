"""benchmarks/vs_lm_eval.py: its tokenizer default and the arithmetic of its start-up breakdown."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("vs_lm_eval", REPO / "benchmarks" / "vs_lm_eval.py")
vs_lm_eval = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vs_lm_eval)


def test_tokenizer_defaults_to_the_models_own_except_for_random_weights():
    assert vs_lm_eval.default_tokenizer("random:pythia-70m", None) == vs_lm_eval.RANDOM_TOKENIZER
    assert vs_lm_eval.default_tokenizer("/models/smol.gguf", None) is None
    assert vs_lm_eval.default_tokenizer("/models/folder", "") is None
    assert vs_lm_eval.default_tokenizer("/models/smol.gguf", "tok.json") == "tok.json"
    args = vs_lm_eval.parse_args(["--model", "/models/smol.gguf"])
    assert args.tokenizer is None
    assert vs_lm_eval.parse_args([]).tokenizer == vs_lm_eval.RANDOM_TOKENIZER


def test_breakdown_sums_start_up_and_leaves_the_rest():
    b = vs_lm_eval.breakdown(10.0, 1.5, 0.5, 3.0, 4.0)
    assert b["startup_s"] == pytest.approx(5.0)
    assert b["rest_s"] == pytest.approx(1.0)
    assert b["wall_s"] == 10.0


def test_breakdown_refuses_parts_longer_than_the_wall():
    with pytest.raises(ValueError, match="more than the wall time"):
        vs_lm_eval.breakdown(5.0, 1.0, 1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="negative"):
        vs_lm_eval.breakdown(5.0, -1.0, 1.0, 1.0, 1.0)
