"""ARC-Challenge test split: grade-school science multiple choice (3 to 5 choices).

Prompt: lm-evaluation-harness v0.2.0 ``arc_challenge`` (unchanged in 0.4): ``f"Question: {question}\\nAnswer:"``,
choices ``choices.text``, gold ``choices.label.index(answerKey)`` (Clark et al. 2018).
Few-shot examples: the train split (1119 rows), each ``context + " " + gold choice text`` (SPEC-suite A.10). Its 23
numeric-label rows (labels ``1``..``4``, key ``1``..``4``) get the same gold index as v0.2.0's mapping of the key to
``A``..``E`` (SPEC-suite B.2), because their labels run ``1, 2, 3, ...``.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Question/answer frame around the question."""
    return f"Question: {doc['question']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """Every choice text, each after one space."""
    return [" " + text for text in doc["choices"]["text"]]


def gold(doc: Doc) -> int:
    """Index of the answer key among the choice labels."""
    return doc["choices"]["label"].index(doc["answerKey"])


def validate(doc: Doc) -> None:
    """Labels and texts align, there are choices with text, no label is given twice and the answer key is one of the
    labels."""
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
    if doc["answerKey"] not in choices["label"]:
        raise ValueError(f"field 'answerKey': {doc['answerKey']!r} is not among choices.label {choices['label']}")


TASK = Task(
    name="arc_challenge",
    version="1.0",
    dataset=DatasetSpec(
        "allenai/ai2_arc", "ARC-Challenge", "test", 1172,
        {"question": str, "choices": dict, "choices.text": list, "choices.label": list, "answerKey": str},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    aliases=("arc",),
    validate=validate,
    description="question, 3-5 choices; acc (card), acc_norm by characters",
    source="Clark et al. 2018; lm-eval v0.2.0 `arc_challenge`",
    fewshot_split="train",
)
