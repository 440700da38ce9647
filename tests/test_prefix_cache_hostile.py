"""Shared-prefix reuse (evalkit.scoring.prefix_scoring) under hostile inputs and settings: seeded random mixtures of
prefixes (very different lengths, a context that is a prefix of another, single-token contexts, many continuations,
duplicated requests, contexts split across groups by a small window) scored at random batch sizes, token limits,
prefix budgets and minimum prefix lengths, on tiny random GPT-NeoX, Llama and sliding-window (Mistral) models.

Every log-likelihood and greedy flag must equal the slow naive reference (tests/reference.py); every request must be
handed to ``on_batch`` exactly once; the counters must add up; and each batch must keep the promised limits (rows,
padding, key positions, prefixes held at once)."""

from __future__ import annotations

import random

import pytest
import torch

from evalkit.scoring import prefix_scoring
from evalkit.scoring.batching import pack_groups
from evalkit.scoring.hf_backend import HFBackend
from evalkit.types import TokenizedRequest

from .conftest import make_tiny_llama, make_tiny_model
from .reference import naive_loglikelihood
from .test_prefix_cache import make_tiny_mistral

pytestmark = pytest.mark.usefixtures("one_thread")

SLACK = prefix_scoring.PADDING_SLACK


@pytest.fixture(scope="module")
def models():
    return {"gpt_neox": make_tiny_model(0), "llama": make_tiny_llama(0), "mistral": make_tiny_mistral(0, window=48)}


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1, 50000) for _ in range(n)]


def _hostile_requests(rng: random.Random, max_context: int) -> list[TokenizedRequest]:
    """Up to 10 contexts drawn over 1 to 4 heads of 1 to 110 tokens: a head plus own tokens, a head cut anywhere
    (single tokens included), a context extended from another, a context cut one token short of another, a lone
    token; 1 to 6 continuations of 1 to 4 tokens each, some requests repeated, in shuffled order."""
    heads = [_ids(rng, rng.choice([1, 2, 3, 5, 8, 20, 40, 70, 110])) for _ in range(rng.randint(1, 4))]
    contexts: list[tuple[int, ...]] = []
    for _ in range(rng.randint(1, 10)):
        head, kind = rng.choice(heads), rng.random()
        if kind < 0.15:
            context = head[: rng.randint(1, len(head))]
        elif kind < 0.3 and contexts:
            context = list(rng.choice(contexts)) + _ids(rng, rng.randint(0, 3))
        elif kind < 0.4 and contexts:
            other = rng.choice(contexts)
            context = list(other[: max(1, len(other) - 1)])
        elif kind < 0.45:
            context = _ids(rng, 1)
        else:
            context = head + _ids(rng, rng.randint(1, 12))
        contexts.append(tuple(context[:max_context]))
    requests = [TokenizedRequest(c, tuple(_ids(rng, rng.randint(1, 4))), 0)
                for c in contexts for _ in range(rng.choice([1, 1, 2, 3, 6]))]
    if rng.random() < 0.4:
        requests += [rng.choice(requests) for _ in range(3)]
    rng.shuffle(requests)
    return requests


class Recorder:
    """Wraps a backend: records every scoring batch on cached prefixes (rows' ``used`` and rests), every prefix
    forward's chunk and batches (outside the reuse probe), and every ``on_batch`` call."""

    def __init__(self, backend: HFBackend, monkeypatch) -> None:
        self.row_batches: list[tuple[list[int], list[int]]] = []
        self.chunks: list[list[int]] = []
        self.prefix_batches: list[list[int]] = []
        self.handed: list[int] = []
        self.in_probe = False
        score, forward, probe = backend.score_groups, backend._forward_prefixes, backend._check_prefix_reuse

        def scored(groups, prefix=None):
            if prefix is not None:
                self.row_batches.append((list(prefix[2]), [g.length - u for g, u in zip(groups, prefix[2])]))
            return score(groups, prefix)

        def forwarded(prefixes):
            if not self.in_probe:
                self.chunks.append([len(p) for p in prefixes])
            return forward(prefixes)

        def probed():
            self.in_probe = True
            try:
                probe()
            finally:
                self.in_probe = False

        real_batches = prefix_scoring._prefix_batches

        def prefix_batches(lengths, batch_size, max_batch_tokens):
            out = real_batches(lengths, batch_size, max_batch_tokens)
            if not self.in_probe:
                self.prefix_batches.extend([lengths[i] for i in b] for b in out)
            return out

        backend.score_groups, backend._forward_prefixes, backend._check_prefix_reuse = scored, forwarded, probed
        monkeypatch.setattr(prefix_scoring, "_prefix_batches", prefix_batches)

    def on_batch(self, indices, responses) -> None:
        assert len(indices) == len(responses)
        self.handed.extend(indices)


