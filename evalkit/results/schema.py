"""The schema of a results file, checked before ``evalkit report`` or ``evalkit compare`` reads one.

A hand-edited or truncated results file used to end in a KeyError or TypeError traceback deep in the report
code. :func:`validate_results` checks every key those commands read against :data:`SCHEMA` and names the file and
the key path of the first fault (``tasks.piqa.metrics.acc.stderr_bootstrap``). Keys the schema does not name are
allowed (newer evalkit versions add some), and optional ones may be missing.

The schema language is small: ``"str"``, ``"int"``, ``"number"`` (int or float, finite), ``"bool"``,
``"any"``; a trailing ``?`` allows null; ``{"keys": {...}, "optional": {...}}`` is an object with those keys;
``("map", spec)`` an object whose values all match ``spec``; ``("list", spec)`` a list of such items.
Beyond the types, a task's per-document arrays must all have one value per document (``n``), accuracies lie in
{0, 1} per document and in [0, 1] aggregated, each metric's value, ``n`` and closed-form stderr are the ones its
per-document values give and no stderr is negative (``report`` prints the stored value and draws its interval from
the stored ``n``, ``compare`` recomputes from the documents), and every metric is one evalkit knows
(:data:`evalkit.stats.metrics.PER_DOC_KEYS`, which ``report`` and ``compare`` look per-document values up in).
"""

from __future__ import annotations

import math
from typing import Any

from evalkit.stats.metrics import PER_DOC_KEYS, aggregator, has_closed_form_stderr, per_doc_values
from evalkit.stats.stderr import mean_stderr
from evalkit.types import EvalkitError

METRIC = {"keys": {"value": "number", "stderr": "number?", "stderr_bootstrap": "number?", "n": "int",
                   "higher_is_better": "bool"}}

TASK = {
    "keys": {
        "version": "str", "description": "str", "n": "int", "n_split": "int", "expected_n": "int?", "subset": "bool",
        "primary_metric": "str", "requests": "int", "truncated_requests": "int", "prompt_sha256": "str",
        "warnings": ("list", "str"), "metrics": ("map", METRIC), "documents": ("map", ("list", "number")),
    },
    "optional": {"joint_fallback_requests": "int", "duplicate_documents": "int", "non_finite_requests": "int",
                 "non_finite_documents": "int", "source": "str",
                 "builtin_prompts_differ": "int", "tokenization": "str", "chance": "number?",
                 "category": "str"},
}

SCHEMA = {
    "keys": {
        "created": "str",
        "config": {"keys": {"limit": "number?", "seed": "int"}},
        "model": {"keys": {"name": "str", "kind": "str", "revision": "str", "dtype": "str", "device": "str",
                           "parameters": "int"}},
        "tokenizer": {"keys": {"name": "str"}, "optional": {"sha256": "str", "model_tokenizer_sha256": "str"}},
        "versions": {"keys": {"evalkit": "str", "torch": "str", "transformers": "str"}},
        "timing": {"keys": {"wall_time_s": "number", "requests": "int", "requests_per_s": "number?"},
                   "optional": {"requests_scored": "int", "requests_cached": "int", "batch_size": "int",
                                "batch_size_final": "int", "oom_retries": "int"}},
        "tasks": ("map", TASK),
    },
    "optional": {"warnings": ("list", "str")},
}
"""What ``report`` and ``compare`` read from a results file."""

ACCURACIES = ("acc", "acc_norm")
"""Metrics whose per-document values are 0 or 1 and whose aggregate is a fraction."""

_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
               "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "any": (lambda v: True, "anything"),
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _fault(path: str, message: str) -> str:
    return f"'{path}': {message}" if path else message


def check(value: Any, spec: Any, path: str = "") -> str | None:
    """The first fault of ``value`` against ``spec`` (``"'a.b': expected a string, got null"``), or None."""
    if isinstance(spec, str):
        nullable = spec.endswith("?")
        name = spec.rstrip("?")
        if value is None and nullable:
            return None
        test, label = _TYPES[name]
        if not test(value):
            shown = f" ({value!r:.40})" if isinstance(value, (int, float, str)) and not isinstance(value, bool) else ""
            return _fault(path, f"expected {label}{' or null' if nullable else ''}, got {_kind(value)}{shown}")
        return None
    if isinstance(spec, tuple):
        container, item = spec
        if container == "map":
            if not isinstance(value, dict):
                return _fault(path, f"expected an object, got {_kind(value)}")
            entries = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        else:
            if not isinstance(value, list):
                return _fault(path, f"expected a list, got {_kind(value)}")
            entries = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        for sub, v in entries:
            found = check(v, item, sub)
            if found:
                return found
        return None
    if not isinstance(value, dict):
        return _fault(path, f"expected an object, got {_kind(value)}")
    for key, sub_spec in spec["keys"].items():
        sub = f"{path}.{key}" if path else key
        if key not in value:
            return f"missing key '{sub}'"
        found = check(value[key], sub_spec, sub)
        if found:
            return found
    for key, sub_spec in spec.get("optional", {}).items():
        if key in value:
            found = check(value[key], sub_spec, f"{path}.{key}" if path else key)
            if found:
                return found
    return None


