"""PIQA validation split: choose the better of two solutions to a physical goal.

Prompt: lm-evaluation-harness v0.2.0 ``piqa`` (unchanged in 0.4): ``f"Question: {goal}\\nAnswer:"``,
choices ``[sol1, sol2]`` verbatim (trailing spaces kept), gold ``label`` (Bisk et al. 2020).
Few-shot examples: the hub train split (16113 rows), each ``context + " " + gold solution`` (SPEC-suite A.10).
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Question/answer frame around the goal."""
    return f"Question: {doc['goal']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """The two solutions, each after one space."""
    return [" " + doc["sol1"], " " + doc["sol2"]]


def validate(doc: Doc) -> None:
    """Both solutions have text, and the label indexes one of them."""
    for name in ("sol1", "sol2"):
        if not doc[name].strip():
            raise ValueError(f"field '{name}': blank solution")
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="piqa",
    version="1.0",
    dataset=DatasetSpec(
        "baber/piqa", None, "validation", 1838,
        {"goal": str, "sol1": str, "sol2": str, "label": int},
    ),
    context=context,
    continuations=continuations,
    gold=lambda doc: doc["label"],
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="goal as question, 2 choices; acc (card), acc_norm by characters",
    source="Bisk et al. 2020; lm-eval v0.2.0 `piqa`",
    fewshot_split="train",
)
