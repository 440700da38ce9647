"""Shared-prefix reuse on models with windowed attention layers (Mistral, Qwen2, Gemma 2/3-style sliding windows,
Llama 4-style chunks): sequences whose every position lies within the smallest window read a cached prefix;
longer ones forward their whole context with a warning. Every request's log-likelihood and greedy flag equals
the slow naive reference (one request, one unpadded forward pass), with shared prefixes shorter and longer than
the window."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from evalkit.scoring.batching import pack_groups
from evalkit.scoring.hf_backend import HFBackend, _last_position
from evalkit.types import TokenizedRequest

from .reference import naive_loglikelihood
from .test_sliding_window import COMMON, VOCAB, windowed_architectures

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 24
ARCHITECTURES = windowed_architectures(WINDOW)
SKIP_WARNING = "shared-prefix reuse skips"


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def model(request):
    """A seeded random fp32 model of the architecture, in eval mode."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(request.param, **COMMON, **ARCHITECTURES[request.param])
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, VOCAB) for _ in range(n)]


def _requests(shared: int, seed: int, rests: tuple[int, ...]) -> list[TokenizedRequest]:
    """Contexts of a ``shared``-token head plus ``rests[i]`` own tokens, each with two or three continuations of
    1 to 3 tokens (so each context is one packed sequence), drawn with a fixed seed."""
    rng = random.Random(seed)
    head = _ids(rng, shared)
    out = []
    for rest in rests:
        context = tuple(head + _ids(rng, rest))
        for _ in range(rng.randint(2, 3)):
            out.append(TokenizedRequest(context, tuple(_ids(rng, rng.randint(1, 3)))))
    return out


def _assert_matches(responses, model, requests):
    for index, (response, request) in enumerate(zip(responses, requests, strict=True)):
        ll, greedy = naive_loglikelihood(model, request)
        assert abs(response.loglikelihood - ll) <= 1e-4, (index, response.loglikelihood, ll)
        assert response.greedy == greedy, index


def test_a_prefix_shorter_than_the_window_is_reused_where_sequences_fit(model, caplog):
    requests = _requests(12, 1, (1, 2, 3, 4))  # at most 12 + 4 + 3 tokens: every position below 24
    assert max(_last_position(g) for g in pack_groups(requests, 2048, True)) < WINDOW
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        backend = HFBackend(model, 2048, batch_size=4, progress=False, prefix_min_tokens=8)
        responses = backend.loglikelihood(requests)
    assert SKIP_WARNING not in caplog.text and backend.prefix_fallback is None and backend.share_context
    assert backend.prefix_tokens_forwarded == 12 and backend.prefix_tokens_reused == 4 * 12
    _assert_matches(responses, model, requests)


def test_a_prefix_longer_than_the_window_is_not_reused(model, caplog):
    requests = _requests(30, 2, (2, 3, 5))
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        backend = HFBackend(model, 2048, batch_size=4, progress=False, prefix_min_tokens=8)
        responses = backend.loglikelihood(requests)
    assert f"{SKIP_WARNING} 3 of 3 sequences: the model has windowed attention layers (window {WINDOW} tokens)" \
        in caplog.text
    assert backend.prefix_tokens_reused == 0 and backend.forward_tokens == backend.naive_tokens
    _assert_matches(responses, model, requests)


def test_sequences_past_the_window_forward_whole_while_the_others_reuse(model, caplog):
    # a 16-token head: own tokens 1..3 keep the last position below 24 with 3-token continuations at most; 9 and
    # 12 own tokens reach past it (those two still share the head, but are scored without reuse)
    requests = _requests(16, 3, (1, 2, 3, 9, 12))
    groups = pack_groups(requests, 2048, True)
    inside = [g for g in groups if _last_position(g) < WINDOW]
    assert len(inside) == 3
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        backend = HFBackend(model, 2048, batch_size=2, progress=False, prefix_min_tokens=8)
        responses = backend.loglikelihood(requests)
    assert f"{SKIP_WARNING} 2 of 5 sequences" in caplog.text
    assert backend.prefix_tokens_forwarded == 16 and backend.prefix_tokens_reused == 3 * 16
    assert backend.forward_tokens == backend.naive_tokens - 3 * 16 + 16
    _assert_matches(responses, model, requests)
    one = HFBackend(model, 2048, batch_size=1, progress=False, prefix_min_tokens=8).loglikelihood(requests)
    assert [(r.loglikelihood, r.greedy) for r in one] == pytest.approx(
        [(r.loglikelihood, r.greedy) for r in responses], abs=1e-5)


def test_the_last_position_of_a_packed_group():
    requests = [TokenizedRequest((1, 2, 3, 4), (5,)), TokenizedRequest((1, 2, 3, 4), (6, 7, 8))]
    (group,) = pack_groups(requests, 2048, True)
    # context positions 0..3, then the 3-token continuation's first two inputs at 4 and 5
    assert _last_position(group) == 5
    assert _last_position(pack_groups(requests[:1], 2048, True)[0]) == 3
