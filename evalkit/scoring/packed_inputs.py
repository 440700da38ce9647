"""The inputs of one forward pass over packed groups (:mod:`evalkit.scoring.batching`): the token, position and
segment arrays of a batch, and the additive 4-D attention masks under which each continuation of a group sees its
shared context and itself only.

A model with sliding-window or chunked layers (:mod:`evalkit.models.attention_windows`) gets one mask per layer
type, each restricted to that layer's window or chunk measured in position ids: the window a continuation token
would have if the continuation followed the context alone. :data:`MASK_ERRORS` and :data:`PROBE_TOLERANCE` are how
the probes of :class:`evalkit.scoring.hf_backend.HFBackend` (and of generation) judge whether a model honours such
masks and cached prefixes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from evalkit.scoring.batching import PackedGroup

PROBE_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
"""Largest |log-likelihood difference| (nats) between packed and unpacked scoring of the mask probe, per dtype;
other dtypes (float16, bfloat16) allow 0.1. A mask that is ignored moves a continuation by far more."""

MASK_ERRORS = (ValueError, TypeError, RuntimeError, NotImplementedError, IndexError, AssertionError, KeyError,
               AttributeError)
"""Errors by which an attention implementation refuses a custom 4-D mask (flash attention raises ValueError or
RuntimeError; a model that takes no per-layer-type masks, AttributeError or KeyError on the dict); others (an
interrupt) propagate from the probe as from any batch."""


def _layout(groups: Sequence[PackedGroup], pad_id: int, used: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Arrays for a batch: inputs, positions, segment ids (0 context, i+1 continuation i, -1 padding),
    the (row, column) that predicts each continuation token, the target ids, and per-continuation offsets.

    ``used[row]`` leading context tokens of a row come from a cached prefix: the row holds the rest, and its
    position ids start at ``used[row]``."""
    used = [0] * len(groups) if used is None else list(used)
    width = max(g.length - u for g, u in zip(groups, used))
    input_ids = np.full((len(groups), width), pad_id, dtype=np.int64)
    position_ids = np.zeros((len(groups), width), dtype=np.int64)
    segments = np.full((len(groups), width), -1, dtype=np.int64)
    pred_rows: list[int] = []
    pred_cols: list[int] = []
    targets: list[int] = []
    offsets = [0]
    for row, (group, skip) in enumerate(zip(groups, used)):
        n_ctx = len(group.context_ids) - skip
        input_ids[row, :n_ctx] = group.context_ids[skip:]
        position_ids[row, :n_ctx] = np.arange(skip, skip + n_ctx)
        segments[row, :n_ctx] = 0
        start = n_ctx
        for index, cont in enumerate(group.continuations):
            n_in = len(cont) - 1
            input_ids[row, start : start + n_in] = cont[:-1]
            position_ids[row, start : start + n_in] = np.arange(skip + n_ctx, skip + n_ctx + n_in)
            segments[row, start : start + n_in] = index + 1
            pred_cols.append(n_ctx - 1)
            pred_cols.extend(range(start, start + n_in))
            pred_rows.extend([row] * len(cont))
            targets.extend(cont)
            offsets.append(offsets[-1] + len(cont))
            start += n_in
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segments": segments,
        "pred_rows": np.asarray(pred_rows, dtype=np.int64),
        "pred_cols": np.asarray(pred_cols, dtype=np.int64),
        "targets": np.asarray(targets, dtype=np.int64),
        "cont_offsets": np.asarray(offsets, dtype=np.int64),
    }


def _packed_mask(
    segments: torch.Tensor, dtype: torch.dtype, allowed_extra: torch.Tensor | None = None,
    prefix_seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive mask (batch, 1, L, P + L): a token sees earlier tokens of the context and of its own segment (and,
    when given, only where the boolean (batch, L, L) ``allowed_extra`` holds), and, with ``prefix_seen`` ((batch, P)
    bool: the cached prefix positions each row shares), those prefix positions (P = 0 without a prefix)."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    keys = segments[:, None, :]
    allowed = causal[None] & ((keys == 0) | (keys == segments[:, :, None]))
    if allowed_extra is not None:
        allowed &= allowed_extra
    if prefix_seen is not None:
        allowed = torch.cat([prefix_seen[:, None, :].expand(-1, width, -1), allowed], dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def _window_rule(kind: str, size: int | None, positions: torch.Tensor) -> torch.Tensor | None:
    """Boolean (batch, L, L): which keys a query may see under a layer's window, from the position ids (the
    positions a continuation has when it follows the context alone); None when the rule excludes nothing here."""
    if kind == "full" or size is None or int(positions.max()) < size:
        return None  # every key of a causal row lies within the window / the first chunk
    q, k = positions[:, :, None], positions[:, None, :]
    if kind == "sliding":  # transformers' sliding_window_overlay: q - window < k
        return k > q - size
    return torch.div(k, size, rounding_mode="floor") == torch.div(q, size, rounding_mode="floor")  # chunked


def _packed_masks(
    segments: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype,
    patterns: dict[str, tuple[str, int | None]],
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The packed mask of :func:`_packed_mask` for each layer type, restricted to that type's window or chunk.

    Returns one tensor when every layer type gets the same mask (no windowed layers, or no position reaches a
    window), else ``{layer type: mask}`` as transformers' models with ``config.layer_types`` accept it; masks
    equal between types are one tensor shared."""
    built: dict[tuple[str, int | None], torch.Tensor] = {}
    by_type: dict[str, torch.Tensor] = {}
    for layer_type, (kind, size) in patterns.items():
        rule = _window_rule(kind, size, positions)
        key = ("full", None) if rule is None else (kind, size)
        if key not in built:
            built[key] = _packed_mask(segments, dtype, rule)
        by_type[layer_type] = built[key]
    if len(built) == 1:
        return next(iter(built.values()))
    return by_type


def _describe(patterns: dict[str, tuple[str, int | None]]) -> str:
    """The windowed layer types of :func:`evalkit.models.attention_windows.layer_patterns`, for a message
    ("sliding_attention: sliding 512, ...")."""
    return ", ".join(f"{name}: {kind} {size}" for name, (kind, size) in patterns.items() if size is not None)


def _last_position(group: PackedGroup) -> int:
    """The largest position id of a packed group's input tokens (its context, then each continuation but its last
    token, positions restarting after the context)."""
    return len(group.context_ids) - 2 + max(1, max(len(c) for c in group.continuations))
