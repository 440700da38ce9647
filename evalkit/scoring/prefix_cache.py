"""Shared token prefixes: find them, forward each once, and let other sequences attend to its keys and values.

Few-shot prompts put the same text before many documents (lm-eval 0.4's MMLU gives every document of a subject
the same five dev examples; gsm8k_cot eight fixed ones). :func:`plan_prefixes` finds such prefixes among packed
groups' contexts; the backend forwards each prefix once (``use_cache=True``, several prefixes per forward pass)
and scores every group's remainder (the rest of its context and its packed continuations) on top of its prefix's
keys and values: :class:`RowPrefixLayer` gives each row of a batch the prefix it reads, so rows of different
prefixes share a batch (:mod:`evalkit.scoring.prefix_scoring`).

Causal attention makes the key/value states of positions ``0..u-1`` of a prefix forward the same as those of a
forward of the first ``u`` tokens alone, so a group that shares only part of a forwarded prefix uses that part:
its row's attention mask hides the prefix positions it does not share, and its position ids continue from ``u``.

Log-likelihood scoring (:mod:`evalkit.scoring.prefix_scoring`) and greedy generation
(:mod:`evalkit.scoring.generation`) use it: the generator groups its prompts with :func:`plan_prefixes`, forwards
each prefix once (:func:`prefix_states` of the returned cache), and decodes a batch on
:func:`prefix_cache_for_batch` with ``keep=True`` (:class:`SharedPrefixLayer`: the prefix as an ``expand``-ed view,
no per-row copy stored): every row then sees the prefix and its own tokens since.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

MIN_PREFIX_TOKENS = 32
"""Shortest prefix worth forwarding once and reading back from its cache (tokens)."""

MIN_PREFIX_USERS = 2
"""Fewest packed sequences that must share a prefix for it to be forwarded once."""


@dataclass
class PrefixUnit:
    """Sequences scored on top of one forwarded prefix (``prefix`` empty: scored without reuse).

    Attributes:
        prefix: the token ids forwarded once (tuple of int).
        members: indices of the sequences (into the list given to :func:`plan_prefixes`).
        used: for each member, how many leading prefix tokens it shares and reads from the cache (<= len(prefix)).
    """

    prefix: tuple[int, ...]
    members: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_prefixes(
    contexts: Sequence[tuple[int, ...]], min_tokens: int = MIN_PREFIX_TOKENS, min_users: int = MIN_PREFIX_USERS,
    max_prefix_tokens: int | None = None,
) -> list[PrefixUnit]:
    """Which shared prefixes to forward once, and which sequences read which part of them.

    Every context keeps its last token out of the prefix (the position that predicts the first continuation
    token is scored by the sequence itself), cut to ``max_prefix_tokens``. Over the sorted contexts, the common
    prefixes of sorted neighbours are the branching nodes of their trie. Taken shallowest first, a node of
    ``min_tokens`` or more tokens with ``min_users`` or more contexts beneath it is forwarded when no forwarded
    node is a prefix of it, or when its contexts beneath times the tokens it adds to the deepest such node exceed
    its length (forwarding it whole must pay off). Each context reads the forwarded prefix that shares most with it;
    contexts sharing fewer than ``min_tokens`` tokens with every forwarded prefix, or reading a prefix that fewer
    than ``min_users`` read, go into the unit with an empty prefix. The plan depends on the set of contexts only,
    not on their order.

    Args:
        contexts: per sequence, its context token ids (non-empty tuples).
        min_tokens: shortest prefix worth reuse (tokens, >= 1).
        min_users: fewest sequences per forwarded prefix (>= 2).
        max_prefix_tokens: the longest prefix to forward (the memory budget of its keys and values), or None.

    Returns:
        units with a prefix (in sorted order of their prefixes), then the unit without one (if any member); every
        sequence index in exactly one unit.
    """
    min_tokens = max(1, min_tokens)
    cap = max_prefix_tokens if max_prefix_tokens is not None else max((len(c) for c in contexts), default=0)
    keys = [tuple(c[:-1][:cap]) for c in contexts]
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    lcp = [_lcp(keys[order[k]], keys[order[k + 1]]) for k in range(len(order) - 1)]
    # every branching node of the trie: the common prefix of the sorted keys k0..k1, with the number beneath it
    beneath: dict[tuple[int, ...], int] = {}
    for k, shared in enumerate(lcp):
        if shared < min_tokens:
            continue
        node = keys[order[k]][:shared]
        if node in beneath:
            continue
        lo, hi = k, k + 1
        while lo > 0 and lcp[lo - 1] >= shared:
            lo -= 1
        while hi < len(lcp) and lcp[hi] >= shared:
            hi += 1
        beneath[node] = hi - lo + 1
    # shallow first: a node is forwarded when no forwarded prefix covers its contexts yet, or when the tokens it
    # saves them beyond the deepest forwarded prefix of it pay for forwarding it whole
    forwarded: list[tuple[int, ...]] = []
    for node in sorted(beneath, key=lambda n: (len(n), n)):
        if beneath[node] < max(2, min_users):
            continue
        above = max((len(f) for f in forwarded if node[: len(f)] == f), default=0)
        if above == 0 or beneath[node] * (len(node) - above) > len(node):
            forwarded.append(node)
    forwarded.sort()
    units = {node: PrefixUnit(node) for node in forwarded}
    plain = PrefixUnit(())
    # a context reads the forwarded prefix it shares most with: in sorted order, one of its two nearest forwarded
    # neighbours (ties: the smaller one, the shorter when one is a prefix of the other)
    for index in range(len(keys)):
        key = keys[index]
        best, best_len = None, 0
        pos = bisect.bisect_left(forwarded, key)
        for cand in forwarded[max(0, pos - 1) : pos + 1]:
            shared = _lcp(cand, key)
            if shared > best_len:
                best, best_len = cand, shared
        if best is not None and best_len >= min_tokens:
            units[best].members.append(index)
            units[best].used.append(best_len)
        else:
            plain.members.append(index)
            plain.used.append(0)
    out = [units[node] for node in forwarded if len(units[node].members) >= max(2, min_users)]
    for node in forwarded:  # a prefix left with too few readers: its readers are scored without reuse
        if len(units[node].members) < max(2, min_users):
            plain.members.extend(units[node].members)
            plain.used.extend([0] * len(units[node].members))
    if plain.members:
        out.append(plain)
    return out


class SharedPrefixLayer(CacheLayerMixin):
    """One layer's cache for a batch on top of a forwarded prefix: the prefix's keys/values (1, heads, P, dim),
    given to every row as an expanded view (never copied per row).

    With ``keep=False`` (scoring) ``update`` returns the prefix joined with the batch's new states and stores
    nothing, so a forward holds at most one layer's joined states at a time. With ``keep=True`` (generation) the
    batch's own states (batch, heads, n, dim) are kept after the prefix, so later forwards (one new token per row)
    see the prefix and everything each row has forwarded since.
    """

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, keep: bool = False) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.own_keys: torch.Tensor | None = None
        self.own_values: torch.Tensor | None = None
        self.keep = keep
        self.device = keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to set up: the layer starts with the prefix's states."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """(batch, heads, P + kept + new, dim) keys and values: the prefix's for every row, then the row's own."""
        if self.own_keys is not None:
            key_states = torch.cat([self.own_keys, key_states], dim=-2)
            value_states = torch.cat([self.own_values, value_states], dim=-2)
        if self.keep:
            self.own_keys, self.own_values = key_states, value_states
        batch = key_states.shape[0]
        keys = self.keys.to(key_states.dtype).expand(batch, -1, -1, -1)
        values = self.values.to(value_states.dtype).expand(batch, -1, -1, -1)
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the batch rows ``indices`` (a decoding batch whose finished rows leave it): the rows' own kept
        states are selected; the prefix, shared by every row, stays as it is."""
        if self.own_keys is not None:
            self.own_keys = self.own_keys[indices.to(self.own_keys.device)]
            self.own_values = self.own_values[indices.to(self.own_values.device)]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(key length, key offset) for mask building: the prefix, the kept states and the new tokens, from 0."""
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        """Tokens already cached: the prefix length P plus the states kept since (``keep=True``)."""
        own = 0 if self.own_keys is None else int(self.own_keys.shape[-2])
        return int(self.keys.shape[-2]) + own

    def get_max_length(self) -> int:
        """-1: no fixed size."""
        return -1


def batch_prefix_states(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer, the (keys, values) of a prefix forward's cache, each (rows, heads, P, dim) for a forward of
    ``rows`` prefixes, or None when the cache is not one plain full-attention entry per layer (sliding, linear or
    quantized layers)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    states = []
    for layer in layers:
        if getattr(layer, "is_sliding", False) or not isinstance(getattr(layer, "keys", None), torch.Tensor):
            return None
        if layer.keys.dim() != 4:
            return None
        states.append((layer.keys, layer.values))
    return states


def prefix_states(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer, the (keys, values) of a one-prefix forward's cache (each (1, heads, P, dim)), or None when the
    cache is not one plain full-attention entry per layer or holds more than one row."""
    states = batch_prefix_states(cache)
    if states is None or any(k.shape[0] != 1 for k, _ in states):
        return None
    return states


