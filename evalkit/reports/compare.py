"""``evalkit compare``: honest differences between runs, and between a run and published rows.

* Runs over the same documents are compared *paired*: per task and metric, the difference (second run minus
  first) with a paired bootstrap percentile interval, McNemar's exact test for 0/1 metrics and the paired
  bootstrap p-value for perplexity, Holm-corrected across the rows of the table. An aggregated micro group
  (MMLU, its categories) present in both runs gets a row of its own, tested the same way over its member tasks'
  pooled documents; a group that cannot be (a macro mean, other members, one run only) is named in a note.
  A pilot run whose documents all lie among a larger run's is compared on those documents (nested subsets);
  other different documents are refused (:mod:`evalkit.reports.paired`).
* Published rows have no per-document results, so a run is compared with them *unpaired*: the difference,
  a two-sample z-test from the two stderrs (a published stderr, or sqrt(p(1-p)/(n-1)) from the published
  value and the column's n), Holm-corrected within each published model's row, and whether the published
  value lies in the run's 95% interval (Wilson for accuracies, bootstrap percentile for perplexity).

See :mod:`evalkit.stats.significance` for the tests and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from evalkit.reports.figure import DeltaPanel, DeltaPoint, draw_deltas
from evalkit.stats.metrics import PER_DOC_KEYS, has_closed_form_stderr, per_doc_values
from evalkit.reports.report import environment, figure_path_for, reference_tables, run_label, wilson_cell
from evalkit.results.files import atomic_write_text, default_reports_dir, load_results
from evalkit.stats.significance import (
    holm,
    metric_interval,
    proportion_stderr,
    unpaired_z_test,
)
from evalkit.reports.paired import (  # noqa: F401 - check_same_documents, generation_notes: imported from here
    PairedRow,
    PairedTable,
    check_same_documents,
    generation_notes,
    paired_table,
)
from evalkit.types import EvalkitError


@dataclass(frozen=True)
class ReferenceRow:
    """A run against one published cell (Δ = run - published; z, p None where no stderr is known)."""

    reference: str
    task: str
    metric: str
    published: float
    published_stderr: float | None
    stderr_source: str
    value: float
    low: float
    high: float
    delta: float
    z: float | None
    p_value: float | None
    p_holm: float | None
    significant: bool
    in_interval: bool


@dataclass(frozen=True)
class ReferenceTable:
    """A run against every row of one published table."""

    run_label: str
    title: str
    source: str
    subset: bool
    rows: tuple[ReferenceRow, ...]
    fewshot: tuple[str, ...] = ()
    """Tasks of ``rows`` the run scored with few-shot examples (the published tables are zero-shot)."""
    changed_prompts: tuple[str, ...] = ()
    """Tasks of ``rows`` the run scored with a replacement of the built-in task whose prompts differ (results'
    ``builtin_prompts_differ``); the published rows used the built-in prompts."""


@dataclass(frozen=True)
class CompareOutput:
    """What ``evalkit compare`` wrote and computed."""

    report_path: Path
    figure_path: Path | None
    paired: tuple[PairedTable, ...]
    references: tuple[ReferenceTable, ...]


def _published_cells(table: dict[str, Any]) -> list[tuple[str, str, str, float, float | None]]:
    """(reference model, task, metric, value, stderr or None) for every published cell, extras included."""
    cells = []
    for row in table["rows"]:
        for task, column in table["columns"].items():
            value, stderr = (row["values"].get(task) or [None, None])[:2]
            if value is not None:
                cells.append((row["model"], task, column["metric"], value, stderr))
        for key, value in row.get("extra", {}).items():
            task, metric = key.split(".", 1)
            cells.append((row["model"], task, metric, value, None))
    return cells


def reference_table(
    results: dict[str, Any], label: str, table: dict[str, Any], iters: int = 10000, seed: int = 1234,
    alpha: float = 0.05, confidence: float = 0.95,
) -> ReferenceTable | None:
    """Unpaired comparison of a run with every cell of a published table it shares a task and metric with.

    Returns:
        None when the run has no task and metric of the table.
    """
    rows: list[dict[str, Any]] = []
    intervals: dict[tuple[str, str], tuple[float, float]] = {}
    for reference, task, metric, published, published_se in _published_cells(table):
        entry = results["tasks"].get(task)
        if entry is None or metric not in entry["metrics"]:
            continue
        measured = entry["metrics"][metric]
        if (task, metric) not in intervals:
            documents = entry.get("documents", {})
            values = per_doc_values(metric, documents) if all(k in documents for k in PER_DOC_KEYS[metric]) else []
            intervals[(task, metric)] = metric_interval(metric, values, iters, seed, confidence)
        low, high = intervals[(task, metric)]
        source, z = "published", None
        if published_se is None and has_closed_form_stderr(metric):
            published_se, source = proportion_stderr(published, table["columns"][task]["n"]), "from value and n"
        elif published_se is None:
            source = "not published"
        if published_se is not None and measured["stderr"] is not None:
            z = unpaired_z_test(published, published_se, measured["value"], measured["stderr"])
        rows.append({
            "reference": reference, "task": task, "metric": metric, "published": published,
            "published_stderr": published_se, "stderr_source": source, "value": measured["value"], "low": low,
            "high": high, "delta": measured["value"] - published, "z": z.z if z else None,
            "p_value": z.p_value if z else None, "in_interval": low <= published <= high,
        })
    if not rows:
        return None
    for reference in dict.fromkeys(r["reference"] for r in rows):
        family = [r for r in rows if r["reference"] == reference]
        for r, p in zip(family, holm([r["p_value"] for r in family])):
            r["p_holm"], r["significant"] = p, p is not None and p < alpha
    subset = any(results["tasks"][r["task"]]["subset"] for r in rows)
    fewshot = tuple(dict.fromkeys(r["task"] for r in rows if results["tasks"][r["task"]].get("num_fewshot", 0)))
    changed = tuple(dict.fromkeys(r["task"] for r in rows
                                  if results["tasks"][r["task"]].get("builtin_prompts_differ")))
    return ReferenceTable(label, table["title"], table["source"], subset, tuple(ReferenceRow(**r) for r in rows),
                          fewshot, changed)


_TWO_DECIMALS = ("perplexity", "word_perplexity")
"""Metrics whose values run to tens or thousands: shown with 2 decimals, the others with 4."""


def _signed(value: float, metric: str) -> str:
    return f"{value:+.2f}" if metric in _TWO_DECIMALS else f"{value:+.4f}"


def _plain(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric in _TWO_DECIMALS else f"{value:.4f}"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if value >= 1e-300 else "< 1e-300"


def render_comparison(paired: Sequence[PairedTable], references: Sequence[ReferenceTable], figure: str | None,
                      iters: int, seed: int, alpha: float) -> str:
    """The Markdown of a comparison (template ``compare.md.j2``); numbers formatted here, layout there."""
    def paired_cells(r: PairedRow) -> list[str]:
        discordant = f"{r.only_a} / {r.only_b}" if r.only_a is not None else "—"
        wilson = (f"{wilson_cell(r.metric, r.value_a, r.n)} / {wilson_cell(r.metric, r.value_b, r.n)}"
                  if has_closed_form_stderr(r.metric) else "—")
        return [r.name, r.metric, str(r.n), _plain(r.value_a, r.metric), _plain(r.value_b, r.metric),
                _signed(r.delta, r.metric), f"[{_signed(r.low, r.metric)}, {_signed(r.high, r.metric)}]", r.test,
                discordant, _p(r.p_value), _p(r.p_holm), "**yes**" if r.significant else "no", wilson]

    def reference_cells(r: ReferenceRow) -> list[str]:
        se = "—" if r.published_stderr is None else f"{r.published_stderr:.4f} ({r.stderr_source})"
        return [r.reference, r.task, r.metric, _plain(r.published, r.metric), se,
                f"{_plain(r.value, r.metric)} [{_plain(r.low, r.metric)}, {_plain(r.high, r.metric)}]",
                _signed(r.delta, r.metric), "—" if r.z is None else f"{r.z:+.2f}", _p(r.p_value), _p(r.p_holm),
                "—" if r.p_value is None else "**yes**" if r.significant else "no",
                "yes" if r.in_interval else "**no**"]

    context = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "iters": iters, "seed": seed, "alpha": alpha, "figure": figure,
        "paired": [{"label_a": t.label_a, "label_b": t.label_b, "path_a": t.path_a, "path_b": t.path_b,
                    "notes": t.notes, "rows": [paired_cells(r) for r in t.rows]} for t in paired],
        "references": [{"run": t.run_label, "title": t.title, "source": t.source, "subset": t.subset,
                        "fewshot": ", ".join(t.fewshot),
                        "changed_prompts": ", ".join(t.changed_prompts),
                        "rows": [reference_cells(r) for r in t.rows]} for t in references],
    }
    return environment().get_template("compare.md.j2").render(**context)


def delta_panels(paired: Sequence[PairedTable]) -> list[DeltaPanel]:
    """The figure's panels: accuracies (acc, acc_norm and other 0/1 means) in one, each other metric in its own;
    a row per (comparison, task, metric), labelled ``task metric`` (``B: task metric`` with several comparisons)."""
    by_unit: dict[str, list[DeltaPoint]] = {}
    for table in paired:
        prefix = f"{table.label_b.split(':')[0]}: " if len(paired) > 1 else ""
        for r in table.rows:
            unit = "accuracy" if has_closed_form_stderr(r.metric) else r.metric
            by_unit.setdefault(unit, []).append(
                DeltaPoint(f"{prefix}{r.name} {r.metric}", r.delta, r.low, r.high, r.significant))
    titles = {"accuracy": "accuracy (fraction of documents)"}
    return [DeltaPanel(titles.get(unit, unit), unit, tuple(reversed(points))) for unit, points in by_unit.items()]


def fold_group_rows(rows: Sequence[PairedRow], results: dict[str, Any]) -> tuple[list[PairedRow], list[str]]:
    """The paired rows to print on a terminal: rows of tasks that belong to an aggregated group of ``results`` (run
    A: MMLU's 57 subjects) are folded into one line per outermost group, unless significant (a significant row is
    never hidden). Presentation only: the tests, their Holm correction and the report's rows are unchanged.

    Returns:
        (rows, notes): the rows left to print, in order, and per folded group a line such as ``"mmlu: 114 rows of
        57 member tasks folded, none significant (smallest Holm p 1; every row is in the report)"``.
    """
    groups = {name: {t for t in g.get("tasks", ()) if t in results.get("tasks", {})}
              for name, g in (results.get("groups") or {}).items() if g.get("metrics")}
    outer = [name for name in groups if not any(groups[name] < groups[o] for o in groups if o != name)]
    home = {}
    for name in outer:
        for task in groups[name]:
            home.setdefault(task, name)
    shown = [r for r in rows if r.task not in home or r.significant]
    notes = []
    for name in outer:
        mine = [r for r in rows if home.get(r.task) == name]
        if not mine:
            continue
        significant = sum(r.significant for r in mine)
        tasks = len({r.task for r in mine})
        said = "none significant" if not significant else f"the {significant} significant shown above"
        folded = f"{len(mine)}" if not significant else f"{len(mine) - significant} of {len(mine)}"
        notes.append(f"{name}: {folded} rows of {tasks} member tasks folded, {said} (smallest Holm p "
                     f"{min(r.p_holm for r in mine):.3g}; every row is in the report)")
    return shown, notes


def same_run_note(path_a: str, path_b: str, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """A note when B is A (the same file, or a copy of the same run): every difference is 0 by construction."""
    if Path(path_a).resolve() == Path(path_b).resolve():
        return f"A and B are the same file ({path_a}): every Δ is 0 and nothing can be significant"
    if a == b:
        return f"A and B hold the same run ({path_b} is a copy of {path_a}): every Δ is 0 and nothing can be significant"
    return None


def default_output(paths: Sequence[str]) -> Path:
    """``<stem A>_vs_<stem B>.md`` in A's default reports folder (:func:`evalkit.results.files.default_reports_dir`:
    ``<root>/reports`` for ``<root>/results/<model>/<stem>.json`` files)."""
    return default_reports_dir(paths[0]) / f"{'_vs_'.join(Path(p).stem for p in paths[:2])}.md"


def check_test_options(iters: int, seed: int, alpha: float) -> None:
    """Refuse bootstrap and test options that would crash or give meaningless verdicts.

    Raises:
        EvalkitError: ``iters`` < 2 (no paired bootstrap), a seed outside 0 .. 2**64 - 1 (numpy's generators take no
            negative seed), or ``alpha`` outside (0, 1) (every row, or none, would be significant).
    """
    if iters < 2:
        raise EvalkitError(f"--bootstrap-iters must be at least 2 for a paired bootstrap, got {iters}")
    if not 0 <= seed < 2 ** 64:
        raise EvalkitError(f"--seed must be between 0 and 2**64 - 1, got {seed}")
    if not 0.0 < alpha < 1.0:
        raise EvalkitError(f"--alpha must be between 0 and 1 (exclusive), got {alpha}")


def compare(
    paths: Sequence[str], output: str | Path | None = None, iters: int = 10000, seed: int = 1234,
    alpha: float = 0.05, with_references: bool = True,
) -> CompareOutput:
    """Compare every run with the first (paired) and each run with the published tables (unpaired).

    Writes the Markdown report and, beside it, a PNG of each paired difference Δ = B − A with its 95% interval
    (:func:`delta_panels`). Comparing a file with itself (or a copy) says so in a note.

    Args:
        paths: two or more results JSON files; the first is the one the others are compared with.
        output: the report's path (default :func:`default_output`); the figure is the same path with ``.png``.
        iters: bootstrap resamples (>= 2); seed: their seed; alpha: family-wise significance level.
        with_references: also compare each run with the published tables.

    Raises:
        EvalkitError: fewer than two files, bad options (:func:`check_test_options`), unreadable results, no common
            task, or different documents.
    """
    if len(paths) < 2:
        raise EvalkitError("compare needs at least two results files")
    check_test_options(iters, seed, alpha)
    runs = [load_results(p) for p in paths]
    labels = [f"{chr(ord('A') + i) if i < 26 else i}: {run_label(r)}" for i, r in enumerate(runs)]
    paired = []
    for run, label, path in zip(runs[1:], labels[1:], paths[1:]):
        table = paired_table(runs[0], run, (labels[0], label), (str(paths[0]), str(path)), iters, seed, alpha)
        note = same_run_note(str(paths[0]), str(path), runs[0], run)
        paired.append(replace(table, notes=(note, *table.notes)) if note else table)
    references: list[ReferenceTable] = []
    if with_references:
        for run, label in zip(runs, labels):
            for table in reference_tables():
                found = reference_table(run, label, table, iters, seed, alpha)
                if found is not None:
                    references.append(found)
    path = Path(output) if output else default_output([str(p) for p in paths])
    panels = delta_panels(paired)
    figure_path = None
    if panels:
        figure_path = draw_deltas(panels, figure_path_for(path), f"Paired differences Δ = B − A (A: {run_label(runs[0])})")
    text = render_comparison(paired, references, figure_path.name if figure_path else None, iters, seed, alpha)
    atomic_write_text(path, text)
    return CompareOutput(path, figure_path, tuple(paired), tuple(references))
