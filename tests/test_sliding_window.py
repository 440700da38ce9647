"""Models with sliding-window or chunked attention layers through the packed backend.

Tiny seeded random models of each windowed architecture in transformers (Mistral: every layer windowed; Qwen2 with
``use_sliding_window``: layers from ``max_window_layers`` on; Gemma 2 and Gemma 3: local and global layers in turn;
Llama 4: chunked and global layers), with a window of 4 tokens, score contexts of 11 to 30 tokens with several
continuations each (packed into one sequence per context) and must equal the naive one-request reference, which
lets the model build its own masks. A packed mask that reaches the windowed layers unwindowed (the earlier
behaviour) must be caught by the mask probe. The request cache key of a windowed model carries a scoring version.
"""

from __future__ import annotations

import logging
import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from evalkit.scoring import hf_backend
from evalkit.models.attention_windows import layer_patterns, unpackable_layer_types, windowed_attention
from evalkit.scoring.cache import WINDOWED_SCORING_VERSION, model_key
from evalkit.scoring.hf_backend import HFBackend
from evalkit.models.hf_loading import load_model
from evalkit.types import TokenizedRequest

from .conftest import TINY_LLAMA, make_tiny_llama
from .reference import naive_loglikelihood

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 4
VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=256)


def windowed_architectures(window: int) -> dict[str, dict]:
    """Config keywords (beyond COMMON) of one tiny model per windowed family, every window ``window`` tokens."""
    return {
        "mistral": dict(sliding_window=window),
        "qwen2": dict(use_sliding_window=True, sliding_window=window, max_window_layers=1),
        "gemma2": dict(sliding_window=window),
        "gemma3_text": dict(sliding_window=window, layer_types=["sliding_attention", "full_attention"]),
        "llama4_text": dict(attention_chunk_size=window, num_local_experts=1, intermediate_size_mlp=64,
                            no_rope_layers=[1, 0]),
    }


ARCHITECTURES = windowed_architectures(WINDOW)
EXPECTED_PATTERNS = {
    "mistral": {"sliding_attention": ("sliding", WINDOW)},
    "qwen2": {"full_attention": ("full", None), "sliding_attention": ("sliding", WINDOW)},
    "gemma2": {"sliding_attention": ("sliding", WINDOW), "full_attention": ("full", None)},
    "gemma3_text": {"sliding_attention": ("sliding", WINDOW), "full_attention": ("full", None)},
    "llama4_text": {"chunked_attention": ("chunked", WINDOW), "full_attention": ("full", None)},
}


