"""HellaSwag validation split: pick the most plausible ending of an ActivityNet/WikiHow context (4 endings).

Prompt and scoring: lm-evaluation-harness v0.2.0 ``hellaswag`` (VERSION 0; SPEC-suite B.3). The test split has no
labels, so validation (10042) is evaluated; few-shot examples come from train (39905).

Preprocessing ``preprocess(t)``, in this order: ``t.strip()``; every ``" [title]"`` becomes ``". "``; every
bracketed span ``\\[.*?\\]`` is deleted; every ``"  "`` becomes ``" "`` (one left-to-right pass, so three spaces
become two). Spaces that steps 2-4 leave at the ends survive (the strip came first): an ending
``"[title] Starts with tag"`` becomes ``" Starts with tag"`` and its continuation ``"  Starts with tag"``.

Context: ``preprocess(f"{activity_label}: {ctx_a} {ctx_b.capitalize()}")`` (``str.capitalize`` lower-cases all
but the first character). Continuations: ``" " + preprocess(ending)`` for the four endings; gold ``int(label)``;
acc_norm divides by the preprocessed ending's length. Zellers et al. 2019. The hub dataset ``Rowan/hellaswag``
is the one v0.2.0 read as ``hellaswag``.
"""

import re

from evalkit.types import DatasetSpec, Doc, Task


def preprocess(text: str) -> str:
    """v0.2.0's HellaSwag cleanup of WikiHow markers (see the module docstring)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def context(doc: Doc) -> str:
    """Activity label, colon, then both context parts, the second capitalised; preprocessed."""
    return preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())


def continuations(doc: Doc) -> list[str]:
    """The four preprocessed endings, each after one space."""
    return [" " + preprocess(ending) for ending in doc["endings"]]


def gold(doc: Doc) -> int:
    """The label string as an integer."""
    return int(doc["label"])


def validate(doc: Doc) -> None:
    """Four string endings, each non-blank after preprocessing, and a label ``"0"``..``"3"``."""
    endings = doc["endings"]
    if len(endings) != 4:
        raise ValueError(f"field 'endings': {len(endings)} endings, expected 4")
    for index, ending in enumerate(endings):
        if not isinstance(ending, str) or not preprocess(ending).strip():
            raise ValueError(f"field 'endings': ending {index} ({ending!r:.40}) is blank after preprocessing")
    if doc["label"] not in ("0", "1", "2", "3"):
        raise ValueError(f"field 'label': {doc['label']!r} is not one of '0'..'3' (the unlabelled test split?)")


TASK = Task(
    name="hellaswag",
    version="1.0",
    dataset=DatasetSpec(
        "Rowan/hellaswag", None, "validation", 10042,
        {"activity_label": str, "ctx_a": str, "ctx_b": str, "endings": list, "label": str},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="context completion, 4 endings (WikiHow markers removed); acc, acc_norm by characters",
    source="Zellers et al. 2019; lm-eval v0.2.0 `hellaswag` (VERSION 0)",
    fewshot_split="train",
)
