"""MMLU (Hendrycks et al. 2021, "hendrycksTest"): 57 subjects of four-choice questions, and their category groups.

Prompt and scoring: lm-evaluation-harness v0.2.0 ``hendrycksTest-<subject>`` (VERSION 0; SPEC-suite B.13):

    Question: {question}
    Choices:
    A. {choices[0]}
    B. {choices[1]}
    C. {choices[2]}
    D. {choices[3]}
    Answer:

with no subject header and no "The following are multiple choice questions" preamble. The continuations are
the four answer **texts** ``" " + choices[i]`` (not the letters); gold = ``answer``; acc_norm divides by the
answer text's length. v0.2.0 read the CSVs in text mode without ``newline=''``, so every CR LF (and lone CR)
inside a field reached the prompt as LF: the same is done here to question and choices.
Few-shot examples (``--num-fewshot`` 1 to 5) are drawn from the subject's ``dev`` split (5 rows), never from
``auxiliary_train``.

Data: v0.2.0 downloaded ``https://people.eecs.berkeley.edu/~hendrycks/data.tar`` (sha256 ``78a80436…e3b4``) and
read ``test/<subject>_test.csv`` and ``dev/<subject>_dev.csv`` (no header; question, A, B, C, D, answer letter).
The hub dataset ``cais/mmlu`` (config = subject) holds the same questions in the fields ``question``,
``choices`` (4 strings) and ``answer`` (int 0-3); locally ``<data dir>/mmlu/<subject>/{test,dev}.jsonl``.
With these rows (the ``shared/data`` copy of ``cais/mmlu``) the complete zero-shot request list of every one of
the 57 subjects has the sha256 that v0.2.0's own fixtures pin (tests/test_v020_fixtures.py), so they are the rows
v0.2.0 scored; the 2020 CSVs in hendrycks/test's history differ for 19 subjects.

Groups: ``mmlu_stem``, ``mmlu_humanities``, ``mmlu_social_sciences``, ``mmlu_other`` follow ``categories.py``
of the MMLU authors' repository (hendrycks/test commit 1668818, 2021-08-30): ``anatomy`` (subcategory
"health") is in **Other** there; lm-evaluation-harness 0.4 moves it to STEM. v0.2.0 itself has no groups.
Each group, and ``mmlu`` (all 57), aggregates **micro**: the mean over all questions of its subjects, each
question weighing the same. That is what the MMLU authors do (their ``evaluate.py`` concatenates per-question
correctness within a category and over all subjects, and their README's averages are question-weighted, e.g.
GPT-3 few-shot 43.9); SPEC-suite C.1 shows the GPT-NeoX-20B blog's own averaging cannot be determined from its
numbers, so the authors' definition is used.
"""

from evalkit.types import DatasetSpec, Doc, Task, TaskGroup

LETTERS = ("A", "B", "C", "D")

SUBJECTS = {
    # subject: (test n, subcategory, category as in categories.py)
    "abstract_algebra": (100, "math", "stem"),
    "anatomy": (135, "health", "other"),
    "astronomy": (152, "physics", "stem"),
    "business_ethics": (100, "business", "other"),
    "clinical_knowledge": (265, "health", "other"),
    "college_biology": (144, "biology", "stem"),
    "college_chemistry": (100, "chemistry", "stem"),
    "college_computer_science": (100, "computer science", "stem"),
    "college_mathematics": (100, "math", "stem"),
    "college_medicine": (173, "health", "other"),
    "college_physics": (102, "physics", "stem"),
    "computer_security": (100, "computer science", "stem"),
    "conceptual_physics": (235, "physics", "stem"),
    "econometrics": (114, "economics", "social_sciences"),
    "electrical_engineering": (145, "engineering", "stem"),
    "elementary_mathematics": (378, "math", "stem"),
    "formal_logic": (126, "philosophy", "humanities"),
    "global_facts": (100, "other", "other"),
    "high_school_biology": (310, "biology", "stem"),
    "high_school_chemistry": (203, "chemistry", "stem"),
    "high_school_computer_science": (100, "computer science", "stem"),
    "high_school_european_history": (165, "history", "humanities"),
    "high_school_geography": (198, "geography", "social_sciences"),
    "high_school_government_and_politics": (193, "politics", "social_sciences"),
    "high_school_macroeconomics": (390, "economics", "social_sciences"),
    "high_school_mathematics": (270, "math", "stem"),
    "high_school_microeconomics": (238, "economics", "social_sciences"),
    "high_school_physics": (151, "physics", "stem"),
    "high_school_psychology": (545, "psychology", "social_sciences"),
    "high_school_statistics": (216, "math", "stem"),
    "high_school_us_history": (204, "history", "humanities"),
    "high_school_world_history": (237, "history", "humanities"),
    "human_aging": (223, "health", "other"),
    "human_sexuality": (131, "culture", "social_sciences"),
    "international_law": (121, "law", "humanities"),
    "jurisprudence": (108, "law", "humanities"),
    "logical_fallacies": (163, "philosophy", "humanities"),
    "machine_learning": (112, "computer science", "stem"),
    "management": (103, "business", "other"),
    "marketing": (234, "business", "other"),
    "medical_genetics": (100, "health", "other"),
    "miscellaneous": (783, "other", "other"),
    "moral_disputes": (346, "philosophy", "humanities"),
    "moral_scenarios": (895, "philosophy", "humanities"),
    "nutrition": (306, "health", "other"),
    "philosophy": (311, "philosophy", "humanities"),
    "prehistory": (324, "history", "humanities"),
    "professional_accounting": (282, "other", "other"),
    "professional_law": (1534, "law", "humanities"),
    "professional_medicine": (272, "health", "other"),
    "professional_psychology": (612, "psychology", "social_sciences"),
    "public_relations": (110, "politics", "social_sciences"),
    "security_studies": (245, "politics", "social_sciences"),
    "sociology": (201, "culture", "social_sciences"),
    "us_foreign_policy": (100, "politics", "social_sciences"),
    "virology": (166, "health", "other"),
    "world_religions": (171, "philosophy", "humanities"),
}
"""The 57 subjects: test size, subcategory and category of ``categories.py`` (SPEC-suite Part C)."""

