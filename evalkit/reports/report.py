"""Saved results + published reference rows -> a Markdown report (rendered by one jinja2 template) and its figure.

Reports render only from saved results files, so ``evalkit report`` can rebuild any report later.
Measured cells beside published rows show value ± bootstrap stderr; reference cells show what the source published;
the run's own tables show one stderr each, named in the header. The figure (``<report stem>.png`` beside the
report) shows each task's (or aggregated group's) primary accuracy with a Wilson 95% interval and the chance level.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jinja2

from evalkit.reports.figure import MAX_PANELS, IntervalPoint, Panel, draw_intervals
from evalkit.stats.metrics import PER_DOC_KEY, has_closed_form_stderr, per_doc_values
from evalkit.results.files import atomic_write_text, reserve_path
from evalkit.results.summary import subset_counts, subset_is_summarised, subset_rules
from evalkit.stats.significance import wilson_interval
from evalkit.reports.suite_table import suite_context

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def reference_files() -> tuple[dict[str, Any], ...]:
    """Every published-reference file in ``evalkit/references/*.json``, parsed, in file-name order.

    A file's ``kind`` says its shape: absent for a card-style table (name, title, source, stderr, columns keyed by
    task, rows of ``{"model", "values": {task: [value, stderr]}}``), ``"suite"`` for the paper suite's sources
    (:mod:`evalkit.reports.suite_table`).
    """
    return tuple(json.loads(path.read_text(encoding="utf-8"))
                 for path in sorted((_HERE.parent / "references").glob("*.json")))


@lru_cache(maxsize=1)
def reference_tables() -> tuple[dict[str, Any], ...]:
    """Card-style published tables (name, title, source, columns, rows), the model card's first."""
    tables = [t for t in reference_files() if t.get("kind") is None]
    order = {"neox20b_card": 0}
    return tuple(sorted(tables, key=lambda t: order.get(t["name"], 1)))


def suite_references() -> tuple[dict[str, Any], ...]:
    """Suite references (``"kind": "suite"``): the paper's columns and every source's rows with provenance."""
    return tuple(t for t in reference_files() if t.get("kind") == "suite")


LARGE = 1e4
"""From this magnitude on (random-weight perplexities reach 1e6) numbers are written in scientific notation."""


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals (scientific notation with 3 from :data:`LARGE` on), or an em dash for
    missing values."""
    if value is None:
        return "—"
    return f"{value:.3e}" if abs(value) >= LARGE else f"{value:.{digits}f}"


def cell(value: float | None, stderr: float | None, interval: tuple[float, float] | None = None) -> str:
    """``value ± stderr`` (3 decimals, see :func:`fmt`), the value alone when there is no stderr, a dash when
    missing; followed by `` [low, high]`` when an interval (a measured accuracy's Wilson interval) is given."""
    if value is None:
        return "—"
    text = f"{fmt(value)} ± {fmt(stderr)}" if stderr is not None else fmt(value)
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval is not None else text


def wilson_cell(metric: str, value: float, n: int, confidence: float = 0.95) -> str:
    """``[low, high]`` (4 decimals): the Wilson score interval of an accuracy over ``n`` documents, which stays
    informative at 0% and 100% where the closed-form stderr is 0; an em dash for other metrics (perplexity)."""
    if not has_closed_form_stderr(metric) or n < 1:
        return "—"
    low, high = wilson_interval(value, n, confidence)
    return f"[{low:.4f}, {high:.4f}]"


def run_label(results: dict[str, Any]) -> str:
    """How a run is named in tables: the model name and dtype."""
    return f"{results['model']['name']} ({results['model']['dtype']})"


def shots_label(shots: dict[str, int]) -> str:
    """How many few-shot examples a row's cells used: ``"5-shot"`` when every task had the same count, else the
    most common count with the exceptions, e.g. ``"5-shot (piqa, triviaqa: 0-shot)"``.

    Args:
        shots: task name -> few-shot examples per document (results' ``num_fewshot``; 0 when absent).
    """
    if not shots:
        return "0-shot"
    counts = list(shots.values())
    main = max(sorted(set(counts)), key=counts.count)
    others: dict[int, list[str]] = {}
    for task, k in shots.items():
        if k != main:
            others.setdefault(k, []).append(task)
    rest = "; ".join(f"{', '.join(names)}: {k}-shot" for k, names in sorted(others.items()))
    return f"{main}-shot" + (f" ({rest})" if rest else "")


def _measured_row(results: dict[str, Any], columns: dict[str, Any]) -> dict[str, Any] | None:
    values, shots = {}, {}
    for task, column in columns.items():
        entry = results["tasks"].get(task, {})
        metric = entry.get("metrics", {}).get(column["metric"])
        if metric is not None:
            interval = (wilson_interval(metric["value"], metric["n"]) if has_closed_form_stderr(column["metric"])
                        and metric["n"] >= 1 else None)
            values[task] = (metric["value"], metric["stderr_bootstrap"], interval)
            shots[task] = entry.get("num_fewshot", 0)
    if not values:
        return None
    changed = {task: results["tasks"][task] for task in values if results["tasks"][task].get("builtin_prompts_differ")}
    notes = [f"{run_label(results)}, {task}: scored with prompts other than the built-in task's (version "
             f"{entry['version']}, {entry['builtin_prompts_differ']} of {entry['n']} documents differ); the published "
             f"rows used the built-in prompts" for task, entry in changed.items()]
    return {"model": run_label(results), "values": values, "measured": True, "shots": shots_label(shots),
            "changed": set(changed), "notes": notes}


def _sort_key(row: dict[str, Any], first: str) -> float:
    value = row["values"].get(first)
    return value[0] if value and value[0] is not None else float("-inf")


def table_context(table: dict[str, Any], runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A reference table with the measured rows placed among the published ones (by the first column).

    A measured cell of a task that replaced a built-in one with other prompts (results' ``builtin_prompts_differ``)
    is marked ``†`` and explained in the table's ``notes``: the published rows used the built-in prompts.
    """
    columns = table["columns"]
    measured = [r for r in (_measured_row(run, columns) for run in runs) if r is not None]
    if not measured:
        return None
    # the published tables are zero-shot (evalkit/references/*.json titles say so)
    rows = [{"model": r["model"], "values": r["values"], "measured": False, "shots": "0-shot"} for r in table["rows"]]
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
            {"model": row["model"], "measured": row["measured"], "shots": row["shots"],
             "cells": [(cell(*row["values"][t]) + (" †" if t in row.get("changed", ()) else ""))
                       if t in row["values"] else "—" for t in columns]}
            for row in rows
        ],
        "notes": [f"† {note}" for row in measured for note in row["notes"]],
    }


def generation_facts(task: dict[str, Any]) -> str:
    """A generation task's settings as the report's task line ends: ``; generated until ['\\n'], at most 8 new
    tokens, 24 tokens generated, stopped by stop string 2, end of text 1`` (stop strings as ``repr``, the distinct
    token budgets, the stop reasons with their counts); empty for a log-likelihood task."""
    if task.get("output_type") != "generate_until":
        return ""
    names = {"stop": "stop string", "eot": "end of text", "length": "the length limit"}
    reasons = ", ".join(f"{names.get(k, k)} {v}" for k, v in task.get("stop_reasons", {}).items() if v)
    lengths = "/".join(str(n) for n in task.get("max_new_tokens") or [])
    until = "[" + ", ".join(repr(u) for u in task.get("until", [])) + "]"
    return (f"; generated until {until}, at most {lengths} new tokens, {int(task.get('generated_tokens', 0)):,} "
            f"tokens generated, stopped by {reasons or 'nothing'}")


def generation_timing(timing: dict[str, Any]) -> dict[str, Any] | None:
    """The run's generation counters (``timing["generation"]``) with ``tokens_per_s`` (generated tokens over the
    generation seconds, 1 decimal); None when the run generated nothing."""
    gen = timing.get("generation")
    if not gen:
        return None
    seconds = gen.get("generate_s") or 0.0
    rate = f"{gen.get('generated_tokens', 0) / seconds:.1f}" if seconds > 0 else "—"
    return {**gen, "tokens_per_s": rate}


def scoring_rate(timing: dict[str, Any]) -> str:
    """The report's wall-time line's parenthesis on the log-likelihood requests: their count, then the rate over
    the scoring stage only when the model scored some (``456 requests, 12.5 requests/s while scoring``, with
    ``, the 40 cached answers included`` when the cache answered part of them); ``456 requests, all 456 answers
    from the request cache`` when the model scored none; ``no log-likelihood requests`` for a run that only
    generated. Results written before the cache counters were recorded keep the rate as they recorded it.

    Args:
        timing: the results' ``timing`` (``requests``, ``requests_per_s``, optional ``requests_scored`` and
            ``requests_cached``).
    """
    total, rate = timing.get("requests", 0), timing.get("requests_per_s")
    scored, cached = timing.get("requests_scored"), timing.get("requests_cached") or 0
    if not total:
        return "no log-likelihood requests"
    if scored == 0:
        return f"{total} requests, all {total} answers from the request cache"
    if rate is None:
        return f"{total} requests"
    return (f"{total} requests, {rate} requests/s while scoring"
            + (f", the {cached} cached answers included" if cached else ""))


def _metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": m, "value": fmt(v["value"], 4), "stderr": fmt(v["stderr"], 4),
             "wilson": wilson_cell(m, v["value"], v["n"]), "closed_form": has_closed_form_stderr(m),
             "stderr_bootstrap": fmt(v["stderr_bootstrap"], 4), "n": v["n"],
             "direction": "higher" if v["higher_is_better"] else "lower"}
            for m, v in metrics.items()]


def group_blocks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's aggregated groups (:func:`aggregated_groups`) as blocks: each group that no other group of the run
    contains (MMLU) with, after it, the groups whose tasks are a strict part of its own (its categories), and the
    member tasks that the report folds under it (each task in the first block that holds it) with the category each
    falls in: the category group of the run that holds it, else the category the run recorded from the task
    definitions (results' ``category``: an MMLU subject's when only ``mmlu`` was aggregated), else an em dash.

    Returns:
        ``[{"name", "groups": [group names, the block's own first], "members": [task names in run order],
        "category": {task: category name or "—"}}]`` in run order.
    """
    groups = aggregated_groups(results)
    tasks = {name: [t for t in g.get("tasks", ()) if t in results["tasks"]] for name, g in groups.items()}
    inside = {name: [o for o in groups if o != name and set(tasks[name]) < set(tasks[o])] for name in groups}
    blocks, placed = [], set()
    for name in groups:
        if inside[name]:
            continue
        categories = [o for o in groups if name in inside[o]]
        members = [t for t in results["tasks"] if t in set(tasks[name]) - placed]
        placed.update(members)
        category = {t: next((c for c in categories if t in tasks[c]), results["tasks"][t].get("category", "—"))
                    for t in members}
        blocks.append({"name": name, "groups": [name, *categories], "members": members, "category": category})
    return blocks


def run_context(results: dict[str, Any], source: str | None) -> dict[str, Any]:
    """One run's header facts, per-task detail rows and the rows of its aggregated groups (``results["groups"]``,
    absent from older results files).

    Tasks are split by the stderr their metrics have, so each table shows one kind, named in its header: the
    closed form (accuracies, with the Wilson interval) or the bootstrap (perplexities). A task that belongs to an
    aggregated group (:func:`group_blocks`) is not in those tables but folded under its group's block.
    """
    tasks = []
    for name, task in results["tasks"].items():
        tasks.append({"name": name, "version": task["version"], "description": task["description"],
                      "n": task["n"], "n_split": task["n_split"], "expected_n": task["expected_n"],
                      "subset": task["subset"], "requests": task["requests"],
                      "truncated": task["truncated_requests"], "warnings": task["warnings"],
                      "metrics": _metric_rows(task["metrics"]),
                      "shots": f"{task.get('num_fewshot', 0)}-shot",
                      "fewshot_source": task.get("fewshot_source", "none"),
                      "fewshot_split": task.get("fewshot_split"), "generation": generation_facts(task)})
    by_name = {t["name"]: t for t in tasks}
    groups = {
        name: {"name": name, "aggregation": group["aggregation"], "tasks": group["tasks"], "n": group.get("n"),
               "metrics": _metric_rows(group["metrics"])}
        for name, group in aggregated_groups(results).items()
    }
    blocks = [{"name": b["name"], "groups": [groups[g] | {"category": i > 0} for i, g in enumerate(b["groups"])],
               "members": [by_name[t] | {"category": b["category"][t]} for t in b["members"]],
               "bootstrap_members": [by_name[t] for t in b["members"]
                                     if any(not m["closed_form"] for m in by_name[t]["metrics"])]}
              for b in group_blocks(results)]
    folded = {t["name"] for b in blocks for t in b["members"]}
    shown = [t for t in tasks if t["name"] not in folded]
    return {
        "label": run_label(results),
        "source": source,
        "model": results["model"],
        "tokenizer": results["tokenizer"]["name"],
        "created": results["created"],
        "versions": results["versions"],
        "config": results["config"],
        "timing": results["timing"],
        "generation": generation_timing(results["timing"]),
        "scoring_rate": scoring_rate(results["timing"]),
        "tasks": tasks,
        "closed_tasks": [t for t in shown if any(m["closed_form"] for m in t["metrics"])],
        "bootstrap_tasks": [t for t in shown if any(not m["closed_form"] for m in t["metrics"])],
        "shown_tasks": shown,
        "groups": list(groups.values()),
        "blocks": blocks,
        "subset": any(t["subset"] for t in tasks),
        "skipped": list(results.get("skipped_tasks", {})),
        "subset_many": subset_is_summarised(results),
        "subset_counts": subset_counts(results),
        "subset_rule": subset_rules(results),
        "warnings": results.get("warnings", []),
    }


def environment() -> jinja2.Environment:
    """The jinja2 environment over ``evalkit/reports/templates`` (strict: an undefined name is an error)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def _run_point(results: dict[str, Any], task: str, metric: str, label: str, confidence: float) -> IntervalPoint | None:
    entry = results["tasks"].get(task)
    if entry is None or metric not in entry["metrics"]:
        return None
    documents = entry.get("documents", {})
    values = per_doc_values(metric, documents) if PER_DOC_KEY[metric] in documents else None
    if values is not None and values.size:
        value, n = float(values.mean()), len(values)
    else:
        value, n = entry["metrics"][metric]["value"], entry["metrics"][metric]["n"]
    return IntervalPoint(label, value, *wilson_interval(value, n, confidence), measured=True)


def _group_point(results: dict[str, Any], group: str, metric: str, label: str,
                 confidence: float) -> IntervalPoint | None:
    entry = results.get("groups", {}).get(group, {}).get("metrics", {}).get(metric)
    if entry is None or entry.get("n", 0) < 1:
        return None
    return IntervalPoint(label, entry["value"], *wilson_interval(entry["value"], entry["n"], confidence), measured=True)


def aggregated_groups(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's groups with rows of their own (``results["groups"][name]["metrics"]``: MMLU and its categories),
    in run order; groups that only list tasks (a suite such as ``neox20b_card``) are left out."""
    return {name: g for name, g in (results.get("groups") or {}).items() if g.get("metrics")}


def task_chance(entry: dict[str, Any]) -> float | None:
    """A task's chance level (results' ``chance``: the mean over its documents of 1 / number of choices), or None
    for a task without one (perplexity, greedy match, generation) and for results written before it was
    recorded."""
    chance = entry.get("chance")
    return float(chance) if isinstance(chance, (int, float)) and not isinstance(chance, bool) else None


def group_chance(results: dict[str, Any], group: str) -> float | None:
    """A group's chance level as its row aggregates: micro, the documents' mean chance (tasks weighted by their
    documents); macro, the mean of its tasks' chance levels. None when a member has none (or predates the field)."""
    entry = results["groups"][group]
    members = [results["tasks"][t] for t in entry.get("tasks", ()) if t in results["tasks"]]
    chances = [task_chance(m) for m in members]
    if not members or any(c is None for c in chances):
        return None
    if entry.get("aggregation") == "macro":
        return sum(chances) / len(chances)
    sizes = [m["n"] for m in members]
    return sum(c * n for c, n in zip(chances, sizes)) / sum(sizes) if sum(sizes) else None


def _published_points(name: str, metric: str, confidence: float) -> tuple[str | None, list[IntervalPoint]]:
    title, points = None, []
    for table in reference_tables():
        column = table["columns"].get(name)
        if column is None or column["metric"] != metric:
            continue
        title = column["label"]
        for row in table["rows"]:
            value = row["values"].get(name, [None])[0]
            if value is not None:
                points.append(IntervalPoint(row["model"], value, *wilson_interval(value, column["n"], confidence),
                                            measured=False))
    return title, points


def figure_panels(
    runs: Sequence[dict[str, Any]], labels: Sequence[str] | None = None, confidence: float = 0.95
) -> list[Panel]:
    """Every panel the runs could have, groups first: one per aggregated group (its own row: MMLU, then each of its
    categories; :func:`aggregated_groups`) and then one per task that belongs to none (in run order), each with
    the primary accuracy of every run and every published row, Wilson intervals and the chance level
    (:func:`task_chance`, :func:`group_chance`). A group's member tasks get no panel of their own: their rows
    are in the report's tables. :func:`write_report_file` draws at most :data:`MAX_PANELS` of them.

    Published intervals come from the published value and the column's n (rounded values make them
    approximate). Tasks whose primary metric is not a proportion are left out.

    Args:
        runs: results dicts written by ``evalkit run``.
        labels: y-axis label per run (default :func:`run_label`).
        confidence: coverage of the intervals.
    """
    labels = list(labels) if labels is not None else [run_label(r) for r in runs]
    groups: dict[str, str] = {}
    members: set[str] = set()
    for results in runs:
        for name, group in aggregated_groups(results).items():
            metrics = list(group["metrics"])
            groups.setdefault(name, "acc" if "acc" in metrics else metrics[0])
            members.update(group.get("tasks", ()))
    order: dict[str, str] = {}
    for results in runs:
        for name, task in results["tasks"].items():
            if name not in members:
                order.setdefault(name, task["primary_metric"])
    panels = []
    for group, metric in groups.items():
        if not has_closed_form_stderr(metric):
            continue
        points = [p for p in (_group_point(r, group, metric, lab, confidence) for r, lab in zip(runs, labels)) if p]
        title, published = _published_points(group, metric, confidence)
        points = sorted(points + published, key=lambda p: (p.value, p.measured))
        entry = next(r["groups"][group] for r in runs if group in aggregated_groups(r))
        chance = next((c for c in (group_chance(r, group) for r in runs if group in aggregated_groups(r))
                       if c is not None), None)
        count = len(entry.get("tasks", ()))
        panels.append(Panel(f"{title or group} ({metric})\n{entry.get('aggregation')} mean of {count} tasks", metric,
                            tuple(points), chance))
    for task, metric in order.items():
        if not has_closed_form_stderr(metric):
            continue
        points = [p for p in (_run_point(r, task, metric, lab, confidence) for r, lab in zip(runs, labels)) if p]
        title, published = _published_points(task, metric, confidence)
        points = sorted(points + published, key=lambda p: (p.value, p.measured))
        chance = next((c for c in (task_chance(r["tasks"][task]) for r in runs if task in r["tasks"])
                       if c is not None), None)
        panels.append(Panel(f"{title or task} ({metric})", metric, tuple(points), chance))
    return panels


def panel_name(panel: Panel) -> str:
    """The task or group a panel shows, as the report names what the figure left out (its title's first line
    without the metric)."""
    return panel.title.split("\n")[0].rsplit(" (", 1)[0]


def render_report(runs: Sequence[dict[str, Any]], sources: Sequence[str | None] = (), figure: str | None = None,
                  left_out: Sequence[str] = ()) -> str:
    """Markdown for one or more saved runs beside every reference table they share a task with.

    ``figure`` is the PNG's path relative to the report (linked when given); ``left_out`` names the tasks or groups
    the figure had no room for (:data:`MAX_PANELS`), which the report lists under it.
    """
    sources = list(sources) + [None] * (len(runs) - len(sources))
    tables = [t for t in (table_context(ref, runs) for ref in reference_tables()) if t is not None]
    labels = [run_label(r) for r in runs]
    suites = [s for s in (suite_context(ref, runs, labels) for ref in suite_references()) if s is not None]
    context = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tables": tables,
        "suites": suites,
        "runs": [run_context(r, s) for r, s in zip(runs, sources)],
        "figure": figure,
        "left_out": list(left_out),
        "max_panels": MAX_PANELS,
        "figure_groups": any(aggregated_groups(r) for r in runs),
    }
    return environment().get_template("report.md.j2").render(**context)


def write_report(
    runs: Sequence[dict[str, Any]], reports_dir: Path, stem: str, source_paths: Sequence[Path] = (),
    unique: bool = False, draw_figure: bool = True,
) -> Path:
    """Write ``reports_dir/<stem>.md`` and its figure (:func:`write_report_file`).

    With ``unique`` the name is reserved first (``<stem>-N.md`` when another run took it, as results names are),
    so two runs finishing in the same second into one folder keep both reports. Without the figure
    (``draw_figure`` False: ``evalkit check``, ``--no-figure``) matplotlib is never imported, which saves about a
    second of a small run.

    Returns:
        the report's path.

    Raises:
        OSError: the folder or a file cannot be written (a reserved empty report is removed).
    """
    if not unique:
        return write_report_file(runs, Path(reports_dir) / f"{stem}.md", source_paths, draw_figure)
    path = reserve_path(Path(reports_dir), stem, ".md")
    try:
        return write_report_file(runs, path, source_paths, draw_figure)
    except BaseException:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise


def write_report_file(runs: Sequence[dict[str, Any]], path: Path, source_paths: Sequence[Path] = (),
                      draw_figure: bool = True) -> Path:
    """Write the report to ``path`` exactly as named, and, when a task has an accuracy and ``draw_figure``, its
    figure beside it (``path`` with the suffix ``.png``): the first :data:`MAX_PANELS` panels of
    :func:`figure_panels`, the report naming the rest.

    Returns:
        ``path``.
    """
    path = Path(path)
    panels = figure_panels(runs) if draw_figure else []
    figure = None
    if panels:
        figure_path = draw_intervals(panels[:MAX_PANELS], figure_path_for(path), "Accuracy with 95% intervals (Wilson)")
        figure = figure_path.name
    left_out = [panel_name(p) for p in panels[MAX_PANELS:]]
    text = render_report(runs, [str(p) for p in source_paths], figure, left_out)
    atomic_write_text(path, text)
    return path


def figure_path_for(report: Path) -> Path:
    """The figure beside a report: the same name with ``.png`` (``x.md`` -> ``x.png``; ``x.png`` -> ``x.fig.png``
    so the figure never replaces the report)."""
    report = Path(report)
    return report.with_suffix(".fig.png") if report.suffix == ".png" else report.with_suffix(".png")
