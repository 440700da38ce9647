"""lm-eval 0.4 ``filter_list`` pipelines for ``generate_until`` tasks: regex, take_first, whitespace and case.

Source: lm-eval 0.4.13 (package index), ``lm_eval/api/task.py`` (``ConfigurableTask.__init__`` parses
``filter_list``; without one the single pipeline is ``none`` = ``[take_first]``), ``lm_eval/api/filter.py``
(``FilterEnsemble``: the steps run in order on each document's list of responses, one per repeat),
``lm_eval/filters/extraction.py`` (``RegexFilter``, ``WhitespaceFilter``), ``selection.py`` (``TakeFirstFilter``)
and ``transformation.py`` (``LowercaseFilter``, ``UppercaseFilter``).

Semantics kept exactly:

- a document's value starts as the list of its responses; ``regex``, ``remove_whitespace``, ``lowercase`` and
  ``uppercase`` map over it element by element; ``take_first`` replaces it by its first element. After a
  ``take_first`` the value is one string, and a later element-wise step iterates over its *characters* (lm-eval
  does the same), giving a list of one-character results;
- ``regex``: ``re.findall`` on the response; no match -> ``fallback`` (default ``"[invalid]"``, not stripped);
  else the match at index ``group_select`` (default 0; negative counts from the end); a tuple (a pattern with
  several groups) gives its first non-empty group, or ``fallback`` when all are empty; the result is
  ``.strip()``-ped. A ``group_select`` beyond the matches is an error (lm-eval stops with an IndexError);
- ``remove_whitespace`` is ``str.strip()`` on both sides in 0.4.13 (0.4.0 removed one leading space only;
  0.4.5 used ``lstrip()``).

Refused up front with :class:`~evalkit.types.EvalkitError` (lm-eval would fail later, behave differently, or
need features evalkit lacks): functions other than the five above (``map``, ``majority_vote``,
``take_first_k``, ``multi_choice_regex``, custom functions, ...), a pattern that does not compile, wrong argument
types or unknown arguments, a pipeline that does not end with ``take_first`` (lm-eval would then score the whole
list of repeats), an empty ``filter_list`` and two pipelines of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalkit.types import EvalkitError

DEFAULT_REGEX_PATTERN = r"#### (\-?[0-9\.\,]+)"
"""lm-eval's ``RegexFilter`` default pattern (GSM8K's final answer)."""
DEFAULT_FALLBACK = "[invalid]"
SUPPORTED_FUNCTIONS = ("regex", "take_first", "remove_whitespace", "lowercase", "uppercase")
DEFAULT_PIPELINE_NAME = "none"


@dataclass(frozen=True)
class RegexStep:
    """lm-eval's ``regex`` filter on one response.

    Attributes:
        pattern: the compiled ``regex_pattern``.
        group_select: index into ``findall``'s list of matches (int; negative from the end).
        fallback: answer when nothing matches (str).
        where: location for error messages.
    """

    pattern: re.Pattern
    group_select: int
    fallback: str
    where: str

    def __call__(self, response: str) -> str:
        """The extracted answer of one response (str)."""
        if not isinstance(response, str):
            response = ""
        matches = self.pattern.findall(response)
        if not matches:
            return self.fallback
        try:
            chosen = matches[self.group_select]
        except IndexError:
            raise EvalkitError(
                f"{self.where}: regex {self.pattern.pattern!r} found {len(matches)} match(es) in {response!r}, "
                f"so group_select {self.group_select} selects none (lm-eval stops with an IndexError)"
            ) from None
        if isinstance(chosen, tuple):
            chosen = next((group for group in chosen if group), self.fallback)
        return chosen.strip()


def _take_first(value: Sequence[str], where: str) -> str:
    if len(value) == 0:
        raise EvalkitError(f"{where}: take_first has nothing to take (lm-eval stops with an IndexError)")
    return value[0]


_ELEMENTWISE: dict[str, Callable[[str], str]] = {
    "remove_whitespace": str.strip,
    "lowercase": str.lower,
    "uppercase": str.upper,
}


@dataclass(frozen=True)
class FilterPipeline:
    """One named ``filter_list`` entry: turns a document's responses (one per repeat) into its answer.

    Attributes:
        name: the pipeline's name; results are reported as ``"<metric>,<name>"``.
        functions: the function names in order (for display and result metadata).
        steps: per step, ``None`` for ``take_first`` or the element-wise function.
        where: location for error messages.
    """

    name: str
    functions: tuple[str, ...]
    steps: tuple[Callable[[str], str] | None, ...]
    where: str

    def apply(self, responses: Sequence[str]) -> str | list[str]:
        """Run every step, as lm-eval's ``FilterEnsemble`` does for one document.

        Args:
            responses: the document's generations, one per repeat (list of str, length >= 1).
        Returns:
            the final value (a str, since every accepted pipeline ends with ``take_first``).
        Raises:
            EvalkitError: see :meth:`RegexStep.__call__` and ``take_first`` of an empty value.
        """
        value: Any = list(responses)
        for step in self.steps:
            if step is None:
                value = _take_first(value, f"{self.where}: pipeline {self.name!r}")
            else:
                value = [step(item) for item in value]  # over characters once value is a str, as in lm-eval
        return value

    def __call__(self, responses: Sequence[str]) -> str:
        """The document's answer (str); see :meth:`apply`."""
        answer = self.apply(responses)
        assert isinstance(answer, str), "pipelines are built to end with take_first"
        return answer


