"""Names to tasks: task files, task aliases and groups (model names: :mod:`evalkit.models.resolve`).

Tasks are plain Python files or YAML files. Each Python file defines ``TASK`` (a :class:`~evalkit.types.Task`)
and/or ``GROUP`` (a :class:`~evalkit.types.TaskGroup`); a task family (MMLU's 57 subjects) defines ``TASKS`` and
``GROUPS``, sequences of them. A ``*.yaml``/``*.yml`` file (searched in sub-folders too, as lm-eval does) is either
evalkit's declarative format (:mod:`evalkit.tasks.yaml_tasks`) or an lm-evaluation-harness 0.4 task YAML
(:mod:`evalkit.tasks.lmeval_yaml`), found and loaded by :mod:`evalkit.tasks.yaml_scan`. Built-in files live in the
repository's ``tasks/`` folder (installed as the ``evalkit.builtin_tasks`` package); ``--include-path DIR`` adds the files
of another folder.

A Python file that fails to load stops everything (a module a YAML file of the same folder calls with
``!function`` is a helper, not a task file, and is not loaded as one). A YAML file outside the supported subset is *refused*: it is
recorded with its reason (``evalkit tasks`` lists it, ``evalkit run`` logs it), and selecting its task is an error
that gives the reason, so a folder of lm-eval YAMLs where some are generative still runs the others.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from evalkit.stats.metrics import check_task_metrics, group_metrics
from evalkit.types import EvalkitError, Task, TaskGroup
from evalkit.tasks.lmeval_locate import (
    INSTALL_HINT,
    PREFIX,
    folders_declaring,
    is_lm_eval_package_dir,
    lm_eval_folders_for,
    lm_eval_task_dir,
)
from evalkit.tasks.yaml_scan import scan_yaml, yaml_helper_modules
from evalkit.tasks.user_files import failure, symlink_loop

log = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def builtin_task_dir() -> Path:
    """Folder of the built-in task files: ``tasks/`` beside the package in a checkout, else ``evalkit.builtin_tasks``."""
    checkout = _PACKAGE_DIR.parent / "tasks"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("evalkit.builtin_tasks")
    if spec is None or not spec.submodule_search_locations:
        raise EvalkitError("built-in task folder not found (neither tasks/ nor evalkit.builtin_tasks)")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass
class TaskRegistry:
    """Tasks and groups found in a set of folders, with aliases resolved.

    Attributes:
        tasks: canonical name -> Task.
        groups: group name -> TaskGroup.
        files: canonical task or group name -> the file that defined it.
        refused: YAML file -> why it was not loaded (outside the supported subset, not a task file, ...).
        refused_names: task or group name a refused file would have defined -> the reason.
    """

    tasks: dict[str, Task]
    groups: dict[str, TaskGroup]
    files: dict[str, Path]
    refused: dict[str, str] = field(default_factory=dict)
    refused_names: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Every selectable name: tasks, aliases and groups."""
        aliases = [a for t in self.tasks.values() for a in t.aliases]
        return sorted([*self.tasks, *aliases, *self.groups])

    def get(self, name: str) -> Task:
        """The task called ``name`` or having it as an alias.

        Raises:
            EvalkitError: unknown name, with the closest known names suggested; a refused YAML task's name, with
                the reason it was refused.
        """
        if name in self.tasks:
            return self.tasks[name]
        for task in self.tasks.values():
            if name in task.aliases:
                return task
        if name in self.refused_names:
            raise EvalkitError(f"task '{name}' was not loaded: {self.refused_names[name]}")
        if name.startswith(PREFIX) and lm_eval_task_dir() is None:  # never suggest the built-in v0.2.0 task
            raise EvalkitError(f"unknown task '{name}': lm-eval is not installed and no --include-path folder "
                               f"defines it ({INSTALL_HINT})")
        same_kind = [n for n in self.names() if n.startswith(PREFIX) == name.startswith(PREFIX)]
        close = difflib.get_close_matches(name, same_kind, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise EvalkitError(f"unknown task '{name}'{hint} (`evalkit tasks` lists them)")

    def expand(self, names: Iterable[str]) -> list[Task]:
        """Tasks selected by names, aliases and groups, without repeats, in the order given.

        Raises:
            EvalkitError: an unknown name, a group naming unknown tasks (:meth:`check_group`), or nothing selected.
        """
        chosen: dict[str, Task] = {}
        for raw in names:
            name = raw.strip()
            if not name:
                continue
            if name not in self.groups and name in self.refused_names:
                raise EvalkitError(f"task '{name}' was not loaded: {self.refused_names[name]}")
            members = self.groups[name].tasks if name in self.groups else (name,)
            if name in self.groups:
                self.check_group(name)
            for member in members:
                task = self.get(member)
                chosen.setdefault(task.name, task)
        if not chosen:
            raise EvalkitError("no task selected (--tasks is empty)")
        return list(chosen.values())

    def unknown_members(self, group: str) -> list[str]:
        """The members of ``group`` that name no task or alias of this registry, in the group's order."""
        return [m for m in self.groups[group].tasks
                if m not in self.tasks and not any(m in t.aliases for t in self.tasks.values())]

    def check_group(self, group: str) -> None:
        """Refuse to select a group that names tasks this registry does not define.

        The check runs when the group is selected, not when the folders are scanned: a group spanning task files
        that are not all present (another ``--include-path`` folder, a task family not installed) then stops only
        the runs that select it, while every other task and group stays usable.

        Raises:
            EvalkitError: naming the group, its file and every unknown member in one message.
        """
        unknown = self.unknown_members(group)
        if unknown:
            raise EvalkitError(f"group '{group}' ({self.files[group]}) names {len(unknown)} unknown task"
                               f"{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")


    def selected_groups(self, names: Iterable[str]) -> list[TaskGroup]:
        """The groups among ``names`` (as :meth:`expand` reads them), without repeats, in the order given.

        :meth:`expand` turns a group into its tasks; this keeps which groups were asked for, so a group with an
        aggregation gets its own row in the results.
        """
        chosen: dict[str, TaskGroup] = {}
        for raw in names:
            name = raw.strip()
            if name in self.groups:
                chosen.setdefault(name, self.groups[name])
        return list(chosen.values())

    def members(self, group: TaskGroup) -> list[str]:
        """Canonical names of a group's tasks (aliases resolved), without repeats, in the group's order."""
        return list(dict.fromkeys(self.get(member).name for member in group.tasks))


def _load_module(path: Path) -> Any:
    module_name = f"evalkit_task_{abs(hash(str(path)))}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EvalkitError(f"cannot load task file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin may fail in any way; name the file
        raise EvalkitError(f"task file {path} failed to load: {failure(exc, 'file')}") from exc
    return module


def _defined(module: Any, path: Path) -> list[Any]:
    """The tasks and groups a task file defines: ``TASK``, ``GROUP``, and the items of ``TASKS`` and ``GROUPS``."""
    found = [obj for obj in (getattr(module, "TASK", None), getattr(module, "GROUP", None)) if obj is not None]
    for name in ("TASKS", "GROUPS"):
        many = getattr(module, name, None)
        if many is None:
            continue
        if not isinstance(many, (list, tuple)):
            raise EvalkitError(f"task file {path}: {name} must be a list or tuple, got {type(many).__name__}")
        found.extend(many)
    return found


@lru_cache(maxsize=16)
def _scan(folders: tuple[str, ...]) -> TaskRegistry:
    tasks: dict[str, Task] = {}
    groups: dict[str, TaskGroup] = {}
    files: dict[str, Path] = {}
    builtin = Path(folders[0]) if folders else None
    refused: dict[str, str] = {}
    refused_names: dict[str, str] = {}
    for folder in folders:
        directory = Path(folder)
        if not directory.is_dir():
            raise EvalkitError(f"task folder not found: {directory}")
        helpers = yaml_helper_modules(directory)
        own_code = is_lm_eval_package_dir(directory)  # lm-eval's manager.py and friends: code, not task files
        for path in [] if own_code else sorted(directory.glob("*.py")):
            if path.name.startswith("_") or path.stem in helpers:
                continue
            module = _load_module(path)
            for obj in _defined(module, path):
                if not isinstance(obj, (Task, TaskGroup)):
                    raise EvalkitError(f"task file {path}: TASK/GROUP (and TASKS/GROUPS items) must be a Task or "
                                       f"TaskGroup, got {type(obj).__name__}")
                if obj.name in files:
                    if not (files[obj.name].parent == builtin and directory != builtin):
                        raise EvalkitError(f"task name '{obj.name}' defined twice: {files[obj.name]} and {path}")
                    log.warning("%s from %s replaces the built-in one (%s)", obj.name, path, files[obj.name])
                    tasks.pop(obj.name, None)
                    groups.pop(obj.name, None)
                if isinstance(obj, Task):
                    try:
                        check_task_metrics(obj.name, obj.scoring, obj.metrics, obj.primary_metric)
                    except ValueError as exc:
                        raise EvalkitError(f"task file {path}: {exc}") from None
                files[obj.name] = path
                (tasks if isinstance(obj, Task) else groups)[obj.name] = obj
        scan_yaml(directory, tasks, groups, files, refused, refused_names)
    registry = TaskRegistry(tasks, groups, files, refused, refused_names)
    for group in list(groups.values()):
        problem = None
        if group.aggregation not in (None, "micro", "macro"):
            problem = (f"group '{group.name}' ({files[group.name]}) has aggregation {group.aggregation!r}; "
                       f"expected None, 'micro' or 'macro'")
        elif group.aggregation is not None and not registry.unknown_members(group.name):
            if not group_metrics([registry.get(member).metrics for member in group.tasks]):
                problem = (f"group '{group.name}' ({files[group.name]}) has aggregation '{group.aggregation}', but "
                           f"its tasks share no metric that averages over documents (acc, acc_norm)")
        if problem is None:
            continue
        if files[group.name].suffix not in (".yaml", ".yml"):  # a Python task file's mistake stops everything
            raise EvalkitError(problem)
        groups.pop(group.name)  # a YAML group is refused like a YAML file: listed, the rest still loads
        refused[f"{files.pop(group.name)} (group '{group.name}')"] = problem
        refused_names[group.name] = problem
    return registry


def load_registry(include_paths: Iterable[str] = (), wanted: Iterable[str] = ()) -> TaskRegistry:
    """Registry of the built-in tasks plus those in ``include_paths``.

    A task or group in an included folder with a built-in's name replaces the built-in one, with a warning (copy
    ``tasks/<name>.py`` into a folder, edit it, pass the folder with ``--include-path``); two included folders
    defining one name is an error.

    Refused YAML files do not raise: they are listed in :attr:`TaskRegistry.refused` and logged.

    Raises:
        EvalkitError: a missing folder, a Python task file that fails to load or defines a name twice (other than an
            included file replacing a built-in), a task whose metrics its scoring rule cannot give
            (:func:`evalkit.stats.metrics.check_task_metrics`), a group with an aggregation other than None, "micro" or
            "macro", or an aggregated group whose tasks share no mean metric (:func:`evalkit.stats.metrics.group_metrics`).
            A YAML file that fails is recorded in ``refused``, not raised. A group naming unknown tasks is refused when selected (:meth:`TaskRegistry.check_group`).
    """
    given_folders = []
    for given in include_paths:
        if symlink_loop(Path(given)):
            raise EvalkitError(f"--include-path {given}: a symbolic link that loops")
        given_folders.append(str(Path(given).resolve()))
    folders = (str(builtin_task_dir()), *given_folders)
    extra = lm_eval_folders_for(wanted, folders[1:])
    registry = _scan((*folders, *extra))
    root = lm_eval_task_dir()
    for _ in range(3):  # a group of the installed lm-eval may list tasks of other folders (MMLU's categories)
        missing = [m[len(PREFIX):] for name in wanted if name.split(":")[0].strip() in registry.groups
                   for m in registry.unknown_members(name.split(":")[0].strip()) if m.startswith(PREFIX)]
        more = [str(f) for f in folders_declaring(root, missing)] if missing and root and extra else []
        more = [f for f in more if f not in extra]
        if not more:
            break
        extra = sorted({*extra, *more})
        registry = _scan((*folders, *extra))
    return registry
