"""Exporting a generation task in lm-eval 0.4's layout: ``metric,filter`` keys kept, generation settings in the
config, one sample per filter with that filter's answer and metrics."""

from __future__ import annotations

from evalkit.results.export import split_metric, to_lm_eval, to_lm_eval_samples

METRIC = {"value": 0.5, "stderr": 0.25, "stderr_bootstrap": None, "n": 2, "higher_is_better": True}
TASK = {"version": "3.0", "n": 2, "n_split": 2, "num_fewshot": 5, "output_type": "generate_until",
        "until": ["Question:"], "max_new_tokens": [256], "dataset": {"hub_id": "openai/gsm8k", "config": "main",
                                                                     "split": "test"},
        "metrics": {"exact_match,strict-match": METRIC, "exact_match,flexible-extract": METRIC | {"value": 1.0}}}
RESULTS = {"tasks": {"lm_eval.gsm8k": TASK}, "model": {"name": "m", "kind": "random", "revision": "seed=1"},
           "config": {}, "created": "2026-12-05T23:00:00+00:00"}
ROW = {"task": "lm_eval.gsm8k", "doc_id": 4, "context": "Question: q?\nAnswer:", "until": ["Question:"],
       "max_new_tokens": 256, "generation": " so 3\n#### 3", "answers": {"strict-match": "3",
                                                                          "flexible-extract": "3"},
       "references": ["1+2=3\n#### 3"], "metrics": {"exact_match,strict-match": 1.0,
                                                   "exact_match,flexible-extract": 0.0}}


def test_split_metric():
    assert split_metric("exact_match,strict-match") == ("exact_match", "strict-match")
    assert split_metric("acc") == ("acc", "none")


def test_results_keep_the_filter_in_each_key():
    out = to_lm_eval(RESULTS)
    block = out["results"]["lm_eval.gsm8k"]
    assert block["exact_match,strict-match"] == 0.5 and block["exact_match_stderr,strict-match"] == 0.25
    assert block["exact_match,flexible-extract"] == 1.0
    assert out["higher_is_better"]["lm_eval.gsm8k"] == {"exact_match": True}
    config = out["configs"]["lm_eval.gsm8k"]
    assert config["output_type"] == "generate_until" and config["metric_list"] == [
        {"metric": "exact_match", "higher_is_better": True}]
    assert config["generation_kwargs"] == {"until": ["Question:"], "max_gen_toks": 256, "do_sample": False}


def test_one_sample_per_filter():
    strict, flexible = to_lm_eval_samples(ROW)
    assert (strict["filter"], strict["filtered_resps"], strict["exact_match"]) == ("strict-match", ["3"], 1.0)
    assert (flexible["filter"], flexible["exact_match"], flexible["metrics"]) == ("flexible-extract", 0.0,
                                                                                  ["exact_match"])
    assert strict["resps"] == [[" so 3\n#### 3"]] and strict["target"] == "1+2=3\n#### 3"
    assert strict["arguments"] == {"gen_args_0": {"arg_0": "Question: q?\nAnswer:",
                                                  "arg_1": {"until": ["Question:"], "max_gen_toks": 256}}}
    math_row = ROW | {"metrics": {"acc": 1.0}, "answers": {"answer": "3"}}
    (only,) = to_lm_eval_samples(math_row)
    assert (only["filter"], only["filtered_resps"], only["acc"]) == ("none", [" so 3\n#### 3"], 1.0)
