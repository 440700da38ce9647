"""Validation of a baseline file's content (format ``evalkit-baseline/1``, see :mod:`evalkit.regression.baseline`),
so that a hand-edited baseline stops ``evalkit check`` with one message naming the file and the field, before the
model loads, instead of a traceback or a check that compares against nonsense (a negative tolerance, a missing
log-likelihood, columns of unequal length).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evalkit.regression.generation_freeze import GENERATION_COLUMNS
from evalkit.types import EvalkitError

MODES = ("separate", "joint")
"""The tokenization modes (:data:`evalkit.scoring.tokenization.MODES`; repeated here because this layer does not
import the scoring package)."""

TOLERANCE_KEYS = ("loglikelihood_atol", "loglikelihood_rtol", "metric_rtol")
"""The fields of :class:`evalkit.regression.baseline.Tolerance`; each a number at least 0 (missing: its default)."""

REQUEST_COLUMNS = ("doc_id", "choice_index", "context_sha", "continuation_sha", "loglikelihood", "greedy")
"""Per-request columns of a baseline task (see :func:`evalkit.regression.baseline.request_records`)."""

TASK_KEYS = ("version", "prompt_sha256", "metrics", "documents", "requests")

_NONE = type(None)
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "tasks": (list,), "tokenizer": (str, _NONE), "data_dir": (str, _NONE),
    "include_paths": (list,), "limit": (int, _NONE), "seed": (int,), "batch_size": (int, str),
    "max_length": (int, _NONE), "dtype": (str,), "device": (str, _NONE), "bootstrap_iters": (int,),
    "extra": (dict,),
}
"""Required keys of a baseline's ``config`` and the JSON types each may hold."""

OPTIONAL_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "num_fewshot": (int,), "fewshot_overrides": (dict,), "fewshot_seed": (int,), "skip_missing_data": (bool,),
}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a str", bool: "a bool", int: "an int", float: "a float",
            _NONE: "null"}.get(type(value), type(value).__name__)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON true is not a whole number here
        return False
    return isinstance(value, types)


def validate_baseline(data: dict[str, Any], path: Path) -> None:
    """Check every field ``evalkit check`` reads: ``config`` (types, tokenization mode), ``tolerance``
    (known keys, numbers at least 0), ``tasks`` (each an object with its version, prompt hash, metrics with
    numeric values, document and request columns of equal length, finite log-likelihoods, bool greedy flags),
    ``model`` and ``versions`` (objects).

    Raises:
        EvalkitError: ``<file>: <field> ...``, naming the first bad field (e.g. ``tasks.piqa.requests.
            loglikelihood[3]``) and what it holds.
    """
    def fail(message: str) -> None:
        raise EvalkitError(f"{path}: {message}")

    for key in ("config", "model", "versions"):
        if not isinstance(data[key], dict):
            fail(f"{key} must be an object, got {_kind(data[key])}")
    _check_config(data["config"], fail)
    _check_tolerance(data["tolerance"], fail)
    tasks = data["tasks"]
    if not isinstance(tasks, dict) or not tasks:
        fail(f"tasks must be an object (task name -> its values), got {_kind(tasks) if tasks != {} else 'none'}")
    for name, task in tasks.items():
        _check_task(name, task, fail)


def _check_config(config: dict[str, Any], fail: Any) -> None:
    for key, types in CONFIG_TYPES.items():
        if key not in config:
            fail(f"config.{key} is missing")
        if not _typed(config[key], types):
            fail(f"config.{key} must be {' or '.join(_kind(t()) if t is not _NONE else 'null' for t in types)}, "
                 f"got {config[key]!r}")
    for key, types in OPTIONAL_CONFIG_TYPES.items():
        if key in config and not _typed(config[key], types):
            fail(f"config.{key} must be {_kind(types[0]())}, got {config[key]!r}")
    if isinstance(config["batch_size"], str) and config["batch_size"] != "auto":
        fail(f"config.batch_size must be a whole number or 'auto', got {config['batch_size']!r}")
    for key in ("tasks", "include_paths"):
        if not all(isinstance(item, str) for item in config[key]):
            fail(f"config.{key} must be a list of names, got {config[key]!r}")
    mode = config["extra"].get("tokenization", "separate")
    if mode not in MODES:
        fail(f"config.extra.tokenization {mode!r} is not a tokenization mode ({', '.join(MODES)})")


