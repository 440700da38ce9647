"""Out-of-memory back-off: a fault injected in the forward pass halves the batch until it fits."""

from __future__ import annotations

import pytest
import torch

from evalkit.scoring.hf_backend import HFBackend
from evalkit.scoring.tokenization import tokenize_requests
from evalkit.types import EvalkitError, LoglikelihoodRequest
from tests.conftest import TOKENIZER_JSON, make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXTS = ["Question: What melts ice?\nAnswer:", "The capital of France is", "Two plus two equals",
            "Question: Which planet is red?\nAnswer:", "She opened the door and", "Rain falls from",
            "The opposite of hot is", "A baby dog is called a"]


@pytest.fixture(scope="module")
def model():
    """A private tiny model: the tests hook its forward pass."""
    return make_tiny_model(0)


@pytest.fixture(scope="module")
def requests(tokenizer):
    raw = [LoglikelihoodRequest("t", i, k, c, cont) for i, c in enumerate(CONTEXTS)
           for k, cont in enumerate([" heat", " a puppy"])]
    return tokenize_requests(raw, tokenizer.encode_batch, tokenizer.eot_id, 2048)


class FakeOOM(Exception):
    pass


def fail_over(model, rows: int, exc: type[BaseException]):
    """Raise ``exc`` in the model body's forward pass when a batch has more than ``rows`` sequences."""

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[0] > rows:
            raise exc(f"CUDA out of memory (injected, batch of {kwargs['input_ids'].shape[0]})")

    return model.gpt_neox.register_forward_pre_hook(hook, with_kwargs=True)


def test_cuda_oom_halves_the_batch_until_it_fits_and_keeps_every_result(model, requests):
    reference = HFBackend(model, 2048, batch_size=2, progress=False).loglikelihood(requests)
    backend = HFBackend(model, 2048, batch_size=8, progress=False)
    handle = fail_over(model, 2, torch.cuda.OutOfMemoryError)
    try:
        got = backend.loglikelihood(requests)
    finally:
        handle.remove()
    assert (backend.batch_size, backend.oom_retries) == (2, 2)
    assert backend.forward_calls == 2 + 4  # the failed tries at 8 and 4, then four batches of 2
    assert got == reference  # the same batches as a run asked for 2 at once: bit-identical


def test_the_out_of_memory_test_is_injectable_and_other_errors_pass_through(model, requests):
    backend = HFBackend(model, 2048, batch_size=8, progress=False, is_oom=lambda e: isinstance(e, FakeOOM))
    handle = fail_over(model, 4, FakeOOM)
    try:
        got = backend.loglikelihood(requests)
    finally:
        handle.remove()
    assert (backend.batch_size, backend.oom_retries) == (4, 1)
    expected = HFBackend(model, 2048, batch_size=4, progress=False).loglikelihood(requests)
    assert got == expected

    strict = HFBackend(model, 2048, batch_size=8, progress=False, is_oom=lambda e: isinstance(e, FakeOOM))
    handle = fail_over(model, 4, ValueError)
    try:
        with pytest.raises(ValueError, match=r"CUDA out of memory \(injected, batch of 8\)"):
            strict.loglikelihood(requests)
    finally:
        handle.remove()
    assert (strict.batch_size, strict.oom_retries) == (8, 0)


def test_out_of_memory_with_one_sequence_is_a_clear_error(model, requests):
    backend = HFBackend(model, 2048, batch_size=4, progress=False)
    handle = fail_over(model, 0, torch.cuda.OutOfMemoryError)
    try:
        with pytest.raises(EvalkitError) as err:
            backend.loglikelihood(requests[:4])  # two documents: two packed sequences, then one
    finally:
        handle.remove()
    # the longer packed sequence goes first: its context, then " heat" (1 token) and " a puppy" (2 tokens) less 1
    length = max(len(r.context_ids) for r in requests[:4]) + 1
    assert str(err.value) == (
        f"out of memory scoring one packed sequence of {length} tokens; lower --max-length or "
        f"--max-batch-tokens, use --no-shared-context, or spread the model with --parallelize"
    )
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)
    assert (backend.batch_size, backend.oom_retries) == (1, 1)


def test_the_final_batch_size_is_recorded_in_the_results(data_dir, tmp_path, monkeypatch):
    from evalkit.scoring import hf_backend
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    score = hf_backend.HFBackend.score_groups

    def tight_memory(self, groups):
        if len(groups) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return score(self, groups)

    monkeypatch.setattr(hf_backend.HFBackend, "score_groups", tight_memory)
    config = RunConfig(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(data_dir), limit=12, batch_size=8, bootstrap_iters=0,
                       output_dir=str(tmp_path), use_cache=False)
    out = run(config, progress=False)
    timing = out.results["timing"]
    assert (timing["batch_size"], timing["batch_size_final"], timing["oom_retries"]) == (8, 2, 2)
    assert timing["forward_calls"] == 6  # 12 documents, one packed sequence each, in batches of 2
    assert "- Requests: 24 scored by the model, 0 answered from the request cache; batch size 2 (asked for 8; " \
           "halved after 2 out-of-memory errors)" in out.report_path.read_text(encoding="utf-8")
