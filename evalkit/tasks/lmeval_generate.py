"""The generation part of an lm-eval 0.4 ``output_type: generate_until`` task YAML: its generation settings, its
filter pipelines and its metrics, read with lm-eval 0.4.13's semantics (``lm_eval/config/task.py``
``TaskConfig.__post_init__``, ``lm_eval/models/utils.py`` ``normalize_gen_kwargs``, ``lm_eval/api/task.py``
``ConfigurableTask.process_results``):

* ``generation_kwargs.until``: a string or a list of strings (each non-empty); without it (or without
  ``generation_kwargs`` at all) ``[fewshot_delimiter]``. The backend also stops at the model's end-of-text token,
  as lm-eval's HF model adds it to ``until``.
* the length: the first of ``max_gen_toks``, ``max_new_tokens``, ``max_tokens``, ``max_completion_tokens`` that is
  set (that priority), else 256 (lm-eval's HF model default); a whole number above 0.
* decoding is greedy: ``do_sample: false`` (any ``temperature`` is then ignored, as lm-eval sets it to 0), or no
  ``do_sample`` with ``temperature`` 0 or absent. ``do_sample: true``, a positive temperature without
  ``do_sample: false``, and any other decoding key (``top_p``, ``num_beams``, ...) are refused, naming file and key.
* ``filter_list``: named pipelines (:mod:`evalkit.stats.filters`); none: the one pipeline ``none`` (take_first).
* ``metric_list``: ``exact_match`` (:mod:`evalkit.stats.exact_match`: ``ignore_case``, ``ignore_punctuation``,
  ``ignore_numbers``, ``regexes_to_ignore``); none: ``exact_match`` without options (lm-eval's default for the
  output type). Each result is named ``metric,filter`` (``exact_match,strict-match``), filters in
  ``filter_list`` order, metrics in ``metric_list`` order within each.
* the gold: ``doc_to_target``; with ``doc_to_choice``, the choice it indexes; a list (TriviaQA's aliases) scores
  1 when any element matches; anything else is compared as text (``str``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

from evalkit.stats.exact_match import ExactMatchOptions, exact_match
from evalkit.stats.filters import FilterPipeline, build_pipelines
from evalkit.types import Doc, EvalkitError

DEFAULT_MAX_GEN_TOKS = 256
"""lm-eval 0.4's HF model default ``max_gen_toks``."""
LENGTH_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
"""lm-eval 0.4's length keys, in priority order."""
GENERATION_KEYS = {"until", "do_sample", "temperature", *LENGTH_KEYS}
GENERATION_METRICS = ("exact_match",)


