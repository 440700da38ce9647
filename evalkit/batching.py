"""Requests -> packed groups -> batches, and back to request order.

A *packed group* is one sequence that scores several continuations of the same context: the context once,
then each continuation (all but its last token) as its own segment that sees the context and itself only.
Sharing the context this way scores SciQ's support paragraph and TriviaQA's ~10 aliases per question once
per document instead of once per continuation (SPEC.md, "Work sizes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from evalkit.types import TokenizedRequest


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
