"""OpenBookQA (main) test split: elementary science questions, four choices.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``openbookqa`` (VERSION 0; SPEC-suite B.5): the context is the
``question_stem`` verbatim, with **no** ``Question:`` prefix and no ``Answer:`` suffix; continuations
``" " + choice`` for the four ``choices.text``; gold = position of ``answerKey.strip()`` in ``A, B, C, D``.
Few-shot examples come from the train split (4957 rows). Mihaylov et al. 2018.
"""

from evalkit.types import DatasetSpec, Doc, Task

LETTERS = ("A", "B", "C", "D")


def context(doc: Doc) -> str:
    """The question stem, unchanged."""
    return doc["question_stem"]


def continuations(doc: Doc) -> list[str]:
    """The four choice texts, each after one space."""
    return [" " + text for text in doc["choices"]["text"]]


def gold(doc: Doc) -> int:
    """Position of the stripped answer key in A..D."""
    return LETTERS.index(doc["answerKey"].strip())


def validate(doc: Doc) -> None:
    """A non-blank stem, four non-blank choices, labels (where given) A, B, C, D in order (v0.2.0 takes the gold
    position from the key's letter, not from the labels) and an answer key among A..D."""
    if not doc["question_stem"].strip():
        raise ValueError("field 'question_stem': blank")
    texts = doc["choices"]["text"]
    if len(texts) != 4:
        raise ValueError(f"field 'choices.text': {len(texts)} choices, expected 4")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"field 'choices.text': choice {index} ({text!r:.40}) is not a non-blank string")
    labels = doc["choices"].get("label")
    if labels is not None:
        for later, label in enumerate(labels):
            if labels.index(label) != later:
                raise ValueError(f"field 'choices.label': label {label!r} is given to choices "
                                 f"{labels.index(label)} and {later}; the answer key would be ambiguous")
        if labels != list(LETTERS):
            raise ValueError(f"field 'choices.label': {labels} is not A, B, C, D in order; the gold position is taken "
                             "from the key's letter, so it would not be the labelled choice")
    if doc["answerKey"].strip() not in LETTERS:
        raise ValueError(f"field 'answerKey': {doc['answerKey']!r} is not one of A, B, C, D")


TASK = Task(
    name="openbookqa",
    version="1.0",
    dataset=DatasetSpec(
        "allenai/openbookqa", "main", "test", 500,
        {"question_stem": str, "choices": dict, "choices.text": list, "answerKey": str},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="question stem alone, 4 choices; acc, acc_norm by characters",
    source="Mihaylov et al. 2018; lm-eval v0.2.0 `openbookqa` (VERSION 0)",
    fewshot_split="train",
)