def _regex_step(kwargs: Mapping[str, Any], where: str) -> RegexStep:
    unknown = sorted(set(kwargs) - {"regex_pattern", "group_select", "fallback"})
    if unknown:
        raise EvalkitError(f"{where}: regex takes regex_pattern, group_select and fallback, not {unknown}")
    pattern = kwargs.get("regex_pattern", DEFAULT_REGEX_PATTERN)
    group_select = kwargs.get("group_select", 0)
    fallback = kwargs.get("fallback", DEFAULT_FALLBACK)
    if not isinstance(pattern, str):
        raise EvalkitError(f"{where}: regex_pattern must be a string, got {pattern!r}")
    if isinstance(group_select, bool) or not isinstance(group_select, int):
        raise EvalkitError(f"{where}: group_select must be an integer, got {group_select!r}")
    if not isinstance(fallback, str):
        raise EvalkitError(f"{where}: fallback must be a string, got {fallback!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise EvalkitError(f"{where}: regex_pattern {pattern!r} does not compile: {err}") from None
    return RegexStep(compiled, group_select, fallback, where)


def _step(function: str, kwargs: Mapping[str, Any], where: str) -> Callable[[str], str] | None:
    if function == "regex":
        return _regex_step(kwargs, where)
    # lm-eval's remove_whitespace inherits Filter.__init__(**kwargs) and ignores any argument; the other three
    # take none (lm-eval stops with a TypeError).
    if kwargs and function != "remove_whitespace":
        raise EvalkitError(f"{where}: {function} takes no arguments, got {sorted(kwargs)}")
    return None if function == "take_first" else _ELEMENTWISE[function]


def build_pipeline(spec: Mapping[str, Any], where: str) -> FilterPipeline:
    """Build one ``filter_list`` entry: ``{"name": ..., "filter": [{"function": ..., <kwargs>}, ...]}``.

    Args:
        spec: the YAML mapping of one entry (other keys are ignored, as in lm-eval).
        where: its location for messages, e.g. ``"tasks/gsm8k.yaml: filter_list[0]"``.
    Returns:
        a :class:`FilterPipeline`, callable on a document's responses (list of str) -> answer (str).
    Raises:
        EvalkitError: naming ``where``: missing or wrong-typed ``name``/``filter``/``function``, an unsupported
            function (named), unknown or wrong-typed arguments, a pattern that does not compile (named), or a
            last step other than ``take_first``.
    """
    if not isinstance(spec, Mapping):
        raise EvalkitError(f"{where}: a filter_list entry must be a mapping with name and filter, got {spec!r}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise EvalkitError(f"{where}: name must be a non-empty string, got {name!r}")
    functions_spec = spec.get("filter")
    if not isinstance(functions_spec, list) or not functions_spec:
        raise EvalkitError(f"{where} ({name}): filter must be a non-empty list of functions, got {functions_spec!r}")
    functions, steps = [], []
    for index, entry in enumerate(functions_spec):
        place = f"{where} ({name}) filter[{index}]"
        if not isinstance(entry, Mapping) or "function" not in entry:
            raise EvalkitError(f"{place}: expected a mapping with a 'function' key, got {entry!r}")
        function = entry["function"]
        if not isinstance(function, str):
            raise EvalkitError(f"{place}: custom filter function {function!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_FUNCTIONS)})")
        if function not in SUPPORTED_FUNCTIONS:
            raise EvalkitError(f"{place}: filter function {function!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_FUNCTIONS)})")
        kwargs = {key: value for key, value in entry.items() if key != "function"}
        functions.append(function)
        steps.append(_step(function, kwargs, f"{place} {function}"))
    if functions[-1] != "take_first":
        raise EvalkitError(
            f"{where} ({name}): the pipeline must end with take_first (it ends with {functions[-1]!r}; lm-eval "
            "would then score the list of all repeats rather than one answer)"
        )
    return FilterPipeline(name, tuple(functions), tuple(steps), where)


def default_pipeline(where: str = "") -> FilterPipeline:
    """lm-eval's pipeline when a task has no ``filter_list``: ``none`` = ``[take_first]``."""
    return build_pipeline({"name": DEFAULT_PIPELINE_NAME, "filter": [{"function": "take_first"}]}, where)


def build_pipelines(filter_list: Sequence[Mapping[str, Any]] | None, where: str) -> list[FilterPipeline]:
    """All pipelines of a task, in ``filter_list`` order; ``[default_pipeline()]`` when it is None.

    Args:
        filter_list: the task's ``filter_list`` value (None when absent).
        where: the task file and key for messages, e.g. ``"tasks/gsm8k.yaml: filter_list"``.
    Raises:
        EvalkitError: not a list, an empty list (lm-eval would report no metric at all), two pipelines of the
            same name (lm-eval would keep only the last one's answers), or any error of :func:`build_pipeline`.
    """
    if filter_list is None:
        return [default_pipeline(where)]
    if not isinstance(filter_list, list) or not filter_list:
        raise EvalkitError(f"{where}: filter_list must be a non-empty list of pipelines, got {filter_list!r}")
    pipelines = [build_pipeline(spec, f"{where}[{index}]") for index, spec in enumerate(filter_list)]
    names = [pipeline.name for pipeline in pipelines]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EvalkitError(f"{where}: pipeline names must be unique, repeated: {duplicates}")
    return pipelines
