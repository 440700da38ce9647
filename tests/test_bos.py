"""The BOS rule: a tokenizer whose own configuration adds a BOS gets it before every context (lm-eval 0.4), recorded
in the results; GPT-NeoX never gets one, whatever its tokenizer says."""

from __future__ import annotations

import json

import pytest

from evalkit.models.tokenizer_loading import added_prefix, load_tokenizer
from evalkit.scoring.tokenization import context_prefix, tokenize_requests
from evalkit.types import LoglikelihoodRequest, TokenizedRequest

from .conftest import TOKENIZER_JSON, make_tiny_llama, make_tiny_model
from .reference import naive_loglikelihood

pytestmark = pytest.mark.usefixtures("one_thread")

BOS = 1  # "<|padding|>" in the 20B tokenizer, standing in for a Llama-style BOS


def _bos_tokenizer(folder):
    """The 20B tokenizer saved with ``add_bos_token=True`` and ``<|padding|>`` as its BOS token."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), bos_token="<|padding|>", eos_token="<|endoftext|>",
                            add_bos_token=True).save_pretrained(folder)
    return folder


def test_the_prefix_is_what_the_tokenizer_adds_before_a_text():
    assert added_prefix([1, 66], [66]) == (1,)
    assert added_prefix([66], [66]) == ()
    assert added_prefix([66, 0], [66]) == ()  # an appended EOS is not a prefix
    assert added_prefix([5, 7, 66, 67], [66, 67]) == (5, 7)


def test_gpt_neox_never_gets_a_bos_and_other_models_follow_their_tokenizer():
    assert context_prefix("gpt_neox", (BOS,)) == ()
    assert context_prefix("llama", (BOS,)) == (BOS,)
    assert context_prefix("llama", ()) == ()


def test_tokenizer_configurations_are_read_as_they_are(tmp_path, tokenizer):
    assert tokenizer.prefix_ids == ()  # the raw 20B tokenizer.json adds nothing
    assert load_tokenizer(str(_bos_tokenizer(tmp_path / "tok")), None).prefix_ids == (BOS,)


@pytest.mark.parametrize("mode", ["separate", "joint"])
def test_every_context_starts_with_the_prefix_and_an_empty_one_is_the_prefix_alone(tokenizer, mode):
    requests = [LoglikelihoodRequest("t", 0, 0, "Question: why?\nAnswer:", " because"),
                LoglikelihoodRequest("t", 1, 0, "", "Hello")]
    plain = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048, mode)
    prefixed = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048, mode, (BOS,))
    assert prefixed[0].context_ids == (BOS, *plain[0].context_ids)
    assert prefixed[0].continuation_ids == plain[0].continuation_ids
    assert plain[1].context_ids == (tokenizer.eot_id,) and prefixed[1].context_ids == (BOS,)


def test_left_truncation_drops_the_prefix_first_like_any_context_token(tokenizer):
    request = [LoglikelihoodRequest("t", 0, 0, "one two three four five six", " seven")]
    [cut] = tokenize_requests(request, tokenizer.encode_batch, tokenizer.eot_id, 4, prefix_ids=(BOS,))
    assert BOS not in cut.context_ids and len(cut.context_ids) + len(cut.continuation_ids) == 5


@pytest.mark.parametrize("architecture, expected_prefix", [("llama", [BOS]), ("gpt_neox", [])])
def test_a_run_follows_the_rule_and_records_it(tmp_path, data_dir, tokenizer, architecture, expected_prefix):
    from evalkit.cli.main import main

    folder = tmp_path / "model"
    model = make_tiny_llama(4) if architecture == "llama" else make_tiny_model(4)
    model.save_pretrained(folder)
    _bos_tokenizer(folder)
    assert main(["run", "--model", str(folder), "--tasks", "piqa", "--data-dir", str(data_dir), "--limit", "3",
                 "--bootstrap-iters", "0", "--no-progress", "--log-samples", "--output-dir", str(tmp_path)]) == 0
    [results_path] = (tmp_path / "results").glob("*/*[0-9]Z.json")
    results = json.loads(results_path.read_text())
    assert results["tokenizer"]["adds_prefix_ids"] == [BOS]
    assert results["tokenizer"]["context_prefix_ids"] == expected_prefix
    rows = [json.loads(line) for line in results_path.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        for continuation, ll in zip(row["continuations"], row["loglikelihoods"]):
            [ctx_ids, cont_ids] = tokenizer.encode_batch([row["context"], continuation])
            request = TokenizedRequest((*expected_prefix, *ctx_ids), tuple(cont_ids))
            assert ll == pytest.approx(naive_loglikelihood(model, request)[0], abs=1e-4)
