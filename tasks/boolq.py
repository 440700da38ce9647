"""SuperGLUE BoolQ validation split: answer a yes/no question about a passage.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``boolq`` (VERSION 1; SPEC-suite B.12). Context:
``f"{passage}\\nQuestion: {question}?\\nAnswer:"`` (a ``?`` is appended: BoolQ questions have none).
Continuations ``" yes"`` (label 1), ``" no"`` (label 0); yes is predicted only when ``ll_yes > ll_no`` (a tie
predicts no). Few-shot examples come from train (9427). Clark et al. 2019, via SuperGLUE.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Passage, then the question with a question mark."""
    return f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """`` yes`` then `` no``."""
    return [" yes", " no"]


def gold(doc: Doc) -> int:
    """0 (yes) for label 1, 1 (no) for label 0."""
    return 0 if doc["label"] == 1 else 1


def validate(doc: Doc) -> None:
    """A label 0 or 1 (the unlabelled test split has -1)."""
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="boolq",
    version="1.0",
    dataset=DatasetSpec("aps/super_glue", "boolq", "validation", 3270, {"passage": str, "question": str, "label": int}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="yes_no",
    metrics=("acc",),
    validate=validate,
    description="passage + question, yes/no (tie: no); acc",
    source="Clark et al. 2019 (SuperGLUE); lm-eval v0.2.0 `boolq` (VERSION 1)",
    fewshot_split="train",
)
