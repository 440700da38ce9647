"""PubMedQA (expert-labelled, ``pqa_labeled``): answer a research question from an abstract, yes/no/maybe.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``pubmedqa`` (VERSION 0; SPEC-suite B.17). Context:
``"Abstract: " + "\\n".join(context.contexts) + f"\\nQuestion: {question}\\nAnswer:"``. Continuations, in this
order: ``" yes"``, ``" no"``, ``" maybe"``; gold = position of ``final_decision`` among them; ``acc`` = argmax
(ties to the lowest index). The hub's only split, ``train`` (1000 rows), is the evaluated one, and few-shot
examples are drawn from the same rows without the document itself. Jin et al. 2019.
"""

from evalkit.types import DatasetSpec, Doc, Task

ANSWERS = ("yes", "no", "maybe")


def context(doc: Doc) -> str:
    """The abstract's sections joined by newlines, then the question."""
    abstract = "\n".join(doc["context"]["contexts"])
    return f"Abstract: {abstract}\nQuestion: {doc['question']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """`` yes``, `` no``, `` maybe``."""
    return [" " + answer for answer in ANSWERS]


def gold(doc: Doc) -> int:
    """Position of the final decision among yes, no, maybe."""
    return ANSWERS.index(doc["final_decision"])


def validate(doc: Doc) -> None:
    """Abstract sections that are strings and a final decision of yes, no or maybe."""
    for index, part in enumerate(doc["context"]["contexts"]):
        if not isinstance(part, str):
            raise ValueError(f"field 'context.contexts': section {index} is {type(part).__name__}, not a string")
    if doc["final_decision"] not in ANSWERS:
        raise ValueError(f"field 'final_decision': {doc['final_decision']!r} is not yes, no or maybe")


TASK = Task(
    name="pubmedqa",
    version="1.0",
    dataset=DatasetSpec("qiaojin/PubMedQA", "pqa_labeled", "train", 1000,
                        {"question": str, "context": dict, "context.contexts": list, "final_decision": str}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc",),
    validate=validate,
    description="abstract + question, yes/no/maybe; acc",
    source="Jin et al. 2019; lm-eval v0.2.0 `pubmedqa` (VERSION 0)",
    fewshot_split="train",
)
