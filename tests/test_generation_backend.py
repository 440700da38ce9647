"""Greedy generation (lm-eval 0.4 ``generate_until``) against a slow naive reference on tiny random GPT-NeoX,
Llama and Gemma 3 (sliding-window) models: stop strings (several, multi-token, across token boundaries),
end-of-text and length stops; batch size invariance; identical requests generated once; context truncation;
out-of-memory back-off; the cache's keys and resuming an interrupted run; data-parallel ranks."""

from __future__ import annotations

import pytest
import torch

from evalkit.scoring.cache import CachingGenerator, RequestCache, generation_request_key, request_key
from evalkit.scoring.generation import HFGenerator, cut_at_stop
from evalkit.scoring.generation_tokens import tokenize_generations
from evalkit.types import EvalkitError, GenerationRequest, GenerationResponse, TokenizedGeneration, TokenizedRequest

from .conftest import make_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 2048
CONTEXTS = [
    "Question: What melts ice?\nAnswer:",
    "The capital of France is",
    "Two plus two equals",
    "Rain falls from the sky and",
    "Question: Which planet is red? Think step by step, then give the answer after 'The answer is'.\nAnswer:",
    "A",
    "She opened the door and saw a long corridor lit by candles, with portraits on both walls.",
    "def f(x):\n    return",
]
FREE = 20
"""Tokens of each context's free greedy continuation (no stop) from which the stop strings are chosen."""


def naive_generate(model, request: TokenizedGeneration, eot_ids, decode, eot_text=None) -> GenerationResponse:
    """One request alone: no batch, no padding, no key/value cache; the whole sequence through the model at every
    step, the argmax of the last position, stop checks on the decoded text of all generated tokens."""
    stops = [s for s in request.until if s]
    if eot_text and eot_text not in stops:
        stops.append(eot_text)
    ids, generated = list(request.context_ids), []
    with torch.inference_mode():
        while True:
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            token = int(torch.argmax(logits))
            ids.append(token)
            generated.append(token)
            if token in eot_ids:
                text, reason = decode(generated[:-1]), "eot"
                break
            text = decode(generated)
            if any(s in text for s in stops):
                reason = "stop"
                break
            if len(generated) == request.max_new_tokens:
                reason = "length"
                break
    for stop in stops:  # lm-eval 0.4's cut, written out: split at each stop string in turn
        text = text.split(stop)[0]
    return GenerationResponse(text, len(generated), reason, request.truncated_tokens)


def free_tokens(model, context_ids, n=FREE) -> list[int]:
    """The first ``n`` greedy tokens of a context, naively."""
    ids = list(context_ids)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(torch.argmax(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1])))
    return ids[len(context_ids):]


def stop_cases(model, tokenizer):
    """Requests whose stops are cut from each context's own free continuation g (tokens), so every kind occurs.

    Per context: no stop (length, 12 tokens); the text of g[5] (a one-token stop); 2 characters either side of the
    boundary between g[3] and g[4] (a stop across tokens); the text of g[6:9] (a three-token stop); a list whose
    second string occurs first; a stop string that never occurs (length); and the eot of a forced end-of-text
    (``eot_token``: the id g[7] of the first context, an end-of-text for the generator of this test)."""
    contexts = [tuple(ids) for ids in tokenizer.encode_batch(CONTEXTS)]
    out, expected = [], []
    for ctx in contexts:
        g = free_tokens(model, ctx)
        text = tokenizer.decode(g)
        pieces = [tokenizer.decode(g[:k]) for k in range(FREE + 1)]
        one = tokenizer.decode([g[5]])
        boundary = len(pieces[4])
        across = text[boundary - 2 : boundary + 2]
        three = tokenizer.decode(g[6:9])
        late, early = pieces[10][-3:], pieces[3][-2:]
        cases = [((), 12), ((one,), 20), ((across,), 20), ((three,), 20), ((late, early), 20),
                 (("never said \u2603",), 9), (("\n\n", one, "\u2603"), 20)]
        for until, budget in cases:
            out.append(TokenizedGeneration(ctx, tuple(s for s in until), budget))
            # the first generated-token count at which a stop string is in the decoded text (None: none by FREE)
            first = next((k for k in range(1, FREE + 1) if any(s and s in pieces[k] for s in until)), None)
            expected.append(first)
    return out, expected, free_tokens(model, contexts[0])[7]


