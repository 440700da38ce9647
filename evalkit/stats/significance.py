"""Intervals and tests for comparing scores (pure numpy/scipy).

* Wilson score interval for a proportion (Wilson 1927; recommended over the Wald interval by Agresti &
  Coull 1998 and Newcombe 1998): stays inside [0, 1] and has a non-zero width at 0 and 1.
* Bootstrap percentile interval for any statistic of documents, e.g. perplexity (Efron & Tibshirani 1993,
  ch. 13).
* Paired comparison of two runs over the same documents: the bootstrap resamples documents jointly, so the
  correlation between the two models' per-document results is kept (Efron & Tibshirani 1993, ch. 13 and 16).
* McNemar's exact test for paired 0/1 outcomes: under "no difference" the discordant documents split
  Binomial(n_discordant, 1/2) (McNemar 1947; the exact conditional form, via ``scipy.stats.binomtest``).
* Holm's step-down correction for a family of tests (Holm 1979).
* The unpaired two-sample z-test from two standard errors, for published rows that have no per-document data
  (the test of lm-evaluation-harness ``scripts/model_comparator.py``; it ignores the pairing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from evalkit.stats.metrics import aggregator, has_closed_form_stderr
from evalkit.stats.stderr import bootstrap_distribution

Statistic = Callable[[np.ndarray], np.ndarray]


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile, e.g. 1.959964 for ``confidence=0.95``.

    Raises:
        ValueError: confidence outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)  # the standard library: no scipy import for a report


def wilson_interval(proportion: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    (p + z^2/2n ± z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) (Wilson 1927; Agresti & Coull 1998, eq. 2).
    ``proportion`` may be a published rounded value (k/n need not be an integer ratio).

    Args:
        proportion: observed fraction in [0, 1].
        n: number of trials (documents), >= 1.
        confidence: coverage, e.g. 0.95.

    Returns:
        (low, high), both in [0, 1].

    Raises:
        ValueError: n < 1 or a proportion outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= proportion <= 1.0:
        raise ValueError(f"proportion must be in [0, 1], got {proportion}")
    z = z_value(confidence)
    z2n = z * z / n
    centre = (proportion + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(proportion * (1.0 - proportion) / n + z2n / (4.0 * n))
    # the interval always holds the proportion; the clamp only removes rounding at p = 0 and p = 1
    return min(max(0.0, centre - half), proportion), max(min(1.0, centre + half), proportion)


def percentile_interval(distribution: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The (1-c)/2 and (1+c)/2 quantiles of bootstrap statistics, shape (iters,) (Efron & Tibshirani 1993, ch. 13)."""
    low, high = np.quantile(np.asarray(distribution, dtype=np.float64), [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def metric_interval(
    metric: str, values: Sequence[float], iters: int = 10000, seed: int = 1234, confidence: float = 0.95
) -> tuple[float, float]:
    """A run's confidence interval for one metric from its per-document values.

    Wilson for means of 0/1 values (acc, acc_norm); bootstrap percentile over documents otherwise
    (perplexity, from per-document log-likelihoods in nats; rolling perplexities, from (log-likelihood, units)
    pairs).

    Args:
        metric: ``acc``, ``acc_norm``, ``perplexity`` or a rolling metric (:data:`evalkit.stats.metrics.ROLLING_METRICS`).
        values: per-document values, shape (n,) (0/1 floats, or log-likelihoods for perplexity), or (n, 2) for
            a rolling metric (:func:`evalkit.stats.metrics.per_doc_values`).
        iters: bootstrap resamples (perplexity only), >= 2.
        seed: bootstrap seed.
        confidence: coverage.

    Raises:
        ValueError: an unknown metric, no values, or too few resamples for a bootstrap.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"no per-document values for {metric}")
    if has_closed_form_stderr(metric):
        return wilson_interval(float(x.mean()), int(x.shape[0]), confidence)
    if iters < 2:
        raise ValueError(f"a bootstrap interval needs at least 2 resamples, got {iters}")
    return percentile_interval(bootstrap_distribution(x, aggregator(metric), iters, seed), confidence)


@dataclass(frozen=True)
class PairedBootstrap:
    """Paired bootstrap of the difference statistic(b) - statistic(a).

    Attributes:
        delta: the observed difference on all documents (units of the metric).
        low, high: percentile confidence interval of the difference.
        p_value: two-sided bootstrap p-value, 2 * min(P*(d <= 0), P*(d >= 0)) with the +1 correction,
            in (0, 1] (consistent with the percentile interval: it excludes 0 iff p < 1 - confidence, up to
            resampling noise), and never below 2**(1-n) for n documents: the smallest two-sided p-value of the
            exact paired randomization test (Fisher 1935; swapping the runs on every document mirrors the
            observed difference), which the bootstrap cannot beat with so few documents (one document: p = 1).
        iters: number of resamples.
    """

    delta: float
    low: float
    high: float
    p_value: float
    iters: int


def _paired_arrays(
    a: Sequence[float], b: Sequence[float], ndim: tuple[int, ...] = (1,)
) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim not in ndim or x.shape != y.shape:
        raise ValueError(f"paired values need two arrays of one length and shape (documents along axis 0, "
                         f"{' or '.join(map(str, ndim))} axes), got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("paired values are empty")
    return x, y


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], statistic: Statistic, iters: int = 10000, seed: int = 1234,
    confidence: float = 0.95,
) -> PairedBootstrap:
    """Bootstrap the difference of a statistic between two runs over the same documents.

    Each resample draws n document indices with replacement and applies them to both runs, so document
    i of run a stays paired with document i of run b (Efron & Tibshirani 1993, ch. 13 and 16).

    Args:
        a, b: per-document values of the two runs, shape (n,), or (n, k) for a statistic of k values per
            document (a ratio of sums: :func:`evalkit.stats.metrics.per_doc_values`), aligned by document.
        statistic: vectorised over leading axes, (..., n) -> (...) or (..., n, k) -> (...), e.g.
            :func:`evalkit.stats.metrics.mean`.
        iters: resamples, >= 2.
        seed: numpy Generator seed; the same seed gives the same answer.
        confidence: coverage of the interval.

    Raises:
        ValueError: arrays of different shapes, empty input, or iters < 2.
    """
    x, y = _paired_arrays(a, b, (1, 2))
    if iters < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 resamples, got {iters}")
    pairs = np.stack([x, y], axis=1)  # (n, 2[, k]): a resampled document keeps both runs' values
    dist = bootstrap_distribution(pairs, lambda r: statistic(r[:, :, 1]) - statistic(r[:, :, 0]), iters, seed)
    low, high = percentile_interval(dist, confidence)
    below, above = int(np.sum(dist <= 0.0)), int(np.sum(dist >= 0.0))
    # With few documents every resample can move the same way (one document: all resamples are equal), which
    # alone is no evidence: no exact paired test of n documents reaches below 2**(1-n).
    p_value = min(1.0, max(2.0 * (min(below, above) + 1) / (iters + 1), 2.0 ** (1 - x.shape[0])))
    delta = float(statistic(y) - statistic(x))
    return PairedBootstrap(delta, low, high, p_value, iters)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired 0/1 outcomes.

    Attributes:
        only_a: documents right in run a and wrong in run b.
        only_b: documents right in run b and wrong in run a.
        p_value: two-sided exact p-value, 1.0 when there is no discordant document.
    """

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """McNemar's exact (conditional binomial) test of equal accuracy on the same documents (McNemar 1947).

    Only discordant documents carry information: with n = only_a + only_b, only_b ~ Binomial(n, 1/2) under
    the null; the p-value is ``scipy.stats.binomtest(only_b, n, 0.5).pvalue`` (two-sided).

    Args:
        a, b: per-document outcomes in {0, 1} (bool, int or float), shape (n,), aligned by document.

    Raises:
        ValueError: arrays of different shapes, empty input, or a value other than 0 and 1.
    """
    x, y = _paired_arrays(a, b)
    for name, arr in (("a", x), ("b", y)):
        bad = np.flatnonzero((arr != 0.0) & (arr != 1.0))
        if bad.size:
            raise ValueError(f"McNemar needs 0/1 outcomes; {name}[{bad[0]}] = {arr[bad[0]]}")
    only_a = int(np.sum((x == 1.0) & (y == 0.0)))
    only_b = int(np.sum((x == 0.0) & (y == 1.0)))
    n = only_a + only_b
    from scipy.stats import binomtest  # lazy: scipy.stats takes about a second to import; only comparisons need it

    p_value = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5).pvalue)
    return McNemar(only_a, only_b, min(1.0, p_value))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979); None entries (no test) are left out of the family.

    Sort the m p-values ascending, multiply the i-th (0-based) by m - i, take the running maximum and cap
    at 1. Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha.

    Returns:
        adjusted p-values in the input order (None where the input was None).

    Raises:
        ValueError: a p-value outside [0, 1] or NaN.
    """
    present = [(i, p) for i, p in enumerate(p_values) if p is not None]
    for i, p in present:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value {i} is {p}, not in [0, 1]")
    out: list[float | None] = [None] * len(p_values)
    if not present:
        return out
    index = np.array([i for i, _ in present])
    p = np.array([q for _, q in present], dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    for position, value in zip(index[order], adjusted):
        out[int(position)] = float(value)
    return out


def proportion_stderr(proportion: float, n: int) -> float:
    """Closed-form stderr of a proportion, sqrt(p(1-p)/(n-1)), as the GPT-NeoX-20B card computes it.

    Raises:
        ValueError: n < 2.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    return math.sqrt(proportion * (1.0 - proportion) / (n - 1))


