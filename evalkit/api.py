"""The Python API: run an evaluation, read results, look at them as data frames.

``import evalkit`` exposes these names lazily (torch loads only when :func:`evaluate` scores)::

    import evalkit
    results = evalkit.evaluate(model="random:pythia-14m", tasks=["piqa"], limit=50,
                               tokenizer="../shared/data/tokenizers/20B_tokenizer.json", data_dir="../shared/data")
    evalkit.metrics_frame(results)      # one row per (run, task, metric)
    evalkit.documents_frame(results)    # one row per document
    print(evalkit.format_summary(results))

See ``docs/python-api.md`` for a worked example.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterable

from evalkit.types import EvalkitError, RunConfig

EXTRA_OPTIONS = ("max_batch_tokens", "tokenization", "share_context", "revision", "trust_remote_code",
                 "model_args", "load_kwargs", "dist_timeout_s", "allow_non_finite", "full_weight_hash", "figure",
                 "prefix_cache", "apply_chat_template", "system_instruction", "fewshot_as_multiturn")
"""Keyword options of :func:`evaluate` that go to ``RunConfig.extra`` (the ``evalkit run`` flags of the same
names; ``share_context=False`` is ``--no-shared-context``, ``prefix_cache=False`` is ``--no-prefix-cache``,
``figure=False`` is ``--no-figure``,
``load_kwargs={"device_map": "auto", "max_memory": {...}}`` is ``--parallelize`` with ``--max-memory``,
``dist_timeout_s`` is ``--dist-timeout``; ``apply_chat_template=True``, ``system_instruction="..."`` and
``fewshot_as_multiturn=False`` are the chat flags)."""

log = logging.getLogger(__name__)

_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("model", "tasks", "extra"))


def _task_names(tasks: Any) -> tuple[str, ...]:
    """The names of ``tasks`` (one comma-separated string, or an iterable of names).

    Raises:
        EvalkitError: anything else (None, a number, a list holding a non-string).
    """
    message = f"tasks must be a task name, a comma-separated string or a list of names, got {tasks!r}"
    if isinstance(tasks, str):
        return tuple(t.strip() for t in tasks.split(","))
    if isinstance(tasks, (bytes, dict)) or not isinstance(tasks, Iterable):
        raise EvalkitError(message)
    names = tuple(tasks)
    if not all(isinstance(name, str) for name in names):
        raise EvalkitError(message)
    return names


def _check_option_types(options: dict[str, Any]) -> None:
    """Refuse options of the wrong type with one message naming the option (before any file is read).

    Raises:
        EvalkitError: ``include_paths`` not a folder or list of folders, ``model_args`` not a dict or
            ``key=value,...`` text, ``fewshot_overrides`` or ``load_kwargs`` not a dict.
    """
    paths = options.get("include_paths")
    if paths is not None:
        single = isinstance(paths, (str, os.PathLike))
        items = [paths] if single else list(paths) if isinstance(paths, (list, tuple)) else None
        if items is None or not all(isinstance(p, (str, os.PathLike)) for p in items):
            raise EvalkitError(f"include_paths must be a folder or a list of folders, got {paths!r}")
    if options.get("model_args") is not None and not isinstance(options["model_args"], (dict, str)):
        raise EvalkitError(f"model_args must be a dict or a 'key=value,...' string, got {options['model_args']!r}")
    if "fewshot_overrides" in options and not isinstance(options["fewshot_overrides"], dict):
        raise EvalkitError(f"fewshot_overrides must be a dict {{task: shots}}, got {options['fewshot_overrides']!r}")
    if options.get("load_kwargs") is not None and not isinstance(options["load_kwargs"], dict):
        raise EvalkitError(f"load_kwargs must be a dict (e.g. {{'device_map': 'auto'}}), got "
                           f"{options['load_kwargs']!r}")


def make_config(model: str | os.PathLike, tasks: str | Iterable[str], **options: Any) -> RunConfig:
    """The :class:`~evalkit.types.RunConfig` of :func:`evaluate`'s arguments.

    ``model`` is a name or a path (``str`` or :class:`pathlib.Path`). ``tasks`` is a list of task, alias or
    group names, or one comma-separated string. ``options`` are the ``RunConfig`` fields (``limit``, ``seed``,
    ``batch_size`` (an int or ``"auto"``), ``dtype``, ``data_dir``, ``tokenizer``, ``bootstrap_iters``,
    ``use_cache``, ``num_fewshot``, ``fewshot_overrides`` (a dict), ...) and :data:`EXTRA_OPTIONS`;
    ``include_paths`` may be one folder or a list; ``model_args`` a dict or ``key=value,...`` text;
    ``load_kwargs`` a dict.

    Raises:
        EvalkitError: an unknown option, naming it and listing the accepted ones; a model, tasks or option of
            the wrong type, naming it.
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise EvalkitError(f"model must be a model name, folder or file (str or path), got {model!r}")
    names = _task_names(tasks)
    unknown = sorted(set(options) - set(_FIELDS) - set(EXTRA_OPTIONS))
    if unknown:
        raise EvalkitError(f"unknown option(s) {', '.join(unknown)}; accepted: "
                           f"{', '.join(sorted((*_FIELDS, *EXTRA_OPTIONS)))}")
    _check_option_types(options)
    fields = {k: v for k, v in options.items() if k in _FIELDS}
    if isinstance(fields.get("include_paths"), (str, os.PathLike)):
        fields["include_paths"] = (fields["include_paths"],)
    if "include_paths" in fields:
        fields["include_paths"] = tuple(str(p) for p in fields["include_paths"])
    for key in ("data_dir", "tokenizer", "cache_dir", "output_dir"):
        if fields.get(key) is not None:
            fields[key] = str(fields[key])
    extra = {"max_batch_tokens": 32768, "tokenization": "separate", "share_context": True}
    extra |= {k: v for k, v in options.items() if k in EXTRA_OPTIONS}
    if isinstance(extra.get("model_args"), str):
        from evalkit.models.model_args import parse_model_args

        extra["model_args"] = parse_model_args(extra["model_args"])
    return RunConfig(model=model, tasks=names, extra=extra, **fields)


