"""Non-finite log-likelihoods (NaN, +-inf) never become a plausible number.

A model with a NaN weight, or an overflow in float16, answers NaN: argmax over NaN picks the first choice (PIQA
acc = the gold-0 rate) and a perplexity comes out ``nan``, quietly. :class:`FiniteGuard` wraps a backend and stops
the run at the first batch holding a non-finite answer (after the batch's finite answers were handed on, so the
request cache keeps them); with ``allow=True`` it lets them through and the runner counts them and leaves their
documents out of the metrics. The request cache never stores a non-finite answer (:mod:`evalkit.scoring.cache`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from evalkit.scoring.delegation import DelegatesToInner
from evalkit.types import BatchCallback, EvalkitError, LoglikelihoodBackend, LoglikelihoodResponse, TokenizedRequest


class NonFiniteScore(EvalkitError):
    """A backend answered a non-finite log-likelihood.

    Attributes:
        request: the tokenized request (the runner names its task, document and choice).
        value: the log-likelihood (float: nan, inf or -inf).
    """

    def __init__(self, request: TokenizedRequest, value: float) -> None:
        super().__init__(f"non-finite log-likelihood {value!r}")
        self.request = request
        self.value = value


def non_finite(responses: Sequence[LoglikelihoodResponse]) -> list[int]:
    """Indices of the responses whose log-likelihood is NaN or infinite."""
    return [i for i, r in enumerate(responses) if not math.isfinite(r.loglikelihood)]


class FiniteGuard(DelegatesToInner):
    """Wraps a backend; raises :class:`NonFiniteScore` at the first batch with a non-finite answer.

    Args:
        inner: the scoring backend (calls ``on_batch`` after each batch, as
            :class:`evalkit.scoring.hf_backend.HFBackend`).
        allow: let non-finite answers through instead (``--allow-non-finite``).

    The caller's ``on_batch`` sees the whole batch first (the request cache stores its finite answers), then the
    error is raised, so finished work is kept. Every other attribute (``max_length``, ``share_context``, counters)
    and the progress switch are the inner backend's (:class:`evalkit.scoring.delegation.DelegatesToInner`).
    """

    def __init__(self, inner: LoglikelihoodBackend, allow: bool = False) -> None:
        self.inner = inner
        self.allow = allow

    def loglikelihood(self, requests: Sequence[TokenizedRequest],
                      on_batch: BatchCallback | None = None) -> list[LoglikelihoodResponse]:
        """Responses for ``requests``, in order (see :class:`~evalkit.types.LoglikelihoodResponse`).

        Raises:
            NonFiniteScore: a non-finite answer, unless ``allow``.
        """
        def check(indices: Sequence[int], responses: Sequence[LoglikelihoodResponse]) -> None:
            if on_batch is not None:
                on_batch(indices, responses)
            bad = non_finite(responses)
            if bad and not self.allow:
                raise NonFiniteScore(requests[indices[bad[0]]], responses[bad[0]].loglikelihood)

        out = self.inner.loglikelihood(requests, on_batch=check)
        bad = non_finite(out)
        if bad and not self.allow:  # a backend that does not report batches
            raise NonFiniteScore(requests[bad[0]], out[bad[0]].loglikelihood)
        return out
