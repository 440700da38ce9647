"""lm-eval 0.4's few-shot sampler and context assembly, as pure functions, against hand-computed draws."""

from __future__ import annotations

import pytest

from evalkit.fewshot.lmeval import assemble_context, draw_examples, parse_sampler, sampler_name

POOL = [{"id": i} for i in range(10)]


def ids(drawn):
    return [[d["id"] for d in examples] for examples in drawn]


def test_default_sampler_is_one_random_1234_stream_over_the_documents():
    # random.Random(1234): three successive .sample(range(10), 3) calls give these lists
    drawn = draw_examples(POOL, [{"id": 100}, {"id": 101}, {"id": 102}], 3)
    assert ids(drawn) == [[7, 1, 0], [1, 0, 9], [1, 5, 3]]


def test_examples_from_the_evaluated_split_draw_one_more_and_drop_the_document():
    # random.Random(1234): successive .sample(range(10), 4) calls give [7, 1, 0, 9], [9, 0, 1, 8], [5, 3, 0, 7]
    drawn = draw_examples(POOL, [{"id": 1}, {"id": 9}, {"id": 4}], 3, exclude_eval_doc=True)
    assert ids(drawn) == [[7, 0, 9], [0, 1, 8], [5, 3, 0]]


def test_duplicates_of_the_document_are_never_shown():
    pool = [{"id": 0}, {"id": 0}, {"id": 1}, {"id": 2}]
    for seed in range(30):
        [examples] = draw_examples(pool, [{"id": 0}], 2, seed=seed, exclude_eval_doc=True)
        assert sorted(d["id"] for d in examples) == [1, 2]


def test_first_n_takes_the_pool_in_order_without_the_document():
    drawn = draw_examples(POOL, [{"id": 0}, {"id": 5}], 3, sampler="first_n", exclude_eval_doc=True)
    assert ids(drawn) == [[1, 2, 3], [0, 1, 2]]
    assert ids(draw_examples(POOL, [{"id": 0}], 2, sampler="first_n")) == [[0, 1]]


def test_zero_shots_draw_nothing_and_bad_requests_are_refused():
    assert draw_examples(POOL, [{"id": 1}, {"id": 2}], 0) == [[], []]
    with pytest.raises(ValueError, match="10 few-shot examples asked for, but the few-shot split has 10 documents"):
        draw_examples(POOL, [{"id": 1}], 10, exclude_eval_doc=True)
    with pytest.raises(ValueError, match="unknown lm-eval few-shot sampler 'balanced'"):
        draw_examples(POOL, [{"id": 1}], 1, sampler="balanced")
    with pytest.raises(ValueError, match="no documents"):
        draw_examples([], [{"id": 1}], 1)


def test_context_is_description_then_examples_then_the_text():
    context = assemble_context("Pick one.\n\n", [("Q: a?\nA:", "x"), ("Q: b?\nA:", "y")], "Q: c?\nA:")
    assert context == "Pick one.\n\nQ: a?\nA: x\n\nQ: b?\nA: y\n\nQ: c?\nA:"
    assert assemble_context("", [("2+2=", "4")], "3+3=", "", "\n") == "2+2=4\n3+3="
    assert assemble_context("", [("no answer", "")], "q") == "no answerq"


def test_sampler_names_round_trip():
    assert sampler_name("first_n", True) == "lm-eval-0.4:first_n:exclude-doc"
    assert parse_sampler("lm-eval-0.4:first_n:exclude-doc") == ("first_n", True)
    assert parse_sampler("lm-eval-0.4:default") == ("default", False)
    assert parse_sampler("v0.2.0") is None
    with pytest.raises(ValueError):
        parse_sampler("lm-eval-0.4:manual")
