"""``exact_match`` of a generation, as lm-eval 0.4.13 computes it for ``generate_until`` tasks.

Sources (lm-eval 0.4.13 on the package index):

- ``lm_eval/api/metrics.py`` ``exact_match_hf_evaluate`` (HF evaluate's ``exact_match``): each pattern of
  ``regexes_to_ignore`` is removed (``re.sub(pattern, "", text)``, in order) from predictions and references, then
  ``ignore_case`` lower-cases, ``ignore_punctuation`` deletes ``string.punctuation`` (ASCII only),
  ``ignore_numbers`` deletes ``string.digits``; the score is the mean of element-wise equality. The case and
  deletion steps are numpy's ``np.char`` functions on fixed-width unicode arrays, which this module also uses:
  a character whose lower case is longer (``"İ"``) is cut to the array's width, and trailing ``"\\0"`` are ignored.
- ``lm_eval/api/task.py`` ``ConfigurableTask.process_results`` (``generate_until``): with a list target
  ("multiple targets", decided on the task's first document) the prediction is repeated once per reference and
  the document scores 1.0 if any reference matches, else 0.0; with a single target it scores the equality of the
  one pair (1.0 or 0.0). The metric's keyword arguments are its ``metric_list`` entry less ``metric``,
  ``aggregation``, ``higher_is_better`` and ``hf_evaluate``.

One quirk is kept: with ``regexes_to_ignore: []`` and no other option, lm-eval compares two Python lists, so a
list target scores 1.0 only when every reference equals the prediction.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalkit.types import EvalkitError

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_DIGITS_TABLE = str.maketrans("", "", string.digits)
_NOT_KWARGS = ("metric", "aggregation", "higher_is_better", "hf_evaluate")


@dataclass(frozen=True)
class ExactMatchOptions:
    """The keyword arguments of ``exact_match`` in a task's ``metric_list`` entry.

    Attributes:
        regexes_to_ignore: patterns removed in order (tuple of str), or None when the key is absent.
        ignore_case: lower-case both sides (bool).
        ignore_punctuation: delete ``string.punctuation`` from both sides (bool).
        ignore_numbers: delete ASCII digits from both sides (bool).
    """

    regexes_to_ignore: tuple[str, ...] | None = None
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False

    @classmethod
    def from_metric_entry(cls, entry: Mapping[str, Any], where: str) -> ExactMatchOptions:
        """Read and check the options of one ``metric_list`` entry whose ``metric`` is ``exact_match``.

        Args:
            entry: the YAML mapping, e.g. ``{"metric": "exact_match", "ignore_case": True, ...}``.
            where: its location for messages, e.g. ``"tasks/gsm8k.yaml: metric_list[0]"``.
        Raises:
            EvalkitError: naming ``where`` and the key: an unknown key (lm-eval stops with a TypeError), a flag
                that is not a boolean, ``regexes_to_ignore`` that is not a list of strings (a bare string would
                be read character by character), a pattern that does not compile, or ``hf_evaluate: true``.
        """
        if entry.get("hf_evaluate", False) is not False:
            raise EvalkitError(f"{where}: hf_evaluate: true (HF evaluate's own metric) is not supported")
        kwargs = {key: value for key, value in entry.items() if key not in _NOT_KWARGS}
        unknown = sorted(set(kwargs) - {"regexes_to_ignore", "ignore_case", "ignore_punctuation", "ignore_numbers"})
        if unknown:
            raise EvalkitError(f"{where}: exact_match has no option(s) {unknown}")
        flags = {}
        for key in ("ignore_case", "ignore_punctuation", "ignore_numbers"):
            value = kwargs.get(key, False)
            if not isinstance(value, bool):
                raise EvalkitError(f"{where}: {key} must be true or false, got {value!r}")
            flags[key] = value
        patterns = kwargs.get("regexes_to_ignore")
        if patterns is not None:
            if not isinstance(patterns, list) or not all(isinstance(pattern, str) for pattern in patterns):
                raise EvalkitError(f"{where}: regexes_to_ignore must be a list of strings, got {patterns!r}")
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as err:
                    message = f"{where}: regexes_to_ignore pattern {pattern!r} does not compile: {err}"
                    raise EvalkitError(message) from None
            patterns = tuple(patterns)
        return cls(regexes_to_ignore=patterns, **flags)


def _normalised_equal(predictions: list[str], references: list[str], options: ExactMatchOptions) -> Any:
    """Element-wise equality after HF evaluate's normalisation (an array of bool, or one bool; see module doc)."""
    left: Any = predictions
    right: Any = references
    if options.regexes_to_ignore is None:
        left, right = np.asarray(left), np.asarray(right)
    else:
        for pattern in options.regexes_to_ignore:
            left = np.array([re.sub(pattern, "", text) for text in left])
            right = np.array([re.sub(pattern, "", text) for text in right])
    if options.ignore_case:
        left, right = np.char.lower(left), np.char.lower(right)
    if options.ignore_punctuation:
        left, right = np.char.translate(left, _PUNCTUATION_TABLE), np.char.translate(right, _PUNCTUATION_TABLE)
    if options.ignore_numbers:
        left, right = np.char.translate(left, _DIGITS_TABLE), np.char.translate(right, _DIGITS_TABLE)
    return left == right


def exact_match(prediction: str, reference: str | Sequence[str],
                options: ExactMatchOptions = ExactMatchOptions()) -> float:
    """lm-eval 0.4.13's ``exact_match`` of one document.

    Args:
        prediction: the filtered answer (str, the output of the task's filter pipeline).
        reference: the target (str), or the list of acceptable targets (list/tuple of str) for a task whose
            targets are lists.
        options: the metric's options.
    Returns:
        1.0 or 0.0 (float).
    Raises:
        ValueError: an empty list of references (lm-eval gives 0.0 there only without options, and stops with
            an error with them).
    """
    if isinstance(reference, str):
        return float(np.mean(_normalised_equal([prediction], [reference], options)))
    references = list(reference)
    if not references:
        raise ValueError("exact_match: the list of references is empty")
    score = np.mean(_normalised_equal([prediction] * len(references), references, options))
    return 1.0 if score > 0.0 else 0.0
