"""The results stage: per-document metrics from the answers (a generation task's from its generated text), each
task's aggregates with their stderrs, the groups' rows, and the results dict that is written and reported
(:mod:`evalkit.results.schema` is its schema).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from evalkit import __version__
from evalkit.run.answers import Answers
from evalkit.run.generation_results import generation_summary, score_generations
from evalkit.run.model import LoadedModel
from evalkit.run.plan import RunPlan
from evalkit.run.prepare import PreparedTask
from evalkit.run.requests import RunRequests
from evalkit.run.task_results import score_documents, task_summary
from evalkit.scoring.finite import non_finite
from evalkit.stats.groups import aggregate_group
from evalkit.types import DocResult, EvalkitError

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """A run's results dict (written as the results JSON) and each task's per-document results (the samples)."""

    results: dict[str, Any]
    doc_results: dict[str, list[DocResult]]


def summarize(plan: RunPlan, requests: RunRequests, model: LoadedModel, answers: Answers,
              started: float) -> RunSummary:
    """Score every document from its answers, aggregate tasks and groups, and assemble the results dict.

    ``started`` is the run's start (``time.perf_counter()``), for the wall time.

    Raises:
        EvalkitError: a task every document of which has a non-finite log-likelihood (``--allow-non-finite``).
    """
    config = plan.config
    task_results: dict[str, Any] = {}
    doc_results: dict[str, list[DocResult]] = {}
    k = 0
    for p in requests.prepared:
        if p.task.scoring == "generate_until":  # generated text, scored by the task
            generated = answers.generation[p.task.name]
            doc_results[p.task.name] = score_generations(p, generated)
            task_results[p.task.name] = generation_summary(p, doc_results[p.task.name], generated, config)
            continue
        n = len(p.requests)
        resp, toks = answers.loglikelihood[k : k + n], model.windows[k : k + n]
        k += n
        docs = score_documents(p, [r.loglikelihood for r in resp], [r.greedy for r in resp])
        kept = _drop_non_finite(p, docs)
        doc_results[p.task.name] = docs
        task_results[p.task.name] = task_summary(p, kept, toks, config) | {
            "non_finite_requests": len(non_finite(resp)), "non_finite_documents": len(docs) - len(kept)}
    members = plan.registry.members
    group_results = {g.name: aggregate_group(g, members(g), task_results, config.bootstrap_iters, config.seed)
                     for g in plan.groups if all(name in task_results for name in members(g))}
    for group in plan.groups:  # each member's category as the task definitions give it (MMLU's subjects)
        for name in group.categories:
            category = plan.registry.groups.get(name)
            inside = set(members(group))
            for task in members(category) if category is not None else ():
                if task in task_results and task in inside:
                    task_results[task].setdefault("category", name)
    timing = {"wall_time_s": round(time.perf_counter() - started, 3),
              **{name: round(model.timing[name], 3) for name in ("load_tokenizer_s", "load_model_s", "tokenize_s")},
              **answers.timing}
    tokenizer = model.tokenizer
    tokenizer_info = tokenizer.identity | {"eot_id": tokenizer.eot_id, "vocab_size": tokenizer.vocab_size}
    if model.own_tokenizer is not None:
        tokenizer_info["model_tokenizer_sha256"] = model.own_tokenizer.identity["sha256"]
    if answers.mask_fallback:  # same numbers, but the run was slower than it should be: say so in the report
        for summary in task_results.values():
            summary["warnings"].append(f"shared-context scoring was turned off: {answers.mask_fallback}")
    if answers.prefix_fallback:  # same numbers, without the reuse that was asked for
        for summary in task_results.values():
            summary["warnings"].append(f"prefix reuse was turned off: {answers.prefix_fallback}")
    results = {
        "evalkit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(config),
        "model": model.identity,
        "tokenizer": tokenizer_info | {"adds_prefix_ids": list(tokenizer.prefix_ids),
                                       "context_prefix_ids": list(model.prefix)},
        "window": model.window,
        "chat": plan.chat.record() if plan.chat is not None else None,
        "versions": plan.versions,
        "cache": answers.cache,
        "timing": timing,
        "warnings": plan.warnings + model.warnings,
        "tasks": task_results,
        "skipped_tasks": plan.skipped,
        "groups": group_results,
    }
    model.ranks.annotate(results)
    return RunSummary(results, doc_results)


def _drop_non_finite(p: PreparedTask, docs: list[DocResult]) -> list[DocResult]:
    """The documents whose log-likelihoods are all finite; warns (log and task warnings) when some are not."""
    kept = [d for d in docs if all(math.isfinite(ll) for ll in d.loglikelihoods)]
    if len(kept) < len(docs):
        bad = sum(1 for d in docs for ll in d.loglikelihoods if not math.isfinite(ll))
        warning = (f"{p.task.name}: {len(docs) - len(kept)} of {len(docs)} documents have a non-finite "
                   f"log-likelihood ({bad} requests, --allow-non-finite); they are left out of the metrics, which "
                   f"cover {len(kept)} documents")
        p.warnings.append(warning)
        log.warning(warning)
    if not kept:
        raise EvalkitError(f"{p.task.name}: every document has a non-finite log-likelihood: no metric can be computed")
    return kept
