"""lm-evaluation-harness 0.4 task YAMLs (fixtures in its schema): exact requests, few-shot, refusals."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.data.documents import read_jsonl
from evalkit.tasks.lmeval_yaml import load_file
from evalkit.stats.metrics import SCORING_METRICS
from evalkit.tasks.registry import load_registry
from evalkit.run.prepare import prepare_task
from evalkit.run.model import tokenize_tasks
from evalkit.types import EvalkitError
from evalkit.tasks.yaml_source import load_yaml

from .conftest import REPO, TOKENIZER_JSON

FIXTURES = REPO / "tests" / "task_yaml" / "lmeval"


def rows(path: Path) -> list[dict]:
    return read_jsonl(path)


@pytest.fixture(scope="module")
def registry():
    return load_registry([str(FIXTURES)])


@pytest.fixture(scope="module")
def linked_data(data_dir, tmp_path_factory) -> Path:
    """A data folder whose lm-eval task folders point at the shared copies (sciq_2shot reads sciq's files)."""
    root = tmp_path_factory.mktemp("lmeval_data")
    for name, target in (("sciq", "sciq"), ("sciq_2shot", "sciq"), ("lambada_openai", "lambada_openai"),
                         ("winogrande", "winogrande")):
        (root / name).symlink_to(data_dir / target)
    return root


def pairs(prepared):
    return [(r.doc_id, r.choice_index, r.context, r.continuation) for r in prepared.requests]


def test_multiple_choice_with_a_list_template_and_a_description(registry, linked_data, data_dir):
    task = registry.get("lm_eval.sciq")
    assert (task.version, task.metrics, task.tokenization, task.dataset.split) == ("2.0", ("acc", "acc_norm"),
                                                                                  "joint", "test")
    prepared = prepare_task(task, linked_data, None, 1234)
    doc = rows(data_dir / "sciq" / "test.jsonl")[0]
    context = (f"Science questions (16 words).\n\n{doc['support'].lstrip()}\nQuestion: Compounds that are capable of "
               f"accepting electrons, such as o 2 or f2, are called what?\nAnswer:")
    assert pairs(prepared)[:4] == [(0, 0, context, " antioxidants"), (0, 1, context, " Oxygen"),
                                   (0, 2, context, " residues"), (0, 3, context, " oxidants")]
    assert len(prepared.requests) == 4000 and task.gold(doc) == 3
    assert registry.groups["lm_eval.yaml_fixtures"].tasks == ("lm_eval.sciq", "lm_eval.sciq_2shot")


def test_include_and_two_shots_from_the_training_split(registry, linked_data, data_dir):
    task = registry.get("lm_eval.sciq_2shot")
    assert task.num_fewshot == 2 and task.fewshot_split == "train"
    assert task.fewshot_sampler == "lm-eval-0.4:default"  # fewshot_split unset != test_split: nothing excluded
    prepared = prepare_task(task, linked_data, None, 1234, num_fewshot=2)
    train = rows(data_dir / "sciq" / "train.jsonl")
    test = rows(data_dir / "sciq" / "test.jsonl")
    rnd = random.Random(1234)  # lm-eval's fewshot_random_seed; one stream over the documents in order
    for doc_id in (0, 1):
        shown = "".join(f"{ex['support'].lstrip()}\nQuestion: {ex['question']}\nAnswer: {ex['correct_answer']}\n###\n"
                        for ex in rnd.sample(train, 2))
        doc = test[doc_id]
        expected = f"{shown}{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:"
        got = [r for r in prepared.requests if r.doc_id == doc_id]
        assert [r.context for r in got] == [expected] * 4
        assert got[3].continuation == " " + doc["correct_answer"]


def test_multiple_inputs_with_process_docs_functions(registry, tmp_path):
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "2"},
        {"sentence": "No blank here.", "option1": "a", "option2": "b", "answer": "1"},
        {"sentence": "The cup beat the jar because _ was harder.", "option1": "cup", "option2": "jar", "answer": "1"},
    ]) + "\n")
    task = registry.get("lm_eval.winogrande")
    prepared = prepare_task(task, tmp_path, None, 1234)
    assert prepared.n_split == 2  # process_docs dropped the row without a blank
    assert pairs(prepared) == [
        (0, 0, "Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        (0, 1, "Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
        (1, 0, "The cup beat the jar because cup", " was harder."),
        (1, 1, "The cup beat the jar because jar", " was harder."),
    ]
    assert [task.gold(d) for d in prepared.docs] == [1, 0]
    assert task.target(prepared.docs[0]) == "always got the easier cases."  # a few-shot example's answer


def test_loglikelihood_with_local_data_files(registry):
    task = registry.get("lm_eval.lambada_last_word")
    assert (task.scoring, task.metrics, task.primary_metric) == ("target", ("perplexity", "acc"), "perplexity")
    prepared = prepare_task(task, None, None, 1234)  # data_files, relative to the YAML: no --data-dir needed
    assert pairs(prepared) == [(0, 0, "the cat sat on the", " mat"), (1, 0, "rain falls  on the", " plain"),
                               (2, 0, "one", " two")]


def test_rolling_task_scores_the_whole_text_from_the_start(registry):
    [task], _ = load_file(load_yaml(FIXTURES / "lambada_rolling.yaml"))
    doc = {"text": "a b  c"}
    assert (task.scoring, task.context(doc), task.continuations(doc), task.units_text(doc)) == \
        ("rolling", "", ["a b  c"], "a b  c")
    assert task.metrics == ("word_perplexity", "byte_perplexity", "bits_per_byte")
    if "rolling" in SCORING_METRICS:
        assert "lm_eval.lambada_openai" in registry.tasks
    else:  # this evalkit has no rolling scoring: the file is refused with the reason, never silently
        reason = registry.refused[str(FIXTURES / "lambada_rolling.yaml")]
        assert "scoring 'rolling'; expected one of multiple_choice, target, any_greedy" in reason
        with pytest.raises(EvalkitError, match="task 'lm_eval.lambada_openai' was not loaded: .*scoring 'rolling'"):
            registry.expand(["lm_eval.lambada_openai"])


def test_lmeval_tasks_use_joint_tokenization_whatever_the_run_says(tokenizer, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text('task: spaced\ndataset_path: json\ndataset_kwargs: {data_files: {test: d.jsonl}}\n'
                    'output_type: multiple_choice\ntest_split: test\ndoc_to_text: "Answer: "\n'
                    'doc_to_target: 0\ndoc_to_choice: ["yes", "no"]\ntarget_delimiter: ""\n'
                    'metric_list: [{metric: acc}]\n')
    (tmp_path / "d.jsonl").write_text('{"x": 1}\n')
    [task], _ = load_file(load_yaml(path))
    lmeval = prepare_task(task, None, None, 1)
    plain = prepare_task(replace(task, name="plain", tokenization=None), None, None, 1)
    assert [(r.context, r.continuation) for r in lmeval.requests] == [("Answer: ", "yes"), ("Answer: ", "no")]
    got = [own[0] for own in tokenize_tasks([lmeval, plain], tokenizer.encode_batch, tokenizer.eot_id, 2048,
                                            "separate")]  # one sequence per (non-rolling) request
    encode = lambda text: tuple(tokenizer.encode_batch([text])[0])  # noqa: E731
    # lm-eval 0.4 moves the context's trailing space onto the continuation: "Answer:" + " yes"
    assert (got[0].context_ids, got[0].continuation_ids) == (encode("Answer:"), encode(" yes"))
    # the task without an override follows the run: "Answer: " and "yes" encoded apart
    assert (got[2].context_ids, got[2].continuation_ids) == (encode("Answer: "), encode("yes"))
    assert got[0] != got[2] and len(got) == 4


TASK = """task: t
dataset_path: json
output_type: multiple_choice
test_split: test
doc_to_text: "{{q}}"
doc_to_target: 0
doc_to_choice: ["a", "b"]
"""


@pytest.mark.parametrize("extra, key, expected", [
    ("generation_kwargs: {until: ['\\n']}\n", "generation_kwargs",
     "generation_kwargs applies to output_type generate_until only"),
    ("filter_list: []\n", "filter_list", "filter_list applies to output_type generate_until only"),
    ("process_results: !function m.f\n", "process_results", "custom process_results is not supported"),
    ("use_prompt: p\n", "use_prompt", "promptsource prompts are not supported"),
    ("colour: red\n", "colour", "unknown key; supported: dataset_kwargs, dataset_name"),
    ("metric_list: [{metric: !function m.f}]\n", "metric_list", "'!function m.f' metrics are not supported; "
                                                                "supported metrics for multiple_choice: acc, acc_norm"),
    ("metric_list: [{metric: exact_match}]\n", "metric_list", "metric 'exact_match' is not supported for output_type "
                                                              "multiple_choice; supported: acc, acc_norm"),
    ("metric_list: [{metric: acc, aggregation: median}]\n", "metric_list", "only 'mean' is supported"),
    ("metric_list: [{metric: acc, ignore_case: true}]\n", "metric_list", "option 'ignore_case' is not supported"),
    ("fewshot_config: {sampler: balanced}\n", "fewshot_config", "sampler 'balanced' is not supported; supported: "
                                                                "default, first_n"),
    ("fewshot_config: {samples: []}\n", "fewshot_config", "samples must be a non-empty list of documents"),
    ("fewshot_config: {seed: 3}\n", "fewshot_config", "supported keys: fewshot_delimiter, sampler, samples, split"),
    ("dataset_kwargs: {revision: main}\n", "dataset_kwargs", "supported: data_files"),
    ("repeats: 3\n", "repeats", "only repeats: 1 is supported"),
    ("gen_prefix: 'A:'\n", "gen_prefix", "gen_prefix is not supported"),
    ("num_fewshot: many\n", "num_fewshot", "expected a non-negative integer"),
    ("target_delimiter: ''\nmetric_list: [{metric: acc_norm}]\n", "metric_list", "acc_norm needs target_delimiter"),
])
def test_every_unsupported_key_is_refused_naming_file_line_and_key(tmp_path, extra, key, expected):
    text = TASK + extra
    (tmp_path / "t.yaml").write_text(text)
    registry = load_registry([str(tmp_path)])
    reason = registry.refused[str(tmp_path / "t.yaml")]
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith(key + ":"))
    assert reason.startswith(f"{tmp_path / 't.yaml'} line {line}, key '{key}': ")
    assert expected in reason
    with pytest.raises(EvalkitError, match="task 'lm_eval.t' was not loaded"):
        registry.expand(["lm_eval.t"])


@pytest.mark.parametrize("text, expected", [
    (TASK.replace("output_type: multiple_choice", "output_type: greedy_until"),
     "line 3, key 'output_type': output_type 'greedy_until' is not supported; supported: multiple_choice, "
     "loglikelihood, loglikelihood_rolling, generate_until"),
    (TASK.replace("test_split: test\n", ""), "neither test_split nor validation_split is set"),
    (TASK.replace("doc_to_choice", "choices"), "unknown key"),
    ("include: missing.yaml\ntask: t\n", "included file"),
    ("sampler: x\ndefaults: 3\n", "not a task file: expected evalkit's format"),
    ("- a\n- b\n", "not a task file"),
    ("include: [a, b\n", "not valid YAML"),
    ("dataset_path: json\n", "not a task file"),
])
def test_files_that_are_not_supported_task_files_are_reported(tmp_path, text, expected):
    (tmp_path / "t.yaml").write_text(text)
    registry = load_registry([str(tmp_path)])
    assert expected in registry.refused[str(tmp_path / "t.yaml")]


def test_a_helper_module_of_a_yaml_is_not_loaded_as_a_python_task_file(tmp_path):
    broken, working = tmp_path / "broken", tmp_path / "working"
    for folder, body in ((broken, "import lm_eval_only_module\n"), (working, "")):
        folder.mkdir()
        (folder / "helpers.py").write_text(body + "\n\ndef text(doc):\n    return doc['q'] + '?'\n")
        (folder / "t.yaml").write_text(TASK.replace('doc_to_text: "{{q}}"', "doc_to_text: !function helpers.text"))
    registry = load_registry([str(broken)])  # loading helpers.py as a task file would stop the whole scan
    reason = registry.refused[str(broken / "t.yaml")]
    assert reason.startswith(f"{broken / 't.yaml'} line 5, key 'doc_to_text': {broken / 'helpers.py'} failed to "
                             f"import: ModuleNotFoundError: No module named 'lm_eval_only_module'")
    task = load_registry([str(working)]).get("lm_eval.t")
    assert task.context({"q": "why"}) == "why?"


def test_include_only_file_is_reported_and_the_including_task_loads(tmp_path):
    (tmp_path / "_base.yaml").write_text(TASK.replace("task: t\n", "tag: family\n"))
    (tmp_path / "child.yaml").write_text("include: _base.yaml\ntask: child\ndoc_to_target: 1\n")
    registry = load_registry([str(tmp_path)])
    assert registry.get("lm_eval.child").gold({"q": "x"}) == 1
    assert registry.refused[str(tmp_path / "_base.yaml")].endswith("not a task file: no 'task' key (an lm-eval "
                                                                   "file meant to be included?)")
    assert registry.groups["lm_eval.family"].tasks == ("lm_eval.child",)


def test_tasks_command_lists_loaded_and_refused_files(capsys):
    assert main(["tasks", "--include-path", str(FIXTURES)]) == 0
    out = capsys.readouterr().out
    assert f"lm_eval.sciq_2shot: allenai/sciq test n not declared; acc, acc_norm; few-shot from train [{FIXTURES / 'sciq_fewshot.yaml'}]" \
        in out
    assert "lm_eval.yaml_fixtures (group): lm_eval.sciq, lm_eval.sciq_2shot" in out
    if "rolling" not in SCORING_METRICS:
        assert f"refused (1 file):\n  {FIXTURES / 'lambada_rolling.yaml'}: task 'lm_eval.lambada_openai' has " \
               f"scoring 'rolling'" in out


def test_lmeval_tasks_run_end_to_end_and_log_the_contexts_they_scored(linked_data, tmp_path):
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks",
                 "lm_eval.sciq,lm_eval.sciq_2shot,lm_eval.winogrande", "--include-path", str(FIXTURES),
                 "--data-dir", str(linked_data), "--limit", "4", "--output-dir", str(tmp_path),
                 "--bootstrap-iters", "0", "--no-progress", "--no-cache", "--log-samples"])
    assert code == 0
    [results] = (tmp_path / "results" / "random_pythia-14m").glob("*[0-9]Z.json")
    tasks = json.loads(results.read_text())["tasks"]
    assert (tasks["lm_eval.sciq"]["n"], tasks["lm_eval.sciq"]["requests"], tasks["lm_eval.sciq"]["n_split"],
            tasks["lm_eval.sciq"]["expected_n"], tasks["lm_eval.sciq"]["warnings"]) == (4, 16, 1000, None, [])
    assert tasks["lm_eval.winogrande"]["requests"] == 8 and tasks["lm_eval.winogrande"]["n_split"] == 1267
    samples = [json.loads(x) for x in results.with_suffix(".samples.jsonl").read_text().splitlines()]
    by_task = {t: [s for s in samples if s["task"] == t] for t in tasks}
    assert all(s["context"].startswith("Science questions (") for s in by_task["lm_eval.sciq"])
    # the YAML's num_fewshot: 2 applies (the run asks for none): two examples, each closed by the "\n###\n" delimiter
    assert all(s["context"].count("\n###\n") == 2 for s in by_task["lm_eval.sciq_2shot"])
    for sample in by_task["lm_eval.winogrande"]:
        first, second = sample["context"]  # per-choice contexts: one per continuation
        assert first != second and len(set(sample["continuations"])) == 1
    # lm-eval YAMLs declare no split size (expected_n null): the results file still re-renders, exports and compares
    assert main(["report", str(results)]) == 0
    assert main(["export", str(results), "--format", "csv", "--output", str(tmp_path / "all.csv")]) == 0
    assert "lm_eval.sciq" in (tmp_path / "all.csv").read_text()
    assert main(["compare", str(results), str(results), "--no-references", "--bootstrap-iters", "100"]) == 0


