"""SciQ test split: four-way science multiple choice with a support paragraph.

Prompt: lm-evaluation-harness v0.2.0 ``sciq``: ``f"{support}\\nQuestion: {question}\\nAnswer:".strip()``
(the strip removes the leading newline when the support is empty, 116 of 1000 test documents).
Choices ``[distractor1, distractor2, distractor3, correct_answer]``, gold index 3 (Welbl et al. 2017).
Few-shot examples: the train split (11679 rows), each ``context + " " + correct_answer`` (SPEC-suite A.10).
"""

from evalkit.types import DatasetSpec, Doc, Task

FIELDS = ("distractor1", "distractor2", "distractor3", "correct_answer")


def context(doc: Doc) -> str:
    """Support paragraph, question and answer cue; stripped as a whole."""
    return f"{doc['support']}\nQuestion: {doc['question']}\nAnswer:".strip()


def continuations(doc: Doc) -> list[str]:
    """The three distractors then the correct answer, each after one space."""
    return [" " + doc[name] for name in FIELDS]


def validate(doc: Doc) -> None:
    """Every choice has text (a blank choice would be scored as a lone space)."""
    for name in FIELDS:
        if not doc[name].strip():
            raise ValueError(f"field '{name}': blank choice")


TASK = Task(
    name="sciq",
    version="1.0",
    dataset=DatasetSpec(
        "allenai/sciq", None, "test", 1000,
        {"support": str, "question": str, **{name: str for name in FIELDS}},
    ),
    context=context,
    continuations=continuations,
    gold=lambda doc: 3,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="support + question, 4 choices; acc (card), acc_norm by characters",
    source="Welbl et al. 2017; lm-eval v0.2.0 `sciq`",
    fewshot_split="train",
)
