"""Per-document metrics, and how each metric aggregates over documents.

Definitions follow lm-evaluation-harness v0.2.0 (the GPT-NeoX-20B card) and SPEC.md:

* ``acc`` (multiple choice): the argmax of the summed log-likelihoods is the gold index; ties go to the
  lowest index (``numpy.argmax``).
* ``acc_norm``: the argmax of log-likelihood divided by the choice's length in characters, not counting the
  one-space target delimiter.
* ``acc`` (target, LAMBADA): every token of the target is the greedy argmax.
* ``acc`` (any greedy, TriviaQA): any continuation is greedy. It is computed from the greedy *booleans*,
  never from log-likelihood floats (lm-eval issue 456 made every answer count that way).
* ``perplexity``: exp(-mean over documents of the target's log-likelihood); per document the value kept is
  ``loglikelihood`` (nats).
* ``acc`` (yes/no, SuperGLUE BoolQ/WiC/WSC, ETHICS): two continuations, yes first; v0.2.0 predicts yes only when
  ``ll_yes > ll_no``, so an exact tie predicts *no* (the second), unlike argmax's first index.
* ``f1`` (classification, CB): macro F1 over the classes, computed once over all documents (v0.2.0 ``cb`` uses
  scikit-learn ``f1_score(golds, preds, average="macro")``). Per document the value kept is ``class_pair`` =
  predicted class x :data:`CLASS_BASE` + gold class, so per-document arrays stay one float a document (the
  bootstrap and paired comparisons resample them like any other); v0.2.0 reports no stderr for f1, and no
  closed form exists.
* Rolling (document) perplexities, SPEC-suite B.24 (lm-eval v0.2.0 ``wikitext``): per document the value kept
  is ``loglikelihood`` (nats, summed over the document's windows), ``words`` = ``len(re.split(r"\\s+", text))``
  and ``bytes`` = UTF-8 length of ``text``, where ``text`` is the task's ``units_text(doc)`` (the raw document)
  or, without one, the scored text. The aggregates are ratios of sums over documents (each document weighted
  by its size, not a mean of per-document values): ``word_perplexity`` = exp(-Σll / Σwords),
  ``byte_perplexity`` = exp(-Σll / Σbytes), ``bits_per_byte`` = -Σll / Σbytes / ln 2. No closed-form stderr;
  the bootstrap resamples documents and recomputes the ratio.

* Generation (``scoring="generate_until"``): the task scores each generated text itself
  (``Task.score_generation``) into one value per metric and document, 0.0 or 1.0: MATH's ``acc`` (lm-eval
  v0.2.0 ``is_equiv``), lm-eval 0.4's ``exact_match``. lm-eval 0.4 names each result ``metric,filter``
  (``exact_match,strict-match``; ``exact_match,none`` without a filter list): such a name is its own per-document
  key. All are means over documents with the closed-form stderr, like ``acc``.

A task with ``scoring="rolling"`` has ``context(doc) == ""``, one continuation (the text scored, e.g. the
detokenised page), ``gold = lambda doc: 0``, metrics a subset of :data:`ROLLING_METRICS` and one of them as its
primary metric.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Mapping, Sequence

import numpy as np

SCORINGS = ("multiple_choice", "target", "any_greedy", "yes_no", "classification", "rolling", "generate_until")

GENERATION_METRICS = {"acc": True, "exact_match": True}
"""Metrics a generation task may report (base name before any ``,filter``) -> higher_is_better; each a mean of
per-document values."""


def is_generation_metric(metric: str) -> bool:
    """True for ``exact_match`` and for ``<acc|exact_match>,<filter name>`` (lm-eval 0.4's result names)."""
    if not isinstance(metric, str):
        return False
    base, comma, name = metric.partition(",")
    return base in GENERATION_METRICS and (base == "exact_match" or (comma == "," and name != ""))


class _WithGenerationMetrics(dict):
    """A metric table that also answers for generation metric names (:func:`is_generation_metric`)."""

    def __init__(self, table: dict, make: Callable[[str], object]) -> None:
        super().__init__(table)
        self._make = make

    def __missing__(self, metric: str) -> object:
        if is_generation_metric(metric):
            return self._make(metric)
        raise KeyError(metric)

    def __contains__(self, metric: object) -> bool:
        return dict.__contains__(self, metric) or is_generation_metric(metric)  # type: ignore[arg-type]

    def get(self, metric: str, default: object = None) -> object:
        return self[metric] if metric in self else default

ROLLING_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")

SCORING_METRICS = {"multiple_choice": ("acc", "acc_norm"), "target": ("acc", "perplexity"), "any_greedy": ("acc",),
                   "yes_no": ("acc",), "classification": ("acc", "f1"), "rolling": ROLLING_METRICS,
                   "generate_until": ("acc", "exact_match")}
"""Scoring rule -> the aggregate metrics its per-document values can give."""

HIGHER_IS_BETTER = _WithGenerationMetrics(
    {"acc": True, "acc_norm": True, "perplexity": False, "f1": True, "word_perplexity": False,
     "byte_perplexity": False, "bits_per_byte": False},
    lambda metric: GENERATION_METRICS[metric.partition(",")[0]])

PER_DOC_KEY = _WithGenerationMetrics(
    {"acc": "acc", "acc_norm": "acc_norm", "perplexity": "loglikelihood", "f1": "class_pair"}, lambda metric: metric)
"""Aggregate metric -> the one per-document value it is computed from (metrics of one value per document)."""

PER_DOC_KEYS = _WithGenerationMetrics(
    {**{m: (k,) for m, k in PER_DOC_KEY.items()}, "word_perplexity": ("loglikelihood", "words"),
     "byte_perplexity": ("loglikelihood", "bytes"), "bits_per_byte": ("loglikelihood", "bytes")},
    lambda metric: (metric,))
"""Aggregate metric -> the per-document values it is computed from, in the column order of
:func:`per_doc_values`."""


def per_doc_values(metric: str, documents: Mapping[str, Sequence[float]]) -> np.ndarray:
    """A metric's per-document values from a results file's ``documents`` arrays, float64.

    Returns:
        shape (n,) for a metric of one value per document (acc, acc_norm, perplexity's log-likelihoods);
        shape (n, 2) for a ratio of sums (rolling perplexities: columns log-likelihood in nats, then words or
        bytes). :func:`aggregator` takes either, with leading resample axes.

    Raises:
        KeyError: an unknown metric, or ``documents`` without a value it needs.
    """
    keys = PER_DOC_KEYS[metric]
    columns = [np.asarray(documents[k], dtype=np.float64) for k in keys]
    return columns[0] if len(columns) == 1 else np.stack(columns, axis=-1)

CLASS_BASE = 1000
"""``class_pair`` = predicted class x CLASS_BASE + gold class (classes are 0 .. CLASS_BASE - 1)."""


def choice_length(continuation: str) -> int:
    """Characters of a continuation without its leading one-space delimiter (at least 1)."""
    text = continuation[1:] if continuation.startswith(" ") else continuation
    return max(len(text), 1)


def multiple_choice(loglikelihoods: Sequence[float], continuations: Sequence[str], gold: int) -> dict[str, float]:
    """``acc`` and ``acc_norm`` for one document (each 0.0 or 1.0)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray([choice_length(c) for c in continuations], dtype=np.float64)
    return {
        "acc": float(int(np.argmax(lls)) == gold),
        "acc_norm": float(int(np.argmax(lls / lengths)) == gold),
    }


def yes_no(loglikelihoods: Sequence[float], gold: int) -> dict[str, float]:
    """``acc`` (0.0/1.0) for a two-continuation yes/no document: predicted 0 (yes) only when
    ``loglikelihoods[0] > loglikelihoods[1]`` strictly, so a tie predicts 1 (no), as lm-eval v0.2.0's
    ``ll_yes > ll_no`` (BoolQ, WiC, SuperGLUE WSC, ETHICS commonsense).

    Raises:
        ValueError: not exactly two log-likelihoods.
    """
    if len(loglikelihoods) != 2:
        raise ValueError(f"yes/no scoring needs exactly 2 continuations, got {len(loglikelihoods)}")
    predicted = 0 if loglikelihoods[0] > loglikelihoods[1] else 1
    return {"acc": float(predicted == gold)}


def classification(loglikelihoods: Sequence[float], gold: int) -> dict[str, float]:
    """``acc`` (argmax, ties to the lowest index, equals gold) and ``class_pair`` (predicted x CLASS_BASE + gold)
    for one document of a classification task scored with ``f1`` (CB).

    Raises:
        ValueError: more continuations (classes) than CLASS_BASE, or a gold class outside them.
    """
    if len(loglikelihoods) > CLASS_BASE or not 0 <= gold < len(loglikelihoods):
        raise ValueError(f"classification needs 1..{CLASS_BASE} classes and a gold among them, "
                         f"got {len(loglikelihoods)} classes and gold {gold}")
    predicted = int(np.argmax(np.asarray(loglikelihoods, dtype=np.float64)))
    return {"acc": float(predicted == gold), "class_pair": float(predicted * CLASS_BASE + gold)}


def target(loglikelihood: float, greedy: bool) -> dict[str, float]:
    """``acc`` (greedy match, 0.0/1.0) and ``loglikelihood`` (nats) of a single target."""
    return {"acc": float(bool(greedy)), "loglikelihood": float(loglikelihood)}


def any_greedy(greedy: Sequence[bool]) -> dict[str, float]:
    """``acc`` = 1.0 when any continuation is greedy.

    Raises:
        TypeError: a flag that is not a bool (a float log-likelihood passed by mistake).
    """
    for flag in greedy:
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"greedy flags must be booleans, got {type(flag).__name__}")
    return {"acc": float(any(greedy))}


def rolling(loglikelihood: float, units_text: str) -> dict[str, float]:
    """A document's rolling log-likelihood (nats) and the sizes that normalise it (SPEC-suite B.24).

    ``words`` = ``len(re.split(r"\\s+", units_text))`` (empty strings at the ends count, so leading or trailing
    whitespace adds one each, as in lm-eval v0.2.0); ``bytes`` = UTF-8 byte length of ``units_text``.
    """
    return {"loglikelihood": float(loglikelihood), "words": len(re.split(r"\s+", units_text)),
            "bytes": len(units_text.encode("utf-8"))}


def doc_metrics(
    scoring: str, loglikelihoods: Sequence[float], greedy: Sequence[bool], continuations: Sequence[str], gold: int,
    units_text: str | None = None,
) -> dict[str, float]:
    """Per-document metric values for a task's scoring rule (see module docstring).

    ``units_text`` (rolling only) is the text whose words and bytes normalise the log-likelihood; None means
    the scored text ``continuations[0]``.

    Raises:
        ValueError: an unknown scoring rule.
    """
    if scoring == "rolling":
        return rolling(loglikelihoods[0], continuations[0] if units_text is None else units_text)
    if scoring == "multiple_choice":
        return multiple_choice(loglikelihoods, continuations, gold)
    if scoring == "target":
        return target(loglikelihoods[0], greedy[0])
    if scoring == "any_greedy":
        return any_greedy(greedy)
    if scoring == "yes_no":
        return yes_no(loglikelihoods, gold)
    if scoring == "classification":
        return classification(loglikelihoods, gold)
    if scoring == "generate_until":
        raise ValueError("a generation task's metrics come from its score_generation, not from log-likelihoods")
    raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")


def check_task_metrics(name: str, scoring: str, metrics: Sequence[str], primary: str) -> None:
    """Refuse a task definition whose metrics its scoring rule cannot give (found after scoring, it would be lost).

    Raises:
        ValueError: an unknown scoring rule, a metric the rule does not give, or a primary metric not listed.
    """
    if scoring not in SCORING_METRICS:
        raise ValueError(f"task '{name}' has scoring '{scoring}'; expected one of {', '.join(SCORINGS)}")
    for metric in metrics:
        if scoring == "generate_until" and (metric == "acc" or is_generation_metric(metric)):
            continue
        if metric not in SCORING_METRICS[scoring]:
            also = " and each as metric,filter" if scoring == "generate_until" else ""
            raise ValueError(f"task '{name}' lists metric '{metric}', which scoring '{scoring}' does not give "
                             f"(it gives {', '.join(SCORING_METRICS[scoring])}{also})")
    if primary not in metrics:
        raise ValueError(f"task '{name}' has primary metric '{primary}', which is not among its metrics "
                         f"({', '.join(metrics)})")


def perplexity(loglikelihoods: np.ndarray) -> np.ndarray:
    """exp(-mean(ll)) along the last axis; ``loglikelihoods`` in nats, shape (..., n_docs)."""
    return np.exp(-np.mean(loglikelihoods, axis=-1))


def macro_f1(class_pairs: np.ndarray) -> np.ndarray:
    """Macro F1 along the last axis of ``class_pairs`` (predicted x CLASS_BASE + gold, shape (..., n_docs)).

    As scikit-learn's ``f1_score(gold, predicted, average="macro")`` (the source of v0.2.0 ``cb``'s f1): the
    unweighted mean, over the classes that occur as gold or predicted, of each class's binary F1 =
    2·TP / (2·TP + FP + FN), which is 0 for a class with no true positive. Returns float64, shape (...).
    """
    pairs = np.asarray(class_pairs, dtype=np.int64)
    predicted, gold = np.divmod(pairs, CLASS_BASE)
    n_classes = int(max(predicted.max(initial=0), gold.max(initial=0))) + 1
    total = np.zeros(pairs.shape[:-1], dtype=np.float64)
    present = np.zeros(pairs.shape[:-1], dtype=np.float64)
    for c in range(n_classes):
        tp = np.sum((predicted == c) & (gold == c), axis=-1)
        fp = np.sum((predicted == c) & (gold != c), axis=-1)
        fn = np.sum((predicted != c) & (gold == c), axis=-1)
        denominator = 2 * tp + fp + fn
        total += np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
        present += denominator > 0
    return total / np.maximum(present, 1)


def mean(values: np.ndarray) -> np.ndarray:
    """Mean along the last axis."""
    return np.mean(values, axis=-1)


def ratio_perplexity(values: np.ndarray) -> np.ndarray:
    """exp(-Σll / Σunits) over documents; ``values`` shape (..., n_docs, 2): log-likelihood (nats), units."""
    v = np.asarray(values, dtype=np.float64)
    return np.exp(-v[..., 0].sum(axis=-1) / v[..., 1].sum(axis=-1))


def ratio_bits(values: np.ndarray) -> np.ndarray:
    """-Σll / Σbytes / ln 2 over documents (bits per byte); ``values`` shape (..., n_docs, 2): ll (nats), bytes."""
    v = np.asarray(values, dtype=np.float64)
    return -v[..., 0].sum(axis=-1) / v[..., 1].sum(axis=-1) / math.log(2.0)


def aggregator(metric: str) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic of a metric over per-document values, vectorised over leading axes.

    Raises:
        ValueError: an unknown metric.
    """
    if metric in ("acc", "acc_norm") or is_generation_metric(metric):
        return mean
    if metric == "perplexity":
        return perplexity
    if metric == "f1":
        return macro_f1
    if metric in ("word_perplexity", "byte_perplexity"):
        return ratio_perplexity
    if metric == "bits_per_byte":
        return ratio_bits
    raise ValueError(f"unknown metric {metric!r}")


def has_closed_form_stderr(metric: str) -> bool:
    """True for means of per-document values; perplexities and f1 have no closed form (bootstrap only)."""
    return aggregator(metric) is mean


def group_metrics(member_metrics: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The metrics a group with an aggregation reports: those every member reports that are means of
    per-document values (acc, acc_norm; never perplexities), in the first member's order."""
    if not member_metrics:
        return ()
    common = set.intersection(*(set(m) for m in member_metrics))
    return tuple(m for m in member_metrics[0] if m in common and has_closed_form_stderr(m))


def finite_or_none(value: float) -> float | None:
    """None for NaN or infinite values (JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None
