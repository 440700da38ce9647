"""The HF backend against the naive reference, across batch sizes, packing and truncation."""

from __future__ import annotations

import math

import pytest
import torch

from evalkit.data.documents import load_docs, subset_ids
from evalkit.scoring.hf_backend import HFBackend
from evalkit.stats.metrics import doc_metrics
from evalkit.tasks.registry import load_registry
from evalkit.scoring.tokenization import tokenize_requests
from evalkit.types import LoglikelihoodRequest

from .conftest import make_tiny_model
from .reference import naive_loglikelihood

TASKS = ("lambada_openai", "sciq", "piqa", "arc_challenge", "triviaqa")


@pytest.fixture(scope="module")
def real_requests(tokenizer, data_dir):
    """Requests of 3 seeded documents per task (about 60 requests), tokenized for a 2048 window."""
    registry = load_registry()
    requests = []
    for name in TASKS:
        task = registry.get(name)
        docs = load_docs(task, data_dir)
        for doc_id in subset_ids(len(docs), 3, 7):
            doc = docs[doc_id]
            for k, cont in enumerate(task.continuations(doc)):
                requests.append(LoglikelihoodRequest(name, doc_id, k, task.context(doc), cont))
    return tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048)


@pytest.fixture(scope="module")
def naive_answers(tiny_model, real_requests):
    return [naive_loglikelihood(tiny_model, r) for r in real_requests]


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("share_context", [True, False])
def test_every_request_matches_the_naive_reference(tiny_model, real_requests, naive_answers, batch_size,
                                                   share_context):
    backend = HFBackend(tiny_model, 2048, batch_size=batch_size, share_context=share_context, progress=False)
    responses = backend.loglikelihood(real_requests)
    assert len(responses) == len(real_requests)
    for request, response, (ll, greedy) in zip(real_requests, responses, naive_answers):
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.greedy == greedy
        assert response.continuation_tokens == len(request.continuation_ids)
    assert backend.body is not None  # the output layer really was applied to scored positions only


def test_shared_context_uses_fewer_forward_tokens(tiny_model, real_requests):
    shared = HFBackend(tiny_model, 2048, batch_size=1, share_context=True, progress=False)
    alone = HFBackend(tiny_model, 2048, batch_size=1, share_context=False, progress=False)
    shared.loglikelihood(real_requests)
    alone.loglikelihood(real_requests)
    # one forward per document (15 documents) instead of one per request
    assert shared.forward_calls == 15
    assert alone.forward_calls == len({(r.context_ids, r.continuation_ids) for r in real_requests})


def test_truncated_requests_match_the_naive_reference(tiny_model, real_requests):
    short = tokenize_requests(
        [LoglikelihoodRequest("t", i, 0, "word " * (20 + i), " answer is here") for i in range(5)],
        lambda texts: [[int(x) for x in torch.randint(5, 50000, (len(t.split()),))] for t in texts], 0, 16,
    )
    assert all(r.truncated_tokens > 0 for r in short)
    backend = HFBackend(tiny_model, 16, batch_size=4, progress=False)
    for request, response in zip(short, backend.loglikelihood(short)):
        assert len(request.context_ids) + len(request.continuation_ids) - 1 == 16
        ll, greedy = naive_loglikelihood(tiny_model, request)
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.truncated_tokens == request.truncated_tokens


def test_groups_split_to_fit_the_window(tiny_model):
    from evalkit.types import TokenizedRequest

    context = tuple(range(100, 110))
    requests = [TokenizedRequest(context, tuple(range(200 + 4 * k, 204 + 4 * k))) for k in range(6)]
    backend = HFBackend(tiny_model, 16, batch_size=1, progress=False)
    responses = backend.loglikelihood(requests)
    assert backend.forward_calls == 3  # 10 context tokens + 3 per continuation: two continuations a sequence
    for request, response in zip(requests, responses):
        assert response.loglikelihood == pytest.approx(naive_loglikelihood(tiny_model, request)[0], abs=1e-4)


THE = 253  # id of " the" in the 20B tokenizer


@pytest.fixture(scope="module")
def always_the_model():
    """A model that predicts token 253 (" the") everywhere with logit 5, every other token with logit 0.

    The final layer norm outputs a constant vector b (weight 0, bias b), and the output layer has one
    non-zero row, b * 5 / |b|^2, so the logits do not depend on the input.
    """
    model = make_tiny_model(3)
    with torch.no_grad():
        norm = model.gpt_neox.final_layer_norm
        norm.weight.zero_()
        norm.bias.copy_(torch.linspace(-1.0, 1.0, norm.bias.shape[0]))
        head = model.get_output_embeddings().weight
        head.zero_()
        head[THE] = norm.bias * 5.0 / norm.bias.pow(2).sum()
    return model


def test_greedy_known_by_construction(always_the_model, tokenizer):
    vocab = 50304
    log_z = math.log(math.exp(5.0) + vocab - 1)
    ll_the, ll_other = 5.0 - log_z, -log_z
    texts = [" the", " the the", " cat", " the cat"]
    ids = tokenizer.encode_batch(texts)
    assert ids[0] == [THE] and ids[1] == [THE, THE] and ids[2] != [THE]
    requests = tokenize_requests(
        [LoglikelihoodRequest("t", 0, k, "Question: what?\nAnswer:", t) for k, t in enumerate(texts)],
        tokenizer.encode_batch, tokenizer.eot_id, 2048,
    )
    responses = HFBackend(always_the_model, 2048, batch_size=2, progress=False).loglikelihood(requests)
    assert [r.greedy for r in responses] == [True, True, False, False]
    expected = [ll_the, 2 * ll_the, len(ids[2]) * ll_other, ll_the + ll_other * (len(ids[3]) - 1)]
    assert [r.loglikelihood for r in responses] == pytest.approx(expected, abs=1e-4)

    lls = [r.loglikelihood for r in responses]
    greedy = [r.greedy for r in responses]
    # LAMBADA-style target: greedy match of " the the" counts, " cat" does not.
    assert doc_metrics("target", [lls[1]], [greedy[1]], [texts[1]], 0)["acc"] == 1.0
    assert doc_metrics("target", [lls[2]], [greedy[2]], [texts[2]], 0)["acc"] == 0.0
    # TriviaQA: any greedy alias wins; no greedy alias, no point, whatever the log-likelihoods.
    assert doc_metrics("any_greedy", lls[2:], greedy[2:], texts[2:], 0)["acc"] == 0.0
    assert doc_metrics("any_greedy", lls, greedy, texts, 0)["acc"] == 1.0
    # Multiple choice: " the" (index 0) has the highest log-likelihood (-5.83); per character " the the"
    # wins: 2 * -5.83 / 7 = -1.67 beats -5.83 / 3 = -1.94, (-5.83 - 10.83) / 7 = -2.38 and 1 * -10.83 / 3.
    assert doc_metrics("multiple_choice", lls, greedy, texts, 1) == {"acc": 0.0, "acc_norm": 1.0}
    assert doc_metrics("multiple_choice", lls, greedy, texts, 0) == {"acc": 1.0, "acc_norm": 0.0}
