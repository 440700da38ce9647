"""Prefix reuse in greedy generation (:class:`evalkit.scoring.generation.HFGenerator`): a prompt prefix shared by
several distinct requests (few-shot examples) is forwarded once, and each batch of its requests feeds only the rest
of each context on the prefix's keys and values, then decodes on them. A row's 4-D mask (:func:`_prefix_mask`) hides
the prefix positions it does not share; its position ids continue from the part it shares.

:class:`GenerationPrefixReuse` forwards a prefix and probes, before the first reuse, that next-token
log-probabilities on a cached prefix equal those of the whole context.
"""

from __future__ import annotations

from typing import Sequence

import torch

from evalkit.scoring import prefix_cache as prefix_cache_lib
from evalkit.scoring.oom import free_accelerator_memory
from evalkit.scoring.packed_inputs import MASK_ERRORS, PROBE_TOLERANCE


class GenerationPrefixReuse:
    """Forwarding a shared prefix, and the reuse probe, for :class:`evalkit.scoring.generation.HFGenerator`, which it
    is mixed into: it reads the generator's model, ``input_device``, ``pad_id``, ``_cache_arg``, ``_keep_arg``,
    ``is_oom`` and counters, and calls its ``_prefix_off``."""

    def _forward_prefix(self, prefix: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Forward a shared prefix once; its per-layer (keys, values), each (1, heads, P, dim). Counted in
        ``forward_calls``, ``forward_tokens``, ``padded_tokens`` and ``prefix_tokens_forwarded``. On out of memory
        or a cache of another kind, reuse is turned off (with a warning) and None returned."""
        from transformers import DynamicCache

        ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.input_device)
        positions = torch.arange(len(prefix), device=self.input_device)[None]
        kwargs = {self._cache_arg: DynamicCache(), "use_cache": True}  # full layers: every prefix key kept
        if self._keep_arg is not None:
            kwargs[self._keep_arg] = 1
        try:
            with torch.inference_mode():
                out = self.model(input_ids=ids, position_ids=positions, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not self.is_oom(exc):
                raise
            out = None
        if out is None:
            self._prefix_off("out of memory while forwarding a shared prefix")
            free_accelerator_memory()
            return None
        states = prefix_cache_lib.prefix_states(prefix_cache_lib.output_cache(out))
        self.forward_calls += 1
        self.forward_tokens += len(prefix)
        self.padded_tokens += len(prefix)
        self.prefix_tokens_forwarded += len(prefix)
        if states is None:
            self._prefix_off("the model's key/value cache is not one full-attention entry per layer")
        return states

    def _check_prefix_reuse(self) -> None:
        """Next-token log-probabilities of a 10-token context fed whole, and fed as 2 tokens on an 8-token cached
        prefix (then one decoding step each); on an error or a difference beyond the dtype's probe tolerance, reuse
        is turned off. Not counted in the counters."""
        from transformers import DynamicCache

        self._prefix_checked = True
        vocab = self.model.get_input_embeddings().weight.shape[0]
        ids = torch.tensor([[(self.pad_id + 1 + 3 * k) % vocab for k in range(11)]], device=self.input_device)
        dtype = self.model.get_input_embeddings().weight.dtype
        counters = (self.forward_calls, self.forward_tokens, self.padded_tokens, self.prefix_tokens_forwarded)
        try:
            with torch.inference_mode():
                cache = DynamicCache()
                whole = self._logprobs(ids[:, :10], torch.ones_like(ids[:, :10]), torch.arange(10)[None], cache)
                step = self._logprobs(ids[:, 10:], torch.ones_like(ids), torch.tensor([[10]]), cache)
                states = self._forward_prefix(ids[0, :8].tolist())
                if states is None:
                    return
                cache = prefix_cache_lib.prefix_cache_for_batch(states, 8, keep=True)
                mask = torch.ones((1, 10), dtype=torch.long, device=self.input_device)
                rest = self._logprobs(ids[:, 8:10], _prefix_mask(mask, 2, dtype), torch.arange(8, 10)[None], cache)
                mask = torch.ones_like(ids)
                again = self._logprobs(ids[:, 10:], _prefix_mask(mask, 1, dtype), torch.tensor([[10]]), cache)
            worst = max(float((whole - rest).abs().max()), float((step - again).abs().max()))
            tolerance = PROBE_TOLERANCE.get(dtype, 0.1)
            reason = (None if worst <= tolerance else f"next-token log-probabilities on a cached prefix differ from "
                                                      f"whole ones by {worst:.3g} (tolerance {tolerance:g})")
        except MASK_ERRORS as exc:
            if self.is_oom(exc):
                return
            reason = f"the model rejected a cached prefix ({type(exc).__name__}: {exc})"
        finally:
            (self.forward_calls, self.forward_tokens, self.padded_tokens, self.prefix_tokens_forwarded) = counters
        if reason is not None:
            self._prefix_off(f"{reason}; attention implementation "
                             f"{getattr(self.model.config, '_attn_implementation', None)!r}")

    def _logprobs(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """Log-softmax (float32) of the last position's logits of one uncounted model call (the probe's)."""
        kwargs = {self._cache_arg: cache, "use_cache": True}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions.to(self.input_device), **kwargs)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)


def _prefix_mask(mask: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (rows, 1, queries, keys) for a batch on a cached prefix: the last ``queries`` key columns are
    this call's tokens; a query sees the columns up to its own where ``mask`` (rows, keys; 1 seen, 0 hidden: a
    prefix position the row does not share, or padding) holds."""
    keys = mask.shape[1]
    columns = torch.arange(keys, device=mask.device)
    own = keys - queries + torch.arange(queries, device=mask.device)
    allowed = (mask[:, None, :] > 0) & (columns[None, None, :] <= own[None, :, None])
    out = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]
