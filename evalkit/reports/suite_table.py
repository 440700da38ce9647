"""The report's suite table: saved runs among the published rows of the GPT-NeoX-20B paper's suite.

Input is a suite reference (``evalkit/references/*.json`` with ``"kind": "suite"``): ``columns`` (the paper's tasks and
task groups in table order: ``key``, ``label``, ``kind`` = ``"task"`` or ``"group"``) and ``sources``, each with
``label``, ``meta`` (provenance as published), ``notes`` and ``rows`` of ``{"model", "values": {key: [entry, ...]}}``
where an entry is ``{"metric", "value", "stderr" (None when unpublished), "shots", ...}``.

Rules (one place, so the table never mixes unlike numbers silently):

* A column appears when a run measured it: a task in ``results["tasks"]``, a group in ``results["groups"]``.
* A column's metric is the first run's primary metric of that task (``acc`` for a group).
* A run's cell is value ± bootstrap stderr (as in the card table) and the run's shots
  (``results["tasks"][name].get("num_fewshot", 0)``; for a group, its members' shots, or ``mixed``).
* A reference cell shows the source's entry for the column's metric, preferring the run's number of shots, labelled
  with the shots it was published with. When the source has only the other accuracy variant (``acc`` for an
  ``acc_norm`` column, or the reverse) the cell names that metric; any other metric is left out ("—").
* Rows: the runs first, then every published row that has a value in a shown column, grouped by source.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

ACCURACY_VARIANTS = ("acc", "acc_norm")
"""Metrics that may stand beside each other when labelled: both are fractions of documents answered correctly."""


def _shots_label(shots: int | str) -> str:
    return f"{shots}-shot" if isinstance(shots, int) else f"{shots} shots"


def _number(value: float, stderr: float | None) -> str:
    return f"{value:.3f} ± {stderr:.3f}" if stderr is not None else f"{value:.3f}"


def run_shots(results: dict[str, Any], key: str, kind: str) -> int | str:
    """Few-shot examples per document behind a run's column: the task's ``num_fewshot`` (0 when absent), or for a
    group the common value of its members, ``"mixed"`` when they differ."""
    if kind == "task":
        return int(results["tasks"][key].get("num_fewshot", 0))
    members = results["groups"][key].get("tasks", [])
    shots = {int(results["tasks"][m].get("num_fewshot", 0)) for m in members if m in results["tasks"]}
    return shots.pop() if len(shots) == 1 else ("mixed" if shots else 0)


def _measured(results: dict[str, Any], column: dict[str, Any]) -> dict[str, Any] | None:
    """The run's entry (task or group) behind a column, or None."""
    where = "tasks" if column["kind"] == "task" else "groups"
    return results.get(where, {}).get(column["key"])


def column_metric(runs: Sequence[dict[str, Any]], column: dict[str, Any]) -> str:
    """The metric a column shows: the first measuring run's primary metric (``acc`` for a group)."""
    if column["kind"] == "group":
        return "acc"
    entry = next(_measured(r, column) for r in runs if _measured(r, column) is not None)
    return entry["primary_metric"]


def run_cell(results: dict[str, Any], column: dict[str, Any], metric: str) -> str:
    """``value ± bootstrap stderr (k-shot)`` of a run's column, or "—" when the run lacks it."""
    entry = _measured(results, column)
    if entry is None or metric not in entry.get("metrics", {}):
        return "—"
    m = entry["metrics"][metric]
    if m["value"] is None:
        return "—"
    shots = run_shots(results, column["key"], column["kind"])
    return f"{_number(m['value'], m.get('stderr_bootstrap'))} ({_shots_label(shots)})"


def reference_entry(entries: Sequence[dict[str, Any]], metric: str, shots: int | str) -> dict[str, Any] | None:
    """The published entry to show under a column of ``metric``: same metric (the run's shots first), else the other
    accuracy variant, else None."""
    same = [e for e in entries if e["metric"] == metric]
    if not same and metric in ACCURACY_VARIANTS:
        same = [e for e in entries if e["metric"] in ACCURACY_VARIANTS]
    if not same:
        return None
    return next((e for e in same if e["shots"] == shots), same[0])


def reference_cell(entries: Sequence[dict[str, Any]], metric: str, shots: int | str) -> str:
    """``value [± stderr] [other metric] (k-shot)`` for a published row, or "—"."""
    entry = reference_entry(entries, metric, shots)
    if entry is None or entry["value"] is None:
        return "—"
    variant = f" {entry['metric']}" if entry["metric"] != metric else ""
    return f"{_number(entry['value'], entry.get('stderr'))}{variant} ({_shots_label(entry['shots'])})"


def suite_context(
    reference: dict[str, Any], runs: Sequence[dict[str, Any]], labels: Sequence[str],
) -> dict[str, Any] | None:
    """Template context of the suite table and the per-task detail tables, or None when no run measured a column.

    Args:
        reference: a suite reference (see the module docstring).
        runs: results dicts written by ``evalkit run``.
        labels: the name of each run's row.
    """
    columns = [c for c in reference["columns"] if any(_measured(r, c) is not None for r in runs)]
    if not columns:
        return None
    metrics = [column_metric(runs, c) for c in columns]
    first_shots = [next(run_shots(r, c["key"], c["kind"]) for r in runs if _measured(r, c) is not None)
                   for c in columns]
    rows = [{"model": label, "measured": True, "cells": [run_cell(r, c, m) for c, m in zip(columns, metrics)]}
            for r, label in zip(runs, labels)]
    used = []
    for source in reference["sources"]:
        shown = False
        for row in source["rows"]:
            cells = [reference_cell(row["values"].get(c["key"], []), m, k)
                     for c, m, k in zip(columns, metrics, first_shots)]
            if any(cell != "—" for cell in cells):
                rows.append({"model": f"{row['model']} ({source['label']})", "measured": False, "cells": cells})
                shown = True
        if shown:
            used.append({"label": source["label"], "meta": source["meta"], "notes": source["notes"]})
    return {
        "title": reference["title"],
        "headers": [f"{c['label']} {m}" for c, m in zip(columns, metrics)],
        "rows": rows,
        "sources": used,
        "details": [{"label": label, "rows": detail_rows(r, columns, metrics)} for r, label in zip(runs, labels)],
    }


def detail_rows(
    results: dict[str, Any], columns: Sequence[dict[str, Any]], metrics: Sequence[str],
    fmt: Callable[[float | None], str] = lambda v: "—" if v is None else f"{v:.4f}",
) -> list[dict[str, Any]]:
    """One row per task or group behind the run's columns (a group column: the group's own row; its member tasks
    are folded under the run's group block in the report), with the column's metric, shots, n, value and both
    stderrs (4 decimals; the report shows the bootstrap one, as the suite's cells do)."""
    out = []
    for column, metric in zip(columns, metrics):
        if _measured(results, column) is None:
            continue
        name = column["key"]
        is_group = column["kind"] == "group"
        entry = results["groups"][name] if is_group else results["tasks"][name]
        m = entry.get("metrics", {}).get(metric)
        shots = run_shots(results, name, "group" if is_group else "task")
        out.append({
            "task": f"{name} ({entry.get('aggregation')}, {len(entry.get('tasks', []))} tasks)" if is_group else name,
            "column": column["label"], "metric": metric, "shots": shots, "n": entry.get("n", "—"),
            "value": fmt(m["value"] if m else None), "stderr": fmt(m.get("stderr") if m else None),
            "stderr_bootstrap": fmt(m.get("stderr_bootstrap") if m else None),
        })
    return out
