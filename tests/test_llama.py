"""A tiny random Llama-architecture model (grouped-query attention, rotary positions, tied embeddings) through the
backend: packed shared-context masks, position ids and the body/head split against the naive reference, and
the fallback to unshared scoring when an attention implementation cannot take a custom 4-D mask."""

from __future__ import annotations

import logging

import pytest

from evalkit.data.documents import load_docs, subset_ids
from evalkit.scoring.hf_backend import HFBackend
from evalkit.tasks.registry import load_registry
from evalkit.scoring.tokenization import tokenize_requests
from evalkit.types import LoglikelihoodRequest

from .conftest import make_tiny_llama
from .reference import naive_loglikelihood

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = ("lambada_openai", "sciq", "piqa", "arc_challenge", "triviaqa")


@pytest.fixture(scope="module")
def llama():
    return make_tiny_llama(0)


@pytest.fixture(scope="module")
def requests(tokenizer, data_dir):
    """Requests of 2 seeded documents per card task (about 40), tokenized with the 20B tokenizer."""
    registry = load_registry()
    raw = []
    for name in TASKS:
        task = registry.get(name)
        docs = load_docs(task, data_dir)
        for doc_id in subset_ids(len(docs), 2, 11):
            for k, cont in enumerate(task.continuations(docs[doc_id])):
                raw.append(LoglikelihoodRequest(name, doc_id, k, task.context(docs[doc_id]), cont))
    return tokenize_requests(raw, tokenizer.encode_batch, tokenizer.eot_id, 2048)


@pytest.fixture(scope="module")
def naive(llama, requests):
    return [naive_loglikelihood(llama, r) for r in requests]


def test_the_tiny_llama_is_the_architecture_it_claims(llama):
    config = llama.config
    assert config.model_type == "llama"
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)  # grouped-query attention
    assert llama.get_output_embeddings().weight is llama.get_input_embeddings().weight  # tied embeddings


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("share_context", [True, False])
def test_every_llama_request_matches_the_naive_reference(llama, requests, naive, batch_size, share_context):
    backend = HFBackend(llama, 2048, batch_size=batch_size, share_context=share_context, progress=False)
    responses = backend.loglikelihood(requests)
    assert backend.body is not None  # the output layer was split off: only scored positions went through it
    assert backend.share_context == share_context and backend.mask_fallback is None  # the 4-D mask is honoured
    for response, (ll, greedy) in zip(responses, naive):
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.greedy == greedy


def test_packing_really_shares_contexts_for_llama(llama, requests):
    shared = HFBackend(llama, 2048, batch_size=1, progress=False)
    shared.loglikelihood(requests)
    assert shared.forward_calls == 10  # one packed sequence per document (2 per task), the probe not counted


def _ignore_4d_masks(module, args, kwargs):
    """An attention implementation that silently drops a custom 4-D mask (plain causal attention instead)."""
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 4:
        kwargs["attention_mask"] = None
    return args, kwargs


def _reject_4d_masks(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 4:
        raise ValueError("custom 4-D attention masks are not supported by this attention implementation")
    return args, kwargs


@pytest.mark.parametrize("hook, reason", [
    (_ignore_4d_masks, "packed continuations differ from unpacked ones"),
    (_reject_4d_masks, "the model rejected a 4-D attention mask (ValueError: custom 4-D attention masks"),
])
def test_a_model_without_custom_masks_falls_back_to_unshared_scoring(llama, requests, naive, hook, reason, caplog):
    handle = llama.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        backend = HFBackend(llama, 2048, batch_size=1, progress=False)
        with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
            responses = backend.loglikelihood(requests)
    finally:
        handle.remove()
    assert backend.share_context is False
    assert backend.mask_fallback.startswith(reason)
    assert "shared-context scoring is off" in caplog.text
    assert backend.forward_calls == len({(r.context_ids, r.continuation_ids) for r in requests})
    for response, (ll, greedy) in zip(responses, naive):  # never a wrong number: every request still exact
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.greedy == greedy
