"""Shared prefixes forwarded once (evalkit.scoring.prefix_cache) against the naive reference on tiny random
GPT-NeoX, Llama and sliding-window (Mistral) models: every request's log-likelihood and greedy flag, the plan of
which prefix each sequence reads, batch-size and order invariance, the counters, the memory budget, the
out-of-memory and probe fallbacks, the windowed-attention fallback and ``--(no-)prefix-cache``."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from evalkit.models.hf_loading import load_model
from evalkit.scoring import prefix_cache
from evalkit.scoring.hf_backend import HFBackend, prefix_timing
from evalkit.models.attention_windows import windowed_attention
from evalkit.scoring.prefix_cache import plan_prefixes
from evalkit.types import EvalkitError, TokenizedRequest

from .conftest import TINY_LLAMA, make_tiny_llama, make_tiny_model
from .reference import naive_loglikelihood

pytestmark = pytest.mark.usefixtures("one_thread")


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, 50000) for _ in range(n)]


def _few_shot_requests(seed: int = 0) -> list[TokenizedRequest]:
    """Contexts built like few-shot prompts: 5 documents after one 60-token prefix (2 of them after a further shared
    40 tokens, as when documents draw the same first example), 3 documents after a 20-token prefix (too short to
    reuse), a context that is a prefix of another, and a repeated context; 1 to 4 continuations of 1 to 3 tokens."""
    rng = random.Random(seed)
    head, deeper, short = _tokens(rng, 60), _tokens(rng, 40), _tokens(rng, 20)
    contexts = [head + _tokens(rng, rng.randrange(2, 9)) for _ in range(3)]
    contexts += [head + deeper + _tokens(rng, rng.randrange(2, 9)) for _ in range(2)]
    contexts += [short + _tokens(rng, rng.randrange(2, 9)) for _ in range(3)]
    contexts += [head + deeper[:5], contexts[0]]
    contexts += [_tokens(rng, 7)]
    requests = []
    for context in contexts:
        for _ in range(rng.randrange(1, 5)):
            requests.append(TokenizedRequest(tuple(context), tuple(_tokens(rng, rng.randrange(1, 4))), 0))
    return requests


def make_tiny_mistral(seed: int = 0, window: int = 16):
    """A seeded random Mistral (the tiny Llama's shapes) whose layers attend to the last ``window`` tokens only."""
    config = dict(TINY_LLAMA, model_type="mistral", sliding_window=window)
    model, _ = load_model({"kind": "random", "alias": "tiny-mistral", "config": config}, "float32", "cpu", seed)
    return model


@pytest.fixture(scope="module")
def requests():
    return _few_shot_requests(0)


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def model_and_naive(request, requests):
    model = make_tiny_model(0) if request.param == "gpt_neox" else make_tiny_llama(0)
    return model, [naive_loglikelihood(model, r) for r in requests]


def _assert_matches(responses, naive):
    for index, (response, (ll, greedy)) in enumerate(zip(responses, naive)):
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4), index
        assert response.greedy == greedy, index


def test_the_plan_forwards_each_shared_prefix_once():
    a, b = tuple(range(100, 140)), tuple(range(200, 230))
    contexts = [a + (1, 2), a + (3,), a + (1, 2, 9, 9), b + (5,), b + (6,), a[:10] + (7,), (8,)]
    units = plan_prefixes(contexts, min_tokens=16)
    # a is shared by contexts 0, 1 and 2 (their last tokens stay out); a + (1,) by 0 and 2, but 2 x 1 more token does
    # not pay for forwarding 41; b (30 tokens) by 3 and 4; the rest share fewer than 16 tokens
    assert [(u.prefix, u.members, u.used) for u in units] == [
        (a, [0, 1, 2], [40, 40, 40]), (b, [3, 4], [30, 30]), ((), [5, 6], [0, 0])]
    shuffled = [contexts[i] for i in (6, 3, 0, 5, 2, 4, 1)]
    again = plan_prefixes(shuffled, min_tokens=16)
    assert [u.prefix for u in again] == [u.prefix for u in units]  # the set of contexts decides, not their order


def test_a_deeper_prefix_is_forwarded_when_it_pays():
    a, x = tuple(range(100, 140)), tuple(range(300, 330))
    contexts = [a + x + (i, 0) for i in (1, 2, 3)] + [a + (7, 8), a + (9, 9)]
    units = plan_prefixes(contexts, min_tokens=16)
    # a + x: 3 contexts x 30 more tokens = 90 > its 70 tokens; the two others read a
    assert [(u.prefix, u.members, u.used) for u in units] == [(a, [3, 4], [40, 40]), (a + x, [0, 1, 2], [70] * 3)]
    assert [u.prefix for u in plan_prefixes(contexts[:2] + contexts[3:], min_tokens=16)] == [a]  # 2 x 30 < 70


