"""LogiQA test split: logical reasoning questions from the Chinese civil service exam (English translation).

Prompt and scoring: lm-evaluation-harness v0.2.0 ``logiqa`` (VERSION 0; SPEC-suite B.15):

    Passage: {context}
    Question: {question}
    Choices:
    A. {options[0]}
    B. {options[1]}
    C. {options[2]}
    D. {options[3]}
    Answer:

Continuations ``" " + option`` for every option (only four are printed); gold = position of ``label`` in
``a b c d``; acc, acc_norm. Few-shot examples come from train (7376).

Data: v0.2.0 read ``https://raw.githubusercontent.com/lgw863/LogiQA-dataset/master/{Train,Test}.txt`` (blocks
separated by a blank line: answer letter, passage, question, options) and applied
``normalize(t) = t.replace(".", ". ").strip()`` to passage, question and every option after dropping its
``"A."`` prefix: so ``3.5`` reads ``3. 5``. The hub dataset ``EleutherAI/logiqa`` (config ``logiqa``; the
harness's own loader of those files, v0.3.0 on) holds the rows **already normalised** that way, in the fields
``label`` (the letter), ``context``, ``question`` and ``options``; the prompt uses them as they are.
Liu et al. 2020.
"""

from evalkit.types import DatasetSpec, Doc, Task

LETTERS = ("A", "B", "C", "D")


def context(doc: Doc) -> str:
    """Passage, question and the first four options lettered A-D, then ``Answer:``."""
    lines = "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, doc["options"]))
    return f"Passage: {doc['context']}\nQuestion: {doc['question']}\nChoices:\n{lines}Answer:"


def continuations(doc: Doc) -> list[str]:
    """Every option, each after one space."""
    return [" " + option for option in doc["options"]]


def gold(doc: Doc) -> int:
    """Position of the answer letter in a, b, c, d."""
    return ("a", "b", "c", "d").index(doc["label"])


def validate(doc: Doc) -> None:
    """Four non-blank options and an answer letter a-d."""
    options = doc["options"]
    if len(options) != 4:
        raise ValueError(f"field 'options': {len(options)} options, expected 4")
    for index, option in enumerate(options):
        if not isinstance(option, str) or not option.strip():
            raise ValueError(f"field 'options': option {index} ({option!r:.40}) is not a non-blank string")
    if doc["label"] not in ("a", "b", "c", "d"):
        raise ValueError(f"field 'label': {doc['label']!r} is not one of a, b, c, d")


TASK = Task(
    name="logiqa",
    version="1.0",
    dataset=DatasetSpec("EleutherAI/logiqa", "logiqa", "test", 651,
                        {"label": str, "context": str, "question": str, "options": list}),
    context=context,
    continuations=continuations,
    gold=gold,
    scoring="multiple_choice",
    metrics=("acc", "acc_norm"),
    validate=validate,
    description="passage, question, lettered choices, option texts scored; acc, acc_norm",
    source="Liu et al. 2020; lm-eval v0.2.0 `logiqa` (VERSION 0)",
    fewshot_split="train",
)
