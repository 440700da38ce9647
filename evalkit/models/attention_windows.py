"""Which attention pattern each layer of a model uses, read from its transformers config (no torch, no weights).

Packed scoring (:mod:`evalkit.scoring.hf_backend`) hands the model a ready-made 4-D attention mask, which transformers
passes to every layer as it is: the model no longer builds its own sliding-window or chunked masks. A model whose
config declares windowed layers must therefore receive one mask per layer type that honours each layer's window,
or be scored without packing. The rules below follow transformers 5's modeling code:

* ``config.layer_types`` (Gemma 2/3, Cohere 2, GPT-OSS, Qwen2, Llama 4, OLMo 3, ...) names each layer's pattern:
  ``"full_attention"`` (plain causal), ``"sliding_attention"`` (``config.sliding_window``: a query at position
  ``q`` sees keys at positions ``k`` with ``q - window < k <= q``, transformers' ``sliding_window_overlay``) or
  ``"chunked_attention"`` (``config.attention_chunk_size``: keys in the same chunk, ``k // size == q // size``,
  transformers' ``chunked_overlay`` without left padding). Any other type (recurrent ``"linear_attention"``,
  sparse or compressed attention, ...) has no mask that packing could give it exactly.
* without ``layer_types``, a positive ``config.sliding_window`` applies to every layer (Mistral, Mixtral, Phi-3,
  Starcoder2), unless ``config.use_sliding_window`` is False (Qwen2-style configs);
  a positive ``config.attention_chunk_size`` likewise makes every layer chunked.

A multimodal config is read through its text part (``get_text_config``).
"""

from __future__ import annotations

from typing import Any

FULL = "full_attention"
SLIDING = "sliding_attention"
CHUNKED = "chunked_attention"
PACKABLE_TYPES = (FULL, SLIDING, CHUNKED)
"""Layer types whose attention pattern a packed mask reproduces exactly."""


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    if callable(getter):
        try:
            return getter(decoder=True)
        except (TypeError, ValueError):
            return getter()
    return config


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def layer_patterns(config: Any) -> dict[str, tuple[str, int | None]]:
    """The attention pattern of each layer type the model uses.

    Args:
        config: a transformers ``PretrainedConfig`` (or any object with the same attributes).

    Returns:
        ``{layer type: (kind, size)}`` with kind ``"full"`` (size None), ``"sliding"`` (size: the window in tokens,
        the query included), ``"chunked"`` (size: the chunk length in tokens) or ``"other"`` (a layer type whose
        pattern a packed mask cannot reproduce; size None). A model without ``layer_types`` gets one entry, keyed
        ``"sliding_attention"``, ``"chunked_attention"`` or ``"full_attention"``.
    """
    config = _text_config(config)
    window = _positive_int(getattr(config, "sliding_window", None))
    if getattr(config, "use_sliding_window", True) is False:
        window = None
    chunk = _positive_int(getattr(config, "attention_chunk_size", None))
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        if window is not None:
            return {SLIDING: ("sliding", window)}
        if chunk is not None:
            return {CHUNKED: ("chunked", chunk)}
        return {FULL: ("full", None)}
    patterns: dict[str, tuple[str, int | None]] = {}
    for layer_type in dict.fromkeys(layer_types):
        if layer_type == FULL:
            patterns[layer_type] = ("full", None)
        elif layer_type == SLIDING and window is not None:
            patterns[layer_type] = ("sliding", window)
        elif layer_type == CHUNKED and chunk is not None:
            patterns[layer_type] = ("chunked", chunk)
        else:  # also a sliding or chunked type whose size the config does not give: not a pattern we can mirror
            patterns[layer_type] = ("other", None)
    return patterns


def windowed_attention(config: Any) -> int | None:
    """The smallest sliding window or attention chunk (tokens) among the model's layers; None when every layer
    attends to the whole causal prefix (or the config declares no window).

    A model with a window must not be given one plain 4-D mask for all its layers (packing, prefix sharing): its
    windowed layers would see the whole prefix. See :func:`layer_patterns` for the rules."""
    sizes = [size for kind, size in layer_patterns(config).values() if kind in ("sliding", "chunked")]
    return min(sizes) if sizes else None


def unpackable_layer_types(config: Any) -> list[str]:
    """Layer types (in first-seen order) whose attention a packed mask cannot reproduce: recurrent, sparse or
    compressed layers, and sliding or chunked layers whose size the config does not give."""
    return [name for name, (kind, _) in layer_patterns(config).items() if kind == "other"]