def test_the_plan_leaves_short_or_unshared_prefixes_alone():
    assert [(u.prefix, u.members) for u in plan_prefixes([tuple(range(40)) + (1,), tuple(range(40)) + (2,)],
                                                          min_tokens=41)] == [((), [0, 1])]
    assert [u.prefix for u in plan_prefixes([tuple(range(50)), tuple(range(60, 110))])] == [()]
    assert [u.prefix for u in plan_prefixes([tuple(range(50)) + (1,)] * 2, 16, max_prefix_tokens=20)] == [
        tuple(range(20))]


def test_windowed_attention_configs_are_recognised():
    from transformers import AutoConfig

    assert windowed_attention(make_tiny_llama(0).config) is None
    assert windowed_attention(AutoConfig.for_model("mistral", sliding_window=16)) == 16
    assert windowed_attention(AutoConfig.for_model("mistral", sliding_window=None)) is None
    assert windowed_attention(AutoConfig.for_model("qwen2", sliding_window=64, use_sliding_window=False)) is None
    assert windowed_attention(AutoConfig.for_model("qwen2", sliding_window=64, use_sliding_window=True,
                                                   max_window_layers=0)) == 64
    gemma = AutoConfig.for_model("gemma3_text", sliding_window=32, num_hidden_layers=2)
    assert gemma.layer_types and windowed_attention(gemma) == 32


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_every_request_matches_the_naive_reference(model_and_naive, requests, batch_size):
    model, naive = model_and_naive
    backend = HFBackend(model, 2048, batch_size=batch_size, progress=False)
    responses = backend.loglikelihood(requests)
    assert backend.prefix_cache and backend.prefix_fallback is None
    assert backend.prefix_tokens_reused > 0
    _assert_matches(responses, naive)


def test_order_and_batch_size_do_not_move_a_number(model_and_naive, requests):
    model, _ = model_and_naive
    first = HFBackend(model, 2048, batch_size=3, progress=False).loglikelihood(requests)
    order = list(range(len(requests)))
    random.Random(5).shuffle(order)
    second = HFBackend(model, 2048, batch_size=16, progress=False).loglikelihood([requests[i] for i in order])
    off = HFBackend(model, 2048, batch_size=16, progress=False, prefix_cache=False).loglikelihood(requests)
    for position, index in enumerate(order):
        assert second[position].loglikelihood == pytest.approx(first[index].loglikelihood, abs=1e-5)
        assert second[position].greedy == first[index].greedy
    for on, without in zip(first, off):
        assert on.loglikelihood == pytest.approx(without.loglikelihood, abs=1e-4)
        assert on.greedy == without.greedy


def test_counters_count_the_work_done_and_saved(tiny_model):
    rng = random.Random(3)
    head = _tokens(rng, 40)
    requests = []
    for _ in range(4):  # 4 documents: 40 shared + 5 own context tokens, continuations of 1 and 2 tokens
        context = tuple(head + _tokens(rng, 5))
        requests += [TokenizedRequest(context, tuple(_tokens(rng, 1)), 0),
                     TokenizedRequest(context, tuple(_tokens(rng, 2)), 0)]
    backend = HFBackend(tiny_model, 2048, batch_size=4, progress=False)
    backend.loglikelihood(requests)
    # without reuse: 4 rows of 45 + 0 + 1 tokens; with it, the 40-token prefix once and 4 rows of 5 + 0 + 1
    assert (backend.naive_tokens, backend.forward_tokens) == (184, 40 + 24)
    assert (backend.prefix_tokens_forwarded, backend.prefix_tokens_reused, backend.forward_calls) == (40, 160, 2)
    assert prefix_timing(backend) == {"prefix_cache": True, "prefix_fallback": None, "prefix_tokens_forwarded": 40,
                                      "prefix_tokens_reused": 160, "naive_tokens": 184, "work_fraction": 0.3478}
    off = HFBackend(tiny_model, 2048, batch_size=4, progress=False, prefix_cache=False)
    off.loglikelihood(requests)
    assert (off.forward_tokens, off.naive_tokens, off.prefix_tokens_reused, off.work_fraction) == (184, 184, 0, 1.0)


