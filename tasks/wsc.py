"""SuperGLUE WSC validation split (config ``wsc``, not ``wsc.fixed``): does a pronoun refer to a given noun phrase?

Prompt and scoring: lm-evaluation-harness v0.2.0 ``wsc`` (VERSION 0; SPEC-suite B.10).

Passage, in order: ``pre`` = the first ``span2_index`` whitespace-separated words of ``text`` joined with single
spaces; ``post = text[len(pre) + len(span2_text) + 1:]`` (character offsets into the original text); passage =
``general_detokenize(pre + " *" + span2_text + "*" + post)``, where general_detokenize replaces ``" n't"`` by
``"n't"``, ``" )"`` by ``")"``, ``"( "`` by ``"("``, ``'" '`` by ``'"'``, ``' "'`` by ``'"'``, then deletes the
space before every ``'``, ``.`` or ``,``. As in v0.2.0, with ``span2_index == 0`` the passage starts with a space
and the character after the pronoun is dropped (``"He said"`` -> ``" *He*said"``), and several spaces before
the pronoun shift the offsets.

Context: ``f'Passage: {passage}\\nQuestion: In the passage above, does the pronoun "*{span2_text}*" refer to
"*{span1_text}*"?\\nAnswer:'``. Continuations ``" yes"`` (label 1), ``" no"`` (label 0); yes is predicted only
when ``ll_yes > ll_no`` (a tie predicts no). Few-shot examples: only the train rows with label 1 (GPT-3's
choice), so every example's target is ``" yes"``. Levesque et al. 2012, via SuperGLUE.
"""

import re

from evalkit.types import DatasetSpec, Doc, Task


def general_detokenize(text: str) -> str:
    """v0.2.0's ``general_detokenize``: glue contractions, brackets, double quotes and . , ' to their neighbours."""
    text = text.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", text)


def passage(doc: Doc) -> str:
    """The text with the pronoun (span 2) marked ``*like this*``, detokenised."""
    pre = " ".join(doc["text"].split()[: doc["span2_index"]])
    post = doc["text"][len(pre) + len(doc["span2_text"]) + 1 :]
    return general_detokenize(pre + " *" + doc["span2_text"] + "*" + post)


def context(doc: Doc) -> str:
    """The marked passage, then the coreference question."""
    return (f"Passage: {passage(doc)}\nQuestion: In the passage above, does the pronoun \"*{doc['span2_text']}*\" "
            f"refer to \"*{doc['span1_text']}*\"?\nAnswer:")


def continuations(doc: Doc) -> list[str]:
    """`` yes`` then `` no``."""
    return [" yes", " no"]


def gold(doc: Doc) -> int:
    """0 (yes) for label 1, 1 (no) for label 0."""
    return 0 if doc["label"] == 1 else 1


def keep_for_fewshot(doc: Doc) -> bool:
    """Only label-true training rows are few-shot examples (v0.2.0, after GPT-3)."""
    return doc["label"] == 1


def validate(doc: Doc) -> None:
    """A pronoun index inside the text's words, non-empty spans, and a label 0 or 1."""
    words = len(doc["text"].split())
    if not 0 <= doc["span2_index"] < words:
        raise ValueError(f"field 'span2_index': {doc['span2_index']} is outside the text's {words} words")
    for name in ("span1_text", "span2_text"):
        if not doc[name]:
            raise ValueError(f"field '{name}': empty")
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")


TASK = Task(
    name="wsc",
    version="1.0",
    dataset=DatasetSpec(
        "aps/super_glue", "wsc", "validation", 104,
        {"text": str, "span1_text": str, "span2_text": str, "span2_index": int, "label": int},
    ),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="yes_no",
    metrics=("acc",),
    validate=validate,
    description="passage with marked pronoun, refers to X? yes/no (tie: no); acc",
    source="Levesque et al. 2012 (SuperGLUE); lm-eval v0.2.0 `wsc` (VERSION 0)",
    fewshot_split="train",
    fewshot_filter=keep_for_fewshot,
)