def evaluate(model: str | os.PathLike, tasks: str | Iterable[str], *, progress: bool = False,
             **options: Any) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks``: the same run, and the same results dict, as ``evalkit run``.

    No file is written unless ``output_dir`` is given (then the results JSON, the report and, with
    ``log_samples=True``, the samples file go there exactly as the CLI writes them; their paths are logged at
    INFO level). The request cache is read and filled as by the CLI (``use_cache=False`` turns it off).

    Args:
        model: an alias (``pythia-70m``), hub id, local folder or GGUF file (``str`` or path), or
            ``random:<alias>``.
        tasks: task, alias or group names (list, or one comma-separated string).
        progress: show the progress bar on stderr.
        **options: see :func:`make_config`.

    Returns:
        the results dict (``config``, ``model``, ``tokenizer``, ``versions``, ``timing``, ``tasks`` with each
        task's ``metrics`` ``{name: {value, stderr, stderr_bootstrap, n, higher_is_better}}`` and per-document
        values); see README "Outputs".

    Raises:
        EvalkitError: bad input (unknown task, malformed data, missing model, ...), before the model loads.
    """
    from evalkit.run.pipeline import run

    write = options.get("output_dir") is not None
    config = make_config(model, tasks, **options)
    output = run(config, progress=progress, write=write)
    if output is None:  # a data-parallel rank other than 0
        return {}
    if write:
        log.info("results: %s; report: %s", output.results_path, output.report_path)
    return output.results


def load_results(path: Any) -> dict[str, Any]:
    """Read a results JSON written by ``evalkit run`` (or :func:`evaluate` with ``output_dir``).

    Raises:
        EvalkitError: a missing file, invalid JSON, or a file that is not evalkit results.
    """
    from evalkit.results.files import load_results as read

    return read(path)