def _check_limits(rec: Recorder, backend: HFBackend, batch_size: int, max_batch_tokens: int | None) -> None:
    """Each batch on cached prefixes: at most ``batch_size`` rows; with more than one row, at most ``SLACK`` of its
    forwarded tokens padding and rows x (widest prefix read + longest rest) within ``max_batch_tokens``. Each prefix
    forward batch alike (rows x longest prefix); the prefixes forwarded together fit the token budget."""
    for used, rests in rec.row_batches:
        assert len(used) <= batch_size
        if len(used) > 1:
            assert len(rests) * max(rests) <= (1 + SLACK) * sum(rests), (used, rests)
            if max_batch_tokens is not None:
                assert len(used) * (max(used) + max(rests)) <= max_batch_tokens, (used, rests)
    for lengths in rec.prefix_batches:
        assert len(lengths) <= batch_size and lengths == sorted(lengths, reverse=True)
        if len(lengths) > 1:
            assert len(lengths) * lengths[0] <= (1 + SLACK) * sum(lengths), lengths
            if max_batch_tokens is not None:
                assert len(lengths) * lengths[0] <= max_batch_tokens, lengths
    for chunk in rec.chunks:
        assert len(chunk) == 1 or sum(chunk) <= backend.prefix_max_tokens, chunk


@pytest.mark.parametrize("seed", range(12))
def test_random_prefix_mixtures_match_the_naive_reference(models, seed, monkeypatch):
    rng = random.Random(seed)
    name = ("gpt_neox", "llama", "mistral")[seed % 3]
    model = models[name]
    max_length = rng.choice([2048, 60, 20])
    requests = _hostile_requests(rng, max_length - 4)
    batch_size = rng.choice([1, 2, 3, 5, 64])
    max_batch_tokens = rng.choice([None, 1, 8, 40, 150])
    # the tiny models keep 1 KiB (GPT-NeoX) or 512 bytes (Llama, Mistral) of keys and values per token
    budget = rng.choice([1 << 30, 1024, 8 * 1024, 40 * 1024])
    min_tokens = rng.choice([1, 2, 4, 32])
    backend = HFBackend(model, max_length, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                        progress=False, prefix_budget_bytes=budget, prefix_min_tokens=min_tokens)
    rec = Recorder(backend, monkeypatch)
    responses = backend.loglikelihood(requests, on_batch=rec.on_batch)
    assert sorted(rec.handed) == list(range(len(requests)))  # every request handed on exactly once
    for index, (request, response) in enumerate(zip(requests, responses, strict=True)):
        ll, greedy = naive_loglikelihood(model, request)
        assert abs(response.loglikelihood - ll) <= 1e-4, (index, response.loglikelihood, ll)
        assert response.greedy == greedy, index
    groups = pack_groups(requests, max_length, True)
    assert backend.naive_tokens == sum(g.length for g in groups)  # each packed sequence finished once
    assert backend.forward_tokens == (backend.naive_tokens - backend.prefix_tokens_reused
                                      + backend.prefix_tokens_forwarded)
    _check_limits(rec, backend, batch_size, max_batch_tokens)


def test_the_random_mixtures_do_reuse_prefixes(models, monkeypatch):
    """The random draws above are not vacuous: with reuse at its loosest, most seeds read cached prefixes."""
    reused = 0
    for seed in range(12):
        rng = random.Random(seed)
        requests = _hostile_requests(rng, 2044)
        backend = HFBackend(models["llama"], 2048, batch_size=4, progress=False, prefix_min_tokens=1)
        backend.loglikelihood(requests)
        reused += backend.prefix_tokens_reused > 0
    assert reused >= 8


class FakeOOM(RuntimeError):
    pass


