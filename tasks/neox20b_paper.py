"""Every task of the GPT-NeoX-20B paper (Black et al. 2022, arXiv 2204.06745), as lm-eval v0.2.0 names them.

The list is lm-eval v0.2.0's registry as SPEC-suite B.0 summarises it, then the seven MATH subjects (generated
answers, ``tasks/hendrycks_math.py``), with two renamings: v0.2.0's ``lambada`` is
OpenAI's LAMBADA, evalkit's ``lambada_openai``; of HEAD-QA only the English ``headqa_en`` (v0.2.0's ``headqa`` is the
deprecated Spanish alias). The card's five tasks come first, in the card's column order, then B.0's order.

The group is a plain selection (no pooled row): its tasks measure different things with different metrics.
Selecting it needs every member's task file; with ``--data-dir``, ``--skip-missing-data`` leaves out the members
whose local files are missing (``evalkit run --tasks neox20b_paper --data-dir DIR --skip-missing-data``).
"""

from evalkit.types import TaskGroup

CARD_TASKS = ("lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge")
"""The model card's table (tasks/neox20b_card.py), in column order."""

MULTIPLE_CHOICE_TASKS = (
    "arc_easy", "hellaswag", "winogrande", "openbookqa", "anli_r1", "anli_r2", "anli_r3", "copa", "cb", "wic", "wsc",
    "rte", "boolq", "ethics_cm", "logiqa", "mathqa", "pubmedqa", "prost", "qa4mre_2011", "qa4mre_2012", "qa4mre_2013",
    "headqa_en", "wsc273",
)
"""The paper's other log-likelihood tasks (SPEC-suite B.2 to B.22), in B.0's order."""

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)
"""MMLU's 57 subjects (SPEC-suite Part C), alphabetical as v0.2.0 registers them."""

ARITHMETIC_TASKS = tuple(f"arithmetic_{s}"
                         for s in ("2da", "2ds", "3da", "3ds", "4da", "4ds", "5da", "5ds", "2dm", "1dc"))

MATH_TASKS = ("math_algebra", "math_counting_and_prob", "math_geometry", "math_intermediate_algebra",
              "math_num_theory", "math_prealgebra", "math_precalc")
"""MATH's seven subjects (lm-eval v0.2.0 ``hendrycks_math``, greedy generation), in v0.2.0's order."""

PAPER_TASKS = (
    CARD_TASKS + MULTIPLE_CHOICE_TASKS + tuple(f"hendrycksTest-{s}" for s in MMLU_SUBJECTS) + ARITHMETIC_TASKS
    + ("wikitext",) + MATH_TASKS
)
"""All 103 tasks: 5 of the card, 23 multiple-choice, 57 MMLU subjects, 10 arithmetic, wikitext, 7 MATH."""

GROUP = TaskGroup(
    name="neox20b_paper",
    tasks=PAPER_TASKS,
    description="every task of the GPT-NeoX-20B paper (lm-eval v0.2.0 semantics)",
)
