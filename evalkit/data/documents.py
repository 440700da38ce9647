"""One split of a dataset -> a validated list of documents, plus the seeded ``--limit`` subset; which tasks of a run
have their local files.

Local layout (as in ``shared/data``): ``DIR/<task>/<split>.jsonl``, one JSON object a line with the
field names of the Hugging Face dataset. Without a data folder, documents come from the hub through
``datasets.load_dataset(hub_id, config, split=split)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from evalkit.types import Doc, EvalkitError, RunConfig, Task, parse_json

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


def split_file(task: Task, data_dir: Path, split: str | None = None) -> Path:
    """The file a run reads for one of ``task``'s splits from local data: the task's own ``dataset.data_files``
    entry when it names the split (:func:`declared_file`), else :func:`local_path`."""
    return declared_file(task, split) or local_path(task, data_dir, split)


def needed_splits(task: Task, shots: int) -> list[str]:
    """The splits a run reads for ``task``: the evaluated split, and the few-shot split when ``shots`` > 0 and it
    differs (a route-3 task draws its examples from the evaluated split itself)."""
    splits = [task.dataset.split]
    if task.fewshot_samples is not None:  # examples written in the task file
        return splits
    if shots > 0 and task.fewshot_split is not None and task.fewshot_split not in splits:
        splits.append(task.fewshot_split)
    return splits


def missing_local_files(tasks: Sequence[Task], data_dir: Path, shots: Mapping[str, int]) -> dict[str, list[Path]]:
    """Task name -> the local files it needs (:func:`needed_splits`, :func:`split_file`) that do not exist.

    Args:
        tasks: the run's tasks.
        data_dir: the local data folder (must exist).
        shots: task name -> few-shot examples per document (absent means 0).

    Returns:
        only the tasks with at least one missing file, in ``tasks`` order; each list in split order.
    """
    missing = {}
    for task in tasks:
        paths = [split_file(task, data_dir, split) for split in needed_splits(task, shots.get(task.name, 0))]
        absent = [path for path in paths if not path.is_file()]
        if absent:
            missing[task.name] = absent
    return missing


def drop_tasks_without_data(
    tasks: Sequence[Task], data_dir: Path | None, config: RunConfig, shots: Mapping[str, int] | None = None
) -> tuple[list[Task], dict[str, list[str]]]:
    """The tasks whose local files all exist, and the others (task name -> missing paths) when
    ``config.skip_missing_data`` is set; each skipped task is named on one line of stderr (``skipped <task>: no
    <path>``). Runs before any document is read or any model work starts. Without a data folder nothing is checked
    (documents come from the hub).

    The files needed are the evaluated split and, for a task run with shots (``shots``, task name -> shots as
    :func:`evalkit.fewshot.v020.resolve_shots` gives them; None reads ``config.num_fewshot`` and its ``fewshot_overrides``
    entry), its few-shot split (:func:`needed_splits`). Without ``--skip-missing-data``, a run whose only missing
    files are few-shot splits is left to the few-shot check, whose message says how to run those tasks zero-shot.

    Raises:
        EvalkitError: missing files without ``--skip-missing-data`` (every one named in one message, a few-shot
            split marked as such);
            ``--skip-missing-data`` without a data folder; a data folder that does not exist; every task skipped.
    """
    if data_dir is None:
        if config.skip_missing_data:
            raise EvalkitError(f"--skip-missing-data needs --data-dir (or ${DATA_DIR_ENV}): without a data folder "
                               f"documents come from the hub")
        return list(tasks), {}
    if not data_dir.is_dir():
        raise EvalkitError(f"data folder not found: {data_dir} (from --data-dir or ${DATA_DIR_ENV})")
    if shots is None:
        shots = {t.name: config.fewshot_overrides.get(t.name, config.num_fewshot) for t in tasks}
    missing = missing_local_files(tasks, data_dir, shots)
    evaluated_missing = any(split_file(t, data_dir) in missing.get(t.name, ()) for t in tasks)
    if missing and not config.skip_missing_data and not evaluated_missing:
        return list(tasks), {}
    if missing and not config.skip_missing_data:
        split_of = {t.name: t.dataset.split for t in tasks}

        def named(name: str, path: Path) -> str:  # a few-shot split is only needed because shots were asked for
            return str(path) if path.stem == split_of[name] else f"{path} (few-shot examples, {shots[name]} shots)"

        listed = "; ".join(f"{name}: {', '.join(named(name, p) for p in paths)}" for name, paths in missing.items())
        verb = "has" if len(missing) == 1 else "have"
        hint = " (add --skip-missing-data to run the others)" if len(missing) < len(tasks) else ""
        raise EvalkitError(f"{len(missing)} of {len(tasks)} selected tasks {verb} no local data file under {data_dir}: "
                           f"{listed}{hint}")
    for name, paths in missing.items():
        print(f"skipped {name}: no {', '.join(str(p) for p in paths)}", file=sys.stderr, flush=True)
    kept = [t for t in tasks if t.name not in missing]
    if not kept:
        raise EvalkitError(f"nothing to run: all {len(tasks)} selected tasks lack local data under {data_dir}")
    return kept, {name: [str(p) for p in paths] for name, paths in missing.items()}


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


class TaskCodeError(EvalkitError):
    """A task's own ``context``, ``continuations``, ``gold`` or ``choice_contexts`` raised on a document.

    Attributes:
        task: the task's name; the runner adds the task file to the message.
    """

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message)
        self.task = task


def _bad_value(value: Any, path: str) -> str | None:
    """The first value inside a parsed document that no prompt can use: a NaN or infinite number (JSON has none;
    Python's parser reads ``NaN`` and ``Infinity`` tokens) or a string with a lone surrogate (``"\\ud800"``, which
    no tokenizer can encode). Returns ``"field 'a.b[2]': ..."`` or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"field '{path}' is {value!r}, a number JSON does not have (a missing value written as NaN?)"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"field '{path}' holds a lone surrogate ({value[exc.start]!r} at character {exc.start}), "
                    f"text no tokenizer can encode")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _bad_value(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_value(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _call(task: Task, what: str, doc: Doc, where: str, plain: bool = True) -> Any:
    """``task.<what>(doc)``; an exception of the task's own code becomes a :class:`TaskCodeError` naming the
    document and the exception. With ``plain`` (``continuations``, ``gold``), ValueError, KeyError, TypeError and
    IndexError pass unchanged: they are how those functions name a bad field."""
    try:
        return getattr(task, what)(doc)
    except (ValueError, KeyError, TypeError, IndexError):
        if plain:
            raise
        exc = sys.exc_info()[1]
        raise TaskCodeError(f"{where}: task '{task.name}' {what}() raised {type(exc).__name__}: {exc}",
                            task.name) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - task files are user code and may fail in any way
        called = " (sys.exit was called)" if isinstance(exc, SystemExit) else ""
        raise TaskCodeError(f"{where}: task '{task.name}' {what}() raised {type(exc).__name__}: {exc}{called}",
                            task.name) from None


def validate_doc(task: Task, doc: Any, where: str) -> None:
    """Check one document against the task's declared fields and its own ``validate``, and build its prompt once.

    Every string and number in the document is checked too: a NaN or infinite number or a lone surrogate is
    named by its field path. The task's ``context``, ``continuations``, ``gold`` (and ``choice_contexts``) run on
    the document, so a task that fails on some document fails here, before any model loads; for a generation task
    (``scoring="generate_until"``), its ``context`` and ``references``.

    Args:
        task: the task whose ``dataset.fields`` and ``validate`` apply.
        doc: the parsed JSON value.
        where: location used in messages, e.g. ``"data/piqa/validation.jsonl line 7"``.

    Raises:
        EvalkitError: naming ``where`` and the offending field.
        TaskCodeError: a task function raised something else than ValueError, KeyError, TypeError, IndexError.
    """
    if not isinstance(doc, dict):
        raise EvalkitError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    bad = _bad_value(doc, "")
    if bad:
        raise EvalkitError(f"{where}: {bad}")
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
        if task.scoring == "generate_until":  # no continuations: the prompt and the references must build
            prompt = _call(task, "context", doc, where, plain=False)
            if not isinstance(prompt, str):
                raise ValueError(f"the prompt is {type(prompt).__name__}, not text")
            if task.references is not None:
                _call(task, "references", doc, where)
            return
        conts = _call(task, "continuations", doc, where)
        if not conts:
            raise ValueError("no continuation to score")
        for index, cont in enumerate(conts):
            if not isinstance(cont, str) or not cont.strip():
                raise ValueError(f"continuation {index} ({cont!r:.40}) is blank: nothing to score")
        gold = _call(task, "gold", doc, where)
        if not 0 <= gold < len(conts):
            raise ValueError(f"gold index {gold} is out of range for {len(conts)} continuations")
        for what in ("context", "choice_contexts"):
            if getattr(task, what) is not None:
                _call(task, what, doc, where, plain=False)
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
        EvalkitError: missing file, bytes that are not UTF-8, a line that is not JSON, nests too deep or holds an
            integer no float holds (names the line; :func:`evalkit.types.parse_json`).
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
                rows.append((lineno, parse_json(line.rstrip("\r\n"))))
            except json.JSONDecodeError as exc:
                raise EvalkitError(f"{path} line {lineno}: malformed JSON ({json_error(exc)})") from None
            except ValueError as exc:  # too deep, or an integer no float holds
                raise EvalkitError(f"{path} line {lineno}: {exc}") from None
    return rows


def json_error(exc: json.JSONDecodeError) -> str:
    """``"<reason> at column N"`` for a JSON error in one line (the parser's own reasons sometimes end in "at")."""
    reason = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg
    return f"{reason} at column {exc.colno}"


def duplicate_rows(rows: list[Any]) -> list[tuple[int, int]]:
    """(index, index of its first copy) of every row identical to an earlier one (same JSON, key order aside)."""
    first: dict[str, int] = {}
    out = []
    for index, row in enumerate(rows):
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in first:
            out.append((index, first[key]))
        else:
            first[key] = index
    return out


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
            and validated the same way, and its rows must also give a ``Task.target``).

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
    examples = split is not None and split == task.fewshot_split and task.target is not None
    for index, doc in enumerate(rows):
        where = f"{label} line {line_of[index]}" if line_of else f"{label} row {index}"
        validate_doc(task, doc, where)
        if examples:
            validate_target(task, doc, where)
    return rows


def validate_target(task: Task, doc: Doc, where: str) -> None:
    """Check that a row of the few-shot split gives a non-blank ``Task.target`` (what a few-shot example shows).

    Raises:
        EvalkitError: naming ``where`` and the task's own message (which names the field).
    """
    try:
        text = task.target(doc) if task.target is not None else None
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"few-shot target {text!r:.40} is blank")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise EvalkitError(f"{where}: {exc}") from None


