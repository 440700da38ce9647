"""A task's scored documents summarised: per-document metrics, aggregates with their stderrs, and the task's
entry in the results JSON (definition, sizes, prompt hash, metrics, per-document values).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Sequence

from evalkit.fewshot.lmeval import LMEVAL_FEWSHOT_SEED, parse_sampler
from evalkit.stats.metrics import HIGHER_IS_BETTER, PER_DOC_KEYS, aggregator, doc_metrics, finite_or_none
from evalkit.stats.metrics import has_closed_form_stderr, per_doc_values
from evalkit.run.prepare import PreparedTask
from evalkit.data.documents import SUBSET_RULE
from evalkit.stats.stderr import bootstrap_stderr, mean_stderr
from evalkit.types import DocResult, LoglikelihoodRequest, RunConfig, Task, TokenizedRequest


def prompt_hash(requests: Sequence[LoglikelihoodRequest]) -> str:
    """sha256 over every request's (doc_id, choice_index, context, continuation): changes with any prompt edit."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(json.dumps([r.doc_id, r.choice_index, r.context, r.continuation]).encode("utf-8"))
    return digest.hexdigest()


def score_documents(prepared: PreparedTask, lls: Sequence[float], greedy: Sequence[bool]) -> list[DocResult]:
    """Per-document results from the task's responses (given in request order)."""
    out, k = [], 0
    task = prepared.task
    for doc_id, doc in zip(prepared.doc_ids, prepared.docs):
        conts = task.continuations(doc)
        doc_lls = tuple(float(x) for x in lls[k : k + len(conts)])
        doc_greedy = tuple(bool(x) for x in greedy[k : k + len(conts)])
        k += len(conts)
        units = task.units_text(doc) if task.units_text is not None else None
        metrics = doc_metrics(task.scoring, doc_lls, doc_greedy, conts, task.gold(doc), units)
        out.append(DocResult(task.name, doc_id, metrics, doc_lls, doc_greedy))
    return out


def aggregate(task: Task, results: Sequence[DocResult], iters: int, seed: int) -> dict[str, dict[str, Any]]:
    """Metric name -> {value, stderr, stderr_bootstrap, n, higher_is_better} over a task's documents.

    Means (acc, acc_norm) get the closed-form stderr and a bootstrap; perplexities (``perplexity`` and the
    rolling ratios of sums) the bootstrap alone, each resample recomputing the statistic from its documents.
    """
    arrays = per_doc_arrays(task, results)
    out = {}
    for offset, metric in enumerate(task.metrics):
        values = per_doc_values(metric, arrays)
        stat = aggregator(metric)
        closed = mean_stderr(values) if has_closed_form_stderr(metric) else None
        boot = bootstrap_stderr(values, stat, iters, seed + offset) if iters else None
        out[metric] = {
            "value": float(stat(values)),
            "stderr": finite_or_none(closed) if closed is not None else None,
            "stderr_bootstrap": finite_or_none(boot) if boot is not None else None,
            "n": len(values),
            "higher_is_better": HIGHER_IS_BETTER[metric],
        }
    return out


def task_identity(p: PreparedTask, docs: Sequence[DocResult], config: RunConfig) -> dict[str, Any]:
    """The fields every task entry of the results starts with, scored or generated: the task's version,
    description, source and dataset, documents scored (``n``) of the split's (``n_split``), whether they are a
    ``--limit`` subset and its draw rule (:data:`evalkit.data.documents.SUBSET_RULE`), the primary metric."""
    return {
        "version": p.task.version,
        "description": p.task.description,
        "source": p.task.source,
        "dataset": asdict(p.task.dataset) | {"fields": sorted(p.task.dataset.fields)},
        "n": len(docs),
        "n_split": p.n_split,
        "expected_n": p.task.dataset.n,
        "subset": config.limit is not None and len(docs) < p.n_split,
        "subset_rule": SUBSET_RULE,
        "primary_metric": p.task.primary_metric,
    }


def task_summary(
    p: PreparedTask, docs: Sequence[DocResult], windows: Sequence[Sequence[TokenizedRequest]], config: RunConfig
) -> dict[str, Any]:
    """A task's entry in the results JSON: definition, sizes, prompt hash, metrics and per-document values.

    ``windows`` holds each request's tokenized sequences (one, or a rolling request's windows); ``tokens``
    counts the input tokens of all of them and ``sequences`` how many there are. A task replacing a built-in one
    records ``builtin_prompts_differ``, the documents whose prompts differ from the built-in task's.
    """
    toks = [t for own in windows for t in own]
    replaced = {} if p.builtin_prompts_differ is None else {"builtin_prompts_differ": p.builtin_prompts_differ}
    return {
        **task_identity(p, docs, config),
        "requests": len(p.requests),
        "sequences": len(toks),
        "tokens": int(sum(len(t.context_ids) + len(t.continuation_ids) - 1 for t in toks)),
        "truncated_requests": int(sum(1 for own in windows if any(t.truncated_tokens for t in own))),
        "joint_fallback_requests": int(sum(1 for own in windows if any(t.joint_fallback for t in own))),
        "tokenization": p.task.tokenization or config.extra.get("tokenization", "separate"),
        "duplicate_documents": p.duplicates,
        "prompt_sha256": prompt_hash(p.requests),
        "num_fewshot": p.fewshot.num_fewshot if p.fewshot else 0,
        "fewshot_split": p.fewshot.split if p.fewshot else None,
        "fewshot_seed": LMEVAL_FEWSHOT_SEED if parse_sampler(p.task.fewshot_sampler) else config.fewshot_seed,
        "fewshot_source": p.fewshot.source if p.fewshot else "none",
        "fewshot_pool_size": p.fewshot.pool_size if p.fewshot else 0,
        "warnings": p.warnings,
        "metrics": aggregate(p.task, docs, config.bootstrap_iters, config.seed),
        "documents": per_doc_arrays(p.task, docs),
        "chance": chance_level(p.task, docs),
    } | replaced


CHOICE_SCORINGS = ("multiple_choice", "yes_no", "classification")
"""Scoring rules that pick one of a document's continuations, so a guess has a chance level."""


def chance_level(task: Task, docs: Sequence[DocResult]) -> float | None:
    """The accuracy of a uniform guess: the mean over the documents of 1 / number of choices (0.25 for MMLU's four,
    0.5 for PIQA's two), for a task whose scoring picks one continuation (:data:`CHOICE_SCORINGS`); None for
    perplexity, greedy-match and generation tasks, which have no chance level. A fraction in (0, 1]."""
    if task.scoring not in CHOICE_SCORINGS or not docs:
        return None
    return float(sum(1.0 / len(d.loglikelihoods) for d in docs if d.loglikelihoods) / len(docs))


def per_doc_arrays(task: Task, docs: Sequence[DocResult]) -> dict[str, list]:
    """``doc_id`` and every per-document value the task's metrics need (:data:`evalkit.stats.metrics.PER_DOC_KEYS`)."""
    keys = sorted({k for m in task.metrics for k in PER_DOC_KEYS[m]})
    arrays: dict[str, list] = {"doc_id": [d.doc_id for d in docs]}
    for key in keys:
        arrays[key] = [d.metrics[key] for d in docs]
    return arrays
