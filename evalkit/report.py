"""Saved results + published reference rows -> a Markdown report (rendered by one jinja2 template) and its figure.

Reports render only from saved results files, so ``evalkit report`` can rebuild any report later.
Measured cells show value ± bootstrap stderr; reference cells show what the source published. The figure
(``<report stem>.png`` beside the report) shows each task's primary accuracy with a Wilson 95% interval.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jinja2

from evalkit.figure import IntervalPoint, Panel, draw_intervals
from evalkit.metrics import PER_DOC_KEY, has_closed_form_stderr
from evalkit.results_io import atomic_write_text
from evalkit.significance import wilson_interval

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def reference_tables() -> tuple[dict[str, Any], ...]:
    """Published tables from ``evalkit/references/*.json`` (name, title, source, columns, rows)."""
    tables = []
    for path in sorted((_HERE / "references").glob("*.json")):
        tables.append(json.loads(path.read_text(encoding="utf-8")))
    order = {"neox20b_card": 0}
    return tuple(sorted(tables, key=lambda t: order.get(t["name"], 1)))


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an em dash for missing values."""
    return "—" if value is None else f"{value:.{digits}f}"


def cell(value: float | None, stderr: float | None) -> str:
    """``value ± stderr`` (3 decimals), the value alone when there is no stderr, a dash when missing."""
    if value is None:
        return "—"
    return f"{value:.3f} ± {stderr:.3f}" if stderr is not None else f"{value:.3f}"


def run_label(results: dict[str, Any]) -> str:
    """How a run is named in tables: the model name and dtype."""
    return f"{results['model']['name']} ({results['model']['dtype']})"


def _measured_row(results: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any] | None:
    values = {}
    for task, column in columns.items():
        metric = results["tasks"].get(task, {}).get("metrics", {}).get(column["metric"])
        if metric is not None:
            values[task] = (metric["value"], metric["stderr_bootstrap"])
    if not values:
        return None
    return {"model": run_label(results), "values": values, "measured": True}


def _sort_key(row: dict[str, Any], first: str) -> float:
    value = row["values"].get(first)
    return value[0] if value and value[0] is not None else float("-inf")


def table_context(table: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A reference table with the measured rows placed among the published ones (by the first column)."""
    columns = table["columns"]
    measured = [r for r in (_measured_row(run, columns) for run in runs) if r is not None]
    if not measured:
        return None
    rows = [{"model": r["model"], "values": r["values"], "measured": False} for r in table["rows"]]
    first = next(iter(columns))
    for row in measured:
        at = next((i for i, ref in enumerate(rows) if not ref["measured"]
                   and _sort_key(ref, first) > _sort_key(row, first)), len(rows))
        rows.insert(at, row)
    return {
        "title": table["title"],
        "source": table["source"],
        "stderr": table["stderr"],
        "headers": [c["label"] for c in columns.values()],
        "variants": [
            {"label": c["label"], "metric": c["metric"], "split": c["split"], "n": c["n"],
             "description": next((run["tasks"][t]["description"] for run in runs if t in run["tasks"]), "")}
            for t, c in columns.items()
        ],
        "rows": [
            {"model": row["model"], "measured": row["measured"],
             "cells": [cell(*row["values"][t]) if t in row["values"] else "—" for t in columns]}
            for row in rows
        ],
    }


def run_context(results: dict[str, Any], source: str | None) -> dict[str, Any]:
    """One run's header facts and per-task detail rows."""
    tasks = []
    for name, task in results["tasks"].items():
        metrics = [
            {"name": m, "value": fmt(v["value"], 4), "stderr": fmt(v["stderr"], 4),
             "stderr_bootstrap": fmt(v["stderr_bootstrap"], 4), "n": v["n"],
             "direction": "higher" if v["higher_is_better"] else "lower"}
            for m, v in task["metrics"].items()
        ]
        tasks.append({"name": name, "version": task["version"], "description": task["description"],
                      "n": task["n"], "n_split": task["n_split"], "expected_n": task["expected_n"],
                      "subset": task["subset"], "requests": task["requests"],
                      "truncated": task["truncated_requests"], "warnings": task["warnings"], "metrics": metrics})
    return {
        "label": run_label(results),
        "source": source,
        "model": results["model"],
        "tokenizer": results["tokenizer"]["name"],
        "created": results["created"],
        "versions": results["versions"],
        "config": results["config"],
        "timing": results["timing"],
        "tasks": tasks,
        "subset": any(t["subset"] for t in tasks),
    }


def environment() -> jinja2.Environment:
    """The jinja2 environment over ``evalkit/templates`` (strict: an undefined name is an error)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def _run_point(results: dict[str, Any], task: str, metric: str, label: str, confidence: float) -> IntervalPoint | None:
    entry = results["tasks"].get(task)
    if entry is None or metric not in entry["metrics"]:
        return None
    values = entry.get("documents", {}).get(PER_DOC_KEY[metric])
    if values:
        value, n = sum(values) / len(values), len(values)
    else:
        value, n = entry["metrics"][metric]["value"], entry["metrics"][metric]["n"]
    return IntervalPoint(label, value, *wilson_interval(value, n, confidence), measured=True)


def figure_panels(
    runs: Sequence[dict[str, Any]], labels: Sequence[str] | None = None, confidence: float = 0.95
) -> list[Panel]:
    """Per task (in run order), the primary accuracy of every run and every published row, with Wilson intervals.

    Published intervals come from the published value and the column's n (rounded values make them
    approximate). Tasks whose primary metric is not a proportion are left out.

    Args:
        runs: results dicts written by ``evalkit run``.
        labels: y-axis label per run (default :func:`run_label`).
        confidence: coverage of the intervals.
    """
    labels = list(labels) if labels is not None else [run_label(r) for r in runs]
    order: dict[str, str] = {}
    for results in runs:
        for name, task in results["tasks"].items():
            order.setdefault(name, task["primary_metric"])
    panels = []
    for task, metric in order.items():
        if not has_closed_form_stderr(metric):
            continue
        points = [p for p in (_run_point(r, task, metric, lab, confidence) for r, lab in zip(runs, labels)) if p]
        title = task
        for table in reference_tables():
            column = table["columns"].get(task)
            if column is None or column["metric"] != metric:
                continue
            title = column["label"]
            for row in table["rows"]:
                value = row["values"].get(task, [None])[0]
                if value is not None:
                    points.append(IntervalPoint(row["model"], value, *wilson_interval(value, column["n"], confidence),
                                                measured=False))
        points.sort(key=lambda p: (p.value, p.measured))
        panels.append(Panel(f"{title} ({metric})", metric, tuple(points)))
    return panels


def render_report(runs: Sequence[dict[str, Any]], sources: Sequence[str | None] = (), figure: str | None = None) -> str:
    """Markdown for one or more saved runs beside every reference table they share a task with.

    ``figure`` is the PNG's path relative to the report (linked when given).
    """
    sources = list(sources) + [None] * (len(runs) - len(sources))
    tables = [t for t in (table_context(ref, runs) for ref in reference_tables()) if t is not None]
    context = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tables": tables,
        "runs": [run_context(r, s) for r, s in zip(runs, sources)],
        "figure": figure,
    }
    return environment().get_template("report.md.j2").render(**context)


def write_report(
    runs: Sequence[dict[str, Any]], reports_dir: Path, stem: str, source_paths: Sequence[Path] = (),
    draw_figure: bool = True,
) -> Path:
    """Draw ``reports_dir/<stem>.png`` (when a task has an accuracy and ``draw_figure``), then write
    ``reports_dir/<stem>.md``. Without the figure (``evalkit check``, ``--no-figure``) matplotlib is never
    imported, which saves about a second of a small run.

    Returns:
        the report's path.
    """
    path = Path(reports_dir) / f"{stem}.md"
    panels = figure_panels(runs) if draw_figure else []
    figure = None
    if panels:
        figure_path = draw_intervals(panels, path.with_suffix(".png"), "Accuracy with 95% intervals (Wilson)")
        figure = figure_path.name
    text = render_report(runs, [str(p) for p in source_paths], figure)
    atomic_write_text(path, text)
    return path
