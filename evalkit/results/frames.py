"""pandas views of results: one row per (run, task, metric), and one row per document.

Both functions take what a user has at hand: a results dict (from :func:`evalkit.evaluate` or
:func:`evalkit.load_results`), a path to a results JSON, or a list of either (several runs in one frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import pandas as pd

from evalkit.results.export import read_samples, samples_path_of
from evalkit.results.files import load_results
from evalkit.results.summary import summary_rows
from evalkit.types import EvalkitError

Source = Union[Mapping[str, Any], str, Path]

METRIC_COLUMNS = {
    "run": "string", "model": "string", "revision": "string", "dtype": "string", "task": "string",
    "kind": "string", "metric": "string", "value": "float64", "stderr": "float64", "stderr_bootstrap": "float64",
    "ci_low": "float64", "ci_high": "float64", "n": "Int64", "shots": "Int64", "higher_is_better": "boolean",
}
"""Columns of :func:`metrics_frame` and their pandas dtypes (missing values: ``<NA>`` / NaN)."""


def _runs(source: Source | Iterable[Source]) -> list[tuple[dict[str, Any], Path | None]]:
    if isinstance(source, (Mapping, str, Path)):
        source = [source]
    runs = []
    for item in source:
        if isinstance(item, Mapping):
            runs.append((dict(item), None))
        else:
            runs.append((load_results(item), Path(item)))
    if not runs:
        raise EvalkitError("no results given")
    return runs


def _run_id(results: Mapping[str, Any], path: Path | None) -> str:
    return path.stem if path is not None else str(results.get("created", ""))


def metrics_frame(source: Source | Iterable[Source]) -> pd.DataFrame:
    """One row per (run, task or group, metric), columns and dtypes as :data:`METRIC_COLUMNS`.

    ``run`` is the results file's stem (its UTC time), or the run's ``created`` time for an in-memory dict;
    ``model``, ``revision`` and ``dtype`` are the model identity; ``value`` is in the metric's units (a fraction
    for accuracies, exp(nats) for perplexity); ``stderr`` is the closed-form standard error (NaN for perplexity),
    ``stderr_bootstrap`` the bootstrap one; ``ci_low``/``ci_high`` the Wilson 95% interval of an accuracy (NaN
    otherwise); ``n`` documents; ``shots`` few-shot examples; ``kind`` is ``task`` or ``group``.

    Raises:
        EvalkitError: an unreadable results file.
    """
    records = []
    for results, path in _runs(source):
        model = results.get("model", {})
        ident = {"run": _run_id(results, path), "model": model.get("name"), "revision": model.get("revision"),
                 "dtype": model.get("dtype")}
        records.extend(ident | row for row in summary_rows(results))
    frame = pd.DataFrame.from_records(records, columns=list(METRIC_COLUMNS))
    return frame.astype(METRIC_COLUMNS)


def documents_frame(source: Source | Iterable[Source]) -> pd.DataFrame:
    """One row per document: ``task``, ``doc_id`` (int64), then one float64 column per per-document value
    (``acc``, ``acc_norm``, ``loglikelihood`` in nats, ...), then ``loglikelihoods`` and ``greedy`` (a list per
    document, one entry per continuation) when they are known.

    ``source`` may be a samples file (``*.samples.jsonl``, written with ``--log-samples``: every column, plus
    ``context``, ``continuations`` and ``gold``), a results file or dict (its per-document metric values;
    from a file that names a samples file beside it, the samples are read instead). Several runs get a ``run``
    column first.

    Raises:
        EvalkitError: an unreadable file or a samples line that is not JSON (naming file and line).
    """
    if isinstance(source, (str, Path)) and str(source).endswith(".jsonl"):
        return _samples_frame(read_samples(Path(source)))
    frames = []
    for results, path in _runs(source):
        samples = samples_path_of(results, path) if path is not None else None
        if samples is not None and samples.is_file():
            frame = _samples_frame(read_samples(samples))
        else:
            frame = _per_doc_frame(results)
        frame.insert(0, "run", _run_id(results, path))
        frames.append(frame)
    if len(frames) == 1:
        return frames[0].drop(columns="run")
    return pd.concat(frames, ignore_index=True)


def _per_doc_frame(results: Mapping[str, Any]) -> pd.DataFrame:
    parts = []
    for name, task in results.get("tasks", {}).items():
        docs = dict(task.get("documents", {}))
        ids = docs.pop("doc_id", [])
        part = pd.DataFrame({"task": name, "doc_id": pd.Series(ids, dtype="int64")})
        for key, values in docs.items():
            part[key] = pd.Series(values, dtype="float64")
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["task", "doc_id"])
    frame["loglikelihoods"] = None
    frame["greedy"] = None
    return frame


def _samples_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    metric_keys = sorted({k for r in rows for k in r.get("metrics", {})})
    frame = pd.DataFrame({
        "task": [r["task"] for r in rows],
        "doc_id": pd.Series([r["doc_id"] for r in rows], dtype="int64"),
        **{k: pd.Series([r["metrics"].get(k) for r in rows], dtype="float64") for k in metric_keys},
        "loglikelihoods": [list(r.get("loglikelihoods", [])) for r in rows],
        "greedy": [list(r.get("greedy", [])) for r in rows],
        "context": [r.get("context") for r in rows],
        "continuations": [r.get("continuations") for r in rows],
        "gold": pd.Series([r.get("gold") for r in rows], dtype="Int64"),
    })
    return frame


def write_csv(source: Source | Iterable[Source], path: Path) -> Path:
    """Write :func:`metrics_frame` of ``source`` as CSV (header row, empty cells for missing values)."""
    from evalkit.results.files import atomic_write_text

    atomic_write_text(path, metrics_frame(source).to_csv(index=False))
    return path
