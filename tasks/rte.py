"""GLUE RTE validation split: does the first sentence entail the second?

Prompt and scoring: lm-evaluation-harness v0.2.0 ``rte`` (VERSION 0; SPEC-suite B.11; the GLUE copy, not
SuperGLUE's). Context: ``f"{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:"``. Continuations
``" True"`` (label 0, entailment), ``" False"`` (label 1, not_entailment). v0.2.0 predicts label 1 when
``ll_false > ll_true``, so a tie predicts label 0: the argmax's first index, i.e. ordinary multiple choice.
Few-shot examples come from train (2490). Dagan et al. 2005 and later RTE rounds, via GLUE.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Sentence 1, then sentence 2 as a true-or-false question."""
    return f"{doc['sentence1']}\nQuestion: {doc['sentence2']} True or False?\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """`` True`` (entailment), `` False`` (not entailment)."""
    return [" True", " False"]


def gold(doc: Doc) -> int:
    """The label: 0 entailment, 1 not_entailment."""
    return doc["label"]


def validate(doc: Doc) -> None:
    """A label 0 or 1 (the unlabelled test split has -1)."""
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="rte",
    version="1.0",
    dataset=DatasetSpec("nyu-mll/glue", "rte", "validation", 277, {"sentence1": str, "sentence2": str, "label": int}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc",),
    validate=validate,
    description="sentence pair, True/False; acc",
    source="RTE 1-3, 5 via GLUE (Wang et al. 2018); lm-eval v0.2.0 `rte` (VERSION 0)",
    fewshot_split="train",
)
