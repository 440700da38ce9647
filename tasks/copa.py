"""SuperGLUE COPA validation split: choose the more plausible cause or effect of a premise.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``copa`` (VERSION 0; SPEC-suite B.7). Context: the stripped
premise minus its last character (its period), then ``" because"`` when ``question == "cause"`` or
``" therefore"`` when ``"effect"``. Continuations: for ``choice1``, ``choice2``: ``" " + c[0].lower() + c[1:]``
(the first character lower-cased, even ``I`` or a name; the final period kept). gold = ``label``; ``acc`` =
argmax (a tie picks choice 1). Few-shot examples come from train (400). Roemmele et al. 2011, via SuperGLUE.
"""

from evalkit.types import DatasetSpec, Doc, Task

CONNECTORS = {"cause": "because", "effect": "therefore"}


def context(doc: Doc) -> str:
    """Premise without its final character, then the connector of the question."""
    return doc["premise"].strip()[:-1] + " " + CONNECTORS[doc["question"]]


def _convert_choice(choice: str) -> str:
    return choice[0].lower() + choice[1:]


def continuations(doc: Doc) -> list[str]:
    """Both choices with a lower-cased first character, each after one space."""
    return [" " + _convert_choice(doc["choice1"]), " " + _convert_choice(doc["choice2"])]


def gold(doc: Doc) -> int:
    """0 for choice1, 1 for choice2."""
    return doc["label"]


def validate(doc: Doc) -> None:
    """A premise of at least two characters, a known question type, non-empty choices and a label 0 or 1."""
    if len(doc["premise"].strip()) < 2:
        raise ValueError(f"field 'premise': {doc['premise']!r} is too short to drop its final period")
    if doc["question"] not in CONNECTORS:
        raise ValueError(f"field 'question': {doc['question']!r} is not 'cause' or 'effect'")
    for name in ("choice1", "choice2"):
        if not doc[name]:
            raise ValueError(f"field '{name}': empty")
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="copa",
    version="1.0",
    dataset=DatasetSpec(
        "aps/super_glue", "copa", "validation", 100,
        {"premise": str, "choice1": str, "choice2": str, "question": str, "label": int},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc",),
    validate=validate,
    description="premise + because/therefore, 2 choices; acc",
    source="Roemmele et al. 2011 (SuperGLUE); lm-eval v0.2.0 `copa` (VERSION 0)",
    fewshot_split="train",
)