def _check_tolerance(tolerance: Any, fail: Any) -> None:
    if not isinstance(tolerance, dict):
        fail(f"tolerance must be an object with {', '.join(TOLERANCE_KEYS)}, got {tolerance!r}")
    for key, value in tolerance.items():
        if key not in TOLERANCE_KEYS:
            fail(f"tolerance has unknown key {key!r} (accepted: {', '.join(TOLERANCE_KEYS)})")
        if not _number(value) or value < 0:
            fail(f"tolerance.{key} must be a number at least 0, got {value!r}")


def _columns(where: str, columns: Any, required: tuple[str, ...], fail: Any) -> None:
    """An object of equally long lists holding at least ``required``."""
    if not isinstance(columns, dict):
        fail(f"{where} must be an object of columns ({', '.join(required)}), got {_kind(columns)}")
    for key in required:
        if key not in columns:
            fail(f"{where}.{key} is missing")
    for key, column in columns.items():
        if not isinstance(column, list):
            fail(f"{where}.{key} must be a list, got {_kind(column)}")
    lengths = {key: len(column) for key, column in columns.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        other = next(k for k, n in lengths.items() if n != lengths[first])
        fail(f"{where}: the columns differ in length ({first} {lengths[first]}, {other} {lengths[other]})")


def _check_task(name: str, task: Any, fail: Any) -> None:
    where = f"tasks.{name}"
    if not isinstance(task, dict):
        fail(f"{where} must be an object, got {_kind(task)}")
    for key in TASK_KEYS:
        if key not in task:
            fail(f"task '{name}' lacks field '{key}'")
    if not isinstance(task["prompt_sha256"], str):
        fail(f"{where}.prompt_sha256 must be a str, got {task['prompt_sha256']!r}")
    metrics = task["metrics"]
    if not isinstance(metrics, dict):
        fail(f"{where}.metrics must be an object, got {_kind(metrics)}")
    for metric, entry in metrics.items():
        if not isinstance(entry, dict) or not _number(entry.get("value")):
            shown = entry.get("value") if isinstance(entry, dict) else entry
            fail(f"{where}.metrics.{metric}.value must be a finite number, got {shown!r}")
    _columns(f"{where}.documents", task["documents"], ("doc_id",), fail)
    requests = task["requests"]
    if task.get("output_type") == "generate_until":
        _check_generation_requests(where, requests, fail)
    else:
        _check_loglikelihood_requests(where, requests, fail)
    for i, value in enumerate(task["documents"]["doc_id"]):
        if not _typed(value, (int,)):
            fail(f"{where}.documents.doc_id[{i}] must be a whole number, got {value!r}")


def _check_generation_requests(where: str, requests: Any, fail: Any) -> None:
    _columns(f"{where}.requests", requests, GENERATION_COLUMNS, fail)
    checks = (("doc_id", lambda v: _typed(v, (int,)), "a whole number"),
              ("context_ids_sha", lambda v: isinstance(v, str), "a str"),
              ("until", lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
               "a list of non-empty strings"),
              ("max_new_tokens", lambda v: _typed(v, (int,)) and v > 0, "a whole number above 0"),
              ("generation", lambda v: isinstance(v, str), "a str"),
              ("stop_reason", lambda v: v in ("stop", "eot", "length"), "stop, eot or length"))
    for column, ok, what in checks:
        for i, value in enumerate(requests[column]):
            if not ok(value):
                fail(f"{where}.requests.{column}[{i}] must be {what}, got {value!r}")


def _check_loglikelihood_requests(where: str, requests: Any, fail: Any) -> None:
    _columns(f"{where}.requests", requests, REQUEST_COLUMNS, fail)
    checks = (("doc_id", lambda v: _typed(v, (int,)), "a whole number"),
              ("choice_index", lambda v: _typed(v, (int,)), "a whole number"),
              ("context_sha", lambda v: isinstance(v, str), "a str"),
              ("continuation_sha", lambda v: isinstance(v, str), "a str"),
              ("loglikelihood", _number, "a finite number"),
              ("greedy", lambda v: isinstance(v, bool), "true or false"))
    for column, ok, what in checks:
        for i, value in enumerate(requests[column]):
            if not ok(value):
                fail(f"{where}.requests.{column}[{i}] must be {what}, got {value!r}")
