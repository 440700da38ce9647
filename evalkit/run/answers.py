"""The answers stage: every request answered, from the request cache where it was answered before, by the
backend otherwise (each rank a share of them under ``torchrun``), with non-finite answers stopped or counted; then
every generation task's greedy generations, through the same cache (:mod:`evalkit.run.generation_stage`; each rank
a share of them too). A ``torchrun`` run leaves its process group after the generations' gather.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from evalkit.run import generation_stage
from evalkit.run.model import LoadedModel, loglikelihood_tasks
from evalkit.run.plan import RunPlan
from evalkit.run.requests import RunRequests
from evalkit.scoring.batching import initial_batch_size, join_windows
from evalkit.scoring.cache import RequestCache, model_key, resolve_cache_dir
from evalkit.scoring.cache_wrappers import CachingBackend
from evalkit.scoring.finite import FiniteGuard, NonFiniteScore, non_finite
from evalkit.types import EvalkitError, GenerationResponse, LoglikelihoodRequest, LoglikelihoodResponse, RunConfig
from evalkit.types import TokenizedRequest

log = logging.getLogger(__name__)


@dataclass
class Answers:
    """Every request's answer, in request order, and how they were obtained.

    Attributes:
        loglikelihood: one response per log-likelihood request (a rolling request: the sum of its windows).
        cache: ``{"path", "model_key"}`` of the request cache, or None (``--no-cache``).
        timing: scoring seconds and the backend's counters (forward calls and tokens, padding, batch sizes,
            OOM retries, requests answered from the cache and scored), for the results' ``timing``.
        mask_fallback: why shared-context scoring was turned off, or None.
        prefix_fallback: why shared-prefix reuse (on unless ``--no-prefix-cache``) was turned off, or None.
        generation: generation task name -> one response per document, in request order.
    """

    loglikelihood: list[LoglikelihoodResponse]
    cache: dict[str, str] | None
    timing: dict[str, Any] = field(default_factory=dict)
    mask_fallback: str | None = None
    prefix_fallback: str | None = None
    generation: dict[str, list[GenerationResponse]] = field(default_factory=dict)


def answer(plan: RunPlan, requests: RunRequests, model: LoadedModel, progress: bool = True) -> Answers | None:
    """Answer every request of ``requests`` with ``model`` through the request cache.

    Returns:
        The answers on rank 0 (or in a single process); None on the other ranks of a ``torchrun`` run, whose
        answers went to rank 0.

    Raises:
        EvalkitError: a non-finite log-likelihood without ``--allow-non-finite`` (task, document and request
            named; the finite answers scored so far stay in the cache).
    """
    from evalkit.scoring import hf_backend  # loaded by the model stage already; torch stays out of the import

    config = plan.config
    start_size, per_task = initial_batch_size(config.batch_size, hf_backend.execution_device(
        model.model.get_input_embeddings()).type)
    backend = hf_backend.HFBackend(
        model.model, model.window, batch_size=start_size,
        max_batch_tokens=config.extra.get("max_batch_tokens", 32768), pad_id=model.tokenizer.eot_id,
        share_context=config.extra.get("share_context", True), progress=progress,
        prefix_cache=bool(config.extra.get("prefix_cache", True)),
    )
    allow_non_finite = bool(config.extra.get("allow_non_finite"))
    sequences = [len(own) for own in model.windows]  # per request: 1, or a rolling request's windows
    parts, k = [], 0
    for p in loglikelihood_tasks(requests.prepared):  # (task, sequences) so a batch size can be probed per task
        parts.append((p.task.name, sum(sequences[k : k + len(p.requests)])))
        k += len(p.requests)
    task_sizes: dict[str, int | None] = {}
    t0 = time.perf_counter()
    try:  # the process group stays open for the generations; closed once every rank has answered
        responses, cache_info, counts = _score(model.ranks, backend, model.tokenized, config, model.identity,
                                               model.tokenizer.identity["sha256"], plan.versions,
                                               parts if per_task else None, task_sizes, allow_non_finite)
    except NonFiniteScore as exc:
        request = requests.loglikelihood[model.owners[model.tokenized.index(exc.request)]]
        raise EvalkitError(_non_finite_message(request, exc.value, config)) from None
    t_score = time.perf_counter() - t0
    if responses is None:  # a rank other than 0: its answers go to rank 0, which writes the results
        _generate(plan, requests, model, start_size, progress)
        model.ranks.close()
        return None
    all_requests = requests.loglikelihood
    responses = join_windows(responses, model.owners, len(all_requests))  # a rolling request: sum of its windows
    bad = non_finite(responses)
    if bad and not allow_non_finite:  # answered by another rank
        raise EvalkitError(_non_finite_message(all_requests[bad[0]], responses[bad[0]].loglikelihood, config))
    timing = {
        "score_s": round(t_score, 3),
        "requests": len(all_requests),
        "sequences": len(model.tokenized),
        "requests_per_s": round(len(all_requests) / t_score, 2) if t_score > 0 else None,
        "forward_calls": backend.forward_calls,
        "forward_tokens": backend.forward_tokens,
        "padded_tokens": backend.padded_tokens,
        "scored_positions": backend.scored_positions,
        "requests_scored": counts[1],
        "requests_cached": counts[0],
        "batch_size": config.batch_size,
        "batch_size_final": backend.batch_size,
        "oom_retries": backend.oom_retries,
        "shared_context": backend.share_context,
    }
    timing |= hf_backend.prefix_timing(backend)
    if config.batch_size == "auto":
        timing["batch_size_auto"] = {"start": start_size, "per_task": task_sizes or None}
    generated = _generate(plan, requests, model, start_size, progress)
    model.ranks.close()
    if generated is not None:
        timing["generation"] = generated.timing
    return Answers(list(responses), cache_info, timing, backend.mask_fallback, backend.prefix_fallback,
                   generated.responses if generated is not None else {})


def _generate(plan: RunPlan, requests: RunRequests, model: LoadedModel, batch_size: int,
              progress: bool) -> generation_stage.GenerationOutcome | None:
    """The generation tasks' answers (None when the run has none), through the request cache unless
    ``--no-cache``; contexts cut to the window are warned about in their task's warnings."""
    if not generation_stage.generation_tasks(requests.prepared):
        return None
    config = plan.config
    key = model_key(model.identity, model.tokenizer.identity["sha256"], "hf", plan.versions) if config.use_cache \
        else None
    outcome = generation_stage.generate_tasks(requests.prepared, model.generations, model.model, model.tokenizer,
                                              model.window, batch_size, config, key, progress, model.ranks)
    for p in requests.prepared:
        for warning in outcome.warnings.get(p.task.name, []):
            p.warnings.append(warning)
            log.warning(warning)
    return outcome


