"""The five tasks of the GPT-NeoX-20B model card's zero-shot table (arXiv 2204.06745), in column order."""

from evalkit.types import TaskGroup

GROUP = TaskGroup(
    name="neox20b_card",
    tasks=("lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge"),
    description="GPT-NeoX-20B model card zero-shot table",
)
