"""PROST test split: physical reasoning about objects, four choices, zero-shot only.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``prost`` (VERSION 0; SPEC-suite B.18). Context:
``f"{context}\\nQuestion: {ex_question}\\nAnswer:"``; continuations ``" " + choice`` for the fields ``A``, ``B``,
``C``, ``D``; gold = ``label``; acc, acc_norm. v0.2.0 asserts zero shots (PROST has no training split and its
authors evaluate zero-shot), so ``fewshot_split`` is None and a few-shot run including it is refused.
Aroca-Ouellette et al. 2021.
"""

from evalkit.types import DatasetSpec, Doc, Task

LETTERS = ("A", "B", "C", "D")


def context(doc: Doc) -> str:
    """The context, then the question."""
    return f"{doc['context']}\nQuestion: {doc['ex_question']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """The four choices A-D, each after one space."""
    return [" " + doc[letter] for letter in LETTERS]


def gold(doc: Doc) -> int:
    """The label 0-3."""
    return doc["label"]


def validate(doc: Doc) -> None:
    """Four non-blank choices and a label 0-3."""
    for letter in LETTERS:
        if not doc[letter].strip():
            raise ValueError(f"field '{letter}': blank")
    if doc["label"] not in (0, 1, 2, 3):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0, 1, 2 or 3")


TASK = Task(
    name="prost",
    version="1.0",
    dataset=DatasetSpec("corypaik/prost", None, "test", 18736,
                        {"context": str, "ex_question": str, "A": str, "B": str, "C": str, "D": str, "label": int}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="physical reasoning, 4 choices, zero-shot only; acc, acc_norm",
    source="Aroca-Ouellette et al. 2021; lm-eval v0.2.0 `prost` (VERSION 0)",
    fewshot_split=None,
)
