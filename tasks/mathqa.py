"""MathQA test split: GRE/GMAT-style math word problems with five options.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``mathqa`` (VERSION 0; SPEC-suite B.16). Context:
``f"Question: {Problem}\\nAnswer:"``. Choices: every non-overlapping match, left to right, of the regex
``[abcd] \\) .*?, |e \\) .*?$`` in ``options``, each without its first four characters (``"a ) "``) and with
trailing spaces and commas stripped: ``"a ) 38 , b ) 27.675 , ... , e ) none of these"`` -> ``38``, ``27.675``,
..., ``none of these``. As in v0.2.0 the lazy match stops at the first ``", "``, so an option containing a comma
and a space is cut there (``"a ) 1, 2 , b ) ..."`` gives ``1``), while ``1,200`` is kept. Continuations
``" " + choice``; gold = position of ``correct`` in ``a b c d e``; acc, acc_norm. A document whose options give
fewer choices than its gold letter needs is refused (v0.2.0 would count it wrong, and crash drawing it as an
example). Few-shot examples come from train (29837). Amini et al. 2019.
"""

import re

from evalkit.types import DatasetSpec, Doc, Task

OPTION = re.compile(r"[abcd] \) .*?, |e \) .*?$")
LETTERS = ("a", "b", "c", "d", "e")


def choices(doc: Doc) -> list[str]:
    """The option texts v0.2.0's regex extracts from the ``options`` string."""
    return [match[4:].rstrip(" ,") for match in OPTION.findall(doc["options"])]


def context(doc: Doc) -> str:
    """Question/answer frame around the problem."""
    return f"Question: {doc['Problem']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """Every extracted option, each after one space."""
    return [" " + choice for choice in choices(doc)]


def gold(doc: Doc) -> int:
    """Position of the correct letter in a..e."""
    return LETTERS.index(doc["correct"])


def validate(doc: Doc) -> None:
    """A correct letter a-e naming one of the extracted options, each of them non-blank."""
    if doc["correct"] not in LETTERS:
        raise ValueError(f"field 'correct': {doc['correct']!r} is not one of a-e")
    found = choices(doc)
    for index, choice in enumerate(found):
        if not choice.strip():
            raise ValueError(f"field 'options': option {index} is blank in {doc['options']!r:.80}")
    if LETTERS.index(doc["correct"]) >= len(found):
        raise ValueError(f"field 'options': only {len(found)} options extracted from {doc['options']!r:.80}, "
                         f"but 'correct' is {doc['correct']!r}")


TASK = Task(
    name="mathqa",
    version="1.0",
    dataset=DatasetSpec("allenai/math_qa", None, "test", 2985, {"Problem": str, "options": str, "correct": str}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="math word problem, 5 options parsed from a string; acc, acc_norm",
    source="Amini et al. 2019; lm-eval v0.2.0 `mathqa` (VERSION 0)",
    fewshot_split="train",
)