def size_warning(task: Task, n_docs: int) -> str | None:
    """A message when the split's size differs from the task's expected n, else None (also when n is None)."""
    if task.dataset.n is None or n_docs == task.dataset.n:
        return None
    return f"{task.name}: split has {n_docs} documents, expected {task.dataset.n} (trimmed or different copy?)"


SUBSET_RULE = 2
"""Version of the ``--limit`` draw (recorded in results and baselines). 1: ``numpy.random.default_rng(seed +
sum of the task name's bytes).choice(n, limit, replace=False)``, sorted (not nested, and renaming a task moved
it). 2: the first ``limit`` ids of ``numpy.random.default_rng(seed).permutation(n)``, sorted."""


def limit_count(n_docs: int, limit: int | float | None) -> int | None:
    """Documents a task keeps under ``--limit``: None (all) without a limit; ``ceil(n_docs * limit)`` for a
    fraction 0 < limit < 1 (lm-eval 0.4.13's ``get_sample_size`` rounds up the same way); a whole count as given
    (it may exceed ``n_docs``: then all are kept).

    Raises:
        EvalkitError: a limit that is not positive, or a number of 1 or more that is not whole.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0:
        raise EvalkitError(f"--limit must be a positive whole number or a fraction between 0 and 1, got {limit!r}")
    if limit < 1:
        return int(math.ceil(n_docs * limit))
    if limit != int(limit):
        raise EvalkitError(f"--limit {limit}: a count must be a whole number (a fraction of the documents is "
                           f"between 0 and 1)")
    return int(limit)


def subset_ids(n_docs: int, limit: int | float | None, seed: int) -> list[int]:
    """Seeded random subset of document ids, sorted; all ids when ``limit`` is None or keeps every document.

    Rule :data:`SUBSET_RULE` 2: the first ``limit_count(n_docs, limit)`` ids of one seeded permutation of
    ``range(n_docs)`` (``numpy.random.default_rng(seed).permutation``), sorted. The subset depends only on
    (n_docs, limit, seed): never on the model, so every model is scored on the same documents; never on the
    task's name, so a renamed copy of a task draws the same documents. Subsets are nested: with one seed, the
    documents of ``--limit 100`` are among those of ``--limit 1000`` (a pilot run compares with its larger run).
    Taking the first N documents instead (as lm-eval does) would bias the subset towards the split's order.

    Raises:
        EvalkitError: a limit that :func:`limit_count` refuses.
    """
    count = limit_count(n_docs, limit)
    if count is None or count >= n_docs:
        return list(range(n_docs))
    order = np.random.default_rng(seed).permutation(n_docs)
    return sorted(int(i) for i in order[:count])
