"""Task preparation: a task's documents loaded and validated, its seeded subset chosen, each document's few-shot
context built (:mod:`evalkit.fewshot.v020`, or :mod:`evalkit.fewshot.lmeval` for lm-eval 0.4 task YAMLs; as chat
messages rendered by the model's chat template with :mod:`evalkit.fewshot.chat`) and its log-likelihood requests
made (log-likelihood requests, or one generation request per document for a ``generate_until`` task),
all before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evalkit.fewshot import lmeval as fewshot_lmeval
from evalkit.run.builtin_prompts import builtin_prompt_warning, differing_prompts, replaced_builtin
from evalkit.fewshot.chat import ChatOptions, chat_contexts, chat_continuation
from evalkit.data.documents import TaskCodeError, duplicate_rows, load_docs, size_warning, split_file, subset_ids
from evalkit.data.documents import validate_doc, validate_target
from evalkit.fewshot.v020 import (
    SOURCE_SAME_SPLIT,
    SOURCE_SPLIT,
    FewshotPlan,
    document_contexts,
    draw_examples,
    fewshot_context,
    fewshot_source,
    prompt_parts,
    self_example_warning,
    short_warning,
)
from evalkit.types import EvalkitError, GenerationRequest, LoglikelihoodRequest, Task


@dataclass
class PreparedTask:
    """A task's selected documents and their requests, ready for scoring.

    ``contexts`` holds each document's context per continuation as scored (a chat template's rendered prompt under
    ``--apply-chat-template``); ``continuations`` the continuations as scored when they differ from the task's own
    (a chat template drops the multiple-choice target delimiter), else None.
    """

    task: Task
    n_split: int
    doc_ids: list[int]
    docs: list[Any]
    requests: list[LoglikelihoodRequest] | list[GenerationRequest]
    warnings: list[str]
    fewshot: FewshotPlan | None = None
    contexts: list[list[str]] | None = None
    duplicates: int = 0
    builtin_prompts_differ: int | None = None
    """For a task replacing a built-in one: documents whose zero-shot requests differ from the built-in's."""
    continuations: list[list[str]] | None = None


