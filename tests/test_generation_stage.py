"""A generation task from prepared requests to scored documents on a tiny random GPT-NeoX: tokenization cut to the
window, greedy generation through the request cache (a second run answered entirely from it, identically), stop
strings and lengths respected, per-document metrics from the generated text."""

from __future__ import annotations

import pytest

from evalkit.run.generation_results import generation_summary, score_generations
from evalkit.run.generation_stage import generate_tasks, tokenize_tasks
from evalkit.run.prepare import prepare_task
from evalkit.scoring.cache import model_key
from evalkit.scoring.generation import busy_cpu_warning
from evalkit.tasks.registry import load_registry
from evalkit.types import RunConfig

from .test_math_tasks import TEST_DOCS, TRAIN_DOCS, write_split

pytestmark = pytest.mark.usefixtures("one_thread")

IDENTITY = {"kind": "random", "name": "random:tiny-neox", "revision": "seed-0", "config_sha256": "tiny",
            "dtype": "float32", "weights": "random"}


@pytest.fixture()
def prepared(tmp_path):
    write_split(tmp_path / "math_algebra", "test", TEST_DOCS)
    write_split(tmp_path / "math_algebra", "train", TRAIN_DOCS)
    task = load_registry().get("math_algebra")
    return [prepare_task(task, tmp_path, None, 1234, num_fewshot=2, max_gen_toks=6)]


def test_generation_through_the_cache_then_scoring(prepared, tiny_model, tokenizer, tmp_path):
    config = RunConfig("random:tiny-neox", ("math_algebra",), cache_dir=str(tmp_path / "cache"), bootstrap_iters=0)
    tokenized = tokenize_tasks(prepared, tokenizer, 2048)
    toks = tokenized["math_algebra"]
    assert [t.context_ids for t in toks] == [tuple(tokenizer.encode_batch([r.context])[0])
                                             for r in prepared[0].requests]
    assert {(t.until, t.max_new_tokens, t.truncated_tokens) for t in toks} == {(("\n",), 6, 0)}
    key = model_key(IDENTITY, tokenizer.identity["sha256"], "hf", {"evalkit": "t", "torch": "t", "transformers": "t"})
    first = generate_tasks(prepared, tokenized, tiny_model, tokenizer, 2048, 2, config, key, progress=False)
    answers = first.responses["math_algebra"]
    assert len(answers) == 3 and first.timing["requests_cached"] == 0
    for answer in answers:
        assert "\n" not in answer.text and answer.stop_reason in ("stop", "eot", "length")
        assert 1 <= answer.tokens <= 6 and (answer.stop_reason != "length" or answer.tokens == 6)
    again = generate_tasks(prepared, tokenized, tiny_model, tokenizer, 2048, 3, config, key, progress=False)
    assert again.responses == first.responses and again.timing["requests_cached"] == 3
    assert again.timing["requests_generated"] == 0
    docs = score_generations(prepared[0], answers)
    assert [d.generation for d in docs] == [a.text for a in answers]
    assert all(d.metrics["acc"] in (0.0, 1.0) for d in docs)
    summary = generation_summary(prepared[0], docs, answers, config)
    assert summary["requests"] == 3 and summary["max_new_tokens"] == [6] and summary["num_fewshot"] == 2
    assert summary["generated_tokens"] == sum(a.tokens for a in answers)


def test_contexts_longer_than_the_window_are_cut_on_the_left_and_warned(prepared, tiny_model, tokenizer):
    window = 20
    tokenized = tokenize_tasks(prepared, tokenizer, window)
    full = [len(tokenizer.encode_batch([r.context])[0]) for r in prepared[0].requests]
    assert [len(t.context_ids) for t in tokenized["math_algebra"]] == [min(n, window - 6) for n in full]
    assert [t.truncated_tokens for t in tokenized["math_algebra"]] == [max(0, n - (window - 6)) for n in full]
    config = RunConfig("random:tiny-neox", ("math_algebra",), use_cache=False)
    outcome = generate_tasks(prepared, tokenized, tiny_model, tokenizer, window, 3, config, None, progress=False)
    assert outcome.warnings["math_algebra"][0].startswith("math_algebra: 3 of 3 generation contexts were longer")



def test_several_threads_on_a_busy_cpu_are_warned_about_and_one_thread_or_idle_cores_are_not():
    warning = busy_cpu_warning(2, 5.5, 2)
    assert "2 torch threads while the load average is 5.5 on 2 cores" in warning and "OMP_NUM_THREADS=1" in warning
    assert busy_cpu_warning(1, 9.0, 2) is None  # one thread does not wait on another
    assert busy_cpu_warning(2, 1.2, 2) is None  # a core to spare
    assert busy_cpu_warning(16, 15.9, 16) is None