class _Config(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def where(self, key: str) -> str: ...


def generation_settings(config: _Config, fewshot_delimiter: str) -> tuple[tuple[str, ...], int]:
    """``(until, max_new_tokens)`` of a ``generate_until`` task YAML (see the module docstring).

    Raises:
        EvalkitError: naming the file and key: ``generation_kwargs`` not a mapping, an empty or non-string stop
            string, a length that is not a whole number above 0, sampling asked for, an unsupported key.
    """
    kwargs = config.get("generation_kwargs")
    if kwargs is None:
        return (fewshot_delimiter,), DEFAULT_MAX_GEN_TOKS
    where = config.where("generation_kwargs")
    if not isinstance(kwargs, dict):
        raise EvalkitError(f"{where}: expected a mapping of generation settings")
    unknown = sorted(set(kwargs) - GENERATION_KEYS)
    if unknown:
        raise EvalkitError(f"{where}: generation setting '{unknown[0]}' is not supported (evalkit generates "
                           f"greedily); supported: {', '.join(sorted(GENERATION_KEYS))}")
    do_sample = kwargs.get("do_sample")
    temperature = kwargs.get("temperature", 0.0)
    if do_sample is not None and not isinstance(do_sample, bool):
        raise EvalkitError(f"{where}: do_sample must be true or false, got {do_sample!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise EvalkitError(f"{where}: temperature must be a number >= 0, got {temperature!r}")
    if do_sample is True:
        raise EvalkitError(f"{where}: do_sample: true (sampling) is not supported; evalkit generates greedily "
                           f"(do_sample: false)")
    if do_sample is None and temperature > 0:
        raise EvalkitError(f"{where}: temperature {temperature} without do_sample: false means sampling in lm-eval; "
                           f"evalkit generates greedily (set do_sample: false or temperature: 0)")
    until = kwargs.get("until", [fewshot_delimiter])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not until or not all(isinstance(s, str) and s for s in until):
        raise EvalkitError(f"{where}: until must be a non-empty string or a list of non-empty strings, got "
                           f"{kwargs.get('until')!r}")
    length = next((kwargs[key] for key in LENGTH_KEYS if kwargs.get(key) is not None), DEFAULT_MAX_GEN_TOKS)
    key = next((key for key in LENGTH_KEYS if kwargs.get(key) is not None), "max_gen_toks")
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise EvalkitError(f"{where}: {key} must be a whole number above 0, got {length!r}")
    return tuple(until), length


def generation_metrics(config: _Config) -> list[tuple[str, ExactMatchOptions]]:
    """The ``metric_list`` of a ``generate_until`` task YAML: (metric, options) in order; ``[exact_match]`` without
    one.

    Raises:
        EvalkitError: naming the file and key: a metric other than ``exact_match`` (or a ``!function`` one), an
            aggregation other than mean, ``higher_is_better: false``, or a bad option.
    """
    entries = config.get("metric_list")
    if entries is None:
        return [("exact_match", ExactMatchOptions())]
    where = config.where("metric_list")
    if not isinstance(entries, list) or not entries:
        raise EvalkitError(f"{where}: expected a non-empty list of {{metric: name}} entries")
    out = []
    for index, entry in enumerate(entries):
        place = f"{where}, entry {index}"
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if not isinstance(metric, str) or metric not in GENERATION_METRICS:
            shown = f"!function {metric.target}" if hasattr(metric, "target") else repr(metric)
            raise EvalkitError(f"{place}: metric {shown} is not supported for output_type generate_until; "
                               f"supported: {', '.join(GENERATION_METRICS)}")
        if entry.get("aggregation", "mean") != "mean":
            raise EvalkitError(f"{place}: metric {metric!r} with aggregation {entry['aggregation']!r}: only 'mean' "
                               f"is supported")
        if entry.get("higher_is_better", True) is not True:
            raise EvalkitError(f"{place}: metric {metric!r} with higher_is_better {entry['higher_is_better']!r}: "
                               f"it is true")
        if any(name == metric for name, _ in out):
            raise EvalkitError(f"{place}: metric {metric!r} listed twice")
        out.append((metric, ExactMatchOptions.from_metric_entry(entry, place)))
    return out


def generation_filters(config: _Config) -> list[FilterPipeline]:
    """The task's filter pipelines (``filter_list``), or the one pipeline ``none`` (take_first).

    Raises:
        EvalkitError: as :func:`evalkit.stats.filters.build_pipelines`, naming the file and key.
    """
    value = config.get("filter_list")
    return build_pipelines(value, config.where("filter_list") if value is not None else str(config.where("task")))


def result_names(pipelines: list[FilterPipeline], metrics: list[tuple[str, ExactMatchOptions]]) -> tuple[str, ...]:
    """``metric,filter`` for each filter pipeline, then each metric (lm-eval 0.4's result keys)."""
    return tuple(f"{metric},{p.name}" for p in pipelines for metric, _ in metrics)


def make_scorer(
    pipelines: list[FilterPipeline], metrics: list[tuple[str, ExactMatchOptions]], gold: Callable[[Doc], Any],
) -> tuple[Callable[[Doc, str], dict[str, float]], Callable[[Doc, str], dict[str, str]], Callable[[Doc], list[str]]]:
    """``(score_generation, generation_answers, references)`` for :class:`evalkit.types.Task`.

    Args:
        pipelines: the filter pipelines (each maps ``[generation]`` to one answer).
        metrics: (metric name, options) pairs.
        gold: ``doc -> str | list[str]``, the gold target(s) (choices already resolved).
    """

    def references(doc: Doc) -> list[str]:
        value = gold(doc)
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    def answers(doc: Doc, generation: str) -> dict[str, str]:
        return {p.name: p([generation]) for p in pipelines}

    def score(doc: Doc, generation: str) -> dict[str, float]:
        value = gold(doc)
        target: Any = [str(v) for v in value] if isinstance(value, list) else str(value)
        out = {}
        for p in pipelines:
            answer = p([generation])
            for metric, options in metrics:
                out[f"{metric},{p.name}"] = exact_match(answer, target, options)
        return out

    return score, answers, references


def gold_of(target: Callable[[Doc], Any], choices: Callable[[Doc], list[str]] | None, where: str) \
        -> Callable[[Doc], Any]:
    """``doc -> gold`` as lm-eval's ``process_results`` forms it for ``generate_until``: the choice
    ``doc_to_target`` indexes when the task has ``doc_to_choice``, else the target itself (a list stays a list).

    Raises (when called):
        ValueError: with choices, a target that is not an index of them (naming ``where``).
    """

    def gold(doc: Doc) -> Any:
        value = target(doc)
        if choices is None:
            return value
        options = choices(doc)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(options):
            raise ValueError(f"{where}: with doc_to_choice, doc_to_target must give a choice index, got {value!r:.60}")
        return options[value]

    return gold

