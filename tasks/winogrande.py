"""WinoGrande (xl) validation split: fill the blank ``_`` of a sentence with one of two options.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``winogrande`` (VERSION 0; SPEC-suite B.4), "partial
evaluation" (Trinh & Le 2018): the two options are put in the *context* and the rest of the sentence is the one
continuation scored under each.

With ``i`` the index of the first ``_`` in ``sentence``:

- per-option context: ``sentence[:i] + option`` (no space added; ``choice_contexts``);
- continuation, the same for both options: ``" " + sentence[i + 1:].strip()``;
- gold: 0 when ``answer == "1"``, 1 when ``"2"``; ``acc`` = argmax of the two log-likelihoods (a tie picks
  option 1); no acc_norm (both continuations are the same text);
- a few-shot example of a document (``context`` + ``target``) is its sentence with the correct option filled in
  and the tail whitespace-normalised; with shots, each option's context replaces the last ``"\\n\\n"`` segment of
  the assembled context (so the examples and description come first).

If the blank is followed directly by punctuation (``_'s``), the continuation starts with ``" 's"``, as in v0.2.0.

Data: ``allenai/winogrande`` config ``winogrande_xl``; validation (1267 rows) is the same in every config.
Few-shot examples come from the **xl** train split (40398 rows). The local copy in ``shared/data`` has only
``winogrande/train_l.jsonl`` (the 10234-row ``winogrande_l`` set), which is a different pool: drawing from it
would give other examples than v0.2.0, so it is not read. For few-shot runs from local files, write the xl
train split (``datasets.load_dataset("allenai/winogrande", "winogrande_xl", split="train")``, one JSON object a
line) to ``<data dir>/winogrande/train.jsonl``; without it a few-shot run stops with a missing-file error.
Sakaguchi et al. 2019.
"""

from evalkit.types import DatasetSpec, Doc, Task


def _blank(doc: Doc) -> int:
    return doc["sentence"].index("_")


def _options(doc: Doc) -> list[str]:
    return [doc["option1"], doc["option2"]]


def target(doc: Doc) -> str:
    """The text after the blank, stripped, after one space: the continuation of both options."""
    return " " + doc["sentence"][_blank(doc) + 1 :].strip()


def choice_contexts(doc: Doc) -> list[str]:
    """The sentence up to the blank, followed by each option (option 1, option 2)."""
    return [doc["sentence"][: _blank(doc)] + option for option in _options(doc)]


def gold(doc: Doc) -> int:
    """0 for answer ``"1"``, 1 for ``"2"``."""
    return {"1": 0, "2": 1}[doc["answer"]]


def context(doc: Doc) -> str:
    """The sentence up to the blank, filled with the correct option (what a few-shot example shows)."""
    return choice_contexts(doc)[gold(doc)]


def continuations(doc: Doc) -> list[str]:
    """The common target, once per option."""
    return [target(doc)] * 2


def validate(doc: Doc) -> None:
    """Exactly one blank in the sentence, with text after it, and an answer of ``"1"`` or ``"2"``."""
    sentence = doc["sentence"]
    if "_" not in sentence:
        raise ValueError("field 'sentence': no blank '_' to fill")
    if sentence.count("_") > 1:
        raise ValueError(f"field 'sentence': {sentence.count('_')} blanks '_'; which one the options fill would be a "
                         "guess")
    if not sentence[sentence.index("_") + 1 :].strip():
        raise ValueError("field 'sentence': nothing after the blank '_' to score")
    if doc["answer"] not in ("1", "2"):
        raise ValueError(f"field 'answer': {doc['answer']!r} is not '1' or '2'")


TASK = Task(
    name="winogrande",
    version="1.0",
    dataset=DatasetSpec(
        "allenai/winogrande", "winogrande_xl", "validation", 1267,
        {"sentence": str, "option1": str, "option2": str, "answer": str},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc",),
    validate=validate,
    description="blank filled by each option in the context, shared continuation; acc",
    source="Sakaguchi et al. 2019; lm-eval v0.2.0 `winogrande` (VERSION 0), partial evaluation",
    fewshot_split="train",
    target=target,
    choice_contexts=choice_contexts,
)
