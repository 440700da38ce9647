"""Properties over real documents (hypothesis): tokenization never loses the continuation, and neither the order
of requests nor the batch size changes any answer."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.scoring.hf_backend import HFBackend
from evalkit.scoring.tokenization import encode_pairs, tokenize_requests, truncate_left
from evalkit.types import LoglikelihoodRequest
from tests.conftest import DATA_DIR, TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")


def _texts() -> list[str]:
    """Real passages of varied shape: LAMBADA passages, PIQA goals and solutions, SciQ supports, ARC questions."""
    def rows(path, n):
        with open(DATA_DIR / path, encoding="utf-8") as handle:
            return [json.loads(next(handle)) for _ in range(n)]

    texts = [d["text"] for d in rows("lambada_openai/test.jsonl", 8)]
    texts += [d[k] for d in rows("piqa/validation.jsonl", 4) for k in ("goal", "sol1")]
    texts += [d["support"] for d in rows("sciq/test.jsonl", 4) if d["support"]]
    texts += [f"Question: {d['question']}\nAnswer: {d['choices']['text'][0]}"
              for d in rows("arc_challenge/test.jsonl", 4)]
    return texts


TEXTS = _texts()


@pytest.fixture(scope="module")
def raw_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER_JSON))


@st.composite
def splits(draw):
    """(context, continuation): a real text cut at any character, both sides non-empty."""
    text = draw(st.sampled_from(TEXTS))
    cut = draw(st.integers(1, len(text) - 1))
    return text[:cut], text[cut:]


@settings(max_examples=150, deadline=None)
@given(pair=splits(), mode=st.sampled_from(["separate", "joint"]), window=st.integers(1, 96))
def test_a_split_of_a_real_document_never_gives_an_empty_continuation(tokenizer, raw_tokenizer, pair, mode, window):
    context, continuation = pair
    [(ctx_ids, cont_ids)] = encode_pairs([pair], tokenizer.encode_batch, tokenizer.eot_id, mode)
    assert cont_ids, "empty continuation"
    assert ctx_ids
    # Nothing is lost or repeated at the join (the tokenizer normalizes to NFC).
    decoded = raw_tokenizer.decode(ctx_ids) + raw_tokenizer.decode(cont_ids)
    assert decoded == unicodedata.normalize("NFC", context) + unicodedata.normalize("NFC", continuation)
    if mode == "separate":
        assert raw_tokenizer.decode(cont_ids) == unicodedata.normalize("NFC", continuation)
    else:  # the continuation scored is exactly its text (after the context's trailing whitespace moved onto it)
        moved = context[len(context.rstrip()):] + continuation
        assert raw_tokenizer.decode(cont_ids) == unicodedata.normalize("NFC", moved)
    if len(cont_ids) <= window:
        fitted = truncate_left(ctx_ids, cont_ids, window)
        assert fitted.continuation_ids == tuple(cont_ids)
        assert fitted.context_ids == tuple(ctx_ids[fitted.truncated_tokens:]) and fitted.context_ids
        assert len(fitted.context_ids) + len(fitted.continuation_ids) - 1 <= window
        assert fitted.truncated_tokens == max(0, len(ctx_ids) + len(cont_ids) - window - 1)


def test_a_token_spanning_the_join_keeps_the_context_as_it_was(tokenizer):
    """'Ans' + 'wer' encodes jointly to one token 'Answer' (32869): the context must stay 'Ans' (1145, 84)."""
    joint = encode_pairs([("Question: Who?\nAns", "wer")], tokenizer.encode_batch, tokenizer.eot_id, "joint")
    assert joint == [([23433, 27, 8452, 32, 187, 1145, 84], [8358])]


def _requests(tokenizer):
    """Eleven requests from six real documents: shared contexts, one- and many-token continuations."""
    def rows(path, n):
        with open(DATA_DIR / path, encoding="utf-8") as handle:
            return [json.loads(next(handle)) for _ in range(n)]

    raw = []
    for i, d in enumerate(rows("piqa/validation.jsonl", 2)):
        raw += [LoglikelihoodRequest("piqa", i, k, f"Question: {d['goal']}\nAnswer:", " " + d[s])
                for k, s in enumerate(("sol1", "sol2"))]
    for i, d in enumerate(rows("arc_challenge/test.jsonl", 1)):
        raw += [LoglikelihoodRequest("arc", i, k, f"Question: {d['question']}\nAnswer:", " " + t)
                for k, t in enumerate(d["choices"]["text"])]
    for i, d in enumerate(rows("lambada_openai/test.jsonl", 3)):
        context, word = d["text"].rsplit(" ", 1)
        raw.append(LoglikelihoodRequest("lambada", i, 0, context, " " + word))
    return tokenize_requests(raw, tokenizer.encode_batch, tokenizer.eot_id, 2048)


@pytest.fixture(scope="module")
def requests_and_reference(tiny_model, tokenizer):
    requests = _requests(tokenizer)
    reference = HFBackend(tiny_model, 2048, batch_size=1, share_context=False, progress=False).loglikelihood(requests)
    return requests, reference


@settings(max_examples=15, deadline=None)
@given(data=st.data(), batch_size=st.integers(1, 8), share_context=st.booleans(),
       max_batch_tokens=st.sampled_from([None, 200, 600]))
def test_batch_order_and_batch_size_never_change_a_result(tiny_model, requests_and_reference, data, batch_size,
                                                         share_context, max_batch_tokens):
    requests, reference = requests_and_reference
    order = data.draw(st.permutations(range(len(requests))))
    backend = HFBackend(tiny_model, 2048, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                        share_context=share_context, progress=False)
    got = backend.loglikelihood([requests[i] for i in order])
    for response, i in zip(got, order):
        expected = reference[i]
        assert response.greedy == expected.greedy
        assert response.continuation_tokens == expected.continuation_tokens
        assert response.loglikelihood == pytest.approx(expected.loglikelihood, abs=1e-4, rel=0)
