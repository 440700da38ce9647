"""The end-of-run summary: one row per (task or group, metric) with value ± stderr, the 95% interval, n and shots.

:func:`summary_rows` reads a results dict (what ``evalkit run`` writes, or :func:`evalkit.evaluate` returns) into
plain rows; :func:`format_summary` lays them out as the fixed-width table the CLI prints, with the columns
lm-evaluation-harness users know (task, shots, metric, value ± stderr) plus n and the interval. The data-frame
view of the same rows is :func:`evalkit.results.frames.metrics_frame`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from evalkit.stats.metrics import is_generation_metric
from evalkit.stats.significance import wilson_interval

CONFIDENCE = 0.95
"""Coverage of the interval shown beside each accuracy."""

COLUMNS = ("task", "shots", "metric", "value", "stderr", "ci95", "n")
"""Printed columns, in order (``ci95``: the Wilson 95% interval of an accuracy, blank otherwise)."""


def is_proportion(metric: str, value: float | None) -> bool:
    """True for accuracies (``acc``, ``acc_norm``, any ``acc_*``) and generation metrics (``exact_match``,
    ``exact_match,<filter>``, ``acc,<filter>``) with a value in [0, 1]: the means of 0/1 per-document values,
    whose interval is Wilson's."""
    accuracy = metric == "acc" or metric.startswith("acc_") or is_generation_metric(metric)
    return accuracy and value is not None and 0.0 <= value <= 1.0


def metric_row(name: str, kind: str, metric: str, entry: Mapping[str, Any], shots: int | None) -> dict[str, Any]:
    """One summary row from a metric entry of the results (``{"value", "stderr", "stderr_bootstrap", "n",
    "higher_is_better"}``).

    Returns:
        ``{"task", "kind" ("task" or "group"), "metric", "value", "stderr" (closed form), "stderr_bootstrap",
        "ci_low", "ci_high" (Wilson 95% for accuracies, else None), "n", "shots", "higher_is_better"}``; values
        in the metric's units (a fraction for accuracies, exp(nats) for perplexity).
    """
    value = entry.get("value")
    n = entry.get("n")
    low = high = None
    if is_proportion(metric, value) and isinstance(n, int) and n >= 1:
        low, high = wilson_interval(float(value), n, CONFIDENCE)
    return {
        "task": name, "kind": kind, "metric": metric, "value": value, "stderr": entry.get("stderr"),
        "stderr_bootstrap": entry.get("stderr_bootstrap"), "ci_low": low, "ci_high": high, "n": n,
        "shots": shots, "higher_is_better": entry.get("higher_is_better"),
    }


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of :func:`metric_row` for every task of a run (in run order), then every group with its own metrics
    (``results["groups"][name]["metrics"]``, present when a group aggregates its tasks).

    Shots are a task's ``num_fewshot`` (0 when the results predate few-shot runs); a group's are its own
    ``num_fewshot`` when recorded, else the common value of its tasks, else None.
    """
    rows: list[dict[str, Any]] = []
    tasks = results.get("tasks", {})
    for name, task in tasks.items():
        shots = int(task.get("num_fewshot", 0) or 0)
        rows.extend(metric_row(name, "task", m, e, shots) for m, e in task.get("metrics", {}).items())
    for name, group in (results.get("groups") or {}).items():
        shots = group.get("num_fewshot")
        if shots is None:
            member_shots = {int(tasks[t].get("num_fewshot", 0) or 0) for t in group.get("tasks", ()) if t in tasks}
            shots = member_shots.pop() if len(member_shots) == 1 else None
        for metric, entry in group.get("metrics", {}).items():
            rows.append(metric_row(name, "group", metric, entry, shots) | {"aggregation": group.get("aggregation")})
    return rows


def format_number(value: float | None, metric: str = "") -> str:
    """A metric value as it reads best: accuracies and small numbers with 4 decimals; perplexities with 2
    decimals below 10,000 and in scientific notation (3 significant digits) from there; ``—`` for none/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value:.2e}"
    if magnitude >= 10 or "perplexity" in metric:
        return f"{value:.2f}"
    return f"{value:.4f}"


