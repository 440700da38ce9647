"""The plan stage: every check that can refuse a run before any model file is read, in one place, and what the
later stages need from the flags (no torch here).

Order: numeric flags and the output folder; the task registry, the selected tasks and groups; the model name
(``--revision`` on random weights, a tokenizer for random weights); shots per task; local data and few-shot
files; the hub (one message for all that is missing); the request cache; a GGUF file's header and content key;
the chat settings, and under ``--apply-chat-template`` the chat template (read from the tokenizer's files or the
GGUF header: the one model file this stage reads, and no weights).
The documents themselves are read and validated by the next stage (:mod:`evalkit.run.requests`), still before
the model loads; checks that need the tokenizer or the model's config run in :mod:`evalkit.run.model`.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.data.documents import drop_tasks_without_data, limit_count, resolve_data_dir
from evalkit.data.hub_check import check_hub
from evalkit.fewshot.v020 import check_sources, resolve_shots
from evalkit.models.model_args import hub_options
from evalkit.models.resolve import resolve_model
from evalkit.run.chat import ChatPlan, plan_chat
from evalkit.run.prepare import missing_fewshot_file
from evalkit.scoring.cache import RequestCache, resolve_cache_dir
from evalkit.stats.groups import mixed_shots_warning
from evalkit.tasks.registry import TaskRegistry, load_registry
from evalkit.types import EvalkitError, RunConfig, Task, TaskGroup

log = logging.getLogger(__name__)


@dataclass
class RunPlan:
    """What a run will do, checked: the output of :func:`plan_run`, the input of every later stage.

    Attributes:
        config: the run's flags, as given.
        registry: every task and group found (built-in and ``--include-path``).
        tasks: the tasks to run, in order (those without data dropped under ``--skip-missing-data``).
        groups: the selected groups that aggregate their members into a row of their own.
        model: :func:`evalkit.models.resolve.resolve_model`'s description of ``--model`` (for a GGUF file also
            its ``gguf`` header summary and content ``sha256``).
        data_dir: ``--data-dir`` resolved, or None (the hub).
        shots: few-shot examples per task name.
        skipped: tasks left out by ``--skip-missing-data``, with the reason.
        hub: :func:`evalkit.models.model_args.hub_options` (revision, trust_remote_code, hub kwargs, model args).
        versions: Python's and the numerically relevant libraries' versions (part of the cache key).
        warnings: run-level warnings so far (a group mixing shot counts), for the results and the report.
        chat: the chat settings, with the chat template read under ``--apply-chat-template``
            (:mod:`evalkit.run.chat`).
    """

    config: RunConfig
    registry: TaskRegistry
    tasks: list[Task]
    groups: list[TaskGroup]
    model: dict[str, Any]
    data_dir: Path | None
    shots: dict[str, int]
    skipped: Any
    hub: dict[str, Any]
    versions: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    chat: ChatPlan | None = None


def plan_run(config: RunConfig) -> RunPlan:
    """Check everything about ``config`` that needs no model file, and resolve what the run will do.

    Raises:
        EvalkitError: any bad flag, unknown task or model name, missing data or few-shot file, unreachable hub
            with something missing locally, an unreadable request cache or GGUF file, naming what and where.
    """
    check_config(config)
    registry = load_registry(config.include_paths, config.tasks)  # lm_eval.* names: the installed lm-eval's
    tasks = registry.expand(config.tasks)
    selected = [g for g in registry.selected_groups(config.tasks) if g.aggregation is not None]
    groups = with_categories(selected, registry.groups)
    resolved = resolve_model(config.model)
    if resolved["kind"] == "random" and config.extra.get("revision") is not None:
        raise EvalkitError(f"--revision {config.extra['revision']}: {config.model} has random weights, no hub "
                           f"revision (its seed is its revision)")
    data_dir = resolve_data_dir(config.data_dir)
    shots = resolve_shots(tasks, config.num_fewshot, config.fewshot_overrides, registry.groups)
    for t in tasks:  # an lm-eval task YAML's own num_fewshot applies when the run asks for no shots
        if shots[t.name] == 0 and t.num_fewshot and t.name not in config.fewshot_overrides:
            shots[t.name] = t.num_fewshot
    for path, reason in registry.refused.items():
        log.warning("task file not loaded: %s", reason if reason.startswith(path) else f"{path}: {reason}")
    tasks, skipped = drop_tasks_without_data(tasks, data_dir, config, shots)
    check_sources(tasks, shots, lambda t: missing_fewshot_file(t, data_dir), config.tasks, config.fewshot_overrides)
    if resolved["kind"] == "random" and config.tokenizer is None:
        raise EvalkitError(f"{config.model} has random weights and no tokenizer of its own: add --tokenizer "
                           f"(e.g. ../shared/data/tokenizers/20B_tokenizer.json; tokenizer= in evalkit.evaluate)")
    hub = hub_options(config)
    check_hub(tasks, data_dir, resolved, config.model, config.tokenizer,  # one message for all that is missing
              hub["hub_kwargs"].get("cache_dir"))
    warnings = [w for g in selected if (w := mixed_shots_warning(g, registry.members(g), shots))]
    for warning in warnings:
        log.warning(warning)
    if config.use_cache:  # a broken cache fails here, before the model is loaded
        RequestCache(resolve_cache_dir(config.cache_dir)).close()
    if resolved["kind"] == "gguf":  # the gguf package and the file's header are checked before the model loads
        _identify_gguf(resolved, config)
    chat = plan_chat(config, resolved, hub)  # reads the chat template (a small file read), refuses a model without
    return RunPlan(config, registry, tasks, groups, resolved, data_dir, shots, skipped, hub, library_versions(),
                   warnings, chat)


def with_categories(selected: list[TaskGroup], defined: dict[str, TaskGroup]) -> list[TaskGroup]:
    """The selected aggregating groups, each followed by its categories (``TaskGroup.categories`` that aggregate:
    ``--tasks mmlu`` also gives STEM, humanities, social sciences and other their rows, as lm-eval's table
    does), without repeats; a category selected by name keeps its place.
    """
    chosen: dict[str, TaskGroup] = {}
    for group in selected:
        chosen.setdefault(group.name, group)
        for name in group.categories:
            category = defined.get(name)
            if category is not None and category.aggregation is not None:
                chosen.setdefault(name, category)
    return list(chosen.values())


SEED_LIMIT = 2 ** 64
"""Seeds run from 0 to 2**64 - 1: ``torch.manual_seed`` takes at most that, numpy's generators no negative value."""


