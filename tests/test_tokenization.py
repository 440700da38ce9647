"""Tokenization rules of SPEC.md: separate vs joint encoding, empty contexts, left truncation."""

from __future__ import annotations

import pytest

from evalkit.data.documents import load_docs
from evalkit.tasks.registry import load_registry
from evalkit.scoring.tokenization import encode_pairs, split_trailing_whitespace, tokenize_requests, truncate_left
from evalkit.types import EvalkitError, LoglikelihoodRequest


def test_known_ids_of_the_20b_tokenizer(tokenizer):
    # Ids from shared/data/tokenizers/PROVENANCE.md (verified there with tokenizers 0.23.3).
    text = "Hello world, this is GPT-NeoX-20B.  Spaces   here.\n\nNew para"
    assert tokenizer.encode_batch([text])[0] == [
        12092, 1533, 13, 436, 310, 443, 5736, 14, 6560, 80, 57, 14, 938, 35, 15, 50276, 6104, 1951, 50275, 1568,
        15, 187, 187, 4257, 5586,
    ]
    assert tokenizer.eot_id == 0 and tokenizer.vocab_size == 50277


def test_separate_and_joint_agree_on_every_request_of_the_five_tasks(tokenizer, data_dir):
    registry = load_registry()
    pairs = []
    for name in ("lambada_openai", "sciq", "piqa", "arc_challenge", "triviaqa"):
        task = registry.get(name)
        for doc in load_docs(task, data_dir):
            context = task.context(doc)
            pairs.extend((context, cont) for cont in task.continuations(doc))
    assert len(pairs) == 133_662
    assert not any(c.endswith((" ", "\n")) for c, _ in pairs)  # so joint encoding moves no whitespace
    separate = encode_pairs(pairs, tokenizer.encode_batch, tokenizer.eot_id, "separate")
    joint = encode_pairs(pairs, tokenizer.encode_batch, tokenizer.eot_id, "joint")
    differing = [i for i, (a, b) in enumerate(zip(separate, joint)) if a != b]
    assert differing == []
    assert all(cont for _, cont in separate)


def test_joint_moves_trailing_whitespace_onto_the_continuation():
    assert split_trailing_whitespace("Answer: ", "Paris") == ("Answer:", " Paris")
    assert split_trailing_whitespace("Answer:\n\n", "x") == ("Answer:", "\n\nx")
    assert split_trailing_whitespace("Answer:", " x") == ("Answer:", " x")


def test_joint_falls_back_when_a_token_spans_the_join(tokenizer):
    # "Answer" is one token, so jointly encoding "Ans" + "wer" leaves nothing after the context's length.
    ctx_ids = tokenizer.encode_batch(["Ans"])[0]
    whole = tokenizer.encode_batch(["Answer"])[0]
    assert len(whole) <= len(ctx_ids)
    [(context_ids, cont_ids)] = encode_pairs([("Ans", "wer")], tokenizer.encode_batch, tokenizer.eot_id, "joint")
    assert cont_ids == tokenizer.encode_batch(["wer"])[0] and cont_ids
    assert context_ids == ctx_ids  # not whole[:len(ctx_ids)], which would already hold "wer"


def test_empty_context_becomes_end_of_text(tokenizer):
    [(context_ids, cont_ids)] = encode_pairs([("", " hello")], tokenizer.encode_batch, tokenizer.eot_id)
    assert context_ids == [0]
    assert cont_ids == tokenizer.encode_batch([" hello"])[0]


def test_no_bos_is_added(tokenizer):
    [(context_ids, _)] = encode_pairs([("Question:", " x")], tokenizer.encode_batch, tokenizer.eot_id)
    assert context_ids == tokenizer.encode_batch(["Question:"])[0]
    assert context_ids[0] != tokenizer.eot_id


def test_left_truncation_keeps_the_whole_continuation():
    request = truncate_left(list(range(10, 20)), [7, 8, 9], max_length=8)
    # 13 tokens, window 8 reads 9 tokens (the last is only predicted): drop 4 from the left.
    assert request.context_ids == (14, 15, 16, 17, 18, 19)
    assert request.continuation_ids == (7, 8, 9)
    assert request.truncated_tokens == 4
    assert truncate_left([1, 2], [3], max_length=8).truncated_tokens == 0


def test_continuation_longer_than_window_is_an_error_naming_the_document(tokenizer):
    requests = [LoglikelihoodRequest("piqa", 17, 1, "Question: x\nAnswer:", " word" * 20)]
    with pytest.raises(EvalkitError, match=r"task piqa doc 17 choice 1: continuation of 20 tokens"):
        tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, max_length=10)


def test_tokenize_requests_counts_truncation(tokenizer):
    requests = [
        LoglikelihoodRequest("t", 0, 0, "one two three four five six seven eight", " nine"),
        LoglikelihoodRequest("t", 1, 0, "one", " two"),
    ]
    out = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, max_length=4)
    assert [r.truncated_tokens for r in out] == [4, 0]
    assert len(out[0].context_ids) + len(out[0].continuation_ids) == 5


def test_unknown_mode_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="unknown tokenization mode"):
        encode_pairs([("a", " b")], tokenizer.encode_batch, 0, "fancy")