def _config(model_type: str):
    return AutoConfig.for_model(model_type, **COMMON, **ARCHITECTURES[model_type])


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def windowed(request):
    """(model type, seeded random fp32 model in eval mode)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(request.param), dtype=torch.float32).eval()
    return request.param, model


@pytest.fixture(scope="module")
def requests():
    """Five contexts of 11 to 30 tokens, each with three or four continuations of 1 to 5 tokens (one shared by
    two requests), and a sixth context with a single continuation: 19 requests, ids drawn with a fixed seed."""
    rng = random.Random(7)
    out = []
    for n_ctx, n_conts in ((11, 3), (17, 4), (23, 3), (30, 4), (14, 3), (26, 1)):
        context = tuple(rng.randrange(1, VOCAB) for _ in range(n_ctx))
        for _ in range(n_conts):
            out.append(TokenizedRequest(context, tuple(rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 5)))))
    out.append(out[1])  # a duplicate request
    return out


@pytest.fixture(scope="module")
def naive(windowed, requests):
    return [naive_loglikelihood(windowed[1], r) for r in requests]


def _assert_matches(responses, naive):
    for response, (ll, greedy) in zip(responses, naive, strict=True):
        assert abs(response.loglikelihood - ll) <= 1e-4 + 1e-5 * abs(ll), (response.loglikelihood, ll)
        assert response.greedy == greedy


def test_the_config_rule_names_every_windowed_layer_type(windowed):
    model_type, model = windowed
    assert layer_patterns(model.config) == EXPECTED_PATTERNS[model_type]
    assert windowed_attention(model.config) == WINDOW
    assert unpackable_layer_types(model.config) == []


def test_models_without_windows_and_with_unmaskable_layers():
    assert windowed_attention(AutoConfig.for_model("llama")) is None
    assert windowed_attention(AutoConfig.for_model("qwen2", sliding_window=8)) is None  # use_sliding_window False
    assert windowed_attention(AutoConfig.for_model("mistral", sliding_window=None)) is None
    assert windowed_attention(AutoConfig.for_model("mistral")) == 4096  # Mistral's default window
    assert layer_patterns(AutoConfig.for_model("qwen2")) == {"full_attention": ("full", None)}
    assert windowed_attention(AutoConfig.for_model("gemma3_text", sliding_window=512)) == 512
    assert unpackable_layer_types(AutoConfig.for_model("qwen3_next")) == ["linear_attention"]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_packed_windowed_models_match_the_naive_reference(windowed, requests, naive, batch_size):
    _, model = windowed
    backend = HFBackend(model, 64, batch_size=batch_size, progress=False)
    responses = backend.loglikelihood(requests)
    assert backend.share_context is True and backend.mask_fallback is None  # per-layer masks passed the probe
    assert backend.forward_calls == (6 if batch_size == 1 else 2)  # one packed sequence per context
    _assert_matches(responses, naive)


def test_unshared_windowed_models_match_the_naive_reference(windowed, requests, naive):
    backend = HFBackend(windowed[1], 64, batch_size=4, share_context=False, progress=False)
    _assert_matches(backend.loglikelihood(requests), naive)


def _unwindowed_masks(segments, positions, dtype, patterns):
    """The earlier packing: one causal packed mask for every layer, blind to windows."""
    return hf_backend._packed_mask(segments, dtype)


def test_the_probe_catches_a_mask_that_ignores_the_window(windowed, requests, naive, monkeypatch, caplog):
    _, model = windowed
    monkeypatch.setattr(hf_backend, "_packed_masks", _unwindowed_masks)
    backend = HFBackend(model, 64, batch_size=4, progress=False)
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        responses = backend.loglikelihood(requests)
    assert backend.share_context is False
    assert backend.mask_fallback.startswith("packed continuations differ from unpacked ones")
    assert f"{WINDOW + hf_backend.PROBE_CONTEXT}-token probe context" in backend.mask_fallback
    assert "shared-context scoring is off" in caplog.text
    _assert_matches(responses, naive)


def test_a_model_with_unmaskable_layers_is_never_packed(caplog):
    model = make_tiny_llama(0)  # Llama's forward reads no layer types: the backend's config rule alone decides
    model.config.layer_types = ["full_attention", "linear_attention"]  # a recurrent layer: no mask reproduces it
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        backend = HFBackend(model, 64, progress=False)
    assert backend.share_context is False
    assert backend.mask_fallback == ("the model has 'linear_attention' layers, whose attention a packed mask "
                                     "cannot reproduce")
    assert "shared-context scoring is off" in caplog.text


def test_the_cache_key_of_a_windowed_model_changes_and_no_other():
    versions = {"evalkit": "0", "torch": "0", "transformers": "0"}
    _, gemma = load_model({"kind": "random", "alias": "tiny-gemma3", "config": dict(
        model_type="gemma3_text", **COMMON, **ARCHITECTURES["gemma3_text"])}, "float32", "cpu", 0)
    assert gemma["attention_window"] == WINDOW
    key, fields = model_key(gemma, "tok", "hf", versions)
    assert fields["attention_window"] == WINDOW and fields["windowed_scoring"] == WINDOWED_SCORING_VERSION == 2
    earlier = {k: v for k, v in gemma.items() if k != "attention_window"}  # the identity evalkit recorded before
    assert model_key(earlier, "tok", "hf", versions)[0] != key

    _, llama = load_model({"kind": "random", "alias": "tiny-llama", "config": TINY_LLAMA}, "float32", "cpu", 0)
    assert "attention_window" not in llama
    key, fields = model_key(llama, "tok", "hf", versions)
    assert "attention_window" not in fields and "windowed_scoring" not in fields
    assert sorted(fields) == sorted(["name", "kind", "revision", "dtype", "config_sha256", "tokenizer_sha256",
                                     "backend", "evalkit_version", "torch_version", "transformers_version"])