def format_signed(value: float | None, metric: str = "") -> str:
    """:func:`format_number` with an explicit sign, for differences (``+0.0333``, ``-4.39e+04``)."""
    text = format_number(value, metric)
    return text if text[0] in "-—i" else "+" + text


def _table_cells(row: Mapping[str, Any]) -> list[str]:
    stderr = row["stderr"] if row["stderr"] is not None else row["stderr_bootstrap"]
    err = format_number(stderr, row["metric"]) if stderr is not None else "—"
    if row["stderr"] is None and stderr is not None:
        err += "*"
    ci = (f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]" if row["ci_low"] is not None else "")
    aggregation = row.get("aggregation")
    name = row["task"] if row["kind"] == "task" else f"{row['task']} ({aggregation + ' ' if aggregation else ''}group)"
    shots = "" if row["shots"] is None else str(row["shots"])
    n = "" if row["n"] is None else f"{row['n']:,}"
    return [name, shots, row["metric"], format_number(row["value"], row["metric"]), "±", err, ci, n]


def folded_rows(results: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of :func:`summary_rows` with every task that belongs to an aggregated group (a group with metrics
    of its own: MMLU and its categories) left out, and one note per such group naming how many member tasks were
    folded: the terminal shows a 57-subject group as its group rows, the report keeps every task. A group whose
    tasks are a strict part of another's (a category: ``mmlu_stem`` inside ``mmlu``) keeps its rows but gets no
    note of its own; the containing group's note counts its categories.

    Returns:
        (rows, notes): the rows in :func:`summary_rows`' order without folded tasks; notes like
        ``"mmlu: 57 member tasks folded (each task's rows are in the report; 4 categories shown as groups)"``.
    """
    groups = {name: group for name, group in (results.get("groups") or {}).items() if group.get("metrics")}
    members = {t for group in groups.values() for t in group.get("tasks", ())}
    rows = [r for r in summary_rows(results) if not (r["kind"] == "task" and r["task"] in members)]
    ran = results.get("tasks", {})
    tasks = {name: {t for t in group.get("tasks", ()) if t in ran} for name, group in groups.items()}
    notes = []
    for name in groups:
        if any(tasks[name] < tasks[other] for other in groups if other != name):
            continue  # a category (mmlu_stem inside mmlu): its rows are shown, its members noted with the group's
        count = len(tasks[name])
        categories = sum(1 for other in groups if other != name and tasks[other] < tasks[name])
        shown = f"; {categories} categor{'ies' if categories != 1 else 'y'} shown as groups" if categories else ""
        notes.append(f"{name}: {count} member task{'s' if count != 1 else ''} folded (each task's rows are in the "
                     f"report{shown})")
    return rows, notes


def format_summary(results: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> str:
    """The summary table, as printed at the end of ``evalkit run``: a Markdown-style table (renders in a
    notebook or an issue) whose columns line up in a terminal.

    ``stderr`` is the closed-form standard error; a metric without one (perplexity) shows its bootstrap
    stderr, marked ``*`` and explained in a line under the table. ``95% CI`` is the Wilson interval of an accuracy (Wilson 1927).

    Args:
        results: a results dict, or rows from :func:`summary_rows`.
    """
    rows = summary_rows(results) if isinstance(results, Mapping) else list(results)
    header = ["task", "shots", "metric", "value", "", "stderr", "95% CI", "n"]
    body = [_table_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {1, 3, 5, 7}

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    lines = [line(header), rule, *(line(cells) for cells in body)]
    if any(cells[5].endswith("*") for cells in body):
        lines.append("* bootstrap stderr (the metric has no closed form)")
    return "\n".join(lines)


SUBSET_LISTED_CHARS = 160
"""Longest list of subset tasks named one by one (``piqa 100 of 1,838; ...``); a longer one (MMLU's 57 tasks) is
summarised as ranges."""


def whole_splits(results: Mapping[str, Any]) -> list[str]:
    """Tasks of a ``--limit`` run that were scored on their whole split (the limit reached or passed their size:
    sciq's 1,000 test documents under ``--limit 1000``), in run order; empty for a run without ``--limit``."""
    if results.get("config", {}).get("limit") is None:
        return []
    return [name for name, task in results.get("tasks", {}).items() if not task.get("subset")]


def subset_listed(results: Mapping[str, Any]) -> str | None:
    """``piqa 100 of 1,838; sciq 1,000 (whole split)``: every task of a subset run in run order, the subset ones
    with their documents of the split's, those scored on their whole split (:func:`whole_splits`) said so; None
    when no task was scored on a subset."""
    tasks = results.get("tasks", {})
    if not any(task.get("subset") for task in tasks.values()):
        return None
    whole = set(whole_splits(results))
    parts = [f"{name} {task['n']:,} of {task['n_split']:,}" if task.get("subset") else
             f"{name} {task['n']:,} (whole split)" for name, task in tasks.items()
             if task.get("subset") or name in whole]
    return "; ".join(parts)


def subset_is_summarised(results: Mapping[str, Any]) -> bool:
    """True when the tasks are too many to name on one line (:data:`SUBSET_LISTED_CHARS`)."""
    listed = subset_listed(results)
    return listed is not None and len(listed) > SUBSET_LISTED_CHARS


def _span(values: list[int]) -> str:
    return f"{min(values):,}" if min(values) == max(values) else f"{min(values):,}-{max(values):,}"


def subset_counts(results: Mapping[str, Any]) -> str | None:
    """The documents scored per task of a subset run, short enough for one line: the tasks by name
    (:func:`subset_listed`) when that fits in :data:`SUBSET_LISTED_CHARS`, else ranges (``5 of 100-1,534 documents
    in each of 57 tasks``; ``5-8 of ...`` when the counts differ), followed by the tasks scored on their whole split
    (``; 17 tasks on their whole split (100 documents)``); None when every task ran on its whole split."""
    subset = [(name, task) for name, task in results.get("tasks", {}).items() if task.get("subset")]
    if not subset:
        return None
    if not subset_is_summarised(results):
        return subset_listed(results)
    tasks = results["tasks"]
    whole = whole_splits(results)
    text = (f"{_span([t['n'] for _, t in subset])} of {_span([t['n_split'] for _, t in subset])} documents in each "
            f"of {len(subset)} tasks")
    if whole:
        text += (f"; {len(whole)} task{'s' if len(whole) != 1 else ''} on {'their' if len(whole) != 1 else 'its'} "
                 f"whole split ({_span([tasks[name]['n'] for name in whole])} documents)")
    return text


def subset_rules(results: Mapping[str, Any]) -> str:
    """``", rule v2"``: the subset draw's rule (results' ``subset_rule`` of the subset tasks; one rule per run), or
    an empty string for results written before the rule was recorded."""
    rules = sorted({t["subset_rule"] for t in results.get("tasks", {}).values()
                    if t.get("subset") and t.get("subset_rule") is not None})
    return f", rule v{'/v'.join(str(r) for r in rules)}" if rules else ""


def subset_banner(results: Mapping[str, Any]) -> str | None:
    """``subset (--limit N, seed S, rule v2): piqa 100 of 1,838; sciq 1,000 (whole split)``: the run's subset with
    the draw's rule (:func:`subset_rules`) and every task's documents (:func:`subset_counts`: too many for one line
    are ranges, ``subset (--limit 5, seed 1234, rule v2): 5 of 100-1,534 documents in each of 57 tasks``), or None
    when every task ran on its whole split."""
    counts = subset_counts(results)
    if counts is None:
        return None
    config = results.get("config", {})
    return f"subset (--limit {config.get('limit')}, seed {config.get('seed')}{subset_rules(results)}): {counts}"
