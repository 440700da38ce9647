"""lm-evaluation-harness's own task folder (``lm_eval/tasks`` of the installed package) found without importing
lm-eval, and the sub-folders of it that define the ``lm_eval.<name>`` tasks and groups a run asks for.

Reading all of lm-eval 0.4.13's 13,986 YAML files takes minutes, so a run that names ``lm_eval.gsm8k`` reads only
the top-level sub-folders (``gsm8k/``) whose files declare ``task: gsm8k``, ``group: gsm8k`` or ``tag: gsm8k``
(found by a text search of the files, without parsing them); ``evalkit tasks --lm-eval`` reads the whole folder.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Iterable

from evalkit.types import EvalkitError

PREFIX = "lm_eval."
"""The prefix of every task and group name read from an lm-eval task YAML."""

INSTALL_HINT = "pip install lm-eval==0.4.13, or point --include-path at a folder of lm-eval task YAMLs"


def lm_eval_task_dir() -> Path | None:
    """``lm_eval/tasks`` of the installed lm-eval package (found by :func:`importlib.util.find_spec`, lm-eval is not
    imported), or None when lm-eval is not installed or has no such folder."""
    try:
        spec = importlib.util.find_spec("lm_eval")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tasks"
    return folder if folder.is_dir() else None


def is_lm_eval_package_dir(directory: Path) -> bool:
    """True for lm-eval's own ``lm_eval/tasks`` folder (installed or unpacked): its Python files (``manager.py``,
    ``_factory.py``) are lm-eval's code, not evalkit task files, and are never loaded."""
    return (directory.name == "tasks" and directory.parent.name == "lm_eval"
            and (directory.parent / "__init__.py").is_file())


def _declaring_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """``task: NAME``, ``group: NAME``, ``tag: NAME`` at the start of a line (key and value quoted or not), or
    ``NAME`` in a ``tag:`` list."""
    alternatives = "|".join(sorted(re.escape(n) for n in names))
    quoted = rf"[\"']?(?:{alternatives})[\"']?[ \t]*(?:#.*)?$"
    scalar = rf"^[\"']?(?:task|group|tag)[\"']?[ \t]*:[ \t]*{quoted}"  # MMLU's files quote their keys
    listed = rf"^[\"']?tag[\"']?[ \t]*:[ \t]*\n(?:[ \t]*-.*\n)*?[ \t]*-[ \t]*{quoted}"
    return re.compile(f"{scalar}|{listed}", re.MULTILINE)


def folders_declaring(root: Path, names: Iterable[str]) -> list[Path]:
    """The folders under ``root`` (lm-eval's task folder) holding a YAML file that declares one of ``names``
    (without the ``lm_eval.`` prefix) as its task, group or tag; sorted.

    A text search, not a YAML parse: a name written another way (a template, an anchor) is not found, and the
    caller then reports the task as unknown with the hint to pass ``--include-path``.
    """
    wanted = {n for n in names if n}
    if not wanted:
        return []
    pattern = _declaring_pattern(wanted)
    found: set[Path] = set()
    for path in [*root.rglob("*.yaml"), *root.rglob("*.yml")]:
        if path.parent in found:
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if any(n in text for n in wanted) and pattern.search(text):
            found.add(path.parent)
    return sorted(found)


def lm_eval_folders_for(names: Iterable[str], include_paths: Iterable[str]) -> list[str]:
    """Folders of the installed lm-eval to read for the ``lm_eval.*`` names a run asks for (``name:K`` allowed),
    none when no such name is asked for, lm-eval is not installed, or an ``--include-path`` already covers its
    task folder.

    Raises:
        EvalkitError: an ``lm_eval.*`` name that no file of the installed lm-eval declares (names it and its
            folder) -- not raised here when lm-eval is missing: the registry then says how to install it.
    """
    wanted = [n.split(":")[0].strip()[len(PREFIX):] for n in names if n.strip().startswith(PREFIX)]
    root = lm_eval_task_dir()
    if not wanted or root is None:
        return []
    resolved = [Path(p).resolve() for p in include_paths]
    if any(root.resolve() == p or root.resolve() in p.parents or p in root.resolve().parents for p in resolved):
        return []
    folders = folders_declaring(root, wanted)
    if not folders:
        raise EvalkitError(f"no task file of the installed lm-eval ({root}) declares "
                           f"{', '.join(PREFIX + w for w in wanted)} (`evalkit tasks --lm-eval` lists its tasks)")
    return [str(f) for f in folders]