def test_the_memory_budget_cuts_the_cached_prefix(tiny_model, requests):
    # the tiny GPT-NeoX keeps 2 layers x 2 (keys, values) x 64 floats = 1 KiB per token: 48 KiB hold 48 tokens
    backend = HFBackend(tiny_model, 2048, batch_size=4, progress=False, prefix_budget_bytes=48 * 1024)
    assert backend.prefix_max_tokens == 48
    responses = backend.loglikelihood(requests)
    assert backend.prefix_tokens_forwarded == 48  # the 60 and 100-token prefixes, cut to one of 48
    _assert_matches(responses, [naive_loglikelihood(tiny_model, r) for r in requests])


class FakeOOM(RuntimeError):
    pass


def test_an_out_of_memory_on_a_prefix_batch_halves_it_then_scores_without_reuse(tiny_model, requests, caplog):
    calls = []

    def tight(self, groups, states, owner, used):
        calls.append(len(groups))
        raise FakeOOM("out of memory (injected)")

    backend = HFBackend(tiny_model, 2048, batch_size=4, progress=False, is_oom=lambda e: isinstance(e, FakeOOM))
    backend.score_on_prefixes = tight.__get__(backend)
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        responses = backend.loglikelihood(requests)
    assert calls[0] > 1 and calls[-1] == 1  # halved down to one row, then reuse turned off
    assert backend.prefix_cache is False and "out of memory scoring one sequence" in backend.prefix_fallback
    assert "shared-prefix reuse is off" in caplog.text
    _assert_matches(responses, [naive_loglikelihood(tiny_model, r) for r in requests])


def test_a_model_that_mishandles_the_cache_is_caught_by_the_probe(tiny_model, requests, monkeypatch, caplog):
    def forgetful(self, key_states, value_states, *args, **kwargs):  # drops the prefix: shapes no longer match
        return key_states, value_states

    monkeypatch.setattr(prefix_cache.RowPrefixLayer, "update", forgetful)
    backend = HFBackend(tiny_model, 2048, batch_size=4, progress=False)
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        responses = backend.loglikelihood(requests)
    assert backend.prefix_cache is False and backend.prefix_fallback.startswith("the model rejected a cached prefix")
    assert backend.prefix_tokens_reused == 0 and backend.forward_tokens == backend.naive_tokens
    _assert_matches(responses, [naive_loglikelihood(tiny_model, r) for r in requests])


@pytest.mark.parametrize("shared", [40, 12])  # a shared prefix longer, then shorter, than the 16-token window
def test_a_sliding_window_model_falls_back_with_a_warning_past_its_window(shared, caplog):
    model = make_tiny_mistral(0, window=16)
    rng = random.Random(shared)
    head = _tokens(rng, shared)
    requests = [TokenizedRequest(tuple(head + _tokens(rng, 6)), tuple(_tokens(rng, 2)), 0) for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger="evalkit.scoring.hf_backend"):
        # one sequence per request: the packed 4-D mask does not apply the window (scored alone, it is exact)
        backend = HFBackend(model, 2048, batch_size=4, progress=False, share_context=False, prefix_min_tokens=8)
        responses = backend.loglikelihood(requests)
    # every sequence (18 or more tokens) reaches past the window: none reads a cached prefix
    assert "shared-prefix reuse skips 4 of 4 sequences: the model has windowed attention layers (window 16 tokens)" \
        in caplog.text
    assert backend.prefix_tokens_reused == 0 and backend.forward_tokens == backend.naive_tokens
    _assert_matches(responses, [naive_loglikelihood(model, r) for r in requests])


def test_prefix_cache_flag_reaches_the_run_config():
    import evalkit
    from evalkit.cli.main import build_parser
    from evalkit.cli.parser import config_from_args

    base = ["run", "--model", "random:pythia-14m", "--tasks", "piqa"]
    assert "prefix_cache" not in config_from_args(build_parser().parse_args(base)).extra  # on unless turned off
    assert "prefix_cache" not in config_from_args(build_parser().parse_args(base + ["--prefix-cache"])).extra
    assert config_from_args(build_parser().parse_args(base + ["--no-prefix-cache"])).extra["prefix_cache"] is False
    with pytest.raises(EvalkitError, match="contradict"):
        config_from_args(build_parser().parse_args(base + ["--prefix-cache", "--no-prefix-cache"]))
    assert evalkit.make_config("random:pythia-14m", "piqa", prefix_cache=False).extra["prefix_cache"] is False