@pytest.mark.parametrize("seed", range(6))
def test_out_of_memory_anywhere_leaves_every_number_right(models, seed, monkeypatch):
    """Out-of-memory errors injected at random into forward passes (prefix forwards, batches on cached prefixes,
    batches without reuse; never a lone row without reuse, which is a real error): batches are halved, reuse may
    turn off part way through the chunks, and still every request gets the naive reference's numbers, once."""
    rng = random.Random(100 + seed)
    model = models[("gpt_neox", "llama", "mistral")[seed % 3]]
    requests = _hostile_requests(rng, 200) + _hostile_requests(rng, 200)
    backend = HFBackend(model, 2048, batch_size=rng.choice([2, 4, 16]), progress=False,
                        prefix_budget_bytes=rng.choice([1 << 30, 40 * 1024]), prefix_min_tokens=rng.choice([1, 4]),
                        is_oom=lambda e: isinstance(e, FakeOOM))
    score, forward = backend.score_groups, backend._forward_prefixes
    fails = random.Random(seed)

    def flaky_score(groups, prefix=None):
        if (prefix is not None or len(groups) > 1) and fails.random() < 0.3:
            raise FakeOOM("out of memory (injected)")
        return score(groups, prefix)

    def flaky_forward(prefixes):
        if backend._prefix_checked and fails.random() < 0.15:
            raise FakeOOM("out of memory (injected)")
        return forward(prefixes)

    backend.score_groups, backend._forward_prefixes = flaky_score, flaky_forward
    handed: list[int] = []
    responses = backend.loglikelihood(requests, on_batch=lambda indices, _: handed.extend(indices))
    assert sorted(handed) == list(range(len(requests)))
    assert backend.naive_tokens == sum(g.length for g in pack_groups(requests, 2048, True))
    for index, (request, response) in enumerate(zip(requests, responses, strict=True)):
        ll, greedy = naive_loglikelihood(model, request)
        assert abs(response.loglikelihood - ll) <= 1e-4, (index, response.loglikelihood, ll)
        assert response.greedy == greedy, index


def _matches(model, requests, responses) -> None:
    for index, (request, response) in enumerate(zip(requests, responses, strict=True)):
        ll, greedy = naive_loglikelihood(model, request)
        assert abs(response.loglikelihood - ll) <= 1e-4, (index, response.loglikelihood, ll)
        assert response.greedy == greedy, index


def test_an_empty_request_list_forwards_nothing(models):
    backend = HFBackend(models["llama"], 2048, progress=False, prefix_min_tokens=1)
    assert backend.loglikelihood([]) == []
    assert (backend.forward_calls, backend.forward_tokens, backend.naive_tokens) == (0, 0, 0)
    assert backend.prefix_cache and backend.prefix_fallback is None


@pytest.mark.parametrize(("batch_size", "max_batch_tokens", "calls"), [(4, None, 2), (1, 1, 5)])
def test_a_prefix_that_is_the_whole_context_but_one_token(models, batch_size, max_batch_tokens, calls):
    """Four contexts of one 40-token head and one own token, two 2-token continuations each: the prefix is every
    context but its last token; each row forwards that token and the first token of each continuation (3 tokens)."""
    rng = random.Random(7)
    head = _ids(rng, 40)
    requests = [TokenizedRequest(tuple(head + [own]), tuple(_ids(rng, 2)), 0)
                for own in (11, 12, 13, 14) for _ in range(2)]
    backend = HFBackend(models["gpt_neox"], 2048, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                        progress=False)
    responses = backend.loglikelihood(requests)
    _matches(models["gpt_neox"], requests, responses)
    assert (backend.naive_tokens, backend.prefix_tokens_forwarded, backend.prefix_tokens_reused) == (172, 40, 160)
    assert (backend.forward_tokens, backend.forward_calls) == (40 + 4 * 3, calls)  # 1 prefix forward, then rows


def test_continuations_split_by_the_window_share_their_context_as_a_prefix(models):
    """A 5-token context with six 3-token continuations in an 8-token window: one continuation per packed
    sequence (5 + 2 tokens), six sequences of the same context; with ``prefix_min_tokens=1`` the context but its last
    token (4 tokens) is forwarded once and read six times."""
    rng = random.Random(8)
    context = tuple(_ids(rng, 5))
    requests = [TokenizedRequest(context, tuple(_ids(rng, 3)), 0) for _ in range(6)]
    assert len(pack_groups(requests, 8, True)) == 6
    backend = HFBackend(models["llama"], 8, batch_size=16, progress=False, prefix_min_tokens=1)
    responses = backend.loglikelihood(requests)
    _matches(models["llama"], requests, responses)
    assert (backend.naive_tokens, backend.prefix_tokens_forwarded, backend.prefix_tokens_reused) == (42, 4, 24)
    assert backend.forward_tokens == 4 + 6 * 3


