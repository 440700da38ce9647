"""Greedy generation on a cached shared prompt prefix (few-shot examples forwarded once) against the slow naive
reference on tiny random GPT-NeoX, Llama and Gemma 3 (sliding-window) models: several stop strings (one-token,
across token boundaries, three-token, two in one list), end-of-text and length stops, any batch size; the prefix
counters; windowed models reuse only where a request stays within the window."""

from __future__ import annotations

import logging

import pytest

from evalkit.scoring.generation import HFGenerator
from evalkit.types import TokenizedGeneration

from .conftest import make_tiny_llama, make_tiny_model
from .test_generation_backend import CONTEXTS, TINY_GEMMA3, free_tokens, naive_generate

pytestmark = pytest.mark.usefixtures("one_thread")

FEWSHOT = ("Question: What is the boiling point of water at sea level?\nAnswer: 100 degrees Celsius.\n\n"
           "Question: Which gas do plants take in?\nAnswer: Carbon dioxide.\n\n")
"""A shared few-shot block put before every context (about 40 tokens with the GPT-NeoX tokenizer)."""


def _model(name: str):
    from evalkit.models.hf_loading import load_model

    if name == "neox":
        return make_tiny_model(0)
    if name == "llama":
        return make_tiny_llama(0)
    window = 6 if name == "gemma3" else 160
    config = dict(TINY_GEMMA3, sliding_window=window)
    return load_model({"kind": "random", "alias": f"tiny-{name}", "config": config}, "float32", "cpu", 0)[0]


@pytest.fixture(scope="module", params=["neox", "llama", "gemma3", "gemma3_wide"])
def setup(request, tokenizer):
    """(name, model, requests with the shared few-shot block, eot ids, naive answers)."""
    model = _model(request.param)
    contexts = [tuple(ids) for ids in tokenizer.encode_batch([FEWSHOT + c for c in CONTEXTS[:5]])]
    requests = []
    for ctx in contexts:
        g = free_tokens(model, ctx, 12)
        pieces = [tokenizer.decode(g[:k]) for k in range(13)]
        across = pieces[5][len(pieces[4]) - 2 : len(pieces[4]) + 2]
        for until, budget in [((), 10), ((tokenizer.decode([g[3]]),), 12), ((across,), 12),
                              ((tokenizer.decode(g[5:8]),), 12), ((pieces[9][-3:], pieces[2][-2:]), 12)]:
            requests.append(TokenizedGeneration(ctx, until, budget))
    eot_ids = (tokenizer.eot_id, free_tokens(model, contexts[1], 12)[6])  # a forced end-of-text as well
    naive = [naive_generate(model, r, eot_ids, tokenizer.decode) for r in requests]
    return request.param, model, requests, eot_ids, naive


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_generation_on_a_cached_prefix_equals_the_naive_reference(setup, tokenizer, batch_size, caplog):
    name, model, requests, eot_ids, naive = setup
    generator = HFGenerator(model, 2048, batch_size, eot_ids, tokenizer.decode, progress=False, prefix_cache=True,
                            prefix_min_tokens=16)
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.generation"):
        answers = generator.generate(requests)
    assert answers == naive
    assert {a.stop_reason for a in answers} >= {"stop", "length"}
    if name == "gemma3":  # window 6: every request reaches past it
        assert "shared-prefix reuse skips 25 of 25 generation requests" in caplog.text
        assert generator.prefix_tokens_reused == 0
        return
    assert generator.prefix_cache and generator.prefix_fallback is None
    # every distinct request reads at least the 40-odd tokens of the block from a cache, at most its context but
    # the last token; the block is forwarded at least once, each context's head at most once
    heads = sum(len(r.context_ids) - 1 for r in requests[::5])
    assert 40 <= generator.prefix_tokens_forwarded <= heads
    assert 38 * generator.requests_generated <= generator.prefix_tokens_reused <= 5 * heads
    plain = HFGenerator(model, 2048, batch_size, eot_ids, tokenizer.decode, progress=False)
    assert plain.generate(requests) == answers
    assert generator.forward_tokens == plain.forward_tokens - generator.prefix_tokens_reused \
        + generator.prefix_tokens_forwarded


def test_a_model_that_rejects_the_prefix_masks_generates_without_reuse(tokenizer, caplog):
    model = make_tiny_llama(0)
    model.config._attn_implementation = "flash_attention_2"  # not installed here: any forward with it fails
    requests = [TokenizedGeneration(tuple(ids), ("\n",), 4)
                for ids in tokenizer.encode_batch([FEWSHOT + c for c in CONTEXTS[:3]])]
    generator = HFGenerator(model, 2048, 4, tokenizer.eot_id, tokenizer.decode, progress=False, prefix_cache=True)
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.generation"):
        try:
            generator.generate(requests)
        except Exception:  # noqa: BLE001 - plain generation fails as well with this implementation
            pass
        finally:
            model.config._attn_implementation = "sdpa"
    assert "shared-prefix reuse in generation is off: the model rejected a cached prefix" in caplog.text
    assert generator.prefix_cache is False and generator.prefix_tokens_reused == 0
