"""lm-eval 0.4 ``generate_until`` task YAMLs: lm-eval 0.4.13's own gsm8k, gsm8k_cot and triviaqa files read
unchanged (exact contexts, stop strings, lengths), per-document filters and exact_match worked out by hand, the
``metric,filter`` names, and the refusals (named by file, line and key)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from evalkit.run.generation_results import generation_sample, generation_summary, score_generations
from evalkit.run.prepare import prepare_task
from evalkit.tasks.registry import load_registry
from evalkit.types import GenerationResponse, RunConfig

from .conftest import REPO

LMEVAL = REPO / "tests" / "task_yaml" / "lmeval_0413"
SHA256 = {"gsm8k.yaml": "82eb1780b263bc040729032b3e076990c7933f42163c91e359f38820dd1d8833",
          "gsm8k-cot.yaml": "7c9dd2561fe334a55f62bdc6a876f045e6dc7f53714c7a9db506b89c6de6bc96",
          "triviaqa.yaml": "fe8213422754e69878226b7f4aedd13afe099a837884203552b0d44ae1759c88"}

GSM8K_TEST = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A bike costs $1,000 and a helmet $234. What do both cost?",
     "answer": "Together 1000+234 = <<1000+234=1234>>1234 dollars.\n#### 1,234"},
    {"question": "Tom has 3 apples and gets 5 more. How many apples has he?",
     "answer": "3+5 = <<3+5=8>>8.\n#### 8"},
]
GSM8K_TRAIN = [{"question": f"Train question {i}?", "answer": f"Work {i}.\n#### {i}"} for i in range(9)]


def write_split(folder: Path, split: str, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


@pytest.fixture(scope="module")
def registry():
    return load_registry([str(LMEVAL)])


@pytest.fixture()
def gsm8k_dir(tmp_path: Path) -> Path:
    for name in ("gsm8k", "gsm8k_cot"):
        write_split(tmp_path / name, "test", GSM8K_TEST)
        write_split(tmp_path / name, "train", GSM8K_TRAIN)
    return tmp_path


@pytest.fixture()
def triviaqa_dir(tmp_path: Path, data_dir: Path) -> Path:
    (tmp_path / "triviaqa").symlink_to(data_dir / "triviaqa")
    return tmp_path


def test_the_yaml_files_are_lm_evals_own_unchanged(registry):
    for name, digest in SHA256.items():
        assert hashlib.sha256((LMEVAL / name).read_bytes()).hexdigest() == digest
    assert not registry.refused


def test_gsm8k_settings_and_metric_names(registry):
    task = registry.get("lm_eval.gsm8k")
    assert task.scoring == "generate_until" and task.version == "3.0"
    assert task.until == ("Question:", "</s>", "<|im_end|>") and task.max_new_tokens == 256
    assert task.metrics == ("exact_match,strict-match", "exact_match,flexible-extract")
    assert (task.num_fewshot, task.fewshot_split, task.fewshot_sampler) == (5, "train", "lm-eval-0.4:default")
    assert registry.groups["lm_eval.math_word_problems"].tasks == ("lm_eval.gsm8k",)


def test_gsm8k_zero_shot_request(registry, gsm8k_dir):
    p = prepare_task(registry.get("lm_eval.gsm8k"), gsm8k_dir, None, 1234)
    r = p.requests[0]
    assert (r.task, r.doc_id, r.until, r.max_new_tokens) == ("lm_eval.gsm8k", 0,
                                                             ("Question:", "</s>", "<|im_end|>"), 256)
    assert r.context == ("Question: Natalia sold 48 clips in April and half as many in May. How many clips did she "
                         "sell?\nAnswer:")


def test_gsm8k_five_shot_contexts_follow_lm_evals_seeded_sampler(registry, gsm8k_dir):
    p = prepare_task(registry.get("lm_eval.gsm8k"), gsm8k_dir, None, 1234, num_fewshot=5)
    rnd = random.Random(1234)  # lm-eval 0.4: one generator per task, seeded 1234, drawn per document in order
    for doc, request in zip(GSM8K_TEST, p.requests):
        examples = rnd.sample(GSM8K_TRAIN, 5)
        shots = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in examples)
        assert request.context == shots + f"Question: {doc['question']}\nAnswer:"
    first = p.requests[0].context.split("\n\n")[0]
    assert re.fullmatch(r"Question: Train question (\d)\?\nAnswer: Work \1\.\n#### \1", first)


def test_gsm8k_per_document_filters_and_exact_match_by_hand(registry, gsm8k_dir):
    p = prepare_task(registry.get("lm_eval.gsm8k"), gsm8k_dir, None, 1234)
    generations = [
        " She sold 24 in May, 72 in all.\n#### 72",  # strict "72"; flexible: last number "72"; gold -> "72"
        " The total is $1,234.",  # strict: no "####" -> [invalid]; flexible "$1,234." -> "1234"; gold "1,234" -> "1234"
        " He has 5 apples\n#### 7",  # strict "7", flexible "7"; gold "8"
    ]
    responses = [GenerationResponse(g, 10, "stop") for g in generations]
    docs = score_generations(p, responses)
    assert [d.metrics for d in docs] == [
        {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0},
        {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0},
        {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 0.0},
    ]
    assert [d.answers for d in docs] == [{"strict-match": "72", "flexible-extract": "72"},
                                         {"strict-match": "[invalid]", "flexible-extract": "$1,234."},
                                         {"strict-match": "7", "flexible-extract": "7"}]
    summary = generation_summary(p, docs, responses, RunConfig("random:x", ("lm_eval.gsm8k",), bootstrap_iters=0))
    strict, flexible = summary["metrics"]["exact_match,strict-match"], summary["metrics"]["exact_match,flexible-extract"]
    assert strict["value"] == pytest.approx(1 / 3) and flexible["value"] == pytest.approx(2 / 3)
    # 0/1 values with mean 1/3 or 2/3 over 3 documents: sum of squared deviations 2/3, / 2 / 3 = 1/9, sqrt 1/3
    assert strict["stderr"] == pytest.approx(1 / 3) and flexible["stderr"] == pytest.approx(1 / 3)
    assert strict["higher_is_better"] is True
    assert summary["documents"]["exact_match,flexible-extract"] == [1.0, 1.0, 0.0]
    sample = generation_sample(p, 1, docs[1])
    assert sample["references"] == [GSM8K_TEST[1]["answer"]] and sample["answers"]["strict-match"] == "[invalid]"


def test_gsm8k_cot_shows_its_eight_written_examples_first_n(registry, gsm8k_dir):
    task = registry.get("lm_eval.gsm8k_cot")
    assert task.until == ("Q:", "</s>", "<|im_end|>") and task.num_fewshot == 8 and len(task.fewshot_samples) == 8
    p = prepare_task(task, gsm8k_dir, None, 1234, num_fewshot=8)
    context = p.requests[2].context
    pieces = context.split("\n\n")
    assert len(pieces) == 9 and pieces[-1] == "Q: Tom has 3 apples and gets 5 more. How many apples has he?\nA:"
    assert pieces[0] == ("Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
                         "they are done, there will be 21 trees. How many trees did the grove workers plant today?\n"
                         "A: There are 15 trees originally. Then there were 21 trees after some more were planted. So "
                         "there must have been 21 - 15 = 6. The answer is 6.")
    assert pieces[7].startswith("Q: Olivia has $23.") and pieces[7].endswith("23 - 15 is 8. The answer is 8.")
    assert {r.context.split("\n\n")[:8] == pieces[:8] for r in p.requests} == {True}  # first_n: the same for all
    docs = score_generations(p, [GenerationResponse(" 3 + 5 = 8. The answer is 8.\n\n", 12, "stop")] * 3)
    # gold is the text after "####" ("72", "1,234", "8"); strict: "The answer is (...)." -> "8"
    assert [d.metrics["exact_match,strict-match"] for d in docs] == [0.0, 0.0, 1.0]


def test_triviaqa_prompt_and_any_alias_scoring(registry, triviaqa_dir):
    task = registry.get("lm_eval.triviaqa")
    assert task.until == ("\n", ".", ",") and task.metrics == ("exact_match,remove_whitespace",)
    p = prepare_task(task, triviaqa_dir, 2, 1234)
    assert p.n_split == 11313 and len(p.requests) == 2
    doc = p.docs[0]
    assert p.requests[0].context == f"Question: {doc['question']}?\nAnswer:"
    full = prepare_task(task, triviaqa_dir, None, 1234)
    assert full.requests[1].context == "Question: What star sign is Jamie Lee Curtis??\nAnswer:"
    assert task.references(full.docs[1]) == ["Scorpio", "Skorpio", "Scorpio (disambiguation)"]
    first_two = type(full)(task, full.n_split, full.doc_ids[:2], full.docs[:2], full.requests[:2], [], None, None)
    cases = [(" David Seville", 1.0), (" scorpio", 1.0)]
    docs = score_generations(first_two, [GenerationResponse(g, 3, "stop") for g, _ in cases])
    assert [d.metrics["exact_match,remove_whitespace"] for d in docs] == [1.0, 1.0]
    assert docs[1].answers == {"remove_whitespace": "scorpio"}
    # punctuation and case ignored ("Skorpio!" matches an alias); another sign matches none
    docs = score_generations(first_two, [GenerationResponse(" Chipmunk", 2, "eot"),
                                         GenerationResponse("  Skorpio!", 2, "length")])
    assert [d.metrics["exact_match,remove_whitespace"] for d in docs] == [0.0, 1.0]


TASK = """task: g
dataset_path: json
output_type: generate_until
test_split: test
doc_to_text: "{{q}}"
doc_to_target: "{{a}}"
"""


@pytest.mark.parametrize("extra, key, expected", [
    ("generation_kwargs: {do_sample: true}\n", "generation_kwargs", "do_sample: true (sampling) is not supported"),
    ("generation_kwargs: {temperature: 0.7}\n", "generation_kwargs", "temperature 0.7 without do_sample: false"),
    ("generation_kwargs: {top_p: 0.9, do_sample: false}\n", "generation_kwargs",
     "generation setting 'top_p' is not supported"),
    ("generation_kwargs: {until: ['x', '']}\n", "generation_kwargs", "until must be a non-empty string or a list"),
    ("generation_kwargs: {max_gen_toks: 0}\n", "generation_kwargs", "max_gen_toks must be a whole number above 0"),
    ("generation_kwargs: {max_new_tokens: -1}\n", "generation_kwargs", "max_new_tokens must be a whole number above 0"),
    ("filter_list: [{name: f, filter: [{function: regex, regex_pattern: '(a'}, {function: take_first}]}]\n",
     "filter_list", "does not compile"),
    ("filter_list: [{name: f, filter: [{function: majority_vote}, {function: take_first}]}]\n", "filter_list",
     "filter function 'majority_vote' is not supported"),
    ("metric_list: [{metric: bleu}]\n", "metric_list", "metric 'bleu' is not supported for output_type generate_until"),
    ("metric_list: [{metric: exact_match, ignore_spaces: true}]\n", "metric_list", "exact_match has no option"),
    ("metric_list: [{metric: exact_match, regexes_to_ignore: ['[']}]\n", "metric_list", "does not compile"),
    ("repeats: 4\n", "repeats", "only repeats: 1 is supported"),
])
def test_bad_generation_settings_are_refused_naming_file_line_and_key(tmp_path, extra, key, expected):
    text = TASK + extra
    (tmp_path / "g.yaml").write_text(text)
    registry = load_registry([str(tmp_path)])
    reason = registry.refused[str(tmp_path / "g.yaml")]
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith(key + ":"))
    assert reason.startswith(f"{tmp_path / 'g.yaml'} line {line}, key '{key}'"), reason
    assert expected in reason, reason


@pytest.mark.parametrize("extra, until, length", [
    ("", ("\n\n",), 256),  # no generation_kwargs: [fewshot_delimiter], lm-eval's HF default length
    ('fewshot_delimiter: "\\n"\ngeneration_kwargs: {max_gen_toks: 32}\n', ("\n",), 32),  # no until: the delimiter
    ("generation_kwargs: {until: stop, max_new_tokens: 10, max_tokens: 20}\n", ("stop",), 10),
    ("generation_kwargs: {max_tokens: 20, max_completion_tokens: 30}\n", ("\n\n",), 20),
    ("generation_kwargs: {max_completion_tokens: 30, max_gen_toks: 5}\n", ("\n\n",), 5),
    ('generation_kwargs: {do_sample: false, temperature: 0.8, until: ["\\n"]}\n', ("\n",), 256),  # greedy anyway
])
def test_stop_strings_and_length_defaults_and_alias_priority(tmp_path, extra, until, length):
    (tmp_path / "g.yaml").write_text(TASK + extra)
    registry = load_registry([str(tmp_path)])
    assert not registry.refused
    task = registry.get("lm_eval.g")
    assert (task.until, task.max_new_tokens, task.metrics) == (until, length, ("exact_match,none",))


def test_list_targets_score_when_any_matches_and_choices_give_the_gold(tmp_path):
    (tmp_path / "lists.yaml").write_text(TASK.replace("task: g", "task: lists").replace('"{{a}}"', "golds"))
    (tmp_path / "choice.yaml").write_text(TASK.replace("task: g", "task: choice").replace('"{{a}}"', "label")
                                          + "doc_to_choice: [red, green]\n")
    docs = [{"q": "Colour?", "golds": ["Red", "crimson"], "label": 1}]
    write_split(tmp_path / "data" / "lists", "test", docs)
    write_split(tmp_path / "data" / "choice", "test", docs)
    registry = load_registry([str(tmp_path)])
    lists = prepare_task(registry.get("lm_eval.lists"), tmp_path / "data", None, 1)
    got = score_generations(lists, [GenerationResponse("crimson", 1, "stop")])
    assert got[0].metrics == {"exact_match,none": 1.0} and got[0].answers == {"none": "crimson"}
    got = score_generations(lists, [GenerationResponse("red", 1, "stop")])  # exact_match is case sensitive here
    assert got[0].metrics == {"exact_match,none": 0.0}
    choice = prepare_task(registry.get("lm_eval.choice"), tmp_path / "data", None, 1)
    assert choice.task.references(docs[0]) == ["green"]
    got = score_generations(choice, [GenerationResponse("green", 1, "stop")])
    assert got[0].metrics == {"exact_match,none": 1.0} and choice.requests[0].context == "Colour?"