CATEGORIES = {
    "stem": "STEM",
    "humanities": "Humanities",
    "social_sciences": "Social Sciences",
    "other": "Other (business, health, misc.)",
}


def _text(value: str) -> str:
    """A CSV field as v0.2.0 saw it: universal newlines turn CR LF and lone CR into LF."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def context(doc: Doc) -> str:
    """The question, the four lettered choices, then ``Answer:``."""
    lines = "".join(f"{letter}. {_text(choice)}\n" for letter, choice in zip(LETTERS, doc["choices"]))
    return f"Question: {_text(doc['question'])}\nChoices:\n{lines}Answer:"


def continuations(doc: Doc) -> list[str]:
    """The four answer texts (not letters), each after one space."""
    return [" " + _text(choice) for choice in doc["choices"]]


def gold(doc: Doc) -> int:
    """The answer index 0-3."""
    return doc["answer"]


def validate(doc: Doc) -> None:
    """Four non-blank string choices and an answer index 0-3."""
    choices = doc["choices"]
    if len(choices) != 4:
        raise ValueError(f"field 'choices': {len(choices)} choices, expected 4")
    for index, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise ValueError(f"field 'choices': choice {index} ({choice!r:.40}) is not a non-blank string")
    if doc["answer"] not in (0, 1, 2, 3):
        raise ValueError(f"field 'answer': {doc['answer']!r} is not 0, 1, 2 or 3")


def subject_task(subject: str) -> Task:
    """The ``hendrycksTest-<subject>`` task (test split, dev few-shot examples)."""
    n, subcategory, category = SUBJECTS[subject]
    return Task(
        name=f"hendrycksTest-{subject}",
        version="1.0",
        dataset=DatasetSpec("cais/mmlu", subject, "test", n, {"question": str, "choices": list, "answer": int},
                            local_dir=f"mmlu/{subject}"),
        context=context,
        continuations=continuations,
        gold=gold,
        scoring="multiple_choice",
        metrics=("acc", "acc_norm"),
        aliases=(f"mmlu_{subject}",),
        validate=validate,
        description=f"MMLU {subject.replace('_', ' ')} ({subcategory}; {CATEGORIES[category]}): question, "
                    f"lettered choices, answer texts scored; acc, acc_norm",
        source="Hendrycks et al. 2021; lm-eval v0.2.0 `hendrycksTest-*` (VERSION 0)",
        fewshot_split="dev",
    )


TASKS = [subject_task(subject) for subject in SUBJECTS]

GROUPS = [
    *(TaskGroup(
        name=f"mmlu_{category}",
        tasks=tuple(f"hendrycksTest-{s}" for s, (_, _, c) in SUBJECTS.items() if c == category),
        description=f"MMLU {label} (categories.py; anatomy under Other), question-weighted mean",
        aggregation="micro",
    ) for category, label in CATEGORIES.items()),
    TaskGroup(
        name="mmlu",
        tasks=tuple(f"hendrycksTest-{s}" for s in SUBJECTS),
        description="MMLU, all 57 subjects, question-weighted mean (as the MMLU authors average)",
        aggregation="micro",
        categories=tuple(f"mmlu_{category}" for category in CATEGORIES),
    ),
]
