"""The seven lm-eval v0.2.0 MATH tasks: exact prompts (zero- and few-shot) on hand-made documents in the hub
schema, their generation requests, per-document acc worked out by hand, aggregation, and the refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from evalkit.cli.parser import build_parser, config_from_args
from evalkit.run.generation_results import generation_sample, generation_summary, score_generations
from evalkit.run.prepare import check_generation_window, prepare_task
from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError, GenerationRequest, GenerationResponse, RunConfig

TEST_DOCS = [
    {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra",
     "solution": "We add: $1+1=\\boxed{2}$."},
    {"problem": "Simplify $\\frac{2}{4}$.", "level": "Level 2", "type": "Algebra",
     "solution": "Divide: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."},
    {"problem": "Solve $x+3=5$.", "level": "Level 1", "type": "Algebra",
     "solution": "First $x=3$ is wrong; subtracting, $x=\\boxed{2}$ and not \\boxed{3}... no: \\boxed{x=2}"},
]
TRAIN_DOCS = [
    {"problem": f"Train problem {i}?", "level": "Level 3", "type": "Algebra",
     "solution": f"So the answer is $\\boxed{{{i * 10}}}$."}
    for i in range(7)
]


def write_split(folder: Path, split: str, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


@pytest.fixture()
def math_dir(tmp_path: Path) -> Path:
    write_split(tmp_path / "math_algebra", "test", TEST_DOCS)
    write_split(tmp_path / "math_algebra", "train", TRAIN_DOCS)
    return tmp_path


def algebra():
    return load_registry().get("math_algebra")


def test_seven_tasks_with_v020_names_sizes_and_hub_configs():
    registry = load_registry()
    expected = {"math_algebra": ("algebra", 1187), "math_counting_and_prob": ("counting_and_probability", 474),
                "math_geometry": ("geometry", 479), "math_intermediate_algebra": ("intermediate_algebra", 903),
                "math_num_theory": ("number_theory", 540), "math_prealgebra": ("prealgebra", 871),
                "math_precalc": ("precalculus", 546)}
    for name, (config, n) in expected.items():
        task = registry.get(name)
        assert (task.dataset.hub_id, task.dataset.config, task.dataset.split, task.dataset.n) == (
            "EleutherAI/hendrycks_math", config, "test", n)
        assert task.scoring == "generate_until" and task.metrics == ("acc",) and task.fewshot_split == "train"
        assert task.until == ("\n",) and task.max_new_tokens == 256
    assert sum(n for _, n in expected.values()) == 5000


def test_zero_shot_prompt_and_request(math_dir):
    p = prepare_task(algebra(), math_dir, None, 1234)
    assert p.requests[0] == GenerationRequest("math_algebra", 0, "Problem: What is $1+1$?\nAnswer:", ("\n",), 256)
    assert [r.context for r in p.requests] == [
        "Problem: What is $1+1$?\nAnswer:", "Problem: Simplify $\\frac{2}{4}$.\nAnswer:",
        "Problem: Solve $x+3=5$.\nAnswer:"]
    assert [r.doc_id for r in p.requests] == [0, 1, 2]


def test_few_shot_prompts_follow_v020_draws_with_boxed_answers_as_targets(math_dir):
    p = prepare_task(algebra(), math_dir, None, 1234, num_fewshot=2, fewshot_seed=42)
    rnd = random.Random(42)  # v0.2.0: shuffle the evaluated rows, then sample(train, k) per row in that order
    order = list(range(3))
    rnd.shuffle(order)
    drawn = {row: rnd.sample(range(7), 2) for row in order}
    for doc_id, request in enumerate(p.requests):
        shots = "".join(f"Problem: Train problem {i}?\nAnswer: {i * 10}\n\n" for i in drawn[doc_id])
        assert request.context == shots + "Problem: " + TEST_DOCS[doc_id]["problem"] + "\nAnswer:"
    # one literal prompt, so that a change in the format cannot hide behind the recipe above
    first = drawn[0]
    assert p.requests[0].context == (f"Problem: Train problem {first[0]}?\nAnswer: {first[0] * 10}\n\n"
                                     f"Problem: Train problem {first[1]}?\nAnswer: {first[1] * 10}\n\n"
                                     "Problem: What is $1+1$?\nAnswer:")
    assert p.fewshot.examples[0] == tuple(first)


def test_max_gen_toks_overrides_the_tasks_length(math_dir):
    p = prepare_task(algebra(), math_dir, None, 1234, max_gen_toks=128)
    assert {r.max_new_tokens for r in p.requests} == {128}


def test_per_document_acc_by_hand_and_aggregate(math_dir):
    p = prepare_task(algebra(), math_dir, None, 1234)
    generations = [
        " $2$",  # doc 0: "2" vs boxed "2" -> 1
        " 0.5",  # doc 1: "0.5" normalises to \frac{1}{2}, as the boxed \frac{1}{2} -> 1
        " $x = 3$",  # doc 2: last boxed is "x=2"; "x = 3" -> "3" after the short "x =" prefix is cut -> 0
    ]
    responses = [GenerationResponse(g, 3, "stop") for g in generations]
    docs = score_generations(p, responses)
    assert [d.metrics for d in docs] == [{"acc": 1.0}, {"acc": 1.0}, {"acc": 0.0}]
    assert [d.generation for d in docs] == generations
    assert [d.answers for d in docs] == [{"answer": "2"}, {"answer": " 0.5"}, {"answer": "x = 3"}]
    summary = generation_summary(p, docs, responses, RunConfig("random:x", ("math_algebra",), bootstrap_iters=0))
    acc = summary["metrics"]["acc"]
    assert acc["value"] == pytest.approx(2 / 3) and acc["n"] == 3
    # values 1, 1, 0: squared deviations 1/9 + 1/9 + 4/9 = 2/3; / (n - 1) = 1/3; / n = 1/9; sqrt = 1/3
    assert acc["stderr"] == pytest.approx(1 / 3)
    assert summary["documents"] == {"doc_id": [0, 1, 2], "acc": [1.0, 1.0, 0.0]}
    assert summary["until"] == ["\n"] and summary["max_new_tokens"] == [256] and summary["generated_tokens"] == 9
    assert summary["stop_reasons"] == {"stop": 3, "eot": 0, "length": 0}
    sample = generation_sample(p, 2, docs[2])
    assert sample["generation"] == " $x = 3$" and sample["references"] == ["x=2"]
    assert sample["context"] == "Problem: Solve $x+3=5$.\nAnswer:" and sample["until"] == ["\n"]


def test_a_solution_without_a_boxed_answer_is_refused_naming_file_line_and_field(math_dir):
    bad = [*TEST_DOCS[:1], {**TEST_DOCS[1], "solution": "no box here"}]
    write_split(math_dir / "math_algebra", "test", bad)
    with pytest.raises(EvalkitError) as caught:
        prepare_task(algebra(), math_dir, None, 1234)
    message = str(caught.value)
    assert "math_algebra/test.jsonl line 2" in message and "field 'solution'" in message


def test_a_missing_field_is_refused(math_dir):
    write_split(math_dir / "math_algebra", "test", [{"problem": "p", "level": "1", "type": "Algebra"}])
    with pytest.raises(EvalkitError, match="line 1: missing field 'solution'"):
        prepare_task(algebra(), math_dir, None, 1234)


@pytest.mark.parametrize("value", [0, -3, True, 2.5])
def test_a_generation_length_that_is_not_a_positive_whole_number_is_refused(math_dir, value):
    with pytest.raises(EvalkitError, match="--max-gen-toks must be a whole number above 0"):
        prepare_task(algebra(), math_dir, None, 1234, max_gen_toks=value)


def test_a_generation_length_filling_the_window_is_refused(math_dir):
    p = prepare_task(algebra(), math_dir, None, 1234, max_gen_toks=2048)
    check_generation_window([p], 2049)
    with pytest.raises(EvalkitError, match="math_algebra: 2048 new tokens leave no room .* window of 2048"):
        check_generation_window([p], 2048)


def test_max_gen_toks_flag_is_parsed_and_checked():
    parser = build_parser()
    args = parser.parse_args(["run", "--model", "m", "--tasks", "math_algebra", "--max-gen-toks", "128"])
    assert config_from_args(args).max_gen_toks == 128
    args = parser.parse_args(["run", "--model", "m", "--tasks", "math_algebra"])
    assert config_from_args(args).max_gen_toks is None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--model", "m", "--tasks", "x", "--max-gen-toks", "0"])


def test_math_tasks_are_in_the_paper_group():
    group = load_registry().groups["neox20b_paper"]
    assert group.tasks[-7:] == ("math_algebra", "math_counting_and_prob", "math_geometry",
                                "math_intermediate_algebra", "math_num_theory", "math_prealgebra", "math_precalc")
