"""One split of a dataset -> a validated list of documents, plus the seeded ``--limit`` subset.

Local layout (as in ``shared/data``): ``DIR/<task>/<split>.jsonl``, one JSON object a line with the
field names of the Hugging Face dataset. Without a data folder, documents come from the hub through
``datasets.load_dataset(hub_id, config, split=split)``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.types import Doc, EvalkitError, Task

log = logging.getLogger(__name__)

DATA_DIR_ENV = "EVALKIT_DATA_DIR"
"""Environment variable naming the local data folder when ``--data-dir`` is not given."""


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """``--data-dir`` if given, else ``$EVALKIT_DATA_DIR``, else None (read the hub)."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(chosen) if chosen else None


def local_path(task: Task, data_dir: Path, split: str | None = None) -> Path:
    """``data_dir/<task name or dataset.local_dir>/<split>.jsonl`` (``split`` defaults to the evaluated split)."""
    return data_dir / (task.dataset.local_dir or task.name) / f"{split or task.dataset.split}.jsonl"


def declared_file(task: Task, split: str | None = None) -> Path | None:
    """The JSON-lines file the task itself names for a split (``dataset.data_files``), else None."""
    files = task.dataset.data_files or {}
    chosen = split or task.dataset.split
    return Path(files[chosen]) if chosen in files else None


