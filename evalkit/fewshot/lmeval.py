"""Few-shot examples the way lm-evaluation-harness 0.4 draws and joins them (not v0.2.0's way).

Source: lm-eval 0.4 ``lm_eval/api/samplers.py`` (``ContextSampler``, ``FirstNSampler``) and
``ConfigurableTask.fewshot_context`` / ``build_qa_turn`` in ``lm_eval/api/task.py`` (plain text, no chat template):

* One ``random.Random(seed)`` per task (lm-eval's ``fewshot_random_seed``, 1234 by default), seeded once and then
  drawn from for each evaluated document in document order, so a document's examples depend on the documents
  before it.
* ``default`` sampler: ``rnd.sample(pool, n)``; when the few-shot split is the evaluated (test) split it draws
  ``n + 1``, drops every example equal to the document and keeps the first ``n`` (and, should duplicates of the
  document leave fewer than ``n``, draws ``n`` again from the pool without any copy of it).
* ``first_n`` sampler: the first ``n`` documents of the pool (without the document, as above); no randomness.
* Context: ``description`` + for each example ``text + target_delimiter + answer + fewshot_delimiter`` (an example
  whose answer is empty shows its text alone) + the document's text. No delimiter follows the description:
  lm-eval YAMLs end it with their own (``"...\\n\\n"``).

Pure: imports only the standard library and :mod:`evalkit.types` (the few-shot split comes in as a loader).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from evalkit.types import Doc, EvalkitError, Task

LMEVAL_FEWSHOT_SEED = 1234
"""lm-eval 0.4's default ``fewshot_random_seed`` (``simple_evaluate``; ``--seed`` third value)."""

SAMPLERS = ("default", "first_n")


def _without(doc: Doc, pool: Sequence[Doc]) -> list[Doc]:
    return [x for x in pool if x != doc]