@pytest.fixture(scope="module")
def neox():
    from .conftest import make_tiny_model

    return make_tiny_model(0)


@pytest.fixture(scope="module")
def llama():
    return make_tiny_llama(0)


TINY_GEMMA3 = {
    "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 50304,
    "max_position_embeddings": 2048, "sliding_window": 6,
    "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
}
"""Gemma 3's layout (sliding-window layers beside a full-attention one, as Gemma-3-270M) with a window of 6 tokens,
shorter than most contexts, so the sliding layers' key/value cache is cut while rows are padded and dropped."""


@pytest.fixture(scope="module")
def gemma3():
    from evalkit.models.hf_loading import load_model

    model, _ = load_model({"kind": "random", "alias": "tiny-gemma3", "config": TINY_GEMMA3}, "float32", "cpu", 0)
    return model


@pytest.fixture(scope="module", params=["neox", "llama", "gemma3"])
def setup(request, tokenizer):
    """(model, requests, expected first stop per request, eot ids, naive answers) for each tiny model."""
    model = request.getfixturevalue(request.param)
    requests, expected, forced = stop_cases(model, tokenizer)
    eot_ids = (tokenizer.eot_id, forced)
    naive = [naive_generate(model, r, eot_ids, tokenizer.decode) for r in requests]
    return model, requests, expected, eot_ids, naive


def test_cut_at_stop_splits_at_each_stop_string_in_turn_as_lm_eval():
    assert cut_at_stop("7 apples.\nQuestion: next", ["\n", ".", ","]) == "7 apples"
    assert cut_at_stop("a, b. c", [".", ","]) == "a"  # the earliest of the strings, whatever their order
    assert cut_at_stop("xabc", ["bc", "ab"]) == "xa"  # overlapping: "bc" cuts first, then "ab" is gone
    assert cut_at_stop("xabc", ["ab", "bc"]) == "x"
    assert cut_at_stop("no stop here", ["", "\n"]) == "no stop here"  # an empty stop string is ignored
    assert cut_at_stop("", ["\n"]) == ""


def test_the_cases_exercise_every_kind_of_stop(setup, tokenizer):
    model, requests, expected, eot_ids, naive = setup
    reasons = [r.stop_reason for r in naive]
    assert {"stop", "eot", "length"} <= set(reasons), reasons
    assert reasons.count("stop") >= 12
    # where no forced end-of-text came first, a stop string ends generation at the token that first completes it
    for request, first, answer in zip(requests, expected, naive):
        if answer.stop_reason == "eot":
            assert first is None or answer.tokens <= first
        elif first is not None and first <= request.max_new_tokens:
            assert (answer.stop_reason, answer.tokens) == ("stop", first)
        else:
            assert (answer.stop_reason, answer.tokens) == ("length", request.max_new_tokens)
    # the stop strings across a token boundary (third case of each context) end generation in most contexts
    assert sum(1 for k in range(2, len(requests), 7) if naive[k].stop_reason == "stop") >= 6
    for request, answer in zip(requests, naive):  # the text never holds a stop string
        assert not any(s and s in answer.text for s in request.until)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_generation_equals_the_naive_reference(setup, tokenizer, batch_size):
    model, requests, _, eot_ids, naive = setup
    generator = HFGenerator(model, WINDOW, batch_size, eot_ids, tokenizer.decode, progress=False)
    assert generator.generate(requests) == naive
    assert generator.generated_tokens == sum(r.tokens for r in naive)


def test_hf_generate_gives_the_same_tokens(neox, tokenizer):
    """Without stops, the generated ids are HF ``generate``'s greedy ids (padded batch of 4, KV cache)."""
    contexts = [tuple(ids) for ids in tokenizer.encode_batch(CONTEXTS[:4])]
    requests = [TokenizedGeneration(c, (), 10) for c in contexts]
    got = HFGenerator(neox, WINDOW, 4, 50000, lambda ids: " ".join(map(str, ids)), progress=False).generate(requests)
    for context, answer in zip(contexts, got):
        out = neox.generate(torch.tensor([context]), attention_mask=torch.ones(1, len(context), dtype=torch.long),
                            do_sample=False, max_new_tokens=10, pad_token_id=0, eos_token_id=50000)
        assert answer.text == " ".join(map(str, out[0, len(context):].tolist()))
        assert (answer.tokens, answer.stop_reason) == (10, "length")


