"""A generation task's answers summarised: each generated text scored by the task (``Task.score_generation``:
MATH's answer equivalence, an lm-eval YAML's filters then metrics), the documents' results, and the task's entry in
the results JSON (metrics are means with the closed-form stderr and a bootstrap, as for ``acc``).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

from evalkit.run.prepare import PreparedTask
from evalkit.run.task_results import aggregate, per_doc_arrays, task_identity
from evalkit.types import STOP_REASONS, DocResult, EvalkitError, GenerationRequest, GenerationResponse, RunConfig



def generation_prompt_hash(requests: Sequence[GenerationRequest]) -> str:
    """sha256 over every request's (doc_id, context, until, max_new_tokens): changes with any prompt edit."""
    digest = hashlib.sha256()
    for r in requests:
        digest.update(json.dumps([r.doc_id, r.context, list(r.until), r.max_new_tokens]).encode("utf-8"))
    return digest.hexdigest()


def score_generations(prepared: PreparedTask, responses: Sequence[GenerationResponse]) -> list[DocResult]:
    """Per-document results of a generation task from its responses (one per document, in request order).

    Each document's metrics are ``Task.score_generation(doc, text)``; its ``answers`` are
    ``Task.generation_answers(doc, text)`` (what the scoring read from the text) when the task has them.

    Raises:
        EvalkitError: a response count that differs from the documents', or a scoring function that raises, gives
            other metric names than the task lists, or a value that is not a finite number (task and document
            named).
    """
    task = prepared.task
    if len(responses) != len(prepared.docs):
        raise EvalkitError(f"task {task.name}: {len(responses)} generations for {len(prepared.docs)} documents")
    out = []
    for doc_id, doc, response in zip(prepared.doc_ids, prepared.docs, responses):
        text = response.text
        where = f"task {task.name} doc {doc_id}"
        try:
            metrics = dict(task.score_generation(doc, text))  # type: ignore[misc]
            answers = dict(task.generation_answers(doc, text)) if task.generation_answers is not None else None
        except Exception as exc:  # noqa: BLE001 - task files are user code and may fail in any way
            raise EvalkitError(f"{where}: scoring the generation {text[:60]!r} raised {type(exc).__name__}: "
                               f"{exc}") from None
        if set(metrics) != set(task.metrics):
            raise EvalkitError(f"{where}: score_generation gave metrics {sorted(metrics)}, the task lists "
                               f"{sorted(task.metrics)}")
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EvalkitError(f"{where}: metric {name} is {value!r}, not a finite number")
            metrics[name] = float(value)
        out.append(DocResult(task.name, doc_id, metrics, (), (), generation=text, answers=answers))
    return out


def generation_summary(
    p: PreparedTask, docs: Sequence[DocResult], responses: Sequence[GenerationResponse], config: RunConfig
) -> dict[str, Any]:
    """A generation task's entry in the results JSON: definition, sizes, prompt hash, generation settings and
    counts, metrics and per-document values (the same keys as a log-likelihood task's where they apply).

    ``stop_reasons`` counts the responses by why generation stopped (``stop``, ``eot``, ``length``);
    ``generated_tokens`` sums the tokens generated; ``truncated_requests`` counts contexts cut on the left.
    """
    requests: Sequence[GenerationRequest] = p.requests  # type: ignore[assignment]
    reasons = {reason: sum(1 for r in responses if r.stop_reason == reason) for reason in STOP_REASONS}
    return {
        **task_identity(p, docs, config),
        "output_type": "generate_until",
        "requests": len(requests),
        "until": list(p.task.until),
        "max_new_tokens": sorted({r.max_new_tokens for r in requests}),
        "generated_tokens": int(sum(r.tokens for r in responses)),
        "stop_reasons": reasons,
        "truncated_requests": int(sum(1 for r in responses if r.truncated_tokens)),
        "duplicate_documents": p.duplicates,
        "prompt_sha256": generation_prompt_hash(requests),
        "num_fewshot": p.fewshot.num_fewshot if p.fewshot else 0,
        "fewshot_split": p.fewshot.split if p.fewshot else None,
        "fewshot_seed": config.fewshot_seed,
        "fewshot_source": p.fewshot.source if p.fewshot else "none",
        "fewshot_pool_size": p.fewshot.pool_size if p.fewshot else 0,
        "warnings": p.warnings,
        "metrics": aggregate(p.task, docs, config.bootstrap_iters, config.seed),
        "documents": per_doc_arrays(p.task, docs),
    }


def generation_sample(p: PreparedTask, index: int, result: DocResult) -> dict[str, Any]:
    """One line of the samples file for a generation task's document: its context, stop strings, length, the raw
    generation, what the scoring read from it, the references and the metrics."""
    doc = p.docs[index]
    request: GenerationRequest = p.requests[index]  # type: ignore[assignment]
    return {
        "task": p.task.name, "doc_id": result.doc_id, "context": request.context,
        "fewshot_doc_ids": list(p.fewshot.examples[result.doc_id]) if p.fewshot else [],
        "until": list(request.until), "max_new_tokens": request.max_new_tokens,
        "generation": result.generation, "answers": dict(result.answers or {}),
        "references": list(p.task.references(doc)) if p.task.references is not None else None,
        "metrics": dict(result.metrics),
    }