def check_config(config: RunConfig) -> None:
    """Refuse numeric flags and an output folder that would fail the run later, after the model has scored.

    Checks ``--limit`` (a positive whole number, or a fraction between 0 and 1), ``--batch-size``,
    ``--max-batch-tokens`` and ``--max-length`` (at least 1), ``--bootstrap-iters``
    (0, or at least 2: a standard deviation of one resample does not exist), ``--seed`` and ``--fewshot-seed``
    (0 to 2**64 - 1) and that ``--output-dir`` is, or can be created as, a writable folder (and its ``results/``
    and ``reports/``, where they exist, are writable folders). Nothing is created.

    Raises:
        EvalkitError: naming the flag and the value.
    """
    if isinstance(config.batch_size, str) and config.batch_size != "auto":
        raise EvalkitError(f"--batch-size must be a whole number or 'auto', got {config.batch_size!r}")
    limit_count(1, config.limit)  # a whole count or a fraction between 0 and 1 (lm-eval's --limit)
    whole = (("--seed", config.seed), ("--fewshot-seed", config.fewshot_seed),
             ("--bootstrap-iters", config.bootstrap_iters), ("--max-length", config.max_length),
             ("--max-batch-tokens", config.extra.get("max_batch_tokens")),
             ("--batch-size", None if config.batch_size == "auto" else config.batch_size))
    for flag, value in whole:  # the Python API passes values through untyped
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise EvalkitError(f"{flag} must be a whole number, got {value!r}")
    batch_size = None if config.batch_size == "auto" else config.batch_size
    sizes = (("--batch-size", batch_size), ("--max-batch-tokens", config.extra.get("max_batch_tokens")),
             ("--max-length", config.max_length))
    for flag, value in sizes:
        if value is not None and value < 1:
            raise EvalkitError(f"{flag} must be at least 1, got {value}")
    if config.bootstrap_iters < 0 or config.bootstrap_iters == 1:
        raise EvalkitError(f"--bootstrap-iters must be 0 (no bootstrap) or at least 2, got {config.bootstrap_iters}")
    hub_options(config)
    if not 0 <= config.seed < SEED_LIMIT:
        raise EvalkitError(f"--seed must be between 0 and 2**64 - 1, got {config.seed}")
    if not 0 <= config.fewshot_seed < SEED_LIMIT:
        raise EvalkitError(f"--fewshot-seed must be between 0 and 2**64 - 1, got {config.fewshot_seed}")
    out = Path(config.output_dir)
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())  # "/" always exists
    if not existing.is_dir():
        raise EvalkitError(f"--output-dir {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalkitError(f"--output-dir {out}: {existing} is not writable")
    for sub in ("results", "reports"):  # an existing subfolder may be read-only while its parent is not
        folder = out / sub
        if folder.exists() and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise EvalkitError(f"--output-dir {out}: {folder} is not a writable folder, so the "
                               f"{'results' if sub == 'results' else 'report'} could not be written after scoring")


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "evalkit": __version__}
    for name in ("torch", "transformers", "tokenizers", "numpy", "datasets"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _identify_gguf(resolved: dict[str, Any], config: RunConfig) -> None:
    """Add the GGUF file's content sha256 (remembered in the cache folder unless ``--no-cache``) and its declared
    quantization to ``resolved``, so the model's identity is its content.

    Raises:
        EvalkitError: the gguf package is missing or the file cannot be read or parsed.
    """
    from evalkit.models.weights_hash import file_sha256, remembered
    from evalkit.models.gguf_file import describe_gguf

    memo = resolve_cache_dir(config.cache_dir) if config.use_cache else None
    try:
        resolved["gguf"] = remembered(resolved["path"], memo, "gguf", describe_gguf)
        resolved["sha256"] = file_sha256(resolved["path"], memo)
    except OSError as exc:
        raise EvalkitError(f"cannot read GGUF file {resolved['path']}: {exc}") from None
