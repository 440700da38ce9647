"""Intervals and tests of evalkit.significance against textbook values, hand-worked tables and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evalkit.stats.metrics import mean, perplexity
from evalkit.stats.significance import (
    holm,
    mcnemar_exact,
    metric_interval,
    paired_bootstrap,
    proportion_stderr,
    unpaired_z_test,
    wilson_interval,
)


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_1998(k, n, low, high):
    got = wilson_interval(k / n, n)
    assert got[0] == pytest.approx(low, abs=5e-5)
    assert got[1] == pytest.approx(high, abs=5e-5)


def test_wilson_is_correct_at_zero_and_one():
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0.0, 20) == (0.0, pytest.approx(z2 / (20 + z2)))
    low, high = wilson_interval(1.0, 20)
    assert (low, high) == (pytest.approx(20 / (20 + z2)), 1.0)


def test_wilson_agrees_with_scipy_on_random_counts():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 500))
        k = int(rng.integers(0, n + 1))
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
        assert wilson_interval(k / n, n, 0.9) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


def test_wilson_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be at least 1"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match="proportion must be in"):
        wilson_interval(1.2, 10)


def _table(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=float), np.array(b, dtype=float)


def test_mcnemar_hand_worked_tables():
    # 1 vs 6 discordant: p = 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    a, b = _table(10, 1, 6, 3)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (1, 6)
    assert result.p_value == pytest.approx(16 / 128, rel=1e-12)
    # 0 vs 5: p = 2 / 32
    assert mcnemar_exact(*_table(4, 0, 5, 1)).p_value == pytest.approx(2 / 32, rel=1e-12)
    # balanced discordance and no discordance: p = 1
    assert mcnemar_exact(*_table(3, 2, 2, 3)).p_value == 1.0
    assert mcnemar_exact(*_table(5, 0, 0, 5)).p_value == 1.0


def test_mcnemar_matches_the_binomial_sum_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(40):
        a = rng.integers(0, 2, size=int(rng.integers(5, 80))).astype(float)
        b = np.where(rng.random(a.size) < 0.3, 1 - a, a)
        only_a, only_b = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
        n = only_a + only_b
        expected = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n)
        assert mcnemar_exact(a, b).p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_rejects_non_binary_and_unpaired_input():
    with pytest.raises(ValueError, match=r"McNemar needs 0/1 outcomes; b\[1\] = 0.5"):
        mcnemar_exact([1, 0], [1, 0.5])
    with pytest.raises(ValueError, match="one length"):
        mcnemar_exact([1, 0], [1, 0, 1])


def test_paired_bootstrap_of_identical_runs_is_exactly_zero():
    a = np.array([1, 0, 1, 1, 0], dtype=float)
    result = paired_bootstrap(a, a, mean, iters=500, seed=3)
    assert (result.delta, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_hand_worked_two_documents():
    # a = (0, 1), b = (1, 1): a resample picks each document pair with probability 1/2, so the difference of means is
    # 1 (both picks doc 0, prob 1/4), 1/2 (one of each, 1/2) or 0 (both doc 1, 1/4). Percentile interval [0, 1];
    # P*(d <= 0) = 1/4, so p = 2 * 1/4 = 1/2.
    result = paired_bootstrap([0.0, 1.0], [1.0, 1.0], mean, iters=20000, seed=5)
    assert result.delta == 0.5
    assert (result.low, result.high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_paired_bootstrap_keeps_documents_paired():
    # b = a + 0.25 on every document: every paired resample differs by exactly 0.25, however varied a is
    a = np.random.default_rng(7).normal(size=60)
    result = paired_bootstrap(a, a + 0.25, mean, iters=300, seed=1)
    assert (result.low, result.high) == (pytest.approx(0.25), pytest.approx(0.25))
    assert result.p_value == pytest.approx(2 / 301)


def test_paired_bootstrap_agrees_with_scipy_on_random_data():
    rng = np.random.default_rng(11)
    a = (rng.random(300) < 0.55).astype(float)
    b = np.where(rng.random(300) < 0.2, 1 - a, a)
    ours = paired_bootstrap(a, b, mean, iters=20000, seed=2)
    theirs = sps.bootstrap((a, b), lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis), paired=True,
                           vectorized=True, n_resamples=20000, method="percentile", rng=np.random.default_rng(4))
    assert ours.delta == pytest.approx(b.mean() - a.mean())
    assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=0.006)
    assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=0.006)


def test_paired_bootstrap_of_perplexity_uses_the_statistic():
    lla, llb = np.full(10, -2.0), np.full(10, -1.0)
    result = paired_bootstrap(lla, llb, perplexity, iters=50, seed=0)
    assert result.delta == pytest.approx(math.exp(1.0) - math.exp(2.0))
    assert result.low == pytest.approx(result.delta) and result.high == pytest.approx(result.delta)


def test_holm_worked_example():
    # m = 4: sorted p (0.005, 0.01, 0.03, 0.04) times (4, 3, 2, 1) = (0.02, 0.03, 0.06, 0.04);
    # running maximum (0.02, 0.03, 0.06, 0.06); at alpha 0.05 only 0.005 and 0.01 are rejected.
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), pytest.approx(0.02)]
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_and_skips_missing_tests():
    assert holm([0.5, None, 0.4]) == [pytest.approx(0.8), None, pytest.approx(0.8)]
    assert holm([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]
    assert holm([]) == []
    with pytest.raises(ValueError, match="p-value 1 is 1.5"):
        holm([0.1, 1.5])


def test_unpaired_z_test_by_hand():
    # GPT-NeoX-20B vs FairSeq 13B on LAMBADA: (0.709 - 0.720) / sqrt(0.006^2 + 0.006^2)
    result = unpaired_z_test(0.720, 0.006, 0.709, 0.006)
    z = -0.011 / math.sqrt(2 * 0.006**2)
    assert result.delta == pytest.approx(-0.011)
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert unpaired_z_test(0.5, 0.0, 0.5, 0.0).p_value == 1.0


def test_proportion_stderr_reproduces_the_card():
    assert round(proportion_stderr(0.928, 1000), 3) == 0.008   # GPT-NeoX-20B, SciQ
    assert round(proportion_stderr(0.380, 1172), 3) == 0.014   # GPT-NeoX-20B, ARC-Challenge
    assert round(proportion_stderr(0.409, 11313), 3) == 0.005  # GPT-3 DaVinci, TriviaQA


def test_metric_interval_wilson_for_accuracy_bootstrap_for_perplexity():
    assert metric_interval("acc", [1, 0, 0, 0]) == wilson_interval(0.25, 4)
    ll = np.random.default_rng(0).normal(-3.0, 1.0, size=200)
    low, high = metric_interval("perplexity", ll, iters=2000, seed=1)
    assert low < math.exp(-ll.mean()) < high
    with pytest.raises(ValueError, match="no per-document values"):
        metric_interval("acc", [])
