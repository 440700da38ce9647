"""SuperGLUE WiC validation split: is a word used with the same sense in two sentences?

Prompt and scoring: lm-evaluation-harness v0.2.0 ``wic`` (VERSION 0; SPEC-suite B.9). Context:
``f"Sentence 1: {sentence1}\\nSentence 2: {sentence2}\\nQuestion: Is the word '{w}' used in the same way in the
two sentences above?\\nAnswer:"`` where ``w = sentence1[start1:end1]`` (the surface form in sentence 1, not the
``word`` field, which is the lemma). Continuations ``" yes"`` (label 1), ``" no"`` (label 0). v0.2.0 predicts
yes only when ``ll_yes > ll_no``: a tie predicts no (``scoring="yes_no"``). Few-shot examples come from train
(5428 rows; not in the local data folder). Pilehvar & Camacho-Collados 2019, via SuperGLUE.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Both sentences, then the question about the word as it appears in sentence 1."""
    word = doc["sentence1"][doc["start1"] : doc["end1"]]
    return (f"Sentence 1: {doc['sentence1']}\nSentence 2: {doc['sentence2']}\nQuestion: Is the word '{word}' used "
            f"in the same way in the two sentences above?\nAnswer:")


def continuations(doc: Doc) -> list[str]:
    """`` yes`` then `` no``."""
    return [" yes", " no"]


def gold(doc: Doc) -> int:
    """0 (yes) for label 1, 1 (no) for label 0."""
    return 0 if doc["label"] == 1 else 1


def validate(doc: Doc) -> None:
    """Offsets that select a non-empty span of sentence 1, and a label 0 or 1."""
    start, end = doc["start1"], doc["end1"]
    if not 0 <= start < end <= len(doc["sentence1"]):
        raise ValueError(f"fields 'start1'/'end1': [{start}:{end}] is not a non-empty span of sentence1 "
                         f"({len(doc['sentence1'])} characters)")
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="wic",
    version="1.0",
    dataset=DatasetSpec(
        "aps/super_glue", "wic", "validation", 638,
        {"sentence1": str, "sentence2": str, "start1": int, "end1": int, "label": int},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="yes_no",
    metrics=("acc",),
    validate=validate,
    description="two sentences, same sense? yes/no (tie: no); acc",
    source="Pilehvar & Camacho-Collados 2019 (SuperGLUE); lm-eval v0.2.0 `wic` (VERSION 0)",
    fewshot_split="train",
)
