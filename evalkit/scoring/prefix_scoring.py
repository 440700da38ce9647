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

    def _score_on_prefix(self, unit: prefix_cache_lib.PrefixUnit, members: list[PackedGroup],
                         finish: Callable[..., None]) -> list[PackedGroup]:
        """Forward ``unit.prefix`` once and score its groups on its cache, batches cut as without reuse (each row
        costs its whole length, so a batch needs no more memory than it would without reuse).

        Returns:
            the groups left unscored after an out-of-memory with one row or in the prefix forward itself (prefix
            reuse is then turned off; they are scored without it, which may itself run out of memory).
        """
        used = dict(zip(map(id, members), unit.used))
        try:
            states = self._forward_prefix(unit.prefix)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not self.is_oom(exc):
                raise
            states = None
            self._prefix_off("out of memory while forwarding a shared prefix")
        if states is None:  # out of memory, or a cache of another kind (reuse is off either way)
            free_accelerator_memory()
            return members

        def done(batch: list[int], scored: list[list[tuple[float, bool]]]) -> None:
            chosen = [members[i] for i in batch]
            self.prefix_tokens_reused += sum(used[id(g)] for g in chosen)
            finish(chosen, scored)

        left = self._in_batches(members, lambda batch: self.score_on_prefix(
            [members[i] for i in batch], states, [used[id(members[i])] for i in batch]), done, lambda batch, exc: None)
        if left:  # out of memory with one row
            del states
            self._prefix_off("out of memory scoring one sequence on a cached prefix")
            free_accelerator_memory()
        return [members[i] for i in left]

    def _forward_prefix(self, prefix: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Run a shared prefix through the model body once; its per-layer (keys, values), each (1, heads, P, dim).

        Counted in ``forward_calls``, ``forward_tokens``, ``padded_tokens`` and ``prefix_tokens_forwarded``.
        Turns prefix reuse off (returns None) when the cache is not one full-attention entry per layer.
        """
        from transformers import DynamicCache

        body = self._prefix_body()
        ids = torch.tensor([list(prefix)], device=self.input_device)
        positions = torch.arange(len(prefix), device=self.input_device)[None]
        # a cache of plain full layers (a windowed model's own would keep only its window); a prefix read by a
        # windowed model lies within the window (:meth:`_plan`), so the full keys are the windowed ones
        full = {prefix_cache_lib.cache_argument(body): DynamicCache()}
        with torch.inference_mode():
            out = body(input_ids=ids, position_ids=positions, use_cache=True, **full)
        states = prefix_cache_lib.prefix_states(prefix_cache_lib.output_cache(out))
        del out
        self.forward_calls += 1
        self.forward_tokens += len(prefix)
        self.padded_tokens += len(prefix)
        self.prefix_tokens_forwarded += len(prefix)
        if states is None:
            self._prefix_off("the model's key/value cache is not one full-attention entry per layer")
            return None
        return states

    def _prefix_body(self) -> torch.nn.Module:
        """The module a prefix is forwarded through: the model body, or the base model, or the model itself."""
        if self.body is not None:
            return self.body
        base = getattr(self.model, "base_model", None)
        return base if base is not None else self.model

    def score_on_prefix(
        self, groups: Sequence[PackedGroup], states: Sequence[tuple[torch.Tensor, torch.Tensor]], used: Sequence[int]
    ) -> list[list[tuple[float, bool]]]:
        """One forward pass over packed groups whose first ``used[i]`` context tokens are a cached prefix's.

        Args:
            groups: packed groups; group i's context starts with the prefix's first ``used[i]`` tokens.
            states: the prefix's per-layer (keys, values) (:meth:`_forward_prefix`).
            used: per group, the prefix tokens it shares (0 < used < its context length).

        Returns:
            per group, per continuation: (summed log-likelihood in nats, greedy flag), as :meth:`score_groups`.
        """
        return self.score_groups(groups, prefix=(states, used))

    def _check_prefix_reuse(self) -> None:
        """Score one small group with and without a cached prefix; on an error or a mismatch, turn reuse off.

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
            states = self._forward_prefix(context[:8])
            if states is None:
                return
            reused = self._probe_score([group, group], prefix=(states, [6, 8]))
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
