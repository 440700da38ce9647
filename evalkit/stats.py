"""Aggregation uncertainty: closed-form and bootstrap standard errors (pure numpy).

* Closed form for a mean: sqrt(sum((x - mean)^2) / (n - 1) / n), the sample standard error that the
  GPT-NeoX-20B card shows (equal to sqrt(p(1-p)/(n-1)) for 0/1 values).
* Bootstrap: resample documents with replacement ``iters`` times, compute the statistic on each resample,
  report the standard deviation (ddof=1) of those statistics (Efron & Tibshirani 1993; lm-evaluation-harness
  uses the same estimator with 100000 resamples). The spread is not divided by sqrt(iters).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

BOOTSTRAP_CHUNK_CELLS = 4_000_000
"""Resampled values held in memory at once (iters x n), about 32 MB of int64 indices."""


def mean_stderr(values: np.ndarray) -> float:
    """Closed-form standard error of the mean of ``values`` (1-D), NaN when n < 2."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        return math.nan
    return float(math.sqrt(np.sum((x - x.mean()) ** 2) / (n - 1) / n))


def bootstrap_stderr(
    values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], iters: int, seed: int
) -> float:
    """Bootstrap standard error of ``statistic`` over documents.

    Args:
        values: per-document values, shape (n,).
        statistic: vectorised over leading axes: (iters, n) -> (iters,).
        iters: number of resamples (>= 2).
        seed: numpy Generator seed; the same seed gives the same answer.

    Returns:
        standard deviation (ddof=1) of the resampled statistics, NaN when n < 2 or iters < 2.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n < 2 or iters < 2:
        return math.nan
    return float(np.std(bootstrap_distribution(x, statistic, iters, seed), ddof=1))


def bootstrap_distribution(
    values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], iters: int, seed: int
) -> np.ndarray:
    """The statistic on ``iters`` resamples of documents with replacement, shape (iters,), float64.

    ``values`` has documents along axis 0, shape (n,) or (n, k): a row is resampled whole, so k aligned
    values per document (two runs, for a paired bootstrap) stay together. ``statistic`` maps
    (size, n[, k]) -> (size,).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CHUNK_CELLS // max(n, 1))
    out = np.empty(iters, dtype=np.float64)
    for start in range(0, iters, chunk):
        size = min(chunk, iters - start)
        idx = rng.integers(0, n, size=(size, n))
        out[start : start + size] = statistic(x[idx])
    return out
