"""Task preparation: a task's documents loaded and validated, its seeded subset chosen, each document's few-shot
context built (:mod:`evalkit.fewshot.v020`, or :mod:`evalkit.fewshot.lmeval` for lm-eval 0.4 task YAMLs) and its
log-likelihood requests made, all before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.fewshot import lmeval as fewshot_lmeval
from evalkit.data.documents import TaskCodeError, duplicate_rows, load_docs, size_warning, split_file, subset_ids
from evalkit.fewshot.v020 import (
    SOURCE_SPLIT,
    FewshotPlan,
    document_contexts,
    draw_examples,
    fewshot_source,
    self_example_warning,
    short_warning,
)
from evalkit.types import EvalkitError, LoglikelihoodRequest, Task


@dataclass
class PreparedTask:
    """A task's selected documents and their requests, ready for scoring."""

    task: Task
    n_split: int
    doc_ids: list[int]
    docs: list[Any]
    requests: list[LoglikelihoodRequest]
    warnings: list[str]
    fewshot: FewshotPlan | None = None
    contexts: list[list[str]] | None = None
    duplicates: int = 0


def prepare_task(
    task: Task, data_dir: Path | None, limit: int | float | None, seed: int, num_fewshot: int = 0,
    fewshot_seed: int = 42, task_file: Path | None = None,
) -> PreparedTask:
    """Load and validate a task's split (and its few-shot split when ``num_fewshot`` > 0), pick the seeded subset
    and build its requests (doc order, choice order) with each document's full few-shot context
    (:mod:`evalkit.fewshot.v020`; per-choice contexts where the task has them).

    Documents identical to an earlier chosen one are scored again (as lm-eval does) but warned about, with their
    count.

    Raises:
        EvalkitError: bad input in either split (file, line, field), no few-shot source, too few rows to draw, or a
            task function raising on a document (names ``task_file``, the document and the exception).
    """
    lmeval = task.fewshot_sampler != "v0.2.0"  # an lm-eval 0.4 task YAML draws with lm-eval's own sampler
    try:
        docs = load_docs(task, data_dir)
        pool = docs
        if not lmeval and fewshot_source(task, num_fewshot) == SOURCE_SPLIT:  # examples from another split
            pool = load_docs(task, data_dir, task.fewshot_split)
    except TaskCodeError as exc:
        raise EvalkitError(f"task file {task_file or '?'}: {exc}") from None
    warnings = [w for w in [size_warning(task, len(docs))] if w]
    ids = subset_ids(len(docs), limit, seed)
    chosen = [docs[i] for i in ids]
    duplicates = duplicate_rows(chosen)
    if duplicates:
        shown = ", ".join(f"doc {ids[i]} = doc {ids[j]}" for i, j in duplicates[:5])
        more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
        warnings.append(f"{task.name}: {len(duplicates)} of {len(chosen)} documents are identical to an earlier one "
                        f"({shown}{more}); each copy is scored and counted in the metrics")
    if lmeval:
        plan = None
        contexts = fewshot_lmeval.document_contexts(task, chosen, num_fewshot,
                                                    lambda: load_docs(task, data_dir, task.fewshot_split))
    else:
        plan = draw_examples(task, docs, pool, num_fewshot, fewshot_seed)
        contexts = document_contexts(task, docs, pool, plan, ids)
    if task.scoring == "rolling":
        for doc_id, doc in zip(ids, chosen):
            check_rolling_doc(task, doc_id, doc)
    requests = [
        LoglikelihoodRequest(task.name, doc_id, k, ctx, cont)
        for doc_id, doc, ctxs in zip(ids, chosen, contexts)
        for k, (ctx, cont) in enumerate(zip(ctxs, task.continuations(doc)))
    ]
    if plan is not None:
        warnings += [w for w in [short_warning(task, plan, ids), self_example_warning(task, docs, pool, plan, ids)]
                     if w]
    return PreparedTask(task, len(docs), ids, chosen, requests, warnings, plan, contexts, len(duplicates))


def missing_fewshot_file(task: Task, data_dir: Path | None) -> str | None:
    """The local few-shot file ``task`` needs but the data folder lacks, else None (the hub is not checked here)."""
    if data_dir is None or task.fewshot_split in (None, task.dataset.split):
        return None
    path = split_file(task, data_dir, task.fewshot_split)
    return None if path.is_file() else str(path)


def check_rolling_doc(task: Task, doc_id: int, doc: Any) -> None:
    """Refuse a rolling task's document whose requests or word/byte counts would be wrong (before the model loads).

    A rolling task (:class:`evalkit.types.Task`, ``scoring="rolling"``) needs ``context(doc) == ""``, exactly
    one non-empty continuation (the scored text) and, when it has ``units_text``, a non-empty string there.

    Raises:
        EvalkitError: naming the task, the document's row and the field.
    """
    where = f"task {task.name} doc {doc_id}"
    if task.context(doc) != "":
        raise EvalkitError(f"{where}: a rolling task's context must be empty, got {task.context(doc)[:40]!r}")
    texts = task.continuations(doc)
    if len(texts) != 1 or not isinstance(texts[0], str) or not texts[0]:
        raise EvalkitError(f"{where}: a rolling task has exactly one non-empty text to score, got "
                           f"{len(texts)} continuations")
    if task.units_text is not None:
        units = task.units_text(doc)
        if not isinstance(units, str) or not units:
            raise EvalkitError(f"{where}: units_text must give a non-empty string (its words and bytes normalise "
                               f"the perplexities), got {units!r}")
