"""MATH (Hendrycks et al. 2021, "Measuring Mathematical Problem Solving With the MATH Dataset"): seven subjects of
competition problems, answered by greedy generation and scored by answer equivalence.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``lm_eval/tasks/hendrycks_math.py`` (VERSION 1; tag v0.2.0 =
commit 7064d6b9), the tasks behind the GPT-NeoX-20B paper's MATH rows. The final prompt of a document with two
few-shot examples (no description) is, LFs shown as line breaks::

    Problem: {problem of example 1}
    Answer: {answer of example 1}

    Problem: {problem of example 2}
    Answer: {answer of example 2}

    Problem: {problem}
    Answer:

where an example's answer is ``remove_boxed(last_boxed_only_string(solution))``, the content of the last
``\\boxed{...}`` of its solution (not the whole solution: lm-eval v0.3.0 changed the few-shot target to
``" " + solution``; v0.2.0 shows the answer alone). The model then generates greedily until ``"\\n"``.
Examples come from the subject's train split, drawn with v0.2.0's seeded generator (SPEC-suite A.4 route 1).

Scoring (v0.2.0 ``process_results``, :mod:`evalkit.stats.math_answers`): when the generation holds at least two
``$``, its answer is the text between the first and the last ``$``, else the whole generation; ``acc`` = 1 when
``is_equiv`` (both sides normalised by ``strip_string``, raw equality when normalising fails) holds against the
document's boxed answer. A document whose solution has no usable ``\\boxed{}`` is refused before any model loads
(v0.2.0 stops with an AssertionError on it when it loads the split).

Generation length: v0.2.0's own HF model class generates at most 256 new tokens (``max_gen_toks``); the gpt-neox
evaluation adapter, which the NeoX team ran, sets 128. Which of the two produced the paper's rows is not stated,
so the default here is v0.2.0's 256; ``--max-gen-toks 128`` gives the adapter's (docs/tasks-math.md).

Data: v0.2.0 read ``MATH.tar`` (``MATH/{test,train}/<subject>/<n>.json``) in ``sorted(path.iterdir())`` order.
The hub dataset ``EleutherAI/hendrycks_math`` (config = subject; fields ``problem``, ``level``, ``type``,
``solution``) was built by a loader that reads the same tar in the same sorted order; locally
``<data dir>/<task name>/{test,train}.jsonl`` (e.g. ``DIR/math_algebra/test.jsonl``).
"""

from evalkit.stats.math_answers import extract_answer, math_acc, reference_answer
from evalkit.types import DatasetSpec, Doc, Task

SUBJECTS = {
    # task name: (hub config and MATH.tar folder, test n, train n)
    "math_algebra": ("algebra", 1187, 1744),
    "math_counting_and_prob": ("counting_and_probability", 474, 771),
    "math_geometry": ("geometry", 479, 870),
    "math_intermediate_algebra": ("intermediate_algebra", 903, 1295),
    "math_num_theory": ("number_theory", 540, 869),
    "math_prealgebra": ("prealgebra", 871, 1205),
    "math_precalc": ("precalculus", 546, 746),
}
"""The seven v0.2.0 MATH tasks: subject folder, test size (5000 in all), train size (7500 in all)."""

FIELDS = {"problem": str, "level": str, "type": str, "solution": str}

MAX_NEW_TOKENS = 256
"""lm-eval v0.2.0's ``max_gen_toks`` (the gpt-neox adapter: 128)."""


def context(doc: Doc) -> str:
    """``Problem: {problem}`` and ``Answer:`` on the next line (v0.2.0 ``doc_to_text``)."""
    return "Problem: " + doc["problem"] + "\nAnswer:"


def target(doc: Doc) -> str:
    """A few-shot example's answer: a space and the solution's last boxed answer (v0.2.0 ``doc_to_target``)."""
    return " " + reference_answer(doc["solution"])


def score(doc: Doc, generation: str) -> dict[str, float]:
    """``acc``: 1.0 when the generation's answer is equivalent to the solution's boxed answer, else 0.0."""
    return {"acc": float(math_acc(generation, doc["solution"]))}


def answers(doc: Doc, generation: str) -> dict[str, str]:
    """The answer read from the generation (the text between its first and last ``$``, or all of it)."""
    return {"answer": extract_answer(generation)}


def validate(doc: Doc) -> None:
    """The solution must hold a boxed answer v0.2.0 can read (it stops on one it cannot)."""
    try:
        reference_answer(doc["solution"])
    except ValueError as exc:
        raise ValueError(f"field 'solution': no usable \\boxed{{...}} answer ({exc})") from None


def subject_task(name: str) -> Task:
    """The MATH task ``name`` (test split evaluated, train split for few-shot examples)."""
    subject, n_test, _ = SUBJECTS[name]
    return Task(
        name=name,
        version="1.0",
        dataset=DatasetSpec("EleutherAI/hendrycks_math", subject, "test", n_test, FIELDS),
        context=context,
        continuations=lambda doc: [],
        gold=lambda doc: 0,
        scoring="generate_until",
        metrics=("acc",),
        validate=validate,
        description=f"MATH {subject.replace('_', ' ')}: greedy answer until a line break, acc = is_equiv with the "
                    f"boxed answer",
        source="Hendrycks et al. 2021; lm-eval v0.2.0 `hendrycks_math` (VERSION 1)",
        fewshot_split="train",
        target=target,
        until=("\n",),
        max_new_tokens=MAX_NEW_TOKENS,
        score_generation=score,
        generation_answers=answers,
        references=lambda doc: [reference_answer(doc["solution"])],
    )


TASKS = [subject_task(name) for name in SUBJECTS]
