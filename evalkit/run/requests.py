"""The requests stage: each task's documents read and validated, its seeded subset chosen, its few-shot
contexts built (rendered by the chat template the plan stage read, under ``--apply-chat-template``) and its
requests made (:func:`evalkit.run.prepare.prepare_task`: log-likelihood requests, or one generation request
per document for a generation task), before any weight is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from evalkit.run.plan import RunPlan
from evalkit.run.prepare import PreparedTask, prepare_task
from evalkit.types import GenerationRequest, LoglikelihoodRequest

log = logging.getLogger(__name__)


@dataclass
class RunRequests:
    """Every task's prepared documents and requests, in task order.

    Attributes:
        prepared: one :class:`~evalkit.run.prepare.PreparedTask` per task of the plan, same order.
        loglikelihood: every log-likelihood task's requests (rolling ones included), concatenated in task order:
            the order answers come back in.
        generation: every generation task's requests (one per document), concatenated in task order.
    """

    prepared: list[PreparedTask]
    loglikelihood: list[LoglikelihoodRequest]
    generation: list[GenerationRequest] = field(default_factory=list)


def build_requests(plan: RunPlan) -> RunRequests:
    """Prepare every task of ``plan`` (documents, subset, few-shot examples, requests) and log their warnings.

    Raises:
        EvalkitError: a document that fails its task's validation (file, row and field named), a task whose
            code raises, a few-shot split too small (see :func:`evalkit.run.prepare.prepare_task`).
    """
    config = plan.config
    chat = plan.chat.options() if plan.chat is not None else None
    prepared = [prepare_task(t, plan.data_dir, config.limit, config.seed, plan.shots[t.name], config.fewshot_seed,
                             plan.registry.files.get(t.name), config.max_gen_toks, chat) for t in plan.tasks]
    for p in prepared:
        for warning in p.warnings:
            log.warning(warning)
    if plan.chat is not None and plan.chat.system_dropped:
        warning = (f"the chat template refused the system message of {len(plan.chat.system_dropped)} prompts "
                   f"({plan.chat.system_dropped[0]}); they were rendered without it, as lm-eval 0.4.13 does, so "
                   f"the system instruction and description are missing from them")
        plan.warnings.append(warning)  # recorded in the results' warnings
        log.warning(warning)
    generate = [p.task.scoring == "generate_until" for p in prepared]
    return RunRequests(prepared, [r for p, g in zip(prepared, generate) if not g for r in p.requests],
                       [r for p, g in zip(prepared, generate) if g for r in p.requests])
