"""TriviaQA, unfiltered no-context validation split, scored as in the GPT-NeoX-20B card.

Definition: lm-evaluation-harness v0.2.0 ``triviaqa`` (not lm-eval 0.4's generative task). The context is
``f"Question: {question}\\nAnswer:"`` (no ``?`` appended); one continuation per answer alias after pruning
(sort the aliases; keep an alias only if it does not start with the last kept alias). ``acc`` is 1 when any
kept alias is the greedy continuation (Joshi et al. 2017).
Few-shot examples: the hub train split (``unfiltered-web-train``, 87622 rows; no local copy), each
``context + " " + answer.value``: the canonical answer value, not an alias (SPEC-suite A.10).
"""

from evalkit.types import DatasetSpec, Doc, Task


def prune_aliases(aliases: list[str]) -> list[str]:
    """Sorted aliases, dropping each that starts with the last kept one (lm-eval v0.2.0 rule).

    >>> prune_aliases(["Paris", "Paris, France", "France"])
    ['France', 'Paris']
    """
    kept: list[str] = []
    for alias in sorted(aliases):
        if kept and alias.startswith(kept[-1]):
            continue
        kept.append(alias)
    return kept


def context(doc: Doc) -> str:
    """Question/answer frame around the question."""
    return f"Question: {doc['question']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """One continuation per kept alias, each after one space."""
    return [" " + alias for alias in prune_aliases(doc["answer"]["aliases"])]


def target(doc: Doc) -> str:
    """A few-shot example's answer: a space and the canonical answer value (v0.2.0 ``doc_to_target``)."""
    value = doc["answer"].get("value")
    if not isinstance(value, str) or not value:
        raise ValueError(f"field 'answer.value': a few-shot example needs a non-empty answer value, got {value!r:.40}")
    return " " + value


def validate(doc: Doc) -> None:
    """At least one alias, all of them non-empty strings."""
    aliases = doc["answer"]["aliases"]
    if not aliases:
        raise ValueError("field 'answer.aliases': empty alias list")
    if not all(isinstance(a, str) and a for a in aliases):
        raise ValueError("field 'answer.aliases': every alias must be a non-empty string")


TASK = Task(
    name="triviaqa",
    version="1.0",
    dataset=DatasetSpec(
        "mandarjoshi/trivia_qa", "unfiltered.nocontext", "validation", 11313,
        {"question": str, "answer": dict, "answer.aliases": list},
    ),
    context=context,
    continuations=continuations,
    gold=lambda doc: 0,
    scoring="any_greedy",
    metrics=("acc",),
    validate=validate,
    target=target,
    description="no context; acc = any pruned alias is the greedy continuation (no generation)",
    source="Joshi et al. 2017; lm-eval v0.2.0 `triviaqa`",
    fewshot_split="train",
)