def prepare_task(
    task: Task, data_dir: Path | None, limit: int | float | None, seed: int, num_fewshot: int = 0,
    fewshot_seed: int = 42, task_file: Path | None = None, max_gen_toks: int | None = None,
    chat: ChatOptions | None = None,
) -> PreparedTask:
    """Load and validate a task's split (and its few-shot split when ``num_fewshot`` > 0), pick the seeded subset
    and build its requests (doc order, choice order) with each document's full few-shot context
    (:mod:`evalkit.fewshot.v020`; per-choice contexts where the task has them).

    Documents identical to an earlier chosen one are scored again (as lm-eval does) but warned about, with their
    count. A task replacing a built-in one (``task_file`` outside the built-in folder) whose prompts differ from the
    built-in's is warned about too (:mod:`evalkit.run.builtin_prompts`): published rows used the built-in prompts.

    A generation task (``scoring="generate_until"``) gets one :class:`GenerationRequest` per document: its full
    few-shot context, the task's stop strings and ``max_gen_toks`` (``--max-gen-toks``) or else the task's own
    ``max_new_tokens``.

    With ``chat`` (a chat template, or a system instruction alone), each document's prompt is built as messages
    from the same examples (:func:`chat_requests`), a generation task's too (its prompt ends with the template's
    generation prompt; its stop strings and length are unchanged, as in lm-eval 0.4.13); rolling tasks are left as
    they are (lm-eval 0.4.13 scores a rolling document without any context).

    Raises:
        EvalkitError: bad input in either split (file, line, field), no few-shot source, too few rows to draw, a
            task function raising on a document (names ``task_file``, the document and the exception), or a
            generation task with an empty stop string, no scoring function or a generation length <= 0.
    """
    if task.scoring == "generate_until":
        check_generation_task(task, max_gen_toks, task_file)
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
    as_chat = chat is not None and chat.changes_prompts and task.scoring != "rolling"
    continuations = None
    if lmeval:
        drawn = fewshot_lmeval.document_fewshot(task, chosen, num_fewshot, lambda: fewshot_pool(task, data_dir))
        contexts = drawn.contexts
        plan = lmeval_plan(task, num_fewshot, drawn, ids, len(docs))
        examples = drawn.examples  # as documents, for a chat template
    elif task.scoring == "generate_until":  # one context per document, no continuations
        plan = draw_examples(task, docs, pool, num_fewshot, fewshot_seed)
        if as_chat:
            examples = [[pool[j] for j in plan.examples[r]] for r in ids]
        else:
            contexts = [[fewshot_context(task, docs[r], [pool[j] for j in plan.examples[r]])] for r in ids]
    else:
        plan = draw_examples(task, docs, pool, num_fewshot, fewshot_seed)
        if as_chat:
            examples = [[pool[j] for j in plan.examples[r]] for r in ids]
        else:
            contexts = document_contexts(task, docs, pool, plan, ids)
    if as_chat:
        contexts, continuations = chat_requests(task, ids, chosen, examples, chat)
        if task.scoring == "generate_until":
            continuations = None
    requests: list[Any]
    if task.scoring == "generate_until":
        new_tokens = max_gen_toks if max_gen_toks is not None else task.max_new_tokens
        requests = [GenerationRequest(task.name, doc_id, ctxs[0], tuple(task.until), new_tokens)
                    for doc_id, ctxs in zip(ids, contexts)]
    else:
        if task.scoring == "rolling":
            for doc_id, doc in zip(ids, chosen):
                check_rolling_doc(task, doc_id, doc)
        scored = continuations if continuations is not None else [task.continuations(doc) for doc in chosen]
        requests = [
            LoglikelihoodRequest(task.name, doc_id, k, ctx, cont)
            for doc_id, ctxs, conts in zip(ids, contexts, scored)
            for k, (ctx, cont) in enumerate(zip(ctxs, conts))
        ]
    if plan is not None and not lmeval:
        warnings += [w for w in [short_warning(task, plan, ids), self_example_warning(task, docs, pool, plan, ids)]
                     if w]
    differ = None
    builtin = replaced_builtin(task, task_file)
    if builtin is not None and task_file is not None:
        differ = differing_prompts(task, builtin, chosen)
        warnings += [w for w in [builtin_prompt_warning(task, builtin, task_file, differ, len(chosen))] if w]
    return PreparedTask(task, len(docs), ids, chosen, requests, warnings, plan, contexts, len(duplicates), differ,
                        continuations)


def lmeval_plan(task: Task, shots: int, drawn: fewshot_lmeval.LmevalFewshot, ids: list[int],
                n_split: int) -> FewshotPlan | None:
    """The :class:`FewshotPlan` record of an lm-eval 0.4 task YAML's draw, so that results, samples, report and
    export say how many examples each context holds and which (None at 0 shots, as for v0.2.0 tasks' plans with
    source ``none``). Rows of the evaluated split that were not chosen have no examples (lm-eval draws per
    evaluated document, in order)."""
    if not shots:
        return None
    examples: list[tuple[int, ...]] = [()] * n_split
    for doc_id, rows in zip(ids, drawn.example_ids):
        examples[doc_id] = tuple(rows)
    source = SOURCE_SAME_SPLIT if drawn.exclude_eval_doc else SOURCE_SPLIT
    return FewshotPlan(shots, source, task.fewshot_split, drawn.pool_size, tuple(examples))


def fewshot_pool(task: Task, data_dir: Path | None) -> list[Any]:
    """An lm-eval task's few-shot documents: its ``fewshot_samples`` (each checked as a row of the task), else its
    few-shot split read and validated (:func:`evalkit.data.documents.load_docs`).

    Raises:
        EvalkitError: a bad row, named by its place (``fewshot_config.samples[i]``) or file and line.
    """
    if task.fewshot_samples is None:
        return load_docs(task, data_dir, task.fewshot_split)
    rows = [dict(d) for d in task.fewshot_samples]
    for index, doc in enumerate(rows):
        where = f"task {task.name} fewshot_config.samples[{index}]"
        validate_doc(task, doc, where)
        validate_target(task, doc, where)
    return rows