def test_the_end_of_text_text_is_a_stop_string_as_lm_eval_adds_it(neox, tokenizer):
    context = tuple(tokenizer.encode_batch([CONTEXTS[1]])[0])
    g = free_tokens(neox, context)
    as_text = tokenizer.decode(g[2:4])  # pretend the end-of-text token's text is what tokens 3-4 spell
    request = TokenizedGeneration(context, (), 20)
    answer = HFGenerator(neox, WINDOW, 1, 0, tokenizer.decode, progress=False, eot_text=as_text).generate([request])
    assert answer == [naive_generate(neox, request, (0,), tokenizer.decode, eot_text=as_text)]
    assert answer[0].stop_reason == "stop" and answer[0].tokens <= 4


def test_without_an_end_of_text_id_generation_runs_past_it_as_v020_does(setup, tokenizer):
    """lm-eval v0.2.0 stops on its first stop string's token, not on the model's end-of-text, and decodes special
    tokens: with no end-of-text id a row goes on past the forced end-of-text token of the other tests."""
    model, requests, _, eot_ids, naive = setup

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False)

    got = HFGenerator(model, WINDOW, 8, (), decode, progress=False).generate(requests)
    assert got == [naive_generate(model, r, (), decode) for r in requests]
    assert "eot" not in {a.stop_reason for a in got}
    went_on = [(a, b) for a, b in zip(got, naive) if b.stop_reason == "eot"]
    assert went_on and all(a.tokens > b.tokens or a.stop_reason == "stop" for a, b in went_on)
    assert any(tokenizer.decode([eot_ids[1]]) in a.text for a, _ in went_on)  # the forced token is now text


def test_identical_requests_are_generated_once(neox, tokenizer):
    contexts = [tuple(ids) for ids in tokenizer.encode_batch(CONTEXTS[:3])]
    distinct = [TokenizedGeneration(c, ("\n",), 6) for c in contexts]
    alone = HFGenerator(neox, WINDOW, 8, 0, tokenizer.decode, progress=False)
    first = alone.generate(distinct)
    doubled = [distinct[0], distinct[1], distinct[0], distinct[2], distinct[0], distinct[1]]
    told: dict[int, GenerationResponse] = {}
    generator = HFGenerator(neox, WINDOW, 8, 0, tokenizer.decode, progress=False)
    got = generator.generate(doubled, on_done=lambda idx, resp: told.update(zip(idx, resp)))
    assert got == [first[0], first[1], first[0], first[2], first[0], first[1]]
    assert (generator.requests_generated, generator.requests_shared) == (3, 3)
    assert (generator.forward_calls, generator.generated_tokens) == (alone.forward_calls, alone.generated_tokens)
    assert told == dict(enumerate(got))  # every copy is reported as it finishes
    # another stop string or budget is another request
    other = HFGenerator(neox, WINDOW, 8, 0, tokenizer.decode, progress=False)
    other.generate([distinct[0], TokenizedGeneration(contexts[0], (".",), 6), TokenizedGeneration(contexts[0],
                                                                                                   ("\n",), 5)])
    assert other.requests_generated == 3


def test_finished_rows_leave_the_batch(neox, tokenizer):
    """A batch of a 1-token and a 9-token request: after the first step only one row is fed."""
    context = tuple(tokenizer.encode_batch([CONTEXTS[0]])[0])
    requests = [TokenizedGeneration(context, (), 1), TokenizedGeneration(context[1:], (), 9)]
    generator = HFGenerator(neox, WINDOW, 2, 0, tokenizer.decode, progress=False)
    generator.generate(requests)
    n = len(context)
    assert generator.forward_calls == 9
    assert generator.forward_tokens == n + (n - 1) + 8  # the contexts, then 8 steps of the one running row
    assert generator.padded_tokens == 2 * n + 8


def test_long_contexts_are_left_truncated_to_the_window_minus_the_budget(neox, tokenizer):
    text = CONTEXTS[6] * 4
    full = tokenizer.encode_batch([text])[0]
    window = 40
    request = GenerationRequest("t", 3, text, ("\n",), 8)
    [tokenized] = tokenize_generations([request], tokenizer.encode_batch, window)
    assert len(full) > 32
    assert tokenized.context_ids == tuple(full[-32:]) and tokenized.truncated_tokens == len(full) - 32
    [answer] = HFGenerator(neox, window, 4, 0, tokenizer.decode, progress=False).generate([tokenized])
    assert answer == naive_generate(neox, tokenized, (0,), tokenizer.decode)
    assert answer.truncated_tokens == len(full) - 32
    [short] = tokenize_generations([GenerationRequest("t", 0, "Hi", (), 8)], tokenizer.encode_batch, window)
    assert short.truncated_tokens == 0