def test_a_group_file_becomes_a_group_of_lmeval_tasks(tmp_path):
    (tmp_path / "a.yaml").write_text(TASK.replace("task: t", "task: a"))
    (tmp_path / "b.yaml").write_text(TASK.replace("task: t", "task: b"))
    (tmp_path / "_ab.yaml").write_text("group: ab\ntask: [a, b]\naggregate_metric_list:\n  - metric: acc\n"
                                       "    weight_by_size: false\n")
    (tmp_path / "_bad.yaml").write_text("group: bad\ntask: [a, nowhere]\n")
    (tmp_path / "_outer.yaml").write_text("group: outer\ntask: [ab, a]\n")  # a group of a group: flattened
    registry = load_registry([str(tmp_path)])
    group = registry.groups["lm_eval.ab"]
    assert (group.tasks, group.aggregation) == (("lm_eval.a", "lm_eval.b"), "macro")
    assert [t.name for t in registry.expand(["lm_eval.ab"])] == ["lm_eval.a", "lm_eval.b"]
    assert registry.groups["lm_eval.outer"].tasks == ("lm_eval.a", "lm_eval.b")
    assert "lm_eval.bad" not in registry.groups
    assert registry.refused[f"{tmp_path / '_bad.yaml'} (group 'lm_eval.bad')"] == \
        "group 'lm_eval.bad' names tasks that were not loaded: lm_eval.nowhere"


def test_baseline_and_check_of_an_lmeval_task(linked_data, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    common = ["--data-dir", str(linked_data), "--output-dir", str(tmp_path / "out")]
    assert main(["baseline", "--model", "random:pythia-14m", "--tasks", "lm_eval.winogrande", "--tokenizer",
                 str(TOKENIZER_JSON), "--include-path", str(FIXTURES), "--limit", "3", "--dtype", "float32",
                 "--device", "cpu", "--bootstrap-iters", "0", "--output", str(baseline), *common]) == 0
    frozen = json.loads(baseline.read_text())
    assert frozen["config"]["include_paths"] == [str(FIXTURES)]
    assert len(frozen["tasks"]["lm_eval.winogrande"]["requests"]["doc_id"]) == 6
    capsys.readouterr()
    assert main(["check", "--baseline", str(baseline), *common]) == 0
