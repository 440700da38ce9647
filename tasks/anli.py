"""Adversarial NLI rounds 1-3 (``anli_r1``, ``anli_r2``, ``anli_r3``): test splits of ``facebook/anli``.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``anli_r{1,2,3}`` (VERSION 0; SPEC-suite B.6). Context:
``f"{premise}\\nQuestion: {hypothesis} True, False, or Neither?\\nAnswer:"`` (one space before "True", a comma
after "False"). Continuations, in this order: ``" True"``, ``" Neither"``, ``" False"`` = labels 0 entailment,
1 neutral, 2 contradiction; gold = ``label``; ``acc`` = argmax (ties to the lowest index). Round r evaluates
``test_r{r}`` (1000 / 1000 / 1200 rows) and draws few-shot examples from ``train_r{r}`` (16946 / 45460 / 100459);
``dev_r{r}`` is unused. Nie et al. 2020.
"""

from evalkit.types import DatasetSpec, Doc, Task

ANSWERS = ("True", "Neither", "False")
ROUNDS = {1: 1000, 2: 1000, 3: 1200}
"""Round -> test split size."""


def context(doc: Doc) -> str:
    """Premise, then the hypothesis as a three-way question."""
    return f"{doc['premise']}\nQuestion: {doc['hypothesis']} True, False, or Neither?\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """`` True``, `` Neither``, `` False`` (labels 0, 1, 2)."""
    return [" " + answer for answer in ANSWERS]


def gold(doc: Doc) -> int:
    """The label: 0 entailment, 1 neutral, 2 contradiction."""
    return doc["label"]


def validate(doc: Doc) -> None:
    """A label 0, 1 or 2."""
    if doc["label"] not in (0, 1, 2):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0, 1 or 2")


def round_task(r: int) -> Task:
    """The ``anli_r{r}`` task."""
    return Task(
        name=f"anli_r{r}",
        version="1.0",
        dataset=DatasetSpec("facebook/anli", None, f"test_r{r}", ROUNDS[r],
                            {"premise": str, "hypothesis": str, "label": int}),
        context=context,
        continuations=continuations,
        gold=gold,
        scoring="multiple_choice",
        metrics=("acc",),
        validate=validate,
        description=f"ANLI round {r}: premise + hypothesis, True/Neither/False; acc",
        source="Nie et al. 2020; lm-eval v0.2.0 `anli_r*` (VERSION 0)",
        fewshot_split=f"train_r{r}",
    )


TASKS = [round_task(r) for r in ROUNDS]
