"""Requests -> packed groups -> batches, and back to request order.

A *packed group* is one sequence that scores several continuations of the same context: the context once,
then each continuation (all but its last token) as its own segment that sees the context and itself only.
Sharing the context this way scores SciQ's support paragraph and TriviaQA's ~10 aliases per question once
per document instead of once per continuation (SPEC.md, "Work sizes").

A request may need several sequences (a rolling request's windows): :func:`flatten_windows` lists them for the
backend and :func:`join_windows` sums their answers back into one response per request.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

from evalkit.types import LoglikelihoodResponse, TokenizedGeneration, TokenizedRequest


@dataclass(frozen=True)
class PackedGroup:
    """One packed sequence.

    Attributes:
        context_ids: shared context token ids (non-empty).
        continuations: distinct continuation token ids scored against that context.
        request_indices: for each continuation, the indices of the requests that asked for it.
    """

    context_ids: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    request_indices: tuple[tuple[int, ...], ...]

    @property
    def length(self) -> int:
        """Input tokens of the packed sequence: the context plus each continuation but its last token."""
        return len(self.context_ids) + sum(len(c) - 1 for c in self.continuations)

    @property
    def n_requests(self) -> int:
        """Requests answered by this group (duplicates included)."""
        return sum(len(r) for r in self.request_indices)


def pack_groups(
    requests: Sequence[TokenizedRequest], max_length: int, share_context: bool = True
) -> list[PackedGroup]:
    """Group requests by identical context ids, de-duplicate continuations, and split groups to fit the window.

    Args:
        requests: tokenized requests whose context + continuation already fits ``max_length + 1`` tokens.
        max_length: the model's window (input tokens).
        share_context: False gives one group per distinct request (plain causal sequences).

    Returns:
        groups in first-seen order; every request index appears in exactly one group.
    """
    by_context: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]] = {}
    for index, request in enumerate(requests):
        conts = by_context.setdefault(request.context_ids, {})
        conts.setdefault(request.continuation_ids, []).append(index)
    groups = []
    for context_ids, conts in by_context.items():
        current: list[tuple[tuple[int, ...], list[int]]] = []
        length = len(context_ids)
        for cont_ids, indices in conts.items():
            extra = len(cont_ids) - 1
            if current and (not share_context or length + extra > max_length):
                groups.append(_group(context_ids, current))
                current, length = [], len(context_ids)
            current.append((cont_ids, indices))
            length += extra
        groups.append(_group(context_ids, current))
    return groups


def _group(context_ids: tuple[int, ...], items: list[tuple[tuple[int, ...], list[int]]]) -> PackedGroup:
    return PackedGroup(context_ids, tuple(c for c, _ in items), tuple(tuple(i) for _, i in items))


def make_batches(groups: Sequence[PackedGroup], batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    """Length-sorted batches of group indices, longest first (an out-of-memory shows up at once).

    A batch holds at most ``batch_size`` sequences and, when ``max_batch_tokens`` is set, at most that many
    padded tokens (rows x longest row); a single over-budget sequence still forms its own batch.

    Raises:
        ValueError: batch_size < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(groups)), key=lambda i: (-groups[i].length, i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = groups[current[0]].length if current else groups[index].length
        over_tokens = max_batch_tokens is not None and (len(current) + 1) * longest > max_batch_tokens
        if current and (len(current) >= batch_size or over_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def group_cost(group: PackedGroup) -> float:
    """Estimated cost of a group in token-units: its input tokens (attention ignored)."""
    return float(group.length)


def split_by_cost(costs: Sequence[float], n_parts: int) -> list[list[int]]:
    """Assign items to ``n_parts`` parts so that the parts' total costs are close: longest processing time first.

    Items are taken in decreasing cost (ties: lower index first) and each goes to the part with the smallest
    total so far (ties: lower part). Graham (1969), "Bounds on multiprocessing timing anomalies": the largest
    total is at most 4/3 - 1/(3 n_parts) times the optimum. Each part's total before its last item was the
    smallest at that moment, so any two parts' totals differ by at most the largest item cost (and each lies
    within that cost of the mean): with many small items the parts are nearly equal.

    Args:
        costs: one non-negative cost per item (e.g. :func:`group_cost`, in tokens).
        n_parts: number of parts (ranks), >= 1.

    Returns:
        for each part, its item indices in increasing order; every index appears in exactly one part.

    Raises:
        ValueError: n_parts < 1.
    """
    if n_parts < 1:
        raise ValueError(f"number of parts must be >= 1, got {n_parts}")
    loads = [(0.0, part) for part in range(n_parts)]
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, part = heapq.heappop(loads)
        parts[part].append(index)
        heapq.heappush(loads, (load + float(costs[index]), part))
    return [sorted(part) for part in parts]


def split_requests(
    requests: Sequence[TokenizedRequest], max_length: int, share_context: bool, n_parts: int
) -> list[list[int]]:
    """Split requests over ``n_parts`` ranks by estimated cost, keeping every packed group on one rank.

    The requests are packed as the backend packs them (:func:`pack_groups`), so the continuations that
    share a context stay together; groups are then assigned with :func:`split_by_cost` on :func:`group_cost`.
    The result depends only on the requests, so every rank computes the same split without talking.

    Returns:
        for each rank, the indices into ``requests`` it scores, in increasing order.
    """
    groups = pack_groups(requests, max_length, share_context)
    parts = split_by_cost([group_cost(g) for g in groups], n_parts)
    return [sorted(i for g in part for indices in groups[g].request_indices for i in indices) for part in parts]


def split_generations(requests: Sequence[TokenizedGeneration], n_parts: int) -> list[list[int]]:
    """Split generation requests over ``n_parts`` ranks by estimated cost, identical requests on one rank.

    Requests with the same context ids, stop strings and token budget are generated once
    (:class:`evalkit.scoring.generation.HFGenerator`), so they stay together; each distinct request costs its
    context tokens plus ``max_new_tokens`` (the most tokens it can run through the model), assigned with
    :func:`split_by_cost`. The split depends only on the requests, so every rank computes the same one.

    Returns:
        for each rank, the indices into ``requests`` it generates, in increasing order.
    """
    owners: dict[tuple, list[int]] = {}
    for index, r in enumerate(requests):
        owners.setdefault((tuple(r.context_ids), tuple(r.until), int(r.max_new_tokens)), []).append(index)
    distinct = list(owners.values())
    costs = [len(requests[own[0]].context_ids) + requests[own[0]].max_new_tokens for own in distinct]
    return [sorted(i for d in part for i in distinct[d]) for part in split_by_cost(costs, n_parts)]


AUTO_BATCH_CUDA = 512
"""``--batch-size auto`` on CUDA: the size each task's probe starts from (halved on out-of-memory)."""

AUTO_BATCH_CPU = 16
"""``--batch-size auto`` on CPU (and other devices without an out-of-memory error to probe with): a fixed size;
``--max-batch-tokens`` bounds the memory of a batch."""


def initial_batch_size(batch_size: int | str, device_type: str) -> tuple[int, bool]:
    """The batch size scoring starts with, and whether it is probed again for every task.

    ``--batch-size auto`` on CUDA starts each task at :data:`AUTO_BATCH_CUDA` sequences: batches run longest
    first, so the task's first batch is the probe; on out-of-memory it is halved and retried (down to 1) and the
    size that fits is kept for the rest of the task, whose batches are no longer (a size found on short requests
    is never reused on long ones: lm-evaluation-harness PR 3654). Elsewhere ``auto`` is :data:`AUTO_BATCH_CPU`.
    A number is used as given. Batches also hold at most ``--max-batch-tokens`` padded tokens, whatever the size.
    Results do not depend on the batch size.
    """
    if batch_size != "auto":
        return int(batch_size), False
    if device_type == "cuda":
        return AUTO_BATCH_CUDA, True
    return AUTO_BATCH_CPU, False


def flatten_windows(windows: Sequence[Sequence[TokenizedRequest]]) -> tuple[list[TokenizedRequest], list[int]]:
    """The sequences the backend scores, and which request each belongs to.

    Args:
        windows: per request, its tokenized sequences (one for an ordinary request, several for a rolling one;
            never none).

    Returns:
        (every sequence in request order, the index of its request for each sequence).

    Raises:
        ValueError: a request without any sequence.
    """
    flat: list[TokenizedRequest] = []
    owners: list[int] = []
    for index, own in enumerate(windows):
        if not own:
            raise ValueError(f"request {index} has no tokenized sequence")
        flat.extend(own)
        owners.extend([index] * len(own))
    return flat, owners


def join_windows(
    responses: Sequence[LoglikelihoodResponse], owners: Sequence[int], n_requests: int
) -> list[LoglikelihoodResponse]:
    """One response per request from the responses of its sequences (:func:`flatten_windows` order).

    The log-likelihood is the sum over the request's sequences (nats, float64, ``math.fsum``); the request is
    greedy when every sequence is; token counts add up. A one-sequence request keeps its response unchanged.

    Raises:
        ValueError: ``responses`` and ``owners`` of different lengths, or a request without a response.
    """
    if len(responses) != len(owners):
        raise ValueError(f"{len(responses)} responses for {len(owners)} sequences")
    parts: list[list[LoglikelihoodResponse]] = [[] for _ in range(n_requests)]
    for response, owner in zip(responses, owners):
        parts[owner].append(response)
    out = []
    for index, own in enumerate(parts):
        if not own:
            raise ValueError(f"request {index} got no response")
        if len(own) == 1:
            out.append(own[0])
            continue
        out.append(LoglikelihoodResponse(
            loglikelihood=math.fsum(r.loglikelihood for r in own),
            greedy=all(r.greedy for r in own),
            continuation_tokens=sum(r.continuation_tokens for r in own),
            truncated_tokens=sum(r.truncated_tokens for r in own),
        ))
    return out