def chat_requests(
    task: Task, ids: Sequence[int], chosen: Sequence[Any], examples: Sequence[Sequence[Any]], chat: ChatOptions
) -> tuple[list[list[str]], list[list[str]]]:
    """Each document's contexts (one per continuation) and continuations as a chat-templated run scores them; a
    generation task's document gets its one prompt and no continuations.

    The prompt's pieces come from :func:`evalkit.fewshot.v020.prompt_parts` (an lm-eval YAML task's own, or
    v0.2.0's strings) with the document's few-shot ``examples``; :func:`evalkit.fewshot.chat.chat_contexts` renders
    them and :func:`evalkit.fewshot.chat.chat_continuation` drops a multiple-choice continuation's delimiter.

    Raises:
        EvalkitError: a task function failing on a document, or per-choice contexts that do not match the
            continuations in number (names the task and the document).
    """
    contexts, continuations = [], []
    generate = task.scoring == "generate_until"
    for doc_id, doc, shown in zip(ids, chosen, examples):
        try:
            parts = prompt_parts(task, doc, shown)
            conts = [] if generate else [chat_continuation(c, parts.choice_delimiter, chat)
                                         for c in task.continuations(doc)]
            ctxs = chat_contexts(parts, chat)
        except ValueError as exc:
            raise EvalkitError(f"task {task.name} doc {doc_id}: {exc}") from None
        if generate:  # one prompt, generated from; the task's stop strings stay as they are (lm-eval 0.4.13)
            if len(ctxs) != 1:
                raise EvalkitError(f"task {task.name} doc {doc_id}: a generation task has one prompt per document, "
                                   f"got {len(ctxs)}")
            contexts.append(ctxs)
            continuations.append([])
            continue
        if len(ctxs) == 1:
            ctxs = ctxs * len(conts)
        if len(ctxs) != len(conts):
            raise EvalkitError(f"task {task.name} doc {doc_id}: {len(ctxs)} per-choice contexts for {len(conts)} "
                               f"continuations")
        contexts.append(ctxs)
        continuations.append(conts)
    return contexts, continuations


def missing_fewshot_file(task: Task, data_dir: Path | None) -> str | None:
    """The local few-shot file ``task`` needs but the data folder lacks, else None (the hub is not checked here)."""
    if data_dir is None or task.fewshot_split in (None, task.dataset.split) or task.fewshot_samples is not None:
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


def check_generation_task(task: Task, max_gen_toks: int | None = None, task_file: Path | None = None) -> None:
    """Refuse a generation task that cannot run: no ``score_generation``, an empty or non-string stop string, a
    generation length that is not a whole number > 0 (the task's ``max_new_tokens``, or ``--max-gen-toks``).

    Raises:
        EvalkitError: naming the task, its file and the setting.
    """
    where = f"task {task.name} ({task_file or 'task file ?'})"
    if task.score_generation is None:
        raise EvalkitError(f"{where}: a generate_until task needs score_generation (doc, generation -> metrics)")
    if isinstance(task.until, str) or not all(isinstance(s, str) and s for s in task.until):
        raise EvalkitError(f"{where}: every stop string in 'until' must be a non-empty string, got {task.until!r}")
    label, value = ("--max-gen-toks", max_gen_toks) if max_gen_toks is not None \
        else ("max_new_tokens", task.max_new_tokens)  # the flag replaces the task's own length
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise EvalkitError(f"{where}: {label} must be a whole number above 0, got {value!r}")


def check_generation_window(prepared: list[PreparedTask], window: int) -> None:
    """Refuse generation requests whose length leaves no room for a context in the model's window (v0.2.0 and
    lm-eval 0.4 keep the last ``window - max_new_tokens`` context tokens).

    Raises:
        EvalkitError: naming the task and both numbers (and ``--max-gen-toks`` as the fix).
    """
    for p in prepared:
        if p.task.scoring != "generate_until" or not p.requests:
            continue
        longest = max(r.max_new_tokens for r in p.requests)  # type: ignore[union-attr]
        if longest >= window:
            raise EvalkitError(f"task {p.task.name}: {longest} new tokens leave no room for the prompt in the "
                               f"model's window of {window} tokens; lower --max-gen-toks below {window}")
