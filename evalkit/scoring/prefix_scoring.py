"""Prefix reuse in log-likelihood scoring: token prefixes shared by several packed sequences (few-shot examples) are
forwarded once, and the rest of each sequence is scored on their keys and values.

:class:`PrefixScoring` holds the part of :class:`evalkit.scoring.hf_backend.HFBackend` that plans the prefixes
(:func:`evalkit.scoring.prefix_cache.plan_prefixes`), forwards each once, scores its groups on its cache and probes
that this reproduces scoring without reuse. A model with windowed attention layers reuses prefixes only for
sequences whose every position lies within its smallest window (there a window excludes nothing); longer ones
forward their whole context, with a warning. :func:`prefix_timing` reports the figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from evalkit.scoring import prefix_cache as prefix_cache_lib
from evalkit.scoring.batching import PackedGroup
from evalkit.scoring.oom import free_accelerator_memory
from evalkit.scoring.packed_inputs import MASK_ERRORS, PROBE_TOLERANCE, _last_position

if TYPE_CHECKING:
    from evalkit.scoring.hf_backend import HFBackend

PREFIX_BUDGET_BYTES = 1 << 30
"""Default budget for the keys and values of one cached prefix (bytes)."""

PADDING_SLACK = 0.25
"""Most padding a batch on cached prefixes may carry, as a fraction of its real tokens: rows of very different
lengths go to different batches (their matrix products run over the padding too)."""

PREFIX_PROBE_POSITIONS = 10
"""Largest position id of the prefix-reuse probe's group; a windowed model whose window is not larger keeps
reuse off."""


class PrefixScoring:
    """Prefix reuse for :class:`evalkit.scoring.hf_backend.HFBackend`, which it is mixed into.

    It reads the backend's model, window, batching and counter attributes (see that class), and calls its
    ``score_groups``, ``_in_batches`` (batches with out-of-memory back-off), ``_probe_score``,
    ``_check_packed_masks``, ``_skip_windowed`` and ``_prefix_off``.
    """

    @property
    def work_fraction(self) -> float | None:
        """Input tokens forwarded over those scoring without prefix reuse would forward (None before any)."""
        return self.forward_tokens / self.naive_tokens if self.naive_tokens else None

    def _plan(self, groups: Sequence[PackedGroup]) -> list[prefix_cache_lib.PrefixUnit]:
        """Prefix units of the groups (:func:`evalkit.scoring.prefix_cache.plan_prefixes`); one unit without a
        prefix when reuse is off, the model cannot take 4-D masks, or the prefix probe fails."""
        everything = [prefix_cache_lib.PrefixUnit((), list(range(len(groups))), [0] * len(groups))]
        if not self.prefix_cache or not groups:
            return everything
        fits = [i for i, g in enumerate(groups) if self.window is None or _last_position(g) < self.window]
        units = prefix_cache_lib.plan_prefixes([groups[i].context_ids for i in fits], self.prefix_min_tokens,
                                               max_prefix_tokens=self.prefix_max_tokens)
        if len(fits) < len(groups):
            self._skip_windowed(len(groups) - len(fits), len(groups))
        if not any(u.prefix for u in units):
            return everything
        for unit in units:
            unit.members = [fits[m] for m in unit.members]
        longer = sorted(set(range(len(groups))) - set(fits))
        if longer:
            if units[-1].prefix:
                units.append(prefix_cache_lib.PrefixUnit(()))
            units[-1].members.extend(longer)
            units[-1].used.extend([0] * len(longer))
        if not self._mask_checked:
            self._check_packed_masks()
        if not self.share_context:
            self._prefix_off(f"it needs custom 4-D attention masks ({self.mask_fallback or 'shared context is off'})")
            return everything
        if not self._prefix_checked:
            self._check_prefix_reuse()
        return units if self.prefix_cache else everything

    def _score_on_prefixes(self, units: Sequence[prefix_cache_lib.PrefixUnit], groups: Sequence[PackedGroup],
                           finish: Callable[..., None]) -> list[int]:
        """Score the members of the prefix units: the prefixes forwarded once (several per forward pass), then the
        members in batches that mix prefixes, each row on its own prefix's cache (:class:`RowPrefixLayer`), so
        many small units (v0.2.0's MMLU: ~3 documents per shared prefix) take no more forward passes than scoring
        without reuse. Units are taken in chunks whose prefixes' keys and values fit the budget together
        (``prefix_max_tokens``); the batches of a chunk hold rows of similar rests (:func:`_row_batches`).

        Returns:
            indices into ``groups`` left unscored: reuse was turned off (an out-of-memory in a prefix forward or
            with one row, or a cache of another kind); they are scored without it, which may itself run out of
            memory.
        """
        left: list[int] = []
        for chunk in _budget_chunks(units, self.prefix_max_tokens):
            if not self.prefix_cache:
                left.extend(m for unit in chunk for m in unit.members)
                continue
            try:
                states = self._forward_prefixes([unit.prefix for unit in chunk])
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
                if not self.is_oom(exc):
                    raise
                states = None
                self._prefix_off("out of memory while forwarding shared prefixes")
            if states is None:  # out of memory, or a cache of another kind (reuse is off either way)
                free_accelerator_memory()
                left.extend(m for unit in chunk for m in unit.members)
                continue
            left.extend(self._score_chunk(chunk, states, groups, finish))
            del states  # the chunk's prefixes are freed before the next chunk's are forwarded
        return left

    def _score_chunk(self, chunk: Sequence[prefix_cache_lib.PrefixUnit],
                     states: list[list[tuple[torch.Tensor, torch.Tensor]]], groups: Sequence[PackedGroup],
                     finish: Callable[..., None]) -> list[int]:
        """Score the members of one chunk's units on their forwarded prefixes (``states``, one per unit), in
        batches that mix prefixes (:func:`_row_batches`); returns the indices into ``groups`` left unscored after an
        out-of-memory with one row (reuse is then off). The chunk's prefixes live as long as this call."""
        rows = [(m, k, u) for k, unit in enumerate(chunk) for m, u in zip(unit.members, unit.used)]
        members = [groups[m] for m, _, _ in rows]
        used = [u for _, _, u in rows]
        rests = [g.length - u for g, u in zip(members, used)]

        def attempt(batch: list[int]) -> Any:
            return self.score_on_prefixes([members[i] for i in batch], states, [rows[i][1] for i in batch],
                                          [used[i] for i in batch])

        def done(batch: list[int], scored: Any) -> None:
            self.prefix_tokens_reused += sum(used[i] for i in batch)
            finish([members[i] for i in batch], scored)

        def cut(indices: list[int], size: int) -> list[list[int]]:
            return _row_batches(indices, rests, used, size, self.max_batch_tokens)

        undone = self._in_batches(members, attempt, done, lambda batch, exc: None, cut)
        if undone:  # out of memory with one row
            self._prefix_off("out of memory scoring one sequence on a cached prefix")
            free_accelerator_memory()
        return [rows[i][0] for i in undone]

    def _forward_prefixes(
        self, prefixes: Sequence[Sequence[int]]
    ) -> list[list[tuple[torch.Tensor, torch.Tensor]]] | None:
        """Run shared prefixes through the model body, ``batch_size`` at a time, each row padded on the right (its
        real positions never attend to the padding after them); per prefix, its per-layer (keys, values), each
        (1, heads, P, dim): a view of the cache of a batch of one, copies out of a batch of several (which would
        otherwise stay alive, padding included).

        Counted in ``forward_calls``, ``forward_tokens``, ``padded_tokens`` and ``prefix_tokens_forwarded``.
        Turns prefix reuse off (returns None) when the cache is not one full-attention entry per layer.
        """
        from transformers import DynamicCache

        body = self._prefix_body()
        order = sorted(range(len(prefixes)), key=lambda i: -len(prefixes[i]))  # similar lengths share a batch
        by_index: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for batch in _prefix_batches([len(prefixes[i]) for i in order], self.batch_size, self.max_batch_tokens):
            chosen = [order[i] for i in batch]
            width = max(len(prefixes[i]) for i in chosen)
            ids = torch.full((len(chosen), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, i in enumerate(chosen):
                ids[row, : len(prefixes[i])] = torch.tensor(prefixes[i])
                mask[row, : len(prefixes[i])] = 1
            positions = torch.arange(width)[None].expand(len(chosen), -1)
            # a cache of plain full layers (a windowed model's own would keep only its window); a prefix read by a
            # windowed model lies within the window (:meth:`_plan`), so the full keys are the windowed ones
            full = {prefix_cache_lib.cache_argument(body): DynamicCache()}
            with torch.inference_mode():
                out = body(input_ids=ids.to(self.input_device), position_ids=positions.to(self.input_device),
                           attention_mask=None if len(chosen) == 1 else mask.to(self.input_device), use_cache=True,
                           **full)
            states = prefix_cache_lib.batch_prefix_states(prefix_cache_lib.output_cache(out))
            del out
            real = sum(len(prefixes[i]) for i in chosen)
            self.forward_calls += 1
            self.forward_tokens += real
            self.padded_tokens += len(chosen) * width
            self.prefix_tokens_forwarded += real
            if states is None or any(k.shape[0] != len(chosen) for k, _ in states):
                self._prefix_off("the model's key/value cache is not one full-attention entry per layer")
                return None
            for row, i in enumerate(chosen):
                n = len(prefixes[i])
                # one prefix: a view of its cache; several: copies, so the padded batch cache is freed and what is
                # held is the prefixes' own positions (what the budget counts)
                by_index[i] = [(k[row : row + 1, :, :n], v[row : row + 1, :, :n]) if len(chosen) == 1 else
                               (k[row : row + 1, :, :n].clone(), v[row : row + 1, :, :n].clone()) for k, v in states]
            del states
        return [by_index[i] for i in range(len(prefixes))]

    def _prefix_body(self) -> torch.nn.Module:
        """The module a prefix is forwarded through: the model body, or the base model, or the model itself."""
        if self.body is not None:
            return self.body
        base = getattr(self.model, "base_model", None)
        return base if base is not None else self.model

    def score_on_prefixes(
        self, groups: Sequence[PackedGroup], states: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]],
        owner: Sequence[int], used: Sequence[int],
    ) -> list[list[tuple[float, bool]]]:
        """One forward pass over packed groups whose first ``used[i]`` context tokens are those of the cached
        prefix ``states[owner[i]]``.

        Args:
            groups: packed groups; group i's context starts with its prefix's first ``used[i]`` tokens.
            states: per prefix, its per-layer (keys, values), each (1, heads, P, dim) (:meth:`_forward_prefixes`).
            owner: per group, the index of its prefix in ``states``.
            used: per group, the prefix tokens it shares (0 < used < its context length).

        Returns:
            per group, per continuation: (summed log-likelihood in nats, greedy flag), as :meth:`score_groups`.
        """
        return self.score_groups(groups, prefix=(states, owner, used))

    def _check_prefix_reuse(self) -> None:
        """Score one small group without a cached prefix and on two (forwarded in one padded batch, read by one batch
        at three widths); on an error or a mismatch, turn reuse off.

        The probe's forward passes are not counted in the benchmark counters.
        """
        self._prefix_checked = True
        vocab = self.model.get_input_embeddings().weight.shape[0]
        ids = [(self.pad_id + 1 + 3 * k) % vocab for k in range(14)]
        context, conts = tuple(ids[:10]), (tuple(ids[10:12]), tuple(ids[12:14]))
        group = PackedGroup(context, conts, ((0,), (1,)))
        counters = (self.forward_calls, self.forward_tokens, self.padded_tokens, self.scored_positions,
                    self.prefix_tokens_forwarded)
        try:
            plain = [ll for ll, _ in self._probe_score([group])[0]]
            states = self._forward_prefixes([context[:8], context[:5]])  # two lengths: one padded batch
            if states is None:
                return
            reused = self._probe_score([group, group, group], prefix=(states, [0, 1, 0], [6, 4, 8]))
            tolerance = PROBE_TOLERANCE.get(self.dtype, 0.1)
            worst = max(abs(a - b) for row in reused for a, (b, _) in zip(plain, row))
            reason = (None if worst <= tolerance else
                      f"scores on a cached prefix differ from full ones by {worst:.3g} nats (tolerance {tolerance:g})")
        except MASK_ERRORS as exc:
            if self.is_oom(exc):
                return
            reason = f"the model rejected a cached prefix ({type(exc).__name__}: {exc})"
        finally:
            (self.forward_calls, self.forward_tokens, self.padded_tokens, self.scored_positions,
             self.prefix_tokens_forwarded) = counters
        if reason is not None:
            attn = getattr(self.model.config, "_attn_implementation", None)
            self._prefix_off(f"{reason}; attention implementation {attn!r}")


def prefix_timing(backend: HFBackend) -> dict[str, Any]:
    """The prefix-reuse figures for a results file's ``timing`` section, from a backend after scoring.

    Keys: ``prefix_cache`` (whether reuse stayed on), ``prefix_fallback`` (None, or why it was turned off),
    ``prefix_tokens_forwarded`` (shared prefixes' tokens, once each), ``prefix_tokens_reused`` (prefix tokens read
    from a cache instead of forwarded), ``naive_tokens`` (input tokens without reuse) and ``work_fraction``
    (``forward_tokens / naive_tokens``, rounded to 4 digits; None when nothing was scored).
    """
    fraction = backend.work_fraction
    return {
        "prefix_cache": backend.prefix_cache,
        "prefix_fallback": backend.prefix_fallback,
        "prefix_tokens_forwarded": backend.prefix_tokens_forwarded,
        "prefix_tokens_reused": backend.prefix_tokens_reused,
        "naive_tokens": backend.naive_tokens,
        "work_fraction": round(fraction, 4) if fraction is not None else None,
    }


def _prefix_token_budget(config: Any, budget_bytes: int, dtype: torch.dtype) -> int | None:
    """Longest prefix whose keys and values fit ``budget_bytes`` (2 x layers x key/value heads x head size x
    element size per token), from the model config; None when the config does not say."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not (layers and heads and hidden):
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_token = 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
    return max(0, int(budget_bytes // per_token))


def _budget_chunks(units: Sequence[prefix_cache_lib.PrefixUnit], budget_tokens: int | None
                   ) -> list[list[prefix_cache_lib.PrefixUnit]]:
    """The units in order, cut into runs whose prefixes hold at most ``budget_tokens`` tokens together (each run at
    least one unit; the plan already cut every prefix to the budget); one run without a budget."""
    if budget_tokens is None:
        return [list(units)] if units else []
    chunks: list[list[prefix_cache_lib.PrefixUnit]] = []
    total = 0
    for unit in units:
        if chunks and total + len(unit.prefix) <= budget_tokens:
            chunks[-1].append(unit)
            total += len(unit.prefix)
        else:
            chunks.append([unit])
            total = len(unit.prefix)
    return chunks


def _prefix_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    """Consecutive batches of indices into ``lengths`` (sorted longest first): at most ``batch_size`` rows, at most
    :data:`PADDING_SLACK` of a batch padding (prefixes of 80 and 600 tokens are not forwarded as two rows of 600),
    and with ``max_batch_tokens`` at most that many padded tokens (rows x longest); a single longer row is its own
    batch."""
    batches: list[list[int]] = []
    real = 0
    for index, length in enumerate(lengths):
        current = batches[-1] if batches else None
        if current is not None:
            padded = (len(current) + 1) * lengths[current[0]]
            if (len(current) < batch_size and padded <= (1 + PADDING_SLACK) * (real + length)
                    and (max_batch_tokens is None or padded <= max_batch_tokens)):
                current.append(index)
                real += length
                continue
        batches.append([index])
        real = length
    return batches


def _row_batches(indices: Sequence[int], rests: Sequence[int], used: Sequence[int], batch_size: int,
                 max_batch_tokens: int | None) -> list[list[int]]:
    """Batches of ``indices`` for scoring on cached prefixes, longest rest first (rests: tokens each row forwards;
    used: prefix tokens it reads): at most ``batch_size`` rows, at most :data:`PADDING_SLACK` of the forwarded
    tokens padding, and with ``max_batch_tokens`` at most that many key positions per batch (rows x (widest prefix
    read + longest rest), which bounds the batch's keys, values and attention as rows x longest row bounds them
    without reuse); a single longer row is its own batch."""
    order = sorted(indices, key=lambda i: (-rests[i], i))
    batches: list[list[int]] = []
    width = real = 0
    for index in order:
        current = batches[-1] if batches else None
        if current is not None:
            wider, longest = max(width, used[index]), rests[current[0]]
            padded = (len(current) + 1) * longest
            if (len(current) < batch_size and padded <= (1 + PADDING_SLACK) * (real + rests[index])
                    and (max_batch_tokens is None or (len(current) + 1) * (wider + longest) <= max_batch_tokens)):
                current.append(index)
                width, real = wider, real + rests[index]
                continue
        batches.append([index])
        width, real = used[index], rests[index]
    return batches