def test_single_token_contexts_and_one_token_prefixes(models):
    """``prefix_min_tokens=1``: two-token contexts sharing their first token read a one-token prefix; one-token
    contexts (nothing before their last token) and their duplicates are scored without reuse."""
    requests = [TokenizedRequest((5, t), (t + 1, 9), 0) for t in (20, 21, 22)]
    requests += [TokenizedRequest((5,), (30,), 0), TokenizedRequest((5,), (31, 32), 0), TokenizedRequest((6,), (1,), 0)]
    requests += requests[:2]  # duplicates: same packed sequence, same numbers
    backend = HFBackend(models["llama"], 2048, batch_size=3, progress=False, prefix_min_tokens=1)
    responses = backend.loglikelihood(requests)
    _matches(models["llama"], requests, responses)
    assert (backend.prefix_tokens_forwarded, backend.prefix_tokens_reused) == (1, 3)
    assert [(r.loglikelihood, r.greedy) for r in responses[-2:]] == [(r.loglikelihood, r.greedy)
                                                                      for r in responses[:2]]


def _two_prefixes() -> list[TokenizedRequest]:
    """Two documents after a 40-token prefix and two after a 33-token one (seeded), a 2-token answer each."""
    rng = random.Random(9)
    requests = []
    for n in (40, 33):
        head = _ids(rng, n)
        requests += [TokenizedRequest(tuple(head + _ids(rng, 3)), tuple(_ids(rng, 2)), 0) for _ in range(2)]
    return requests


def test_a_budget_of_one_prefix_at_a_time_forwards_each_alone(models):
    """Prefixes of 40 and 33 tokens shared by two documents each; the GPT-NeoX keeps 1 KiB per token: a 40 KiB
    budget holds one prefix at a time (two prefix forwards, each its own chunk), a 73 KiB one both (one forward)."""
    requests = _two_prefixes()
    naive = None
    for budget, prefix_calls in ((40 * 1024, 2), (73 * 1024, 1)):
        backend = HFBackend(models["gpt_neox"], 2048, batch_size=8, progress=False, prefix_budget_bytes=budget)
        chunks = []
        forward = backend._forward_prefixes
        backend._forward_prefixes = lambda prefixes: chunks.append(sorted(map(len, prefixes))) or forward(prefixes)
        responses = backend.loglikelihood(requests)
        naive = naive or [naive_loglikelihood(models["gpt_neox"], r) for r in requests]
        assert [pytest.approx(ll, abs=1e-4) for ll, _ in naive] == [r.loglikelihood for r in responses]
        assert [g for _, g in naive] == [r.greedy for r in responses]
        assert sorted(chunks[1:]) == ([[33], [40]] if prefix_calls == 2 else [[33, 40]])  # [0]: the reuse probe
        assert backend.prefix_tokens_forwarded == 73 and backend.prefix_tokens_reused == 2 * 73


def test_the_keys_and_values_held_at_once_fit_the_budget(models):
    """Prefixes of 40 and 33 tokens with a budget of exactly 73 tokens (73 KiB on the tiny GPT-NeoX): they are held
    together, and what stays in memory is their 73 tokens' keys and values, not 2 x 40 padded ones (prefixes forwarded
    together are copied out of the padded batch cache)."""
    requests = _two_prefixes()
    backend = HFBackend(models["gpt_neox"], 2048, batch_size=8, progress=False, prefix_budget_bytes=73 * 1024)
    held = []
    forward = backend._forward_prefixes

    def measured(prefixes):
        states = forward(prefixes)
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for unit in states for pair in unit for t in pair}
        held.append((sum(map(len, prefixes)), sum(storages.values())))
        return states

    backend._forward_prefixes = measured
    backend.loglikelihood(requests)
    tokens, nbytes = held[-1]
    assert tokens == 73
    assert nbytes <= 73 * 1024


