"""Few-shot contexts with lm-evaluation-harness v0.2.0's exact semantics (SPEC-suite part A).

Everything few-shot, pure (standard library and :mod:`evalkit.types` only):

* :func:`draw_examples`: which rows of the few-shot split each document of the evaluated split shows, in prompt
  order. One ``random.Random(seed)`` (v0.2.0: ``random.Random()`` then ``.seed(42)``) first shuffles the evaluated
  split's row indices (v0.2.0 shuffles the documents; only their positions matter, SPEC-suite A.1), then, for each
  position of the shuffled order in turn, draws that document's examples (A.4, A.5):

  - a separate few-shot split (routes 1 and 2): ``rnd.sample(pool, k)``;
  - the evaluated split itself (route 3, ``Task.fewshot_split == dataset.split``): ``rnd.sample(pool, k + 1)``, then
    every drawn row whose document is value-equal to the evaluated one (``!=`` on dicts) is dropped and the first
    k are kept.

  Every row of the split gets its examples, so a document's examples never depend on ``--limit``, the batch size,
  the ranks or the cache: a ``--limit`` subset shows exactly what the full run shows (A.1's prefix property,
  generalised to evalkit's seeded subsets).
* :func:`fewshot_context`: ``description + "\\n\\n"`` (when non-empty), then
  ``"\\n\\n".join(context(e) + target(e) for e in examples) + "\\n\\n"`` (when there are examples), then
  ``context(doc)`` (A.2).
* :func:`choice_contexts`: WinoGrande's partial evaluation (SPEC-suite B.4): per continuation, the assembled
  context with its last ``"\\n\\n"``-separated piece replaced by that choice's partial context.
* :func:`resolve_shots` and :func:`check_sources`: k per task from ``--num-fewshot`` and ``--tasks name:K``, and one
  refusal, before any model loads, that lists every task whose examples cannot be read.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from evalkit.fewshot.chat import PromptParts
from evalkit.types import Doc, EvalkitError, Task, TaskGroup

SOURCE_NONE = "none"
SOURCE_SPLIT = "split"
SOURCE_SAME_SPLIT = "evaluated split without the document"
SEPARATOR = "\n\n"
"""Between the description, the examples and the query (v0.2.0 ``fewshot_context``)."""


@dataclass(frozen=True)
class FewshotPlan:
    """The few-shot examples of every row of a task's evaluated split.

    Attributes:
        num_fewshot: k, examples asked for per document (int, >= 0).
        source: ``"none"`` (k = 0), ``"split"`` (a separate few-shot split) or ``"evaluated split without the
            document"`` (route 3).
        split: the few-shot split's name, None when k = 0.
        pool_size: rows of the few-shot split that may be drawn (after ``Task.fewshot_filter``); 0 when k = 0.
        examples: for each row of the evaluated split (natural order), the few-shot split's row ids in prompt order
            (length k, shorter only in route 3 when a value-equal duplicate of the document was drawn too).
        short_rows: rows of the evaluated split that got fewer than k examples (route 3 duplicates; v0.2.0 does
            the same).
    """

    num_fewshot: int
    source: str
    split: str | None
    pool_size: int
    examples: tuple[tuple[int, ...], ...]
    short_rows: tuple[int, ...] = ()


def fewshot_source(task: Task, k: int) -> str:
    """Where ``task``'s examples come from at ``k`` shots: one of ``SOURCE_NONE``, ``SOURCE_SPLIT``,
    ``SOURCE_SAME_SPLIT``.

    Raises:
        EvalkitError: k < 0, or k > 0 for a task without a few-shot split (names the task and the fix).
    """
    if k < 0:
        raise EvalkitError(f"task '{task.name}': number of few-shot examples must be 0 or more, got {k}")
    if k == 0:
        return SOURCE_NONE
    if task.fewshot_split is None:
        raise EvalkitError(f"task '{task.name}' has no few-shot source (no few-shot split); "
                           f"run it zero-shot with --tasks {task.name}:0")
    return SOURCE_SAME_SPLIT if task.fewshot_split == task.dataset.split else SOURCE_SPLIT


def pool_rows(task: Task, fewshot_docs: Sequence[Doc]) -> list[int]:
    """Row ids of the few-shot split that may be drawn: all of them, or those ``Task.fewshot_filter`` keeps,
    in split order."""
    if task.fewshot_filter is None:
        return list(range(len(fewshot_docs)))
    return [i for i, doc in enumerate(fewshot_docs) if task.fewshot_filter(doc)]


def draw_examples(
    task: Task, eval_docs: Sequence[Doc], fewshot_docs: Sequence[Doc], k: int, seed: int = 42
) -> FewshotPlan:
    """The few-shot examples of every row of the evaluated split (SPEC-suite A.1, A.4, A.5).

    Args:
        task: the task (its name, ``fewshot_split``, ``dataset.split`` and ``fewshot_filter`` are used).
        eval_docs: the evaluated split, natural order (row id = list index).
        fewshot_docs: the few-shot split, natural order; for route 3 the evaluated split itself.
        k: examples per document (0: no draw at all).
        seed: the generator's seed (v0.2.0: 42).

    Returns:
        a :class:`FewshotPlan`; ``plan.examples[row]`` indexes ``fewshot_docs``.

    Raises:
        EvalkitError: k < 0; k > 0 without a few-shot split; more examples asked for than the pool holds (names the
            task, k and the pool size).
    """
    source = fewshot_source(task, k)
    if source == SOURCE_NONE:
        return FewshotPlan(0, SOURCE_NONE, None, 0, tuple(() for _ in eval_docs))
    pool = pool_rows(task, fewshot_docs)
    same = source == SOURCE_SAME_SPLIT
    draws = k + 1 if same else k
    if draws > len(pool):
        extra = " (route 3 draws k + 1 from the evaluated split)" if same else ""
        raise EvalkitError(f"task '{task.name}': {k} few-shot examples asked for, but its few-shot split "
                           f"'{task.fewshot_split}' has only {len(pool)} rows to draw from{extra}")
    rnd = random.Random(seed)
    order = list(range(len(eval_docs)))
    rnd.shuffle(order)
    examples: list[tuple[int, ...]] = [()] * len(eval_docs)
    short = []
    for row in order:
        drawn = rnd.sample(pool, draws)
        if same:
            doc = eval_docs[row]
            drawn = [i for i in drawn if fewshot_docs[i] != doc][:k]
            if len(drawn) < k:
                short.append(row)
        examples[row] = tuple(drawn)
    return FewshotPlan(k, source, task.fewshot_split, len(pool), tuple(examples), tuple(sorted(short)))


def example_target(task: Task, doc: Doc) -> str:
    """What a few-shot example shows after its ``context(doc)``: ``Task.target(doc)``, or, when the task has none,
    its gold continuation ``continuations(doc)[gold(doc)]`` (v0.2.0 ``doc_to_target``)."""
    if task.target is not None:
        return task.target(doc)
    return task.continuations(doc)[task.gold(doc)]


def fewshot_context(task: Task, doc: Doc, examples: Sequence[Doc], description: str = "") -> str:
    """The full context of ``doc`` with its few-shot ``examples`` (SPEC-suite A.2).

    ``description + "\\n\\n"`` when the description is non-empty, then each example as ``context(e) + target(e)``
    joined by ``"\\n\\n"`` and followed by ``"\\n\\n"`` (when there are examples), then ``context(doc)``.

    Args:
        task: the task whose ``context`` and target (:func:`example_target`) apply.
        doc: the evaluated document.
        examples: the example documents, in prompt order (empty for zero-shot).
        description: text put before everything (v0.2.0 ``description_dict[task]``); empty by default.
    """
    prefix = description + SEPARATOR if description else ""
    shots = SEPARATOR.join(task.context(e) + example_target(task, e) for e in examples)
    return prefix + (shots + SEPARATOR if examples else "") + task.context(doc)


def prompt_parts(task: Task, doc: Doc, examples: Sequence[Doc]) -> PromptParts:
    """The pieces of ``doc``'s prompt as chat messages take them (:mod:`evalkit.fewshot.chat`): the task's own
    ``Task.prompt_parts`` when it has one, else built from v0.2.0's strings, mirroring lm-eval 0.4.13's
    ``build_qa_turn`` with ``target_delimiter=" "`` and ``fewshot_delimiter="\n\n"``:

    * no description (v0.2.0 tasks run without one);
    * each example: question ``context(e)``, answer its target (:func:`example_target`) without the leading
      space that v0.2.0 targets carry, which becomes the target delimiter (``" "``; ``""`` when some example's
      target does not start with a space), so the single-turn plain text is v0.2.0's own ``"\n\n"`` join;
    * the document's question: ``context(doc)``, or one per continuation from ``choice_contexts``
      (WinoGrande's partial contexts);
    * a multiple-choice task's continuations start with the delimiter ``" "`` (``" " + choice``).
    """
    if task.prompt_parts is not None:
        return task.prompt_parts(doc, examples)
    shots = [(task.context(e), example_target(task, e)) for e in examples]
    spaced = all(target.startswith(" ") for _, target in shots)
    delimiter = " " if spaced else ""
    pairs = tuple((q, target[1:] if spaced else target) for q, target in shots)
    questions = tuple(task.choice_contexts(doc)) if task.choice_contexts is not None else (task.context(doc),)
    return PromptParts("", pairs, questions, delimiter, SEPARATOR, SEPARATOR,
                       " " if task.scoring == "multiple_choice" else "")


def replace_last_piece(context: str, partial: str) -> str:
    """``context`` with its last ``"\\n\\n"``-separated piece replaced by ``partial``; ``partial`` alone when
    nothing is left (v0.2.0 Winogrande ``append_context``, SPEC-suite B.4)."""
    pieces = context.split(SEPARATOR)[:-1]
    return SEPARATOR.join([*pieces, partial]) if pieces else partial


def choice_contexts(task: Task, doc: Doc, context: str) -> list[str]:
    """One context per continuation of ``doc``.

    Args:
        task: the task; when it has ``choice_contexts`` (partial evaluation), each of those replaces the last
            piece of ``context`` (:func:`replace_last_piece`); otherwise every continuation gets ``context``.
        doc: the evaluated document.
        context: its assembled context (:func:`fewshot_context`).

    Raises:
        ValueError: ``choice_contexts`` gives another number of contexts than there are continuations.
    """
    n = len(task.continuations(doc))
    if task.choice_contexts is None:
        return [context] * n
    partials = task.choice_contexts(doc)
    if len(partials) != n:
        raise ValueError(f"task '{task.name}': choice_contexts gave {len(partials)} contexts for {n} continuations")
    return [replace_last_piece(context, p) for p in partials]



def document_contexts(
    task: Task, eval_docs: Sequence[Doc], fewshot_docs: Sequence[Doc], plan: FewshotPlan, rows: Sequence[int]
) -> list[list[str]]:
    """For each of ``rows`` (row ids of the evaluated split), one full context per continuation
    (:func:`fewshot_context` with the plan's examples, then :func:`choice_contexts`)."""
    return [choice_contexts(task, eval_docs[r], fewshot_context(task, eval_docs[r],
                                                                [fewshot_docs[j] for j in plan.examples[r]]))
            for r in rows]


def short_warning(task: Task, plan: FewshotPlan, rows: Sequence[int]) -> str | None:
    """A warning naming the documents among ``rows`` that show fewer than k examples (route 3 duplicates), else
    None."""
    short = sorted(set(plan.short_rows) & set(rows))
    if not short:
        return None
    return (f"{task.name}: {len(short)} documents show fewer than {plan.num_fewshot} few-shot examples: a "
            f"value-equal duplicate of the document was drawn as well and dropped (as lm-eval v0.2.0 does); "
            f"rows {short[:10]}")


def self_example_warning(
    task: Task, eval_docs: Sequence[Doc], fewshot_docs: Sequence[Doc], plan: FewshotPlan, rows: Sequence[int]
) -> str | None:
    """A warning naming the documents among ``rows`` whose examples, drawn from a separate few-shot split, include
    a value-equal copy of the document itself (the two splits overlap, e.g. ``data_files`` naming one file for
    both), else None. The example stays (v0.2.0 removes nothing outside route 3), but the prompt then shows the
    answer."""
    if plan.source != SOURCE_SPLIT:
        return None
    hit = [r for r in rows if any(fewshot_docs[j] == eval_docs[r] for j in plan.examples[r])]
    if not hit:
        return None
    return (f"{task.name}: {len(hit)} of {len(rows)} documents show themselves, answer included, among their "
            f"few-shot examples: the few-shot split '{plan.split}' holds copies of evaluated documents; rows "
            f"{sorted(hit)[:10]}")


def _selected(tasks: Sequence[Task], name: str) -> Task | None:
    return next((t for t in tasks if name == t.name or name in t.aliases), None)


def resolve_shots(
    tasks: Sequence[Task], num_fewshot: int, overrides: Mapping[str, int], groups: Mapping[str, TaskGroup]
) -> dict[str, int]:
    """Task name -> few-shot examples per document for a run.

    ``num_fewshot`` for every task, then ``overrides`` (``--tasks name:K``): a group's count applies to its
    members, and a task's own count (by name or alias) beats its group's.

    Args:
        tasks: the selected tasks.
        num_fewshot: ``--num-fewshot``.
        overrides: task, alias or group name -> count.
        groups: the registry's groups by name.

    Raises:
        EvalkitError: a count that is not a non-negative int, or an override naming no selected task.
    """
    for given, k in [("--num-fewshot", num_fewshot), *overrides.items()]:
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise EvalkitError(f"few-shot count for {given} must be a non-negative integer, got {k!r}")
    shots = {t.name: num_fewshot for t in tasks}
    ordered = sorted(overrides.items(), key=lambda item: item[0] not in groups)  # groups first, then tasks
    for given, k in ordered:
        members = groups[given].tasks if given in groups else (given,)
        for member in members:
            task = _selected(tasks, member)
            if task is None:
                raise EvalkitError(f"few-shot count given for '{given}', which is not among the selected tasks")
            shots[task.name] = k
    return shots


def check_sources(
    tasks: Sequence[Task], shots: Mapping[str, int], missing_file: Callable[[Task], str | None],
    given: Sequence[str], overrides: Mapping[str, int],
) -> None:
    """Refuse, in one message, every task whose few-shot examples cannot be read: no few-shot split at all, or a
    missing file for it.

    Args:
        tasks: the selected tasks.
        shots: task name -> k (:func:`resolve_shots`).
        missing_file: ``task -> path`` of its few-shot split's file when that file is missing, else None.
        given: the ``--tasks`` names as given (without counts), to write the fix.
        overrides: the counts given with them.

    Raises:
        EvalkitError: listing each such task and its reason, then the ``--tasks`` value that runs those zero-shot.
    """
    problems: dict[str, str] = {}
    for task in tasks:
        if shots[task.name] == 0:
            continue
        missing = missing_file(task) if task.fewshot_split is not None else None
        if task.fewshot_split is None:
            problems[task.name] = "has no few-shot source (no few-shot split)"
        elif missing is not None:
            problems[task.name] = f"needs its few-shot split '{task.fewshot_split}': {missing} not found"
    if not problems:
        return
    fix = []
    for name in given:
        task = _selected(tasks, name)
        if task is not None and task.name in problems:
            fix.append(f"{name}:0")
        else:
            fix.append(f"{name}:{overrides[name]}" if name in overrides else name)
    named = {item.split(":")[0] for item in fix}
    fix += [f"{t.name}:0" for t in tasks if t.name in problems and not ({t.name, *t.aliases} & named)]
    lines = [f"  {name} ({shots[name]}-shot) {why}" for name, why in problems.items()]
    files = any("not found" in why for why in problems.values())
    raise EvalkitError(
        f"{len(problems)} of {len(tasks)} tasks cannot be run few-shot:\n" + "\n".join(lines)
        + f"\nrun them zero-shot with --tasks {','.join(fix)}"
        + (", or add the missing few-shot files to the data folder" if files else "")
    )
