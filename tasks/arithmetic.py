"""Arithmetic (GPT-3, Brown et al. 2020, section 3.9.1): ten families of questions such as "What is 98 plus 45?".

Prompt and scoring: lm-evaluation-harness v0.2.0 ``arithmetic_*`` (SPEC-suite B.23), VERSION 0. A document is a
(``context``, ``completion``) pair. The context shown to the model is the raw context stripped, then every
``"\\n\\n"`` replaced by ``"\\n"``, every ``"Q:"`` by ``"Question:"`` and every ``"A:"`` by ``"Answer:"`` (in that order);
the continuation is the raw completion unchanged (it starts with a space). Raw ``"\\n\\nQ: What is 98 plus 45?\\n\\nA:"``
/ ``" 143"`` becomes ``"Question: What is 98 plus 45?\\nAnswer:"`` / ``" 143"``. ``acc`` = the whole completion is the
greedy continuation (every token the argmax); its log-likelihood is not used.

Few-shot examples (v0.2.0 route 3, SPEC-suite A.4): the tasks have only a validation split, so examples are drawn
from that same split without the document; an example shows its context and its completion.

Data: v0.2.0 downloaded ``https://raw.githubusercontent.com/openai/gpt-3/master/data/<file>`` (2000 lines each; the
files and their sha256 are in :data:`FILES`). The hub dataset ``EleutherAI/arithmetic`` holds the same rows with the
same two string fields ``context`` and ``completion``, one config per task (``arithmetic_2da`` ...) with a single
``validation`` split of 2000 rows (its dataset card). Its loading script reads the same URLs and applies this very
transform while building the rows, so hub contexts already read ``Question: ...\\nAnswer:``. Applying it again
changes nothing on rows of this shape (neither ``Question:`` nor ``Answer:`` contains ``Q:`` or ``A:``, and a context
``"\\n\\nQ: ...\\n\\nA:"`` keeps no ``"\\n\\n"``; only a run of three or more newlines would shrink again), so raw and hub
rows give the same prompt. Local copies go in ``<data dir>/arithmetic_<x>/validation.jsonl``, raw or
converted.

Group ``arithmetic`` is a plain selection (no aggregate row): the paper reports the ten tasks one by one, and a
pooled accuracy over skills as different as 2-digit addition and 5-digit subtraction has no published counterpart.
"""

from __future__ import annotations

from evalkit.types import DatasetSpec, Doc, Task, TaskGroup

SOURCE_URL = "https://raw.githubusercontent.com/openai/gpt-3/master/data/"
"""Where lm-eval v0.2.0 read the files (append a file name from :data:`FILES`)."""

FILES = {
    "2da": ("two_digit_addition.jsonl", "75a54b7a3db3b23369df74fe440c23025f3d3c51f664300bd3d56632b2617b3d"),
    "2ds": ("two_digit_subtraction.jsonl", "da956066ff108c00b341d360567472784f5fd872d6465071b44a14291205bc03"),
    "3da": ("three_digit_addition.jsonl", "124865e30efd2abfbc1855dd34c218fc02d32d780ace970ab9b4ea3fa74c798b"),
    "3ds": ("three_digit_subtraction.jsonl", "7fc6aaedcb0e2bd17c398dd4147c5585b1e608278a8e98b914e69656707d6a29"),
    "4da": ("four_digit_addition.jsonl", "459c6f75baa2e8d7cf50bdd07db6d0ca9133a6b137d95d09267db85b6e07f391"),
    "4ds": ("four_digit_subtraction.jsonl", "0c47db40a10c052ef0cf732a9ef2edaa53d66377d43eb47a9c382d33a8af7102"),
    "5da": ("five_digit_addition.jsonl", "30ada42efe315b958c6e9649274005d3b720e50298e92c3a2d321f8996e58f54"),
    "5ds": ("five_digit_subtraction.jsonl", "8b98ccfc943cbf9193bcf1984954aa0b1a4527016072d972a2b055cc1482ca3c"),
    "2dm": ("two_digit_multiplication.jsonl", "5613d1d1cc3b2c03edc1990252247d34c10ec82944b2cdeb19e71b00f237f431"),
    "1dc": ("single_digit_three_ops.jsonl", "08b34e3272a8ff1d4932d63f251519d14c485c38d582366e1e323d0b859c3925"),
}
"""Task suffix -> (file name under :data:`SOURCE_URL`, sha256 of that file), in v0.2.0's registry order."""

DESCRIPTIONS = {
    "2da": "two-digit addition", "2ds": "two-digit subtraction", "3da": "three-digit addition",
    "3ds": "three-digit subtraction", "4da": "four-digit addition", "4ds": "four-digit subtraction",
    "5da": "five-digit addition", "5ds": "five-digit subtraction", "2dm": "two-digit multiplication",
    "1dc": "single-digit three-operation composites",
}


def context(doc: Doc) -> str:
    """The raw context stripped, ``"\\n\\n"`` -> ``"\\n"``, ``"Q:"`` -> ``"Question:"``, ``"A:"`` -> ``"Answer:"``."""
    return doc["context"].strip().replace("\n\n", "\n").replace("Q:", "Question:").replace("A:", "Answer:")


def continuations(doc: Doc) -> list[str]:
    """The one target: the raw completion, unchanged (e.g. ``" 143"``, ``" -38097"``)."""
    return [doc["completion"]]


def validate(doc: Doc) -> None:
    """The context must keep a question after stripping.

    Raises:
        ValueError: naming field ``context``.
    """
    if not doc["context"].strip():
        raise ValueError("field 'context' is blank: no question to ask")


def _task(suffix: str) -> Task:
    file_name, sha256 = FILES[suffix]
    return Task(
        name=f"arithmetic_{suffix}",
        version="1.0",
        dataset=DatasetSpec("EleutherAI/arithmetic", f"arithmetic_{suffix}", "validation", 2000,
                            {"context": str, "completion": str}),
        context=context,
        continuations=continuations,
        gold=lambda doc: 0,
        scoring="target",
        metrics=("acc",),
        primary_metric="acc",
        validate=validate,
        description=f"{DESCRIPTIONS[suffix]}; acc = the whole answer is the greedy continuation",
        source=f"Brown et al. 2020 (GPT-3) {SOURCE_URL}{file_name} (sha256 {sha256}); lm-eval v0.2.0 "
               f"`arithmetic_{suffix}`",
        fewshot_split="validation",
    )


TASKS = [_task(suffix) for suffix in FILES]

GROUPS = [
    TaskGroup(
        name="arithmetic",
        tasks=tuple(t.name for t in TASKS),
        description="GPT-3 arithmetic, ten tasks (reported one by one; no pooled row)",
    )
]
