"""ARC-Easy test split: grade-school science multiple choice (3 to 5 choices), the easy partition of ARC.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``arc_easy`` (VERSION 0; SPEC-suite B.2), the same class as
``arc_challenge``: ``f"Question: {question}\\nAnswer:"``; continuations ``" " + choice`` for every
``choices.text``; gold = position of the answer key in ``A, B, C, D, E`` after mapping a numeric key ``1``..``5``
to ``A``..``E`` (97 test rows carry numeric labels, so this equals ``choices.label.index(answerKey)``).
Few-shot examples come from the train split (2251 rows). Clark et al. 2018.
"""

from evalkit.types import DatasetSpec, Doc, Task

NUMERIC_KEYS = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}
LETTERS = ("A", "B", "C", "D", "E")


def context(doc: Doc) -> str:
    """Question/answer frame around the question."""
    return f"Question: {doc['question']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """Every choice text, each after one space."""
    return [" " + text for text in doc["choices"]["text"]]


def gold(doc: Doc) -> int:
    """Position of the (numeric-to-letter mapped) answer key in A..E, as v0.2.0 computes it."""
    return LETTERS.index(NUMERIC_KEYS.get(doc["answerKey"], doc["answerKey"]))


def validate(doc: Doc) -> None:
    """Texts and labels align, every choice has text, the labels run A, B, C, ... (or 1, 2, 3, ...) without repeats
    (v0.2.0 takes the gold position from the key's letter, not from the labels), and the answer key names one of the
    choices."""
    choices = doc["choices"]
    if not choices["text"]:
        raise ValueError("field 'choices.text': no choices")
    for index, text in enumerate(choices["text"]):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"field 'choices.text': choice {index} ({text!r:.40}) is not a non-blank string")
    if len(choices["text"]) != len(choices["label"]):
        raise ValueError("field 'choices.label': not as many labels as choices.text")
    for later, label in enumerate(choices["label"]):
        if choices["label"].index(label) != later:
            raise ValueError(f"field 'choices.label': label {label!r} is given to choices "
                             f"{choices['label'].index(label)} and {later}; the answer key would be ambiguous")
    if choices["label"] not in (list(LETTERS[: len(choices["label"])]), list(NUMERIC_KEYS)[: len(choices["label"])]):
        raise ValueError(f"field 'choices.label': {choices['label']} is not A, B, C, ... (or 1, 2, 3, ...) in order; "
                         "the gold position is taken from the key's letter, so it would not be the labelled choice")
    key = NUMERIC_KEYS.get(doc["answerKey"], doc["answerKey"])
    if key not in LETTERS or LETTERS.index(key) >= len(choices["text"]):
        raise ValueError(f"field 'answerKey': {doc['answerKey']!r} names no choice of {choices['label']}")
    if doc["answerKey"] not in choices["label"]:
        raise ValueError(f"field 'answerKey': {doc['answerKey']!r} is not among choices.label {choices['label']}")


TASK = Task(
    name="arc_easy",
    version="1.0",
    dataset=DatasetSpec(
        "allenai/ai2_arc", "ARC-Easy", "test", 2376,
        {"question": str, "choices": dict, "choices.text": list, "choices.label": list, "answerKey": str},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="question, 3-5 choices; acc, acc_norm by characters",
    source="Clark et al. 2018; lm-eval v0.2.0 `arc_easy` (VERSION 0)",
    fewshot_split="train",
)
