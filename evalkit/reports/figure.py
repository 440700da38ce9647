"""The report's figure: per task, each model's score with its 95% interval, measured runs highlighted.

matplotlib is imported only inside :func:`draw_intervals` and :func:`draw_deltas` (through its object-oriented ``Figure`` API with the
Agg canvas, never pyplot), so importing this module costs nothing and no display is needed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from evalkit.import_gc import paused_collection
from evalkit.results.files import atomic_write_bytes

MEASURED_COLOUR = "tab:red"
PUBLISHED_COLOUR = "0.45"


@dataclass(frozen=True)
class IntervalPoint:
    """One model's score on one task.

    Attributes:
        label: the model's name as shown on the y axis.
        value: the score (a fraction for accuracies).
        low, high: the 95% interval around ``value``.
        measured: True for runs scored here (highlighted), False for published rows.
    """

    label: str
    value: float
    low: float
    high: float
    measured: bool


@dataclass(frozen=True)
class Panel:
    """One task's (or one aggregated group's) panel: a title, the metric on the x axis, its points (drawn bottom
    to top) and the chance level (a uniform guess's accuracy, drawn as a dotted line; None: no chance level)."""

    title: str
    metric: str
    points: tuple[IntervalPoint, ...]
    chance: float | None = None


MAX_PANELS = 12
"""Panels drawn at most in one figure; the report names the ones left out."""

TITLE_WIDTH = 34
"""Characters of a panel title's line (a 5.2-inch column at font size 10 beside its y labels); longer titles wrap
onto more lines instead of running past the figure's edge."""


MAX_LABEL = 40
"""Characters of a y-axis label; longer ones (local model paths) keep their end."""


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else "…" + text[-(MAX_LABEL - 1):]


def _x_range(points: Sequence[IntervalPoint]) -> tuple[float, float]:
    low = min(p.low for p in points)
    high = max(p.high for p in points)
    pad = 0.05 * (high - low) + 0.01
    return max(-0.02, low - pad), min(1.02, high + pad)


def wrap_title(text: str, width: int = TITLE_WIDTH) -> str:
    """A panel title on lines of at most ``width`` characters (broken at spaces, underscores or hyphens, a word
    longer than a line cut; line breaks in ``text`` kept), so a long task name is wrapped instead of clipped."""
    if "\n" in text:
        return "\n".join(wrap_title(part, width) for part in text.split("\n"))
    lines: list[str] = []
    line = ""
    for word in text.replace("_", "_\u200b").replace("-", "-\u200b").replace(" ", " \u200b").split("\u200b"):
        while len(word) > width:
            lines, line, word = lines + ([line] if line else []) + [word[:width]], "", word[width:]
        if len(line) + len(word.rstrip()) > width and line:
            lines.append(line.rstrip())
            line = ""
        line += word
    return "\n".join(lines + ([line.rstrip()] if line.strip() else []))


def _chance_x_range(panel: Panel) -> tuple[float, float]:
    low, high = _x_range(panel.points)
    if panel.chance is not None:
        low, high = min(low, panel.chance - 0.02), max(high, panel.chance + 0.02)
    return max(-0.02, low), min(1.02, high)


def draw_intervals(panels: Sequence[Panel], path: Path, title: str, dpi: int = 100) -> Path:
    """Draw one horizontal interval plot per panel into a PNG file (written atomically); a panel's chance level is
    a dotted vertical line labelled ``chance``; titles wrap (:func:`wrap_title`). Callers cap the number of panels
    (:data:`MAX_PANELS`, :func:`evalkit.reports.report.figure_panels`).

    Args:
        panels: at least one panel with at least one point each; accuracies in [0, 1].
        path: the PNG to write (parent folders are created).
        title: the figure's title.
        dpi: resolution.

    Returns:
        ``path``.

    Raises:
        ValueError: no panel, or a panel without points.
    """
    if not panels or any(not p.points for p in panels):
        raise ValueError("draw_intervals needs at least one panel, each with at least one point")
    with paused_collection():  # lazy: matplotlib is slow to import and only figures need it
        from matplotlib.figure import Figure

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    tallest = max(len(p.points) for p in panels)
    title_lines = max(wrap_title(p.title).count("\n") + 1 for p in panels)
    fig = Figure(figsize=(5.2 * ncols, (max(2.4, 0.32 * tallest + 1.3) + 0.18 * (title_lines - 1)) * nrows),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for measured in (False, True):  # one errorbar (a few artists) per style, not one per point
            rows = [(y, p) for y, p in enumerate(panel.points) if p.measured is measured]
            if not rows:
                continue
            ax.errorbar(
                [p.value for _, p in rows], [y for y, _ in rows],
                xerr=[[max(0.0, p.value - p.low) for _, p in rows], [max(0.0, p.high - p.value) for _, p in rows]],
                fmt="D" if measured else "o", color=MEASURED_COLOUR if measured else PUBLISHED_COLOUR,
                markersize=6 if measured else 4, capsize=3, linewidth=1.6 if measured else 1.0,
            )
        ax.set_yticks(range(len(panel.points)), labels=[_label(p.label) for p in panel.points])
        for label, point in zip(ax.get_yticklabels(), panel.points):
            if point.measured:
                label.set_color(MEASURED_COLOUR)
                label.set_fontweight("bold")
        ax.set_ylim(-0.7, len(panel.points) - 0.3)
        ax.set_xlim(*_chance_x_range(panel))
        if panel.chance is not None:
            ax.axvline(panel.chance, color="0.3", linestyle=":", linewidth=1.2, zorder=0)
            ax.annotate(f"chance {panel.chance:.3g}", (panel.chance, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -10), textcoords="offset points", fontsize=8, color="0.3")
        ax.set_title(wrap_title(panel.title), fontsize=10)
        ax.set_xlabel(f"{panel.metric} (95% interval)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


SIGNIFICANT_COLOUR = "tab:red"
NOT_SIGNIFICANT_COLOUR = "0.45"


@dataclass(frozen=True)
class DeltaPoint:
    """One paired difference Δ = B − A (task and metric) with its 95% interval.

    Attributes:
        label: y-axis label, e.g. ``"piqa acc"``.
        delta, low, high: the difference and its interval, in the metric's units.
        significant: after the family-wise correction (drawn filled and in colour, label marked ``*``).
    """

    label: str
    delta: float
    low: float
    high: float
    significant: bool


@dataclass(frozen=True)
class DeltaPanel:
    """One panel of differences sharing a unit (accuracies together, perplexity apart)."""

    title: str
    unit: str
    points: tuple[DeltaPoint, ...]


def draw_deltas(panels: Sequence[DeltaPanel], path: Path, title: str, dpi: int = 100) -> Path:
    """Draw paired differences: per panel, one row per point with its interval, a dashed zero line (no
    difference), significant rows filled in colour and starred. Written atomically as PNG.

    Raises:
        ValueError: no panel, or a panel without points.
    """
    if not panels or any(not p.points for p in panels):
        raise ValueError("draw_deltas needs at least one panel, each with at least one point")
    with paused_collection():  # lazy: matplotlib is slow to import and only figures need it
        from matplotlib.figure import Figure

    tallest = max(len(p.points) for p in panels)
    widths = [max(1.0, len(p.points) / 3) for p in panels]  # a one-row perplexity panel needs less room
    fig = Figure(figsize=(min(18.0, 3.2 * sum(widths) + 2.5), max(2.4, 0.34 * tallest + 1.5)), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths}).ravel()
    for ax, panel in zip(axes, panels):
        if panel.unit != "accuracy":  # perplexity differences run to 1e5 and more: 300k, not 300000
            from matplotlib.ticker import EngFormatter

            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        for y, point in enumerate(panel.points):
            colour = SIGNIFICANT_COLOUR if point.significant else NOT_SIGNIFICANT_COLOUR
            ax.errorbar(point.delta, y, xerr=[[max(0.0, point.delta - point.low)], [max(0.0, point.high - point.delta)]],
                        fmt="o", color=colour, markerfacecolor=colour if point.significant else "white",
                        markersize=6, capsize=3, linewidth=1.4)
        ax.axvline(0.0, color="0.2", linestyle="--", linewidth=1.0)
        labels = [_label(p.label + (" *" if p.significant else "")) for p in panel.points]
        ax.set_yticks(range(len(panel.points)), labels=labels)
        for label, point in zip(ax.get_yticklabels(), panel.points):
            if point.significant:
                label.set_color(SIGNIFICANT_COLOUR)
                label.set_fontweight("bold")
        ax.set_ylim(-0.7, len(panel.points) - 0.3)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(f"Δ = B − A, {panel.unit} (paired 95% interval)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
