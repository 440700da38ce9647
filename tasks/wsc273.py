"""Winograd Schema Challenge, 273 schemas (``winograd_wsc`` / ``wsc273``), scored by partial evaluation.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``wsc273`` (VERSION 0; SPEC-suite B.22).

Cleaning, per document: ``text = text.replace("  ", " ")`` (one pass; ``pronoun_loc`` is not adjusted). Each
option is normalised: ``'s`` is appended when ``pronoun.lower()`` is one of my, his, her, our, their; then, with
``w`` the option's first word, when ``text[pronoun_loc - 2]`` is not ``"."`` (the pronoun does not start a
sentence) and ``w`` is one of A, An, The, She, He, It, They, My, His, Her, Their, every occurrence of ``w`` in the
option is lower-cased (``The city councilmen`` -> ``the city councilmen``).

Per-option context (``choice_contexts``): ``text[:pronoun_loc] + option``; continuation, the same for both:
``" " + text[pronoun_loc + len(pronoun):].strip()``; gold = ``label``; ``acc`` = argmax (a tie picks option 0).
A few-shot example shows the correct option's context and the continuation. The single split (test, 273) is
evaluated and few-shot examples come from it, without the document itself (v0.2.0's own ``fewshot_examples``
override is dead code). Levesque et al. 2012.
"""

from evalkit.types import DatasetSpec, Doc, Task

POSSESSIVES = ("my", "his", "her", "our", "their")
UPPER_PRONOUNS = ("A", "An", "The", "She", "He", "It", "They", "My", "His", "Her", "Their")


def clean_text(doc: Doc) -> str:
    """The text with each double space made single (one pass)."""
    return doc["text"].replace("  ", " ")


def normalize_option(doc: Doc, option: str) -> str:
    """An option as it reads in place of the pronoun (possessive ``'s``, lower-cased article or pronoun)."""
    if doc["pronoun"].lower() in POSSESSIVES:
        option += "'s"
    first = option.split()[0]
    start_of_sentence = clean_text(doc)[doc["pronoun_loc"] - 2] == "."
    if not start_of_sentence and first in UPPER_PRONOUNS:
        return option.replace(first, first.lower())
    return option


def target(doc: Doc) -> str:
    """The text after the pronoun, stripped, after one space: the continuation of both options."""
    return " " + clean_text(doc)[doc["pronoun_loc"] + len(doc["pronoun"]) :].strip()


def choice_contexts(doc: Doc) -> list[str]:
    """The text up to the pronoun, followed by each normalised option."""
    prefix = clean_text(doc)[: doc["pronoun_loc"]]
    return [prefix + normalize_option(doc, option) for option in doc["options"]]


def gold(doc: Doc) -> int:
    """The index of the correct option."""
    return doc["label"]


def context(doc: Doc) -> str:
    """The text up to the pronoun, with the correct option (what a few-shot example shows)."""
    return choice_contexts(doc)[gold(doc)]


def continuations(doc: Doc) -> list[str]:
    """The common target, once per option."""
    return [target(doc)] * len(doc["options"])


def validate(doc: Doc) -> None:
    """Two non-blank options, a label among them, a pronoun location inside the text, text after the pronoun."""
    options = doc["options"]
    if len(options) != 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise ValueError(f"field 'options': expected two non-blank options, got {options!r:.80}")
    if doc["label"] not in (0, 1):
        raise ValueError(f"field 'label': {doc['label']!r} is not 0 or 1")
    text = clean_text(doc)
    if not 0 <= doc["pronoun_loc"] < len(text):
        raise ValueError(f"field 'pronoun_loc': {doc['pronoun_loc']} is outside the text ({len(text)} characters)")
    if not text[doc["pronoun_loc"] + len(doc["pronoun"]) :].strip():
        raise ValueError("field 'text': nothing after the pronoun to score")


TASK = Task(
    name="wsc273",
    version="1.0",
    dataset=DatasetSpec("winograd_wsc", "wsc273", "test", 273,
                        {"text": str, "pronoun": str, "pronoun_loc": int, "options": list, "label": int}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc",),
    validate=validate,
    description="pronoun replaced by each option in the context, shared continuation; acc",
    source="Levesque et al. 2012; lm-eval v0.2.0 `wsc273` (VERSION 0), partial evaluation",
    fewshot_split="test",
    target=target,
    choice_contexts=choice_contexts,
)
