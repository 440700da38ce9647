"""A group's own row: micro or macro aggregation of its tasks' per-document values.

* ``micro``: the mean over all documents of the group's tasks pooled together (each document weighs the same,
  so a large task weighs more); closed-form stderr and bootstrap over those pooled documents.
* ``macro``: the unweighted mean of the task means (each task weighs the same); stderr sqrt(Σ se_i²) / T with
  the tasks taken as independent (no closed form is claimed beyond that), bootstrap by resampling documents
  within each task (:func:`evalkit.stats.stderr.macro_bootstrap_stderr`).

A group aggregates the metrics all its members report that are means of per-document values
(:func:`evalkit.stats.metrics.group_metrics`: acc, acc_norm; never perplexities).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from evalkit.stats.metrics import HIGHER_IS_BETTER, finite_or_none, group_metrics, per_doc_values
from evalkit.stats.stderr import bootstrap_stderr, macro_bootstrap_stderr, macro_mean_stderr, mean_stderr
from evalkit.types import TaskGroup

AGGREGATIONS = ("micro", "macro")


def mixed_shots_warning(group: TaskGroup, members: Sequence[str], shots: Mapping[str, int]) -> str | None:
    """A warning when a group's members run at different few-shot counts (its row would pool documents scored
    after different prompts), else None.

    Args:
        group: the group.
        members: canonical names of its tasks.
        shots: task name -> few-shot examples per document for this run.
    """
    counts = {m: shots[m] for m in members if m in shots}
    if len(set(counts.values())) < 2:
        return None
    listed = ", ".join(f"{m} {k}-shot" for m, k in counts.items())
    return (f"group {group.name} pools tasks scored at different few-shot counts ({listed}): its row mixes "
            f"prompts; give the group one count (--tasks {group.name}:K)")


def aggregate_group(
    group: TaskGroup, members: Sequence[str], task_results: Mapping[str, Mapping[str, Any]], iters: int, seed: int
) -> dict[str, Any]:
    """A group's entry in the results JSON, from its members' entries.

    Args:
        group: the group (``aggregation`` "micro" or "macro").
        members: canonical names of its tasks (aliases resolved), each a key of ``task_results``.
        task_results: task name -> its results entry (``metrics`` and ``documents`` as :mod:`evalkit.run.pipeline`
            writes them).
        iters: bootstrap resamples (0: no bootstrap stderr).
        seed: bootstrap seed (metric k uses ``seed + k``).

    Returns:
        ``{"aggregation", "tasks", "n", "metrics": {metric: {value, stderr, stderr_bootstrap, n,
        higher_is_better}}}``, values in the metric's units (fractions for accuracies), n = documents pooled.

    Raises:
        ValueError: an aggregation other than "micro" or "macro", or a member missing from ``task_results``.
    """
    if group.aggregation not in AGGREGATIONS:
        raise ValueError(f"group '{group.name}' has aggregation {group.aggregation!r}; expected one of "
                         f"{AGGREGATIONS}")
    missing = [m for m in members if m not in task_results]
    if missing:
        raise ValueError(f"group '{group.name}': tasks {', '.join(missing)} have no results")
    names = group_metrics([list(task_results[m]["metrics"]) for m in members])
    n_docs = sum(len(task_results[m]["documents"]["doc_id"]) for m in members)
    metrics = {}
    for offset, metric in enumerate(names):
        strata = [per_doc_values(metric, task_results[m]["documents"]) for m in members]
        if group.aggregation == "micro":
            pooled = np.concatenate(strata)
            value, closed = float(np.mean(pooled)), mean_stderr(pooled)
            boot = bootstrap_stderr(pooled, lambda r: np.mean(r, axis=-1), iters, seed + offset) if iters else None
        else:
            value = float(np.mean([np.mean(x) for x in strata]))
            closed = macro_mean_stderr(strata)
            boot = macro_bootstrap_stderr(strata, iters, seed + offset) if iters else None
        metrics[metric] = {
            "value": value,
            "stderr": finite_or_none(closed),
            "stderr_bootstrap": finite_or_none(boot) if boot is not None else None,
            "n": n_docs,
            "higher_is_better": HIGHER_IS_BETTER[metric],
        }
    return {"aggregation": group.aggregation, "tasks": list(members), "n": n_docs, "metrics": metrics}
