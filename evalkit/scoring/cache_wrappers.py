"""The caching wrappers: a scoring backend or a generator whose answers come from the request cache
(:class:`evalkit.scoring.cache.RequestCache`) where it has them, so a crashed, killed or interrupted run never
scores or generates a request twice.

:class:`CachingBackend` answers what it can from the cache, sends only the misses to the model and commits each
batch as soon as the model has scored it: ``kill -9`` loses at most the batch in flight. A non-finite answer is
never stored; a stored answer that no model can produce (non-finite, above 0, of the wrong type) is scored again,
with a warning. :class:`CachingGenerator` commits each answer as soon as its row finishes.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Sequence

from evalkit.scoring.cache import RequestCache, generation_request_key, plausible_loglikelihood, request_key
from evalkit.scoring.delegation import DelegatesToInner
from evalkit.types import (
    STOP_REASONS,
    BatchCallback,
    GenerationCallback,
    GenerationResponse,
    LoglikelihoodBackend,
    LoglikelihoodResponse,
    TokenizedGeneration,
    TokenizedRequest,
)

log = logging.getLogger("evalkit.scoring.cache")  # the name these warnings have always carried in the log lines


class CachingBackend(DelegatesToInner):
    """Wraps a backend: cache hits are answered from disk, misses are scored and committed batch by batch.

    Args:
        inner: the scoring backend; its ``loglikelihood(requests, on_batch=...)`` must call ``on_batch`` with
            (indices into its input, their responses) after each batch it scores.
        cache: the open :class:`RequestCache`.
        key: the model key (:func:`model_key`).

    Attributes:
        requests_cached: requests of the last call answered from the cache.
        requests_scored: requests of the last call sent to the inner backend.

    When ``on_batch`` is given, it is called once with the cache hits, then after each batch the inner backend
    scores (that batch committed first).
    """

    def __init__(self, inner: LoglikelihoodBackend, cache: RequestCache, key: str) -> None:
        self.inner = inner
        self.cache = cache
        self.key = key
        self.requests_cached = 0
        self.requests_scored = 0

    def loglikelihood(self, requests: Sequence[TokenizedRequest],
                      on_batch: BatchCallback | None = None) -> list[LoglikelihoodResponse]:
        """Responses for ``requests``, in order; see :class:`~evalkit.types.LoglikelihoodResponse` for units."""
        keys = [request_key(r) for r in requests]
        hits = self.cache.get_many(self.key, keys)
        damaged = self.cache.damaged_rows + sum(not plausible_loglikelihood(ll) for ll, _ in hits.values())
        if damaged:
            log.warning("request cache %s: %d of %d stored answers found are damaged (a log-likelihood above 0, not "
                        "finite, or a value of the wrong type); they are scored again", self.cache.path, damaged,
                        len(hits) + self.cache.damaged_rows)
        results: list[LoglikelihoodResponse | None] = [None] * len(requests)
        misses = []
        for index, (request, rkey) in enumerate(zip(requests, keys)):
            if rkey in hits and plausible_loglikelihood(hits[rkey][0]):
                ll, greedy = hits[rkey]
                results[index] = LoglikelihoodResponse(ll, greedy, len(request.continuation_ids),
                                                       request.truncated_tokens)
            else:
                misses.append(index)
        self.requests_cached = len(requests) - len(misses)
        self.requests_scored = len(misses)
        if on_batch is not None and self.requests_cached:
            hit_ids = [i for i in range(len(requests)) if results[i] is not None]
            on_batch(hit_ids, [results[i] for i in hit_ids])  # type: ignore[misc]

        def commit(batch_indices: Sequence[int], responses: Sequence[LoglikelihoodResponse]) -> None:
            originals = [misses[i] for i in batch_indices]
            self.cache.put_many(self.key, [(keys[i], r.loglikelihood, r.greedy)
                                           for i, r in zip(originals, responses) if math.isfinite(r.loglikelihood)])
            for i, response in zip(originals, responses):
                results[i] = response
            if on_batch is not None:
                on_batch(originals, responses)

        if misses:
            scored = self.inner.loglikelihood([requests[i] for i in misses], on_batch=commit)
            for i, response in zip(misses, scored):
                results[i] = response
        return results  # type: ignore[return-value]


class CachingGenerator(DelegatesToInner):
    """Wraps a generator (:class:`evalkit.scoring.generation.HFGenerator`): cached answers come from disk, the
    rest are generated and each committed as soon as its row finishes, so ``kill -9`` loses only the rows in flight.

    Answers are keyed by the model key (the same as the log-likelihoods') and :func:`generation_request_key`, which
    covers the exact context ids, the stop strings, ``max_new_tokens`` and the generator's end-of-text settings
    (:meth:`setup_bytes`); they live in their own table, so a generation never answers a log-likelihood request.

    Args:
        inner: the generator; its ``generate(requests, on_done=...)`` must call ``on_done`` with (indices into its
            input, responses) as answers finish.
        cache: the open :class:`RequestCache`.
        key: the model key (:func:`model_key`).

    Attributes:
        requests_cached: requests of the last call answered from the cache.
        requests_sent: requests of the last call sent to the inner generator (identical ones counted each).

    When ``on_done`` is given, it is called once with the cache hits, then as the inner generator finishes rows
    (those answers committed first). Other attributes (counters, ``batch_size``) are the inner generator's.
    """

    def __init__(self, inner: Any, cache: RequestCache, key: str) -> None:
        self.inner = inner
        self.cache = cache
        self.key = key
        self.requests_cached = 0
        self.requests_sent = 0

    def setup_bytes(self) -> bytes:
        """The inner generator's end-of-text ids and text, which decide where answers stop, as key bytes."""
        setup = {"eot_ids": sorted(getattr(self.inner, "eot_ids", ())),
                 "eot_text": getattr(self.inner, "eot_text", None)}
        return json.dumps(setup, sort_keys=True).encode("utf-8")

    def generate(self, requests: Sequence[TokenizedGeneration],
                 on_done: GenerationCallback | None = None) -> list[GenerationResponse]:
        """Answers for ``requests``, in order; see :class:`~evalkit.types.GenerationResponse`."""
        setup = self.setup_bytes()
        keys = [generation_request_key(r, setup) for r in requests]
        hits = self.cache.get_generations(self.key, keys)
        results: list[GenerationResponse | None] = [None] * len(requests)
        misses = []
        for index, (request, rkey) in enumerate(zip(requests, keys)):
            found = hits.get(rkey)
            if found is not None and found[2] in STOP_REASONS:
                results[index] = GenerationResponse(found[0], found[1], found[2], request.truncated_tokens)
            else:
                misses.append(index)
        self.requests_cached = len(requests) - len(misses)
        self.requests_sent = len(misses)
        if on_done is not None and self.requests_cached:
            hit_ids = [i for i in range(len(requests)) if results[i] is not None]
            on_done(hit_ids, [results[i] for i in hit_ids])  # type: ignore[misc]

        def commit(done: Sequence[int], responses: Sequence[GenerationResponse]) -> None:
            originals = [misses[i] for i in done]
            rows = {keys[i]: (keys[i], r.text, r.tokens, r.stop_reason) for i, r in zip(originals, responses)}
            self.cache.put_generations(self.key, list(rows.values()))
            for i, response in zip(originals, responses):
                results[i] = response
            if on_done is not None:
                on_done(originals, responses)

        if misses:
            answered = self.inner.generate([requests[i] for i in misses], on_done=commit)
            for i, response in zip(misses, answered):
                results[i] = response
        return results  # type: ignore[return-value]