def test_prefix_ids_come_first_and_are_the_first_truncated(tokenizer):
    ids = tokenizer.encode_batch(["The capital of France is"])[0]
    [plain, empty] = tokenize_generations([GenerationRequest("t", 0, "The capital of France is", (), 4),
                                           GenerationRequest("t", 1, "", (), 4)], tokenizer.encode_batch, 64,
                                          prefix_ids=(1,))
    assert plain.context_ids == (1, *ids) and empty.context_ids == (1,)
    [cut] = tokenize_generations([GenerationRequest("t", 0, "The capital of France is", (), 60)],
                                 tokenizer.encode_batch, 64, prefix_ids=(1,))
    assert cut.context_ids == tuple(ids[-4:]) and cut.truncated_tokens == len(ids) + 1 - 4
    [eot] = tokenize_generations([GenerationRequest("t", 1, "", (), 4)], tokenizer.encode_batch, 64, eot_id=0)
    assert eot.context_ids == (0,)


@pytest.mark.parametrize("budget,message", [(0, "at least 1, got 0"), (-3, "at least 1, got -3"),
                                            (64, "max_new_tokens 64 leaves no room"), (100, "100 leaves no room")])
def test_a_budget_that_cannot_fit_is_refused_naming_the_document(tokenizer, budget, message):
    with pytest.raises(EvalkitError, match=f"task gsm8k doc 7: .*{message}"):
        tokenize_generations([GenerationRequest("gsm8k", 7, "Q", ("\n",), budget)], tokenizer.encode_batch, 64)


def test_requests_that_do_not_fit_are_refused_by_the_generator(neox, tokenizer):
    generator = HFGenerator(neox, 16, 2, 0, tokenizer.decode, progress=False)
    with pytest.raises(ValueError, match="12 context tokens \\+ 5 new tokens exceed the window of 16"):
        generator.generate([TokenizedGeneration(tuple(range(1, 13)), (), 5)])
    with pytest.raises(ValueError, match="no context token"):
        generator.generate([TokenizedGeneration((), (), 5)])


class FakeOOM(Exception):
    pass


