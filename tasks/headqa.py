"""HEAD-QA test split, English (``headqa_en``) and Spanish (``headqa_es``, alias ``headqa``): Spanish healthcare
specialisation exams, 4 or 5 options.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``headqa_en`` / ``headqa_es`` (VERSION 0; SPEC-suite B.19).
Context: ``f"Question: {qtext}\\nAnswer:"``; continuations ``" " + atext`` for the ``answers`` in their stored
order; gold = ``ra - 1`` (the right answer's 1-based id; the answers are stored by ``aid`` from 1); acc,
acc_norm. v0.2.0's ``headqa`` is the Spanish task under its old name (with a deprecation warning): here it is an
alias of ``headqa_es``. Test: 2742 questions; few-shot examples from train (2657). Vilares & Gómez-Rodríguez
2019. Hub dataset ``dvilares/head_qa`` (formerly ``head_qa``), configs ``en`` and ``es``.
"""

from evalkit.types import DatasetSpec, Doc, Task


def context(doc: Doc) -> str:
    """Question/answer frame around the question text."""
    return f"Question: {doc['qtext']}\nAnswer:"


def continuations(doc: Doc) -> list[str]:
    """Every answer text in stored order, each after one space."""
    return [" " + answer["atext"] for answer in doc["answers"]]


def gold(doc: Doc) -> int:
    """The right answer's id minus 1."""
    return doc["ra"] - 1


def validate(doc: Doc) -> None:
    """Answers with non-blank text stored by id 1, 2, ..., and a right answer among them."""
    answers = doc["answers"]
    for index, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("atext"), str) or not answer["atext"].strip():
            raise ValueError(f"field 'answers': answer {index} has no non-blank 'atext'")
        if answer.get("aid") != index + 1:
            raise ValueError(f"field 'answers': answer {index} has aid {answer.get('aid')!r}, expected {index + 1} "
                             f"(gold = ra - 1 assumes answers stored by aid)")
    if not 1 <= doc["ra"] <= len(answers):
        raise ValueError(f"field 'ra': {doc['ra']!r} does not name one of {len(answers)} answers")


def language_task(language: str, aliases: tuple[str, ...] = ()) -> Task:
    """The ``headqa_{language}`` task."""
    return Task(
        name=f"headqa_{language}",
        version="1.0",
        dataset=DatasetSpec("dvilares/head_qa", language, "test", 2742,
                            {"qtext": str, "ra": int, "answers": list}),
        context=context,
        continuations=continuations,
        gold=gold,
        scoring="multiple_choice",
        metrics=("acc", "acc_norm"),
        aliases=aliases,
        validate=validate,
        description=f"HEAD-QA ({language}): exam question, 4-5 options; acc, acc_norm",
        source="Vilares & Gómez-Rodríguez 2019; lm-eval v0.2.0 `headqa_*` (VERSION 0)",
        fewshot_split="train",
    )


TASKS = [language_task("en"), language_task("es", aliases=("headqa",))]