def draw_examples(
    pool: Sequence[Doc],
    eval_docs: Sequence[Doc],
    n: int,
    seed: int = LMEVAL_FEWSHOT_SEED,
    sampler: str = "default",
    exclude_eval_doc: bool = False,
) -> list[list[Doc]]:
    """The few-shot example documents of each evaluated document, drawn as lm-eval 0.4 draws them.

    Args:
        pool: the few-shot split's documents (after ``process_docs``), in split order.
        eval_docs: the evaluated documents in the order lm-eval visits them (split order of the chosen documents);
            the generator advances once per document, so this order matters.
        n: examples per document (>= 0); 0 draws nothing and leaves the generator untouched.
        seed: seed of the task's one ``random.Random`` (lm-eval's default 1234).
        sampler: ``"default"`` (seeded random sample) or ``"first_n"`` (the pool's first ``n``).
        exclude_eval_doc: True when the few-shot split is the evaluated split (lm-eval: ``fewshot_split ==
            test_split``): examples equal to the document (``==`` on the dict) are never shown.

    Returns:
        one list of ``n`` example documents per evaluated document, in ``eval_docs`` order.

    Raises:
        ValueError: an unknown sampler, a negative ``n``, an empty pool, or a pool too small for ``n`` examples.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown lm-eval few-shot sampler {sampler!r}; supported: {', '.join(SAMPLERS)}")
    if n < 0:
        raise ValueError(f"number of few-shot examples must be >= 0, got {n}")
    if n == 0:
        return [[] for _ in eval_docs]
    if not pool:
        raise ValueError("the few-shot split has no documents to draw examples from")
    need = n + 1 if exclude_eval_doc and sampler == "default" else n
    if need > len(pool):
        raise ValueError(f"{n} few-shot examples asked for, but the few-shot split has {len(pool)} documents"
                         + (" (one more is drawn when examples come from the evaluated split)"
                            if exclude_eval_doc else ""))
    rnd = random.Random(seed)
    out = []
    for doc in eval_docs:
        if sampler == "first_n":
            chosen = (_without(doc, pool) if exclude_eval_doc else list(pool))[:n]
        elif not exclude_eval_doc:
            chosen = rnd.sample(list(pool), n)
        else:
            chosen = _without(doc, rnd.sample(list(pool), n + 1))[:n]
            if len(chosen) < n:  # duplicates of the document were drawn: lm-eval draws again without any copy
                chosen = rnd.sample(_without(doc, pool), n)
        if len(chosen) != n:
            raise ValueError(f"only {len(chosen)} few-shot examples remain once the document itself is removed")
        out.append(chosen)
    return out


def assemble_context(
    description: str,
    examples: Sequence[tuple[str, str]],
    text: str,
    target_delimiter: str = " ",
    fewshot_delimiter: str = "\n\n",
) -> str:
    """lm-eval 0.4's plain-text context: description, then each example, then the document's own text.

    Args:
        description: the task description, rendered for the document ("" for none).
        examples: (text, answer) of each example, answer already resolved to the shown string.
        text: the evaluated document's text (for a multiple-input task, one of its per-choice contexts).
        target_delimiter: between an example's text and its answer (lm-eval default ``" "``).
        fewshot_delimiter: after each example's answer (lm-eval default ``"\\n\\n"``).

    Returns:
        the context string (the continuation, ``target_delimiter + choice``, is not part of it).
    """
    parts = [description]
    for example_text, answer in examples:
        parts.append(example_text + (target_delimiter + answer + fewshot_delimiter if answer != "" else ""))
    parts.append(text)
    return "".join(parts)


SAMPLER_PREFIX = "lm-eval-0.4:"
EXCLUDE_SUFFIX = ":exclude-doc"


def sampler_name(sampler: str, exclude_eval_doc: bool) -> str:
    """The ``Task.fewshot_sampler`` value for an lm-eval 0.4 sampler, e.g. ``"lm-eval-0.4:default:exclude-doc"``."""
    return SAMPLER_PREFIX + sampler + (EXCLUDE_SUFFIX if exclude_eval_doc else "")


def parse_sampler(name: str) -> tuple[str, bool] | None:
    """``(sampler, exclude_eval_doc)`` of an lm-eval 0.4 ``Task.fewshot_sampler`` value; None for any other value.

    Raises:
        ValueError: an ``lm-eval-0.4:`` value naming an unknown sampler.
    """
    if not name.startswith(SAMPLER_PREFIX):
        return None
    rest = name[len(SAMPLER_PREFIX):]
    exclude = rest.endswith(EXCLUDE_SUFFIX)
    sampler = rest[: -len(EXCLUDE_SUFFIX)] if exclude else rest
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown lm-eval few-shot sampler {sampler!r} in {name!r}; supported: {', '.join(SAMPLERS)}")
    return sampler, exclude


@dataclass(frozen=True)
class LmevalFewshot:
    """The few-shot contexts of an lm-eval 0.4 task YAML's chosen documents, and what was drawn for them.

    Attributes:
        contexts: per chosen document, the context of each continuation.
        example_ids: per chosen document, the few-shot split's row ids of its examples in prompt order (empty
            lists at 0 shots).
        pool_size: rows of the few-shot split (after ``process_docs``); 0 at 0 shots (nothing is loaded).
        exclude_eval_doc: True when examples come from the evaluated split, the document itself left out.
        examples: per chosen document, its example documents in prompt order (what a chat template renders).
    """

    contexts: list[list[str]]
    example_ids: list[list[int]]
    pool_size: int
    exclude_eval_doc: bool
    examples: list[list[Doc]] = field(default_factory=list)


def document_fewshot(
    task: Task, chosen: Sequence[Doc], shots: int, load_pool: Callable[[], Sequence[Doc]]
) -> LmevalFewshot:
    """Per chosen document of an lm-eval 0.4 task YAML, the context of each continuation and its examples' row ids.

    Zero-shot: the task's own contexts (``Task.choice_contexts`` where it has them; a generation task's one
    context). With ``shots`` examples: drawn
    by lm-eval 0.4's sampler (one ``random.Random(1234)`` for the task, advanced document by document in id
    order) from ``load_pool()``, the task's few-shot split, which is loaded only once the task is known to have
    one. Row ids are positions in ``load_pool()`` (a drawn example is the pool's own object).

    Raises:
        EvalkitError: a task whose sampler is not lm-eval 0.4's, without a few-shot split, or with too few examples.
    """
    if not shots:
        if task.scoring == "generate_until":  # one context, no continuations
            return LmevalFewshot([[task.context(doc)] for doc in chosen], [[] for _ in chosen], 0, False,
                                 [[] for _ in chosen])
        contexts = [task.choice_contexts(doc) if task.choice_contexts else [task.context(doc)] * len(
            task.continuations(doc)) for doc in chosen]
        return LmevalFewshot(contexts, [[] for _ in chosen], 0, False, [[] for _ in chosen])
    parsed = parse_sampler(task.fewshot_sampler)
    if parsed is None or task.fewshot_contexts is None:
        raise EvalkitError(f"task {task.name}: {shots} few-shot examples asked for, but only lm-eval 0.4 task YAMLs "
                           f"assemble few-shot contexts in this evalkit")
    if task.fewshot_split is None:
        raise EvalkitError(f"task {task.name}: {shots} few-shot examples asked for, but it has no few-shot split")
    pool = load_pool()
    sampler, exclude = parsed
    try:
        drawn = draw_examples(pool, chosen, shots, LMEVAL_FEWSHOT_SEED, sampler, exclude)
    except ValueError as exc:
        raise EvalkitError(f"task {task.name}: {exc}") from None
    try:
        contexts = [task.fewshot_contexts(doc, examples) for doc, examples in zip(chosen, drawn)]
    except ValueError as exc:
        raise EvalkitError(f"task {task.name}, few-shot split {task.fewshot_split}: {exc}") from None
    row_of = {id(doc): row for row, doc in enumerate(pool)}
    return LmevalFewshot(contexts, [[row_of[id(x)] for x in examples] for examples in drawn], len(pool), exclude,
                         [list(examples) for examples in drawn])


def document_contexts(
    task: Task, chosen: Sequence[Doc], shots: int, load_pool: Callable[[], Sequence[Doc]]
) -> list[list[str]]:
    """Per chosen document of an lm-eval 0.4 task YAML, the context of each continuation
    (:func:`document_fewshot`'s ``contexts``).

    Raises:
        EvalkitError: as :func:`document_fewshot`.
    """
    return document_fewshot(task, chosen, shots, load_pool).contexts


def document_examples(
    task: Task, chosen: Sequence[Doc], shots: int, load_pool: Callable[[], Sequence[Doc]]
) -> list[list[Doc]]:
    """Per chosen document of an lm-eval 0.4 task YAML, its few-shot example documents in prompt order
    (:func:`document_fewshot`'s ``examples``; empty lists at zero shots).

    Raises:
        EvalkitError: as :func:`document_fewshot`.
    """
    return document_fewshot(task, chosen, shots, load_pool).examples