class RowPrefixLayer(CacheLayerMixin):
    """One layer's cache for a scoring batch whose rows sit on different cached prefixes: row ``r`` reads the first
    ``used[r]`` positions of the prefix ``units[owner[r]]``; positions up to the batch's widest ``used`` that a row
    does not read are zeros, which its attention mask hides (:func:`evalkit.scoring.packed_inputs._packed_mask`
    with ``prefix_seen``).

    ``update`` returns (rows, heads, width + new, dim): the rows' prefixes, then the batch's new states, built in one
    buffer per layer (one copy, as the ``torch.cat`` of a one-prefix batch makes); nothing is stored, so a forward
    holds at most one layer's joined states at a time.
    """

    is_sliding = False

    def __init__(self, units: Sequence[tuple[torch.Tensor, torch.Tensor]], owner: Sequence[int],
                 used: Sequence[int]) -> None:
        super().__init__()
        self.units = units
        self.width = max(used)
        self.device = units[0][0].device
        rows: dict[int, list[int]] = {}
        for row, unit in enumerate(owner):
            rows.setdefault(unit, []).append(row)
        # per prefix: its rows (an index tensor) and the positions they read (the widest of them)
        self.reads = [(unit, torch.tensor(r, device=self.device), max(used[i] for i in r)) for unit, r in rows.items()]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to set up: the layer starts with the prefixes' states."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """(rows, heads, width + new, dim) keys and values: each row's prefix positions, then its new states."""
        joined = []
        for part, new in ((0, key_states), (1, value_states)):
            rows, heads, n, dim = new.shape
            out = new.new_zeros(rows, heads, self.width + n, dim)
            for unit, index, reads in self.reads:
                source = self.units[unit][part][:, :, :reads].to(new.dtype)
                if len(index) == rows:  # every row on this prefix: a broadcast copy
                    out[:, :, :reads] = source
                else:
                    out[index, :, :reads] = source
            out[:, :, self.width :] = new
            joined.append(out)
        return joined[0], joined[1]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(key length, key offset) for mask building: the prefix width and the new tokens, from 0."""
        return self.width + query_length, 0

    def get_seq_length(self) -> int:
        """Tokens already cached: the batch's prefix width."""
        return self.width

    def get_max_length(self) -> int:
        """-1: no fixed size."""
        return -1


def row_prefix_cache(
    units: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], owner: Sequence[int], used: Sequence[int]
) -> Cache:
    """A cache for a scoring batch whose row ``r`` reads the first ``used[r]`` positions of the prefix
    ``units[owner[r]]`` (each prefix's per-layer (keys, values), (1, heads, P, dim)); see :class:`RowPrefixLayer`."""
    layers = len(units[0])
    return Cache(layers=[RowPrefixLayer([u[layer] for u in units], owner, used) for layer in range(layers)])


def prefix_cache_for_batch(
    states: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int, keep: bool = False
) -> Cache:
    """A cache that gives every row of a batch the first ``length`` positions of a prefix (views, no copy);
    ``keep=True`` also keeps what the batch forwards (for decoding; see :class:`SharedPrefixLayer`)."""
    return Cache(layers=[SharedPrefixLayer(k[:, :, :length], v[:, :, :length], keep) for k, v in states])


def cache_argument(module: torch.nn.Module) -> str:
    """The name under which ``module.forward`` takes a key/value cache: ``cache`` (transformers >= 5.x) or
    ``past_key_values``."""
    import inspect

    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output: Any) -> Any:
    """The cache returned by a forward with ``use_cache=True`` (``cache`` or ``past_key_values`` of the output)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
