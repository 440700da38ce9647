"""Out-of-memory back-off, shared by scoring (:class:`evalkit.scoring.hf_backend.HFBackend`) and generation
(:class:`evalkit.scoring.generation.HFGenerator`): a batch that runs out of memory is retried at half the batch size,
down to one item per batch, and the size that worked is kept for the batches after it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Iterable, TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def is_cuda_oom(exc: BaseException) -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` (the default out-of-memory test of the backend and the generator)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def free_accelerator_memory() -> None:
    """Return the CUDA caching allocator's unused blocks (after an out-of-memory); nothing without CUDA."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_halving(
    owner: Any,
    batches: Iterable[list[Item]],
    attempt: Callable[[list[Item]], Result],
    done: Callable[[list[Item], Result], None],
    recut: Callable[[list[Item], int], Iterable[list[Item]]],
    alone: Callable[[list[Item], BaseException], None],
    log: logging.Logger,
    warning: str,
) -> list[Item]:
    """Run ``attempt`` on each batch in turn, halving the batch size whenever one runs out of memory.

    Args:
        owner: the backend or generator; ``owner.is_oom(exc)`` tells an out-of-memory error from others,
            ``owner.oom_retries`` counts the retries and ``owner.batch_size`` is set to each halved size.
        batches: the batches, in order; each a list of items (group indices, request ids).
        attempt: does one batch and returns its result; errors other than out-of-memory propagate.
        done: takes a batch and its result after ``attempt`` returned (outside the error handler).
        recut: (the items not yet done, the failed batch's first, in order; the new batch size) -> their batches.
        alone: called inside the error handler when a batch of one item runs out of memory: raise there (chained
            to the error it is given), or return to stop with the items left.
        log, warning: the logger and %-format of the warning, formatted with (old batch size, new batch size).

    Returns:
        the items left undone, the failed one first: empty unless ``alone`` returned.
    """
    pending = deque(batches)
    while pending:
        batch = pending.popleft()
        failed_alone = False
        try:
            result = attempt(batch)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not owner.is_oom(exc):
                raise
            if len(batch) == 1:
                alone(batch, exc)
                failed_alone = True
        else:
            done(batch, result)
            continue
        # outside the except block, so the failed batch's tensors can be freed
        left = [item for part in (batch, *pending) for item in part]
        if failed_alone:
            return left
        size = max(1, len(batch) // 2)
        owner.oom_retries += 1
        owner.batch_size = size
        log.warning(warning, len(batch), size)
        free_accelerator_memory()
        pending = deque(recut(left, size))
    return []