def test_a_run_with_prefix_reuse_gives_the_same_numbers_and_counts_its_work(tmp_path):
    """A whole run of an lm-eval YAML task whose documents share two fixed (first_n) examples: the same
    per-document metrics as without reuse (log-likelihoods are compared request by request above), fewer tokens
    forwarded, and the timing says how much was reused."""
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    from .conftest import DATA_DIR, REPO, TOKENIZER_JSON

    folder = tmp_path / "tasks"
    folder.mkdir()
    base = (REPO / "tests/task_yaml/lmeval/sciq.yaml").read_text(encoding="utf-8")
    base = base.replace("description:", 'description: ""\n# was:')  # the description differs per document
    (folder / "sciq.yaml").write_text(base + "num_fewshot: 2\nfewshot_config:\n  sampler: first_n\n",
                                      encoding="utf-8")
    results = []
    for reuse in (False, True):
        config = RunConfig(model="random:pythia-14m", tasks=("lm_eval.sciq",), tokenizer=str(TOKENIZER_JSON),
                           data_dir=str(DATA_DIR), include_paths=(str(folder),), limit=6, bootstrap_iters=0,
                           use_cache=False, output_dir=str(tmp_path / "out"), extra={"prefix_cache": reuse})
        results.append(run(config, progress=False, write=False).results)
    plain, reused = results
    docs = [r["tasks"]["lm_eval.sciq"]["documents"] for r in results]
    assert len(docs[0]["acc"]) == 6 and docs[0] == docs[1]  # every document's acc and acc_norm
    assert reused["timing"]["prefix_cache"] is True and reused["timing"]["prefix_tokens_reused"] > 0
    assert reused["timing"]["forward_tokens"] < plain["timing"]["forward_tokens"]
    assert plain["timing"]["prefix_tokens_reused"] == 0


def test_the_cached_prefix_is_a_view_not_a_copy_per_row():
    keys = torch.randn(1, 2, 5, 4)
    layer = prefix_cache.SharedPrefixLayer(keys, keys.clone())
    assert layer.keys.expand(8, -1, -1, -1).data_ptr() == keys.data_ptr()
    joined, _ = layer.update(torch.zeros(3, 2, 2, 4), torch.zeros(3, 2, 2, 4))
    assert joined.shape == (3, 2, 7, 4) and torch.equal(joined[2, :, :5], keys[0])
    assert layer.get_seq_length() == 5 and layer.get_mask_sizes(2) == (7, 0)


def test_a_kept_cache_decodes_as_the_full_sequence_would():
    """Generation's use: the prefix once, the rows' prompts on top with keep=True, then one token per row."""
    model = make_tiny_llama(0)
    rng = random.Random(9)
    head, rows = _tokens(rng, 12), [_tokens(rng, 4) for _ in range(2)]
    with torch.inference_mode():
        out = model.model(input_ids=torch.tensor([head]), use_cache=True)
        states = prefix_cache.prefix_states(prefix_cache.output_cache(out))
        cache = prefix_cache.prefix_cache_for_batch(states, 12, keep=True)
        name = prefix_cache.cache_argument(model)
        positions = torch.arange(12, 16)[None].expand(2, -1)
        model(input_ids=torch.tensor(rows), position_ids=positions, use_cache=True, **{name: cache})
        step = torch.tensor([[rng.randrange(1, 50000)] for _ in rows])
        last = model(input_ids=step, position_ids=torch.tensor([[16], [16]]), use_cache=True, **{name: cache}).logits
        assert cache.get_seq_length() == 17
        for row, tokens in enumerate(rows):
            full = model(input_ids=torch.tensor([head + tokens + step[row].tolist()])).logits[0, -1]
            assert torch.allclose(last[row, -1], full, atol=1e-4)


def test_a_cache_of_another_kind_turns_reuse_off(tiny_model, requests, monkeypatch):
    monkeypatch.setattr(prefix_cache, "batch_prefix_states", lambda cache: None)  # e.g. linear-attention layers
    backend = HFBackend(tiny_model, 2048, batch_size=4, progress=False)
    responses = backend.loglikelihood(requests)
    assert backend.prefix_cache is False
    assert backend.prefix_fallback == "the model's key/value cache is not one full-attention entry per layer"
    _assert_matches(responses, [naive_loglikelihood(tiny_model, r) for r in requests])


def _many_small_units(seed: int) -> list[TokenizedRequest]:
    """v0.2.0 MMLU's shape: six prefixes of 60 tokens, each shared by two or three documents (3 answers each),
    every document's own tail 8 tokens long (equal lengths: no batch is cut for its padding)."""
    rng = random.Random(seed)
    requests = []
    for _ in range(6):
        head = _tokens(rng, 60)
        for _ in range(rng.randrange(2, 4)):
            context = tuple(head + _tokens(rng, 8))
            requests += [TokenizedRequest(context, tuple(_tokens(rng, 1)), 0) for _ in range(3)]
    return requests


