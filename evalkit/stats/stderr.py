"""Aggregation uncertainty: closed-form and bootstrap standard errors (pure numpy).

* Closed form for a mean: sqrt(sum((x - mean)^2) / (n - 1) / n), the sample standard error that the
  GPT-NeoX-20B card shows (equal to sqrt(p(1-p)/(n-1)) for 0/1 values).
* Bootstrap: resample documents with replacement ``iters`` times, compute the statistic on each resample,
  report the standard deviation (ddof=1) of those statistics (Efron & Tibshirani 1993; lm-evaluation-harness
  uses the same estimator with 100000 resamples). The spread is not divided by sqrt(iters).
* Macro average over T tasks (unweighted mean of the task means): with the tasks independent, its stderr is
  sqrt(Σ se_i²) / T from the tasks' closed-form stderrs (variance of a sum of independent means); its bootstrap
  resamples documents within each task (a stratified bootstrap, Efron & Tibshirani 1993, ch. 6) and recomputes
  the mean of the task means.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

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


def macro_mean_stderr(strata: Sequence[np.ndarray]) -> float:
    """Closed-form stderr of the unweighted mean of T task means, sqrt(Σ se_i²) / T, assuming independent tasks.

    Args:
        strata: one 1-D array of per-document values per task.

    Returns:
        the stderr, NaN when there is no task or a task has fewer than 2 documents.
    """
    if not strata:
        return math.nan
    ses = np.array([mean_stderr(x) for x in strata], dtype=np.float64)
    return float(math.sqrt(np.sum(ses ** 2)) / len(strata))


def macro_bootstrap_stderr(strata: Sequence[np.ndarray], iters: int, seed: int) -> float:
    """Bootstrap stderr of the unweighted mean of T task means, resampling documents within each task.

    Each task draws its own resamples from a child of ``numpy.random.SeedSequence(seed)``; resample j of the
    macro mean is the mean over tasks of each task's resample-j mean.

    Args:
        strata: one 1-D array of per-document values per task (each non-empty).
        iters: resamples (>= 2).
        seed: the same seed gives the same answer.

    Returns:
        standard deviation (ddof=1) of the resampled macro means, NaN when iters < 2, there is no task, or a
        task has no document.
    """
    if iters < 2 or not strata or any(np.asarray(x).shape[0] == 0 for x in strata):
        return math.nan
    children = np.random.SeedSequence(seed).spawn(len(strata))
    per_task = np.stack([bootstrap_distribution(x, lambda r: np.mean(r, axis=-1), iters, child)
                         for x, child in zip(strata, children)], axis=1)
    return float(np.std(per_task.mean(axis=1), ddof=1))


def bootstrap_distribution(
    values: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], iters: int,
    seed: int | np.random.SeedSequence,
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