def test_a_chunk_of_prefixes_is_released_before_the_next_is_forwarded(models):
    """A 40 KiB budget on the tiny GPT-NeoX (1 KiB per token) holds one of the 40 and 33-token prefixes at a time:
    when the second is forwarded, no key or value tensor of the first may still be alive (two chunks held at once
    would be twice the budget)."""
    import gc
    import weakref

    requests = _two_prefixes()
    backend = HFBackend(models["gpt_neox"], 2048, batch_size=8, progress=False, prefix_budget_bytes=40 * 1024)
    backend._check_prefix_reuse()  # the probe first, so that only real chunks are watched
    refs: list[weakref.ref] = []
    alive: list[int] = []
    forward = backend._forward_prefixes

    def watched(prefixes):
        gc.collect()
        alive.append(sum(ref() is not None for ref in refs))
        states = forward(prefixes)
        refs.extend(weakref.ref(t) for unit in states for pair in unit for t in pair)
        return states

    backend._forward_prefixes = watched
    responses = backend.loglikelihood(requests)
    _matches(models["gpt_neox"], requests, responses)
    assert len(refs) == 2 * 2 * 2  # two chunks of one prefix: 2 layers x (keys, values) each
    assert alive == [0, 0]


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_a_batch_size_below_one_is_refused_with_or_without_reuse(models, prefix_cache):
    """Every request on a cached prefix took no path through :func:`make_batches`, whose check alone refused a batch
    size of 0 before: the same error with reuse on as with it off."""
    head = list(range(100, 140))
    requests = [TokenizedRequest(tuple(head + [own]), (5, 6), 0) for own in (1, 2, 3)]
    for size in (0, -1):
        backend = HFBackend(models["llama"], 2048, batch_size=size, progress=False, prefix_cache=prefix_cache)
        with pytest.raises(ValueError, match=f"batch size must be >= 1, got {size}"):
            backend.loglikelihood(requests)
        assert backend.forward_calls == 0


@pytest.mark.parametrize("seed", range(20))
def test_the_plan_depends_on_the_set_of_contexts_not_their_order(seed):
    """plan_prefixes on the same contexts (duplicates, prefixes of one another, single tokens) in two orders: the
    same prefixes, each context reading the same prefix and the same number of its tokens; every context in exactly
    one unit; a context reads at most all but its last token, and only tokens it has."""
    from evalkit.scoring.prefix_cache import plan_prefixes

    rng = random.Random(seed)
    contexts = [r.context_ids for r in _hostile_requests(rng, 400)]
    min_tokens, budget = rng.choice([1, 2, 8, 32]), rng.choice([None, 1, 10, 50])
    order = list(range(len(contexts)))
    rng.shuffle(order)

    def reads(cs):
        units = plan_prefixes(cs, min_tokens, max_prefix_tokens=budget)
        members = sorted(m for u in units for m in u.members)
        assert members == list(range(len(cs)))
        out = {}
        for unit in units:
            assert len(unit.prefix) <= (budget if budget is not None else len(unit.prefix))
            for m, used in zip(unit.members, unit.used):
                assert used == 0 if not unit.prefix else min_tokens <= used <= len(unit.prefix)
                assert used <= len(cs[m]) - 1 and tuple(cs[m][:used]) == unit.prefix[:used]
                out.setdefault(cs[m], set()).add((unit.prefix, used))
        assert all(len(read) == 1 for read in out.values())  # equal contexts read alike
        return out, sorted(u.prefix for u in units)

    first = reads(contexts)
    assert reads([contexts[i] for i in order]) == first


@pytest.mark.parametrize("name", ["gpt_neox", "llama", "mistral"])
def test_left_truncated_contexts_that_still_share_a_prefix(models, name):
    """Contexts longer than a 32-token window, cut from the left by how long each continuation is (lm-eval's rule):
    a run of one repeated token keeps the cut contexts sharing a prefix of different lengths (each cut context is a
    prefix of a longer one), and every number still equals the naive reference on the cut request."""
    from evalkit.scoring.tokenization import truncate_left

    rng = random.Random(11)
    context = [7] * 50 + _ids(rng, 3)
    requests = [truncate_left(context, _ids(rng, n), 32) for n in (1, 2, 3, 4, 5, 5, 1)]
    requests += [truncate_left([7] * 40 + _ids(rng, 2), _ids(rng, 2), 32)]
    assert [r.truncated_tokens for r in requests] == [21, 22, 23, 24, 25, 25, 21, 11]
    backend = HFBackend(models[name], 32, batch_size=3, progress=False, prefix_min_tokens=4)
    responses = backend.loglikelihood(requests)
    _matches(models[name], requests, responses)
    assert backend.prefix_tokens_reused > 0
    assert [r.truncated_tokens for r in responses] == [r.truncated_tokens for r in requests]