def _field(doc: Doc, dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def validate_doc(task: Task, doc: Any, where: str) -> None:
    """Check one document against the task's declared fields and its own ``validate``, and build its continuations,
    gold index, context and per-choice contexts once (a template or function that fails is named here).

    Args:
        task: the task whose ``dataset.fields`` and ``validate`` apply.
        doc: the parsed JSON value.
        where: location used in messages, e.g. ``"data/piqa/validation.jsonl line 7"``.

    Raises:
        EvalkitError: naming ``where`` and the offending field.
    """
    if not isinstance(doc, dict):
        raise EvalkitError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    for name, kind in task.dataset.fields.items():
        try:
            value = _field(doc, name)
        except KeyError:
            raise EvalkitError(f"{where}: missing field '{name}'") from None
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise EvalkitError(
                f"{where}: field '{name}' should be {kind.__name__}, got {type(value).__name__} ({value!r:.60})"
            )
    try:
        if task.validate is not None:
            task.validate(doc)
        conts = task.continuations(doc)
        if not conts:
            raise ValueError("no continuation to score")
        for index, cont in enumerate(conts):
            if not isinstance(cont, str) or not cont.strip():
                raise ValueError(f"continuation {index} ({cont!r:.40}) is blank: nothing to score")
        gold = task.gold(doc)
        if not 0 <= gold < len(conts):
            raise ValueError(f"gold index {gold} is out of range for {len(conts)} continuations")
        if not isinstance(task.context(doc), str):
            raise ValueError("context is not a string")
        if task.choice_contexts is not None and len(task.choice_contexts(doc)) != len(conts):
            raise ValueError(f"{len(task.choice_contexts(doc))} per-choice contexts for {len(conts)} continuations")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise EvalkitError(f"{where}: {exc}") from None


def read_jsonl(path: Path) -> list[Any]:
    """Parse a JSON-lines file.

    Returns:
        the parsed values, one per non-blank line, in file order (see :func:`read_jsonl_numbered`).

    Raises:
        EvalkitError: missing file, bytes that are not UTF-8, or a line that is not JSON (names the line).
    """
    return [value for _, value in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: Path) -> list[tuple[int, Any]]:
    """Parse a JSON-lines file into (1-based line number, value) pairs.

    A line is blank, and skipped, when it holds only JSON whitespace (spaces, tabs, CR, LF; RFC 8259 section 2):
    a line of other Unicode spaces is reported as malformed, so line numbers always match the file. A UTF-8 byte
    order mark at the start of the file is ignored (RFC 8259 section 8.1 allows it).

    Raises:
        EvalkitError: missing file, bytes that are not UTF-8, or a line that is not JSON (names the line).
    """
    if not path.is_file():
        raise EvalkitError(f"data file not found: {path}")
    rows = []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip(b" \t\r\n"):
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EvalkitError(f"{path} line {lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise EvalkitError(f"{path} line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _load_hub(task: Task, split: str) -> list[Any]:
    import datasets  # imported lazily: slow to import and only needed without --data-dir

    spec = task.dataset
    try:
        rows = datasets.load_dataset(spec.hub_id, spec.config, split=split)
    except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
        folder = spec.local_dir or task.name
        raise EvalkitError(
            f"could not load {spec.hub_id} ({spec.config}, {split}) from the hub: {exc}. "
            f"Use --data-dir DIR with DIR/{folder}/{split}.jsonl to read local files."
        ) from None
    return [dict(row) for row in rows]


def load_docs(task: Task, data_dir: Path | None, split: str | None = None) -> list[Doc]:
    """All documents of one of the task's splits, validated, in split order (doc_id = list index).

    Args:
        task: the task whose fields and checks apply.
        data_dir: local data folder, or None to read the hub.
        split: the split to read; None means the evaluated split ``task.dataset.split`` (a few-shot split is read
            and validated the same way).

    A split whose size differs from ``task.dataset.n`` is accepted with a warning (a trimmed copy). A split the task
    names in ``dataset.data_files`` is read from that file, with or without a data folder. ``task.process_docs``,
    when set, is applied to the split's rows before they are validated (rows are then named by their index in the
    processed list).

    Raises:
        EvalkitError: missing folder or file, malformed or invalid row (file, line and field named), empty split.
    """
    declared = declared_file(task, split)
    if declared is not None:
        numbered = read_jsonl_numbered(declared)
        rows = [value for _, value in numbered]
        line_of = [lineno for lineno, _ in numbered]
        label = str(declared)
    elif data_dir is not None:
        if not data_dir.is_dir():
            raise EvalkitError(f"data folder not found: {data_dir} (from --data-dir or ${DATA_DIR_ENV})")
        path = local_path(task, data_dir, split)
        numbered = read_jsonl_numbered(path)
        rows = [value for _, value in numbered]
        line_of = [lineno for lineno, _ in numbered]
        label = str(path)
    else:
        rows = _load_hub(task, split or task.dataset.split)
        line_of = None
        label = f"{task.dataset.hub_id}:{split or task.dataset.split}"
    if task.process_docs is not None and rows:
        rows = task.process_docs(rows)
        line_of = None
        label = f"{label} (after process_docs)"
    if not rows:
        raise EvalkitError(f"{label}: empty split, no documents for task '{task.name}'")
    for index, doc in enumerate(rows):
        where = f"{label} line {line_of[index]}" if line_of else f"{label} row {index}"
        validate_doc(task, doc, where)
    return rows


def size_warning(task: Task, n_docs: int) -> str | None:
    """A message when the split's size differs from the task's expected n, else None (also when n is None)."""
    if task.dataset.n is None or n_docs == task.dataset.n:
        return None
    return f"{task.name}: split has {n_docs} documents, expected {task.dataset.n} (trimmed or different copy?)"


def subset_ids(n_docs: int, limit: int | None, seed: int, task_name: str) -> list[int]:
    """Seeded random subset of document ids, sorted; all ids when ``limit`` is None or >= n_docs.

    The subset depends only on (n_docs, limit, seed, task_name), never on the model, so every model
    is scored on the same documents. Taking the first N documents instead would bias the subset.
    """
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    if limit <= 0:
        raise EvalkitError(f"--limit must be positive, got {limit}")
    task_seed = seed + sum(task_name.encode())
    rng = np.random.default_rng(task_seed)
    return sorted(int(i) for i in rng.choice(n_docs, size=limit, replace=False))
