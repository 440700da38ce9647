"""LAMBADA, OpenAI's detokenized test set: predict the last word of a passage.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``lambada`` (the task behind the GPT-NeoX-20B card,
arXiv 2204.06745), unchanged in lm-eval 0.4 ``lambada_openai``. The context is the passage up to its
last space; the continuation is ``" " + last word``. ``acc`` is whole-word greedy match (every token of
the word is the argmax); ``perplexity`` is exp(-mean over documents of the word's log-likelihood).
Few-shot examples come from the test split itself without the document (v0.2.0 has no other split for
LAMBADA; SPEC-suite A.4 route 3); each example is ``context + " " + last word``, the whole passage again.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """The passage up to (not including) its last space."""
    return doc["text"].rsplit(" ", 1)[0]


def continuations(doc: Doc) -> list[str]:
    """One target: a space and the passage's last word."""
    return [" " + doc["text"].rsplit(" ", 1)[1]]


def validate(doc: Doc) -> None:
    """The text must contain a space that separates a non-empty last word."""
    parts = doc["text"].rsplit(" ", 1)
    if len(parts) != 2 or not parts[1]:
        raise ValueError("field 'text': needs a space followed by a last word")


TASK = Task(
    name="lambada_openai",
    version="1.0",
    dataset=DatasetSpec("EleutherAI/lambada_openai", "default", "test", 5153, {"text": str}),
    context=context,
    continuations=continuations,
    gold=lambda doc: 0,
    scoring="target",
    metrics=("acc", "perplexity"),
    primary_metric="acc",
    aliases=("lambada",),
    validate=validate,
    description="OpenAI's detokenized text; acc = whole-word greedy match; perplexity of the last word",
    source="Paperno et al. 2016; OpenAI GPT-2 detokenized test set; lm-eval v0.2.0 `lambada`",
    fewshot_split="test",
)