def test_small_units_share_forward_passes_and_match_the_naive_reference(tiny_model):
    """Rows of different prefixes are scored in one batch, each on its own prefix, and the prefixes are forwarded
    together: 2 forward passes for 6 prefixes (not 12), the same numbers at every batch size."""
    requests = _many_small_units(3)
    units = [u for u in plan_prefixes(sorted({r.context_ids for r in requests})) if u.prefix]
    assert len(units) == 6 and all(2 <= len(u.members) <= 3 for u in units)
    naive = [naive_loglikelihood(tiny_model, r) for r in requests]
    calls = []
    for batch_size in (16, 5, 1):
        backend = HFBackend(tiny_model, 2048, batch_size=batch_size, progress=False)
        _assert_matches(backend.loglikelihood(requests), naive)
        rows = len({r.context_ids for r in requests})
        assert backend.prefix_tokens_forwarded == sum(len(u.prefix) for u in units)
        calls.append(backend.forward_calls)
        assert backend.forward_calls == -(-6 // batch_size) + -(-rows // batch_size)  # prefixes, then rows
    assert calls[0] == 2


def test_a_mixed_batch_row_reads_only_its_own_prefix():
    """The cache layer of a mixed batch: each row's positions up to its ``used`` come from its own prefix, the rest
    of the width is zeros (hidden by the mask), then the row's new states."""
    a, b = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 3, 4)
    layer = prefix_cache.RowPrefixLayer([(a, a + 1), (b, b + 1)], owner=[1, 0, 0], used=[3, 4, 2])
    new = torch.randn(3, 2, 2, 4)
    keys, values = layer.update(new, new * 2)
    assert keys.shape == (3, 2, 6, 4) and layer.get_seq_length() == 4 and layer.get_mask_sizes(2) == (6, 0)
    assert torch.equal(keys[0, :, :3], b[0]) and torch.equal(keys[0, :, 3], torch.zeros(2, 4))
    assert torch.equal(keys[1, :, :4], a[0, :, :4]) and torch.equal(values[2, :, :2], a[0, :, :2] + 1)
    assert torch.equal(keys[:, :, 4:], new) and torch.equal(values[:, :, 4:], new * 2)


def test_batches_on_prefixes_keep_padding_small():
    from evalkit.scoring.prefix_scoring import _prefix_batches, _row_batches

    # prefixes sorted longest first: 600 and 80 tokens in one batch would be 520 tokens of padding
    assert _prefix_batches([600, 590, 80, 75, 70], 16, None) == [[0, 1], [2, 3, 4]]
    # (3 x 80 = 240 padded for 225 real: 6.7%; adding 600 or 5 x 80 > 1.25 x real is refused)
    assert _prefix_batches([80, 75, 70, 10], 16, None) == [[0, 1, 2], [3]]
    assert _prefix_batches([80, 75, 70], 2, None) == [[0, 1], [2]]
    assert _prefix_batches([80, 75, 70], 16, 200) == [[0, 1], [2]]  # 3 x 80 = 240 padded tokens > 200
    # rows by rest, longest first; rows 1 and 2 (rest 50) share a batch, row 0 (rest 100) is alone (2 x 100 > 1.25 x
    # 150), row 3 (rest 45) joins them (3 x 50 = 150 <= 1.25 x 145)
    rests, used = [100, 50, 50, 45], [10, 300, 20, 40]
    assert _row_batches([0, 1, 2, 3], rests, used, 16, None) == [[0], [1, 2, 3]]
    # key positions: 3 rows x (300 widest read + 50 longest rest) = 1050 > 1000: row 3 starts a batch
    assert _row_batches([0, 1, 2, 3], rests, used, 16, 1000) == [[0], [1, 2], [3]]


def test_prefixes_held_at_once_fit_the_budget():
    from evalkit.scoring.prefix_cache import PrefixUnit
    from evalkit.scoring.prefix_scoring import _budget_chunks

    units = [PrefixUnit(tuple(range(n))) for n in (40, 30, 20, 48, 5)]
    # at most 48 tokens at once: every neighbouring pair is over (70, 50, 68, 53), so each prefix is held alone;
    # at most 75: 40 + 30, then 20 + 48 + 5 = 73
    assert [[len(u.prefix) for u in c] for c in _budget_chunks(units, 48)] == [[40], [30], [20], [48], [5]]
    assert [[len(u.prefix) for u in c] for c in _budget_chunks(units, 75)] == [[40, 30], [20, 48, 5]]
    assert [[len(u.prefix) for u in c] for c in _budget_chunks(units, None)] == [[40, 30, 20, 48, 5]]
    assert _budget_chunks([], 10) == []
