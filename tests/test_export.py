"""lm-evaluation-harness export: the golden file written by hand from lm-eval 0.4's documented schema
(lm_eval/result_schema.py), round trips of values, stderrs and n, samples in lm-eval's shape, and the CSV table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.results.export import to_lm_eval, to_lm_eval_sample

FIXTURES = Path(__file__).with_name("fixtures")


def small() -> dict:
    return json.loads((FIXTURES / "small_results.json").read_text())


def test_export_matches_the_hand_written_golden_file():
    assert to_lm_eval(small()) == json.loads((FIXTURES / "small_results.lm-eval.json").read_text())


def test_export_round_trips_values_stderrs_and_n():
    data = small()
    out = to_lm_eval(data)
    for name, task in data["tasks"].items():
        assert out["n-samples"][name] == {"original": task["n_split"], "effective": task["n"]}
        for metric, entry in task["metrics"].items():
            assert out["results"][name][f"{metric},none"] == entry["value"]
            stderr = entry["stderr"] if entry["stderr"] is not None else entry["stderr_bootstrap"]
            assert out["results"][name][f"{metric}_stderr,none"] == stderr
            assert out["higher_is_better"][name][metric] is entry["higher_is_better"]


def test_model_args_are_part_of_lm_evals_model_args():
    data = small()
    data["model"] |= {"model_args": {"attn_implementation": "eager"}, "revision": "abc"}
    assert to_lm_eval(data)["config"]["model_args"] == (
        "pretrained=random:pythia-14m,revision=abc,dtype=float32,attn_implementation=eager")


def test_a_metric_without_any_stderr_is_marked_not_available():
    data = small()
    data["tasks"]["lambada_openai"]["metrics"]["perplexity"]["stderr_bootstrap"] = None  # --bootstrap-iters 0
    assert to_lm_eval(data)["results"]["lambada_openai"]["perplexity_stderr,none"] == "N/A"


SAMPLE = {"task": "piqa", "doc_id": 17, "context": "Question: fire\nAnswer:", "continuations": [" melts", " burns"],
          "gold": 1, "loglikelihoods": [-4.5, -2.25], "greedy": [False, True], "metrics": {"acc": 1.0, "acc_norm": 0.0}}


def test_a_sample_in_lm_evals_shape():
    sample = to_lm_eval_sample(SAMPLE)
    assert sample["doc_id"] == 17 and sample["target"] == " burns" and sample["filter"] == "none"
    assert sample["arguments"] == {"gen_args_0": {"arg_0": "Question: fire\nAnswer:", "arg_1": " melts"},
                                   "gen_args_1": {"arg_0": "Question: fire\nAnswer:", "arg_1": " burns"}}
    assert sample["resps"] == [[["-4.5", "False"]], [["-2.25", "True"]]]
    assert sample["filtered_resps"] == [["-4.5", "False"], ["-2.25", "True"]]
    assert sample["metrics"] == ["acc", "acc_norm"] and sample["acc"] == 1.0 and sample["acc_norm"] == 0.0
    # sha256("Question: fire\nAnswer:") and sha256(" burns"), as lm_eval.utils.hash_string
    import hashlib

    assert sample["prompt_hash"] == hashlib.sha256(b"Question: fire\nAnswer:").hexdigest()
    assert sample["target_hash"] == hashlib.sha256(b" burns").hexdigest()


def write_run(folder: Path, with_samples: bool) -> Path:
    data = small()
    results = folder / "results" / "random_pythia-14m" / "20261130T120000Z.json"
    results.parent.mkdir(parents=True)
    if with_samples:
        data["samples_file"] = "20261130T120000Z.samples.jsonl"
        lines = [SAMPLE, SAMPLE | {"doc_id": 3}, SAMPLE | {"task": "lambada_openai", "continuations": [" x"], "gold": 0,
                                                        "loglikelihoods": [-1.5], "greedy": [True],
                                                        "metrics": {"acc": 1.0, "loglikelihood": -1.5}}]
        results.with_suffix(".samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    results.write_text(json.dumps(data))
    return results


def test_export_command_writes_lm_evals_folder(tmp_path, capsys):
    results = write_run(tmp_path, with_samples=True)
    assert main(["export", str(results)]) == 0
    folder = results.with_name("20261130T120000Z_lm-eval")
    stamp = "2026-11-30T12-00-00"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"results_{stamp}.json", f"samples_lambada_openai_{stamp}.jsonl", f"samples_piqa_{stamp}.jsonl"]
    assert json.loads((folder / f"results_{stamp}.json").read_text()) == to_lm_eval(json.loads(results.read_text()))
    piqa = [json.loads(x) for x in (folder / f"samples_piqa_{stamp}.jsonl").read_text().splitlines()]
    assert [s["doc_id"] for s in piqa] == [17, 3]
    lambada = json.loads((folder / f"samples_lambada_openai_{stamp}.jsonl").read_text())
    assert lambada["metrics"] == ["acc"] and lambada["loglikelihood"] == -1.5
    assert capsys.readouterr().out.splitlines()[0] == f"lm-eval: {folder / f'results_{stamp}.json'}"


def test_export_csv_is_one_row_per_task_and_metric(tmp_path, capsys):
    results = write_run(tmp_path, with_samples=False)
    out = tmp_path / "table.csv"
    assert main(["export", str(results), "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("piqa", "acc"), ("piqa", "acc_norm"), ("lambada_openai", "acc"), ("lambada_openai", "perplexity"),
        ("mini", "acc")]
    assert rows[0]["value"] == "0.75" and rows[0]["stderr"] == "0.25" and rows[0]["n"] == "4"
    assert rows[0]["shots"] == "5" and rows[0]["run"] == "20261130T120000Z" and rows[0]["model"] == "random:pythia-14m"
    assert rows[3]["stderr"] == "" and rows[3]["stderr_bootstrap"] == "2345.5"


def test_export_of_a_file_that_is_not_results(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("[1]")
    assert main(["export", str(bad)]) == 2
    assert "a results file holds a JSON object" in capsys.readouterr().err


def test_a_broken_samples_line_names_file_and_line(tmp_path, capsys):
    results = write_run(tmp_path, with_samples=True)
    samples = results.with_suffix(".samples.jsonl")
    samples.write_text(samples.read_text() + "{oops\n")
    assert main(["export", str(results)]) == 2
    assert f"{samples}:4: not JSON" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["tasks", "model"])
def test_to_lm_eval_refuses_other_dicts(key):
    from evalkit.types import EvalkitError

    data = small()
    del data[key]
    with pytest.raises(EvalkitError, match="not an evalkit results dict"):
        to_lm_eval(data)


def test_a_missing_samples_file_is_warned_about_and_left_out(tmp_path, capsys, caplog):
    results = write_run(tmp_path, with_samples=True)
    results.with_suffix(".samples.jsonl").unlink()
    assert main(["export", str(results), "--output", str(tmp_path / "x")]) == 0
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["results_2026-11-30T12-00-00.json"]
    assert "which is not there: exported the results without samples" in caplog.text


def test_output_types():
    from evalkit.results.export import output_type

    assert output_type({"acc": {}, "acc_norm": {}}) == "multiple_choice"
    assert output_type({"acc": {}, "perplexity": {}}) == "loglikelihood"
    assert output_type({"word_perplexity": {}, "bits_per_byte": {}}) == "loglikelihood_rolling"
