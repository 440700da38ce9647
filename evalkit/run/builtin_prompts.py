"""Whether a task that replaces a built-in one (``--include-path`` folder holding e.g. ``piqa.py``) still asks the
built-in task's questions.

Published rows (the GPT-NeoX-20B card, the paper's tables) were scored with the built-in prompts; a replacement
with another prompt, choices or gold answer shown beside them would read as a like-for-like comparison. The
replacement's and the built-in's zero-shot requests (every context, continuation and the gold index) are built
for the run's chosen documents and compared document by document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from evalkit.tasks.registry import builtin_task_dir, load_registry
from evalkit.types import Task


def _prompt(task: Task, doc: Any) -> tuple[Any, ...]:
    conts = list(task.continuations(doc))
    contexts = list(task.choice_contexts(doc)) if task.choice_contexts else [task.context(doc)] * len(conts)
    return tuple(contexts), tuple(conts), task.gold(doc)


def replaced_builtin(task: Task, task_file: Path | None) -> Task | None:
    """The built-in task ``task`` replaces (same name, defined in a file outside the built-in folder), or None."""
    if task_file is None or Path(task_file).resolve().parent == builtin_task_dir().resolve():
        return None
    return load_registry(()).tasks.get(task.name)


def differing_prompts(task: Task, builtin: Task, docs: Sequence[Any]) -> int:
    """How many of ``docs`` get other zero-shot requests (contexts, continuations or gold) from ``task`` than from
    ``builtin``; a document the built-in task cannot read counts as differing."""
    differ = 0
    for doc in docs:
        try:
            same = _prompt(task, doc) == _prompt(builtin, doc)
        except Exception:  # noqa: BLE001 - the built-in code may not read the replacement's documents at all
            same = False
        differ += not same
    return differ


def builtin_prompt_warning(task: Task, builtin: Task, task_file: Path, differ: int, n: int) -> str | None:
    """The warning a replaced built-in task with other prompts carries into results and report, else None."""
    if not differ:
        return None
    return (f"{task.name}: scored with {task_file} (version {task.version}), which replaces the built-in task "
            f"(version {builtin.version}) and gives other prompts for {differ} of {n} documents: its numbers are not "
            f"comparable with the published {task.name} rows")
