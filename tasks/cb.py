"""SuperGLUE CommitmentBank validation split: does the premise entail, contradict, or neither, the hypothesis?

Prompt and scoring: lm-evaluation-harness v0.2.0 ``cb`` (VERSION 1; SPEC-suite B.8). Context:
``f"{premise}\\nQuestion: {hypothesis}. True, False or Neither?\\nAnswer:"`` (a period after the hypothesis, no
comma before "or"). Continuations, in this order: ``" True"``, ``" False"``, ``" Neither"`` (labels 0
entailment, 1 contradiction, 2 neutral). The prediction is the argmax (ties to the lowest index).

Metrics: ``acc``, and ``f1``: the macro F1 over the classes, computed once over all documents (v0.2.0 uses
scikit-learn ``f1_score(golds, preds, average="macro")``), with no closed-form stderr (v0.2.0 reports none;
evalkit's bootstrap stderr resamples documents). Few-shot examples come from train (250).
de Marneffe et al. 2019, via SuperGLUE.
"""

from evalkit.types import DatasetSpec, Doc, Task

ANSWERS = ("True", "False", "Neither")


def context(doc: Doc) -> str:
    """Premise, then the hypothesis as a three-way question."""
    return f"{doc['premise']}\nQuestion: {doc['hypothesis']}. True, False or Neither?\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """`` True``, `` False``, `` Neither`` (labels 0, 1, 2)."""
    return [" " + answer for answer in ANSWERS]


def gold(doc: Doc) -> int:
    """The label: 0 entailment, 1 contradiction, 2 neutral."""
    return doc["label"]


def validate(doc: Doc) -> None:
    """A label 0, 1 or 2 (the unlabelled test split has -1)."""
    if doc["label"] not in (0, 1, 2):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0, 1 or 2")


TASK = Task(
    name="cb",
    version="1.0",
    dataset=DatasetSpec(
        "aps/super_glue", "cb", "validation", 56, {"premise": str, "hypothesis": str, "label": int},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="classification",
    metrics=("acc", "f1"),
    validate=validate,
    description="premise + hypothesis, True/False/Neither; acc, macro F1 over the three classes",
    source="de Marneffe et al. 2019 (SuperGLUE); lm-eval v0.2.0 `cb` (VERSION 1)",
    fewshot_split="train",
)