def test_out_of_memory_halves_the_batch_and_keeps_every_answer(setup, tokenizer):
    model, requests, _, eot_ids, naive = setup
    body = model.base_model

    def hook(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[0] > 2:
            raise FakeOOM("out of memory (injected)")

    handle = body.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        generator = HFGenerator(model, WINDOW, 8, eot_ids, tokenizer.decode, progress=False,
                                is_oom=lambda e: isinstance(e, FakeOOM))
        got = generator.generate(requests)
        with pytest.raises(FakeOOM):  # an error that is not an out-of-memory passes through
            HFGenerator(model, WINDOW, 8, eot_ids, tokenizer.decode, progress=False).generate(requests)
    finally:
        handle.remove()
    assert got == naive
    assert (generator.batch_size, generator.oom_retries) == (2, 2)


def test_cache_keys_tell_requests_and_kinds_apart():
    base = TokenizedGeneration((5, 6, 7), ("\n", "."), 32)
    keys = {generation_request_key(base), generation_request_key(TokenizedGeneration((5, 6, 7), ("\n",), 32)),
            generation_request_key(TokenizedGeneration((5, 6, 7), (".", "\n"), 32)),
            generation_request_key(TokenizedGeneration((5, 6, 7), ("\n.",), 32)),
            generation_request_key(TokenizedGeneration((5, 6, 7), ("\n", "."), 31)),
            generation_request_key(TokenizedGeneration((5, 6), ("\n", "."), 32)),
            generation_request_key(base, b"eot 2"), request_key(TokenizedRequest((5, 6, 7), (32,)))}
    assert len(keys) == 8
    assert generation_request_key(TokenizedGeneration((5, 6, 7), ("\n", "."), 32, truncated_tokens=4)) == \
        generation_request_key(base)  # the same ids read by the model: the same answer


def test_an_interrupted_generation_resumes_and_generates_only_the_rest(setup, tokenizer, tmp_path):
    model, requests, _, eot_ids, naive = setup
    requests = [*requests, requests[0], requests[5]]  # two repeats, answered with their first copies
    expected = [*naive, naive[0], naive[5]]

    class Interrupted(Exception):
        pass

    def stop_after(n):
        seen = []

        def on_done(indices, responses):
            seen.extend(indices)
            if len(seen) >= n:
                raise Interrupted

        return on_done

    with RequestCache(tmp_path) as cache:
        first = CachingGenerator(HFGenerator(model, WINDOW, 4, eot_ids, tokenizer.decode, progress=False), cache, "m")
        with pytest.raises(Interrupted):
            first.generate(requests, on_done=stop_after(10))
        stored = cache.count_generations("m")
        assert 10 <= stored < len(naive)
        inner = HFGenerator(model, WINDOW, 4, eot_ids, tokenizer.decode, progress=False)
        second = CachingGenerator(inner, cache, "m")
        told: dict[int, GenerationResponse] = {}
        got = second.generate(requests, on_done=lambda idx, resp: told.update(zip(idx, resp)))
        assert got == expected and told == dict(enumerate(expected))
        assert inner.requests_generated == len(naive) - stored  # only the rest was generated
        third_inner = HFGenerator(model, WINDOW, 4, eot_ids, tokenizer.decode, progress=False)
        third = CachingGenerator(third_inner, cache, "m")
        assert third.generate(requests) == expected
        assert (third.requests_cached, third.requests_sent, third_inner.forward_calls) == (len(requests), 0, 0)
        # another end-of-text setting of the generator is another key: nothing is served
        other = CachingGenerator(HFGenerator(model, WINDOW, 4, (0,), tokenizer.decode, progress=False), cache, "m")
        other.generate(requests[:3])
        assert other.requests_cached == 0
        assert cache.count() == 0  # no log-likelihood row was written


def test_the_tokenizer_decodes_without_special_tokens(tokenizer):
    ids = tokenizer.encode_batch(["Hello world"])[0]
    assert tokenizer.decode(ids) == "Hello world"
    assert tokenizer.decode([*ids, tokenizer.eot_id]) == "Hello world"
    assert tokenizer.decode([*ids, tokenizer.eot_id], skip_special_tokens=False) == "Hello world<|endoftext|>"


def test_split_generations_keeps_identical_requests_together_and_balances_tokens():
    from evalkit.scoring.batching import split_generations

    a, b, c = TokenizedGeneration((1,) * 10, ("\n",), 30), TokenizedGeneration((2,) * 50, ("\n",), 30), \
        TokenizedGeneration((1,) * 10, (".",), 30)
    # distinct costs: a 40 (indices 0, 3), b 80 (1), c 40 (2); LPT: b -> rank 0, a -> rank 1, c -> rank 1
    assert split_generations([a, b, c, a], 2) == [[1], [0, 2, 3]]
    assert split_generations([a, b, c, a], 1) == [[0, 1, 2, 3]]
    assert split_generations([], 3) == [[], [], []]


def test_ranks_generate_what_one_process_generates(tmp_path, tokenizer):
    import json
    import subprocess
    import sys

    from .conftest import REPO
    from .test_distributed import _env, _torchrun

    alone = subprocess.run([sys.executable, "-m", "tests.rank_generate", str(tmp_path / "one.json")], env=_env(),
                           capture_output=True, text=True, timeout=600, cwd=REPO)
    assert alone.returncode == 0, alone.stderr[-4000:]
    ranked = _torchrun(2, ["-m", "tests.rank_generate"], [str(tmp_path / "two.json")])
    assert ranked.returncode == 0, ranked.stderr[-4000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one["world"], two["world"]) == (1, 2)
    assert two["answers"] == one["answers"]
    assert {reason for _, _, reason in one["answers"]} >= {"stop", "length"}
    from evalkit.scoring.batching import split_generations

    from .rank_generate import build_requests

    shares = split_generations(build_requests(tokenizer), 2)
    first_gather = sorted(two["per_rank"][:2], key=lambda r: r["rank"])
    assert [r["requests"] for r in first_gather] == [len(s) for s in shares]
    assert sum(r["requests_generated"] for r in first_gather) == 14  # 17 requests, 3 repeats generated once
