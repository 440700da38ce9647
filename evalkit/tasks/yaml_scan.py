"""A task folder's YAML files found and loaded into the task registry.

A ``*.yaml``/``*.yml`` file (searched in sub-folders too, as lm-eval does) is either evalkit's declarative format
(:mod:`evalkit.tasks.yaml_tasks`) or an lm-evaluation-harness 0.4 task YAML (:mod:`evalkit.tasks.lmeval_yaml`). A file outside
the supported subset is *refused*: recorded with its reason, not raised, so a folder of lm-eval YAMLs where some
are generative still loads the others. Groups that tasks join by listing them, and groups nesting groups, are
resolved here too.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from evalkit.stats.metrics import check_task_metrics
from evalkit.tasks.user_files import symlink_loop
from evalkit.types import EvalkitError, Task, TaskGroup

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
"""Seconds between the progress lines of a long folder scan."""


def yaml_helper_modules(directory: Path) -> set[str]:
    """Names of the modules the folder's YAML files call with ``!function module.fn``: helpers, not task files."""
    names = set()
    for path in [*directory.glob("*.yaml"), *directory.glob("*.yml")]:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:  # a looping or dangling link, or unreadable: refused when the folder is scanned
            continue
        names |= {m.group(1).split(".")[0] for m in re.finditer(r"!function\s+([\w.]+)\.\w+", text)}
    return names


def yaml_files(directory: Path) -> list[Path]:
    """``*.yaml`` and ``*.yml`` files under ``directory`` (sub-folders included, ``__pycache__`` skipped), sorted;
    symbolic links that loop are listed too, so that the scan refuses them by name."""
    found = [*directory.rglob("*.yaml"), *directory.rglob("*.yml")]
    return sorted(p for p in found if (p.is_file() or symlink_loop(p)) and "__pycache__" not in p.parts)


def declared_name(data: Any) -> str | None:
    """The task or group name a YAML mapping declares, read without loading it (for refusal messages)."""
    if not isinstance(data, dict):
        return None
    from evalkit.tasks.lmeval_yaml import PREFIX, is_lmeval_file

    if is_lmeval_file(data):
        name = data.get("task") if isinstance(data.get("task"), str) else data.get("group")
        return PREFIX + name if isinstance(name, str) else None
    return data.get("name") if isinstance(data.get("name"), str) else None


def load_yaml_task_file(path: Path) -> tuple[list[Task | TaskGroup], dict[str, list[str]]]:
    """The tasks and groups one YAML file defines, and the groups its tasks join (name -> members).

    Raises:
        EvalkitError: a file that is not a task file in either format, or outside the supported subset.
    """
    from evalkit.tasks import lmeval_yaml
    from evalkit.tasks import yaml_tasks  # jinja2 and PyYAML load only when there are YAML files
    from evalkit.tasks.yaml_source import load_yaml

    source = load_yaml(path)
    if lmeval_yaml.is_lmeval_file(source.data):
        objects, joined = lmeval_yaml.load_file(source)
    elif yaml_tasks.is_evalkit_file(source.data):
        objects, joined = yaml_tasks.load_file(source)
    else:
        raise EvalkitError(f"{path}: not a task file: expected evalkit's format (a 'name' or 'tasks' key) or an "
                           f"lm-eval 0.4 task YAML (a 'task', 'group', 'tag' or 'include' key)")
    for obj in objects:
        if isinstance(obj, Task):
            try:
                check_task_metrics(obj.name, obj.scoring, obj.metrics, obj.primary_metric)
            except ValueError as exc:
                raise EvalkitError(f"{path}: {exc}") from None
    return objects, joined


def scan_yaml(directory: Path, tasks: dict[str, Task], groups: dict[str, TaskGroup], files: dict[str, Path],
               refused: dict[str, str], refused_names: dict[str, str]) -> None:
    """Load a folder's YAML task files into the registry's dicts; record refused files instead of stopping."""
    memberships: dict[str, list[str]] = {}
    member_files: dict[str, Path] = {}
    paths = yaml_files(directory)
    shown = time.monotonic()
    for count, path in enumerate(paths):
        if time.monotonic() - shown >= PROGRESS_EVERY_S:  # lm-eval's whole task folder takes minutes
            shown = time.monotonic()
            log.info("reading task files in %s: %s of %s (%s loaded, %s refused)", directory, f"{count:,}",
                     f"{len(paths):,}", f"{len(files):,}", f"{len(refused):,}")
        loop = symlink_loop(path)
        if loop:
            refused[str(path)] = f"{path}: a symbolic link that loops ({loop})"
            continue
        try:
            objects, joined = load_yaml_task_file(path)
            for obj in objects:
                if obj.name in files or obj.name in memberships:
                    raise EvalkitError(f"{path}: task name '{obj.name}' already defined by "
                                       f"{files.get(obj.name) or member_files[obj.name]}")
        except EvalkitError as exc:
            refused[str(path)] = str(exc)
            try:
                from evalkit.tasks.yaml_source import load_yaml

                name = declared_name(load_yaml(path).data)
            except EvalkitError:
                name = None
            if name and name not in files:
                refused_names[name] = str(exc)
            continue
        for obj in objects:
            files[obj.name] = path
            (tasks if isinstance(obj, Task) else groups)[obj.name] = obj
        for name, members in joined.items():
            memberships.setdefault(name, []).extend(members)
            member_files.setdefault(name, path)
    for name, members in memberships.items():
        if name in files:
            refused[f"{member_files[name]} (group '{name}')"] = (f"group '{name}' joined by its tasks is also "
                                                                 f"defined by {files[name]}")
            continue
        files[name] = member_files[name]
        groups[name] = TaskGroup(name, tuple(members), f"tasks whose files list '{name}'")
    yaml_groups = [g for g in groups if files[g].suffix in (".yaml", ".yml")]
    flat = {name: flatten_group(name, groups, yaml_groups, ()) for name in yaml_groups}
    for name, members in flat.items():  # an lm-eval group may list groups and tags (MMLU's subject groups)
        groups[name] = TaskGroup(name, members, groups[name].description, groups[name].aggregation)
    for name in yaml_groups:
        missing = [m for m in groups[name].tasks if m not in tasks and not any(m in t.aliases for t in tasks.values())]
        if missing:
            group = groups.pop(name)
            reason = f"group '{group.name}' names tasks that were not loaded: {', '.join(missing)}"
            refused[f"{files.pop(name)} (group '{name}')"] = reason
            refused_names[name] = reason


def flatten_group(name: str, groups: dict[str, TaskGroup], nested: list[str], seen: tuple[str, ...]) -> tuple[str, ...]:
    """A YAML group's members with every member that is itself a YAML group replaced by its tasks (in order)."""
    out: list[str] = []
    for member in groups[name].tasks:
        if member in nested and member not in seen and member != name:
            out.extend(flatten_group(member, groups, nested, (*seen, name)))
        else:
            out.append(member)
    return tuple(dict.fromkeys(out))