def _score(
    ranks: Any, backend: Any, tokenized: Sequence[TokenizedRequest], config: RunConfig, identity: dict[str, Any],
    tokenizer_sha256: str, versions: dict[str, str], parts: Sequence[tuple[str, int]] | None = None,
    sizes: dict[str, int | None] | None = None, allow_non_finite: bool = False,
) -> tuple[list[Any] | None, dict[str, str] | None, tuple[int, int]]:
    """Responses for every request (over all ranks), through the request cache unless ``config.use_cache`` is
    False.

    Each rank answers its share from the cache and commits what its model scores, batch by batch. With
    ``parts``, tasks are scored one after the other, each probing its batch size afresh (:func:`_by_task`). The
    process group of a ``torchrun`` run stays open (the generations gather after the scoring).

    Returns:
        (responses in request order, None on ranks other than 0; ``{"path", "model_key"}`` of the cache or None;
        (requests answered from the cache, requests scored by the model) on this rank).
    """
    sizes = {} if sizes is None else sizes
    guarded = FiniteGuard(backend, allow_non_finite)  # a NaN or inf answer stops the run (or is counted)
    if not config.use_cache:
        return _by_task(ranks, guarded, backend, tokenized, parts, sizes), None, (0, len(tokenized))
    key, fields = model_key(identity, tokenizer_sha256, "hf", versions)
    with RequestCache(resolve_cache_dir(config.cache_dir)) as cache:
        cache.register_model(key, fields)
        caching = CachingBackend(guarded, cache, key)
        responses = _by_task(ranks, caching, backend, tokenized, parts, sizes)
        log.info("%d requests answered from the cache %s, %d scored by the model",
                 caching.requests_cached, cache.path, caching.requests_scored)
        return responses, {"path": str(cache.path), "model_key": key}, (caching.requests_cached,
                                                                         caching.requests_scored)


def _by_task(ranks: Any, scorer: Any, backend: Any, tokenized: Sequence[TokenizedRequest],
             parts: Sequence[tuple[str, int]] | None, sizes: dict[str, int | None]) -> list[Any] | None:
    """``ranks.loglikelihood`` over all requests, or task by task (``parts``: (name, requests)) with the batch
    size reset to its start before each task; ``sizes`` gets each task's final size (None: nothing scored)."""
    if parts is None:
        return ranks.loglikelihood(scorer, tokenized, close=False)
    start, out, k = backend.batch_size, [], 0
    for name, n in parts:
        backend.batch_size, calls = start, backend.forward_calls
        got = ranks.loglikelihood(scorer, tokenized[k : k + n], close=False)
        k += n
        sizes[name] = backend.batch_size if backend.forward_calls > calls else None
        out = None if got is None or out is None else out + list(got)
    return out


def _non_finite_message(request: LoglikelihoodRequest, value: float, config: RunConfig) -> str:
    """The error that stops a run at a non-finite log-likelihood: task, document, request, and what was kept."""
    kept = ("the finite answers scored so far are kept in the request cache" if config.use_cache
            else "nothing was cached (--no-cache)")
    return (f"task {request.task} doc {request.doc_id} choice {request.choice_index}: the model's log-likelihood is "
            f"{value!r} (context {request.context[-60:]!r}, continuation {request.continuation[:60]!r}); a NaN or "
            f"infinite weight, or an overflow (float16?), gives no valid score. No results were written; {kept}. "
            f"--allow-non-finite counts such requests and leaves their documents out of the metrics instead")