@dataclass(frozen=True)
class ZTest:
    """Unpaired two-sample z-test of value_b - value_a.

    Attributes:
        delta: value_b - value_a.
        z: delta / sqrt(stderr_a^2 + stderr_b^2) (inf when both stderrs are 0 and the values differ).
        p_value: two-sided, 2 * (1 - Phi(|z|)).
    """

    delta: float
    z: float
    p_value: float


def unpaired_z_test(value_a: float, stderr_a: float, value_b: float, stderr_b: float) -> ZTest:
    """Two-sample z-test from two means and their standard errors, treating the samples as independent.

    The test lm-evaluation-harness ``scripts/model_comparator.py`` applies. On the same documents it is
    conservative when the two models' errors are positively correlated; use it only when per-document
    results of one side are unavailable (published tables).

    Raises:
        ValueError: a negative or non-finite stderr.
    """
    for name, se in (("stderr_a", stderr_a), ("stderr_b", stderr_b)):
        if not (math.isfinite(se) and se >= 0.0):
            raise ValueError(f"{name} must be finite and >= 0, got {se}")
    delta = value_b - value_a
    pooled = math.sqrt(stderr_a ** 2 + stderr_b ** 2)
    if pooled == 0.0:
        z = 0.0 if delta == 0.0 else math.copysign(math.inf, delta)
    else:
        z = delta / pooled
    return ZTest(delta, z, math.erfc(abs(z) / math.sqrt(2.0)))  # 2 * (1 - Phi(|z|)), exact in the tails
