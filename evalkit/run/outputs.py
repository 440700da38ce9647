"""A run's files written: the samples (optional), the results JSON (strict, atomic) and the Markdown report."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evalkit.run.generation_results import generation_sample
from evalkit.run.prepare import PreparedTask
from evalkit.results.files import atomic_write_text, report_stem, results_path, strict_json
from evalkit.types import DocResult, RunConfig

log = logging.getLogger(__name__)


@dataclass
class RunOutput:
    """Paths written by a run (None when the run wrote no files) and the in-memory results dict.

    ``report_path`` is None and ``report_error`` says why when the results were written but the report could not
    be (an unwritable ``reports/``): the results are complete, ``evalkit report`` re-renders the report.
    """

    results_path: Path | None
    report_path: Path | None
    samples_path: Path | None
    results: dict[str, Any]
    report_error: str | None = None


def write_outputs(
    results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask],
    config: RunConfig,
) -> RunOutput:
    """Write samples (optional), results JSON (strict: no NaN or Infinity) and the Markdown report.

    The report gets a name of its own (``reports/<model>-<results stem>.md``, ``-N`` added when taken by another run that
    finished in the same second). When it cannot be written, the results stay and the returned
    :attr:`RunOutput.report_error` says what was not written and how to re-render it.

    A ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into one by the CLI) while the report is written
    propagates with ``results_path`` and ``samples_path`` set on it: the results are complete, and the CLI says so
    instead of calling the run interrupted.

    Raises:
        EvalkitError: the results or samples cannot be written (nothing half written is left behind).
    """
    out_dir = Path(config.output_dir)
    path = results_path(out_dir, results["model"]["name"])  # reserved (created empty) until written below
    try:
        samples_path = _write_samples(path, results, doc_results, prepared) if config.log_samples else None
        atomic_write_text(path, strict_json(results, str(path), indent=1) + "\n")
    except BaseException:
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        raise
    from evalkit.reports.report import write_report  # lazily: scipy and jinja2 load only once there is a report to write

    try:
        report_path = write_report([results], out_dir / "reports", report_stem(path), source_paths=[path],
                                   unique=True, draw_figure=config.extra.get("figure", True))
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM now stops a finished run: say where its results are
        exc.results_path, exc.samples_path = path, samples_path  # type: ignore[attr-defined]
        raise
    except OSError as exc:
        where = exc.filename or out_dir / "reports"
        error = (f"the report was not written ({where}: {exc.strerror or exc}); the results are complete in {path}"
                 + (f" and {samples_path}" if samples_path else "")
                 + f"; re-render the report with: evalkit report {path} --output REPORT.md")
        log.error(error)
        return RunOutput(path, None, samples_path, results, error)
    return RunOutput(path, report_path, samples_path, results)


def _finite_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Per-document metrics with non-finite values (a document left out under --allow-non-finite) as None."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def _write_samples(
    path: Path, results: dict[str, Any], doc_results: dict[str, list[DocResult]], prepared: Sequence[PreparedTask]
) -> Path:
    """Write ``<results stem>.samples.jsonl`` (one line per document) and name it in ``results``.

    ``context`` is the context scored with the first continuation (under ``--apply-chat-template`` the rendered
    prompt), a list of one per continuation when they differ (WinoGrande's per-choice contexts); ``continuations``
    are those scored (without the multiple-choice delimiter under a chat template).
    A generation task's line holds the raw ``generation``, the ``answers`` its scoring read from it and the
    ``references`` instead (:func:`evalkit.run.generation_results.generation_sample`).
    """
    samples_path = path.with_suffix(".samples.jsonl")
    lines = []
    for p in prepared:
        for index, (doc, result) in enumerate(zip(p.docs, doc_results[p.task.name])):
            if result.generation is not None:  # a generation task: its text, answers and references
                lines.append(json.dumps(generation_sample(p, index, result), allow_nan=False))
                continue
            contexts = p.contexts[index] if p.contexts else [p.task.context(doc)]
            lines.append(json.dumps({
                "task": p.task.name, "doc_id": result.doc_id,
                "context": contexts[0] if len(set(contexts)) == 1 else contexts,  # a list: per-choice contexts
                "fewshot_doc_ids": list(p.fewshot.examples[result.doc_id]) if p.fewshot else [],
                "continuations": p.continuations[index] if p.continuations is not None else p.task.continuations(doc),
                "gold": p.task.gold(doc),
                "loglikelihoods": [ll if math.isfinite(ll) else None for ll in result.loglikelihoods],
                "greedy": list(result.greedy), "metrics": _finite_metrics(result.metrics),
            }, allow_nan=False))
    atomic_write_text(samples_path, "\n".join(lines) + "\n")
    results["samples_file"] = samples_path.name
    return samples_path