def _task_fault(name: str, task: dict[str, Any]) -> str | None:
    """Faults the types cannot express: unknown metrics, array lengths, values outside their range."""
    where = f"tasks.{name}"
    docs = task["documents"]
    if "doc_id" not in docs:
        return f"missing key '{where}.documents.doc_id'"
    if task["primary_metric"] not in task["metrics"]:
        return f"'{where}.primary_metric': {task['primary_metric']!r} is not among the task's metrics"
    for key, values in docs.items():
        if len(values) != task["n"]:
            return (f"'{where}.documents.{key}': {len(values)} values for {task['n']} documents "
                    f"('{where}.n'); the file is truncated or edited")
    for metric, entry in task["metrics"].items():
        if metric not in PER_DOC_KEYS:
            return f"'{where}.metrics.{metric}': unknown metric (expected one of {', '.join(PER_DOC_KEYS)})"
        missing = [k for k in PER_DOC_KEYS[metric] if k not in docs]
        if missing:
            return f"missing key '{where}.documents.{missing[0]}' (per-document values of {metric})"
        key = PER_DOC_KEYS[metric][0]
        if metric in ACCURACIES:
            bad = next((i for i, v in enumerate(docs[key]) if v not in (0, 1)), None)
            if bad is not None:
                return f"'{where}.documents.{key}[{bad}]': {docs[key][bad]!r} is not an accuracy (0 or 1)"
            if not 0 <= entry["value"] <= 1:
                return f"'{where}.metrics.{metric}.value': {entry['value']!r} is not an accuracy (between 0 and 1)"
        if entry["n"] != task["n"]:  # report draws the Wilson interval from this n
            return (f"'{where}.metrics.{metric}.n': {entry['n']!r} is not the task's number of documents "
                    f"({task['n']}, '{where}.n'); the file is edited")
        for name in ("stderr", "stderr_bootstrap"):
            if entry[name] is not None and entry[name] < 0:
                return f"'{where}.metrics.{metric}.{name}': {entry[name]!r} is negative; a standard error never is"
        if task["n"] > 0:  # report prints the stored value, compare the per-document ones: they must agree
            values = per_doc_values(metric, docs)
            own = float(aggregator(metric)(values))
            if math.isfinite(own) and not math.isclose(entry["value"], own, rel_tol=1e-9, abs_tol=1e-12):
                return (f"'{where}.metrics.{metric}.value': {entry['value']!r} is not the {metric} of the file's own "
                        f"per-document values ({own!r}); the file is edited")
            found = _stderr_fault(f"{where}.metrics.{metric}.stderr", metric, entry["stderr"], values)
            if found:
                return found
    return None


def _stderr_fault(path: str, metric: str, stored: float | None, values: Any) -> str | None:
    """A stored closed-form stderr that is not the one the per-document values give (means only; the bootstrap
    depends on its seed and draws and is not recomputed)."""
    if stored is None or not has_closed_form_stderr(metric):
        return None
    own = mean_stderr(values)
    if math.isfinite(own) and not math.isclose(stored, own, rel_tol=1e-9, abs_tol=1e-12):
        return (f"'{path}': {stored!r} is not the standard error of the file's own per-document values ({own!r}); "
                "the file is edited")
    return None


def validate_results(data: Any, source: str) -> None:
    """Check a parsed results file against :data:`SCHEMA`.

    Raises:
        EvalkitError: ``"<source>: not a valid evalkit results file: <key path>: <what is wrong>"``.
    """
    found = check(data, SCHEMA)
    if found is None:
        for name, task in data["tasks"].items():
            found = _task_fault(name, task)
            if found:
                break
    if found is not None:
        raise EvalkitError(f"{source}: not a valid evalkit results file: {found}")
