"""Metric arithmetic and standard errors, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalkit.stats.metrics import aggregator, any_greedy, choice_length, multiple_choice, perplexity, target
from evalkit.stats.stderr import bootstrap_distribution, bootstrap_stderr, mean_stderr


@pytest.mark.parametrize(
    "lls, conts, gold, expected",
    [
        ([-1.0, -2.0], [" a", " bb"], 0, {"acc": 1.0, "acc_norm": 1.0}),
        # acc picks index 1 (-3 > -4); per character: -4/1 = -4 vs -3/6 = -0.5, still index 1.
        ([-4.0, -3.0], [" a", " abcdef"], 0, {"acc": 0.0, "acc_norm": 0.0}),
        # acc: -2 > -6 picks 0; acc_norm: -2/1 = -2 vs -6/6 = -1 picks 1.
        ([-2.0, -6.0], [" x", " yyyyyy"], 1, {"acc": 0.0, "acc_norm": 1.0}),
        # ties go to the lowest index
        ([-1.0, -1.0, -1.0], [" a", " b", " c"], 0, {"acc": 1.0, "acc_norm": 1.0}),
        ([-1.0, -1.0, -1.0], [" a", " b", " c"], 2, {"acc": 0.0, "acc_norm": 0.0}),
    ],
)
def test_multiple_choice(lls, conts, gold, expected):
    assert multiple_choice(lls, conts, gold) == expected


def test_choice_length_excludes_only_the_delimiter():
    assert choice_length(" Paris") == 5
    assert choice_length("  two") == 4
    assert choice_length("x") == 1
    assert choice_length(" ") == 1


def test_target_and_any_greedy():
    assert target(-3.5, True) == {"acc": 1.0, "loglikelihood": -3.5}
    assert target(-0.1, False) == {"acc": 0.0, "loglikelihood": -0.1}
    assert any_greedy([False, True, False]) == {"acc": 1.0}
    assert any_greedy([False, False]) == {"acc": 0.0}


def test_any_greedy_refuses_floats():
    # lm-eval issue 456: any() over log-likelihood floats is always true.
    with pytest.raises(TypeError, match="booleans"):
        any_greedy([-3.2, -1.5])


def test_perplexity_by_hand():
    # lls -1, -2, -3: mean -2, perplexity e^2
    assert perplexity(np.array([-1.0, -2.0, -3.0])) == pytest.approx(math.exp(2.0))
    assert aggregator("perplexity") is perplexity
    assert aggregator("acc")(np.array([1.0, 0.0, 1.0, 1.0])) == 0.75


def test_closed_form_stderr_by_hand():
    # x = 1,0,1,1: mean 0.75, squared deviations sum 3 * 0.0625 + 0.5625 = 0.75, /3 /4 = 0.0625
    assert mean_stderr(np.array([1.0, 0.0, 1.0, 1.0])) == pytest.approx(0.25)
    assert math.isnan(mean_stderr(np.array([1.0])))


@pytest.mark.parametrize("p, n, card", [(0.720, 5153, 0.006), (0.380, 1172, 0.014), (0.259, 11313, 0.004)])
def test_closed_form_reproduces_the_card(p, n, card):
    ones = round(p * n)
    x = np.array([1.0] * ones + [0.0] * (n - ones))
    assert round(mean_stderr(x), 3) == card
    assert mean_stderr(x) == pytest.approx(math.sqrt(x.mean() * (1 - x.mean()) / (n - 1)))


def test_bootstrap_matches_closed_form_within_five_percent():
    rng = np.random.default_rng(0)
    x = (rng.random(1000) < 0.3).astype(float)
    closed = mean_stderr(x)
    boot = bootstrap_stderr(x, aggregator("acc"), 10000, seed=1)
    assert abs(boot / closed - 1) < 0.05


def test_bootstrap_is_seeded_and_not_divided_by_iterations():
    x = np.arange(50, dtype=float)
    a = bootstrap_stderr(x, aggregator("acc"), 2000, seed=5)
    assert a == bootstrap_stderr(x, aggregator("acc"), 2000, seed=5)
    assert a == pytest.approx(np.std(x, ddof=0) / math.sqrt(50), rel=0.1)


def test_bootstrap_perplexity_agrees_with_the_delta_method():
    rng = np.random.default_rng(3)
    lls = rng.normal(-3.0, 1.5, size=2000)
    ppl = float(perplexity(lls))
    delta = ppl * np.std(lls, ddof=1) / math.sqrt(len(lls))
    assert bootstrap_stderr(lls, perplexity, 4000, seed=2) == pytest.approx(delta, rel=0.08)


def test_bootstrap_chunking_does_not_change_the_answer(monkeypatch):
    import evalkit.stats.stderr as stats

    x = np.random.default_rng(1).random(10)
    whole = bootstrap_distribution(x, aggregator("acc"), 7, seed=4)
    monkeypatch.setattr(stats, "BOOTSTRAP_CHUNK_CELLS", 25)  # two resamples per chunk
    chunked = bootstrap_distribution(x, aggregator("acc"), 7, seed=4)
    assert chunked.shape == (7,)
    np.testing.assert_array_equal(chunked, whole)
