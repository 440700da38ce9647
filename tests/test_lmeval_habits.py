"""What users of lm-evaluation-harness 0.4.13 type: its flag spelling, its ``--output_path`` files, its
``--tasks list``, its task names (``lm_eval.<name>``) found in the installed package, one-line refusals."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from evalkit.cli.lmeval_flags import lm_eval_results_path, sanitized_model_name, translate
from evalkit.cli.main import main
from evalkit.tasks import lmeval_locate
from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError
from .conftest import TOKENIZER_JSON

COMMANDS = ["run", "report", "tasks", "compare", "export", "baseline", "check"]


def test_lm_eval_spelling_maps_to_evalkit_flags_with_one_note_each():
    t = translate(["--model", "hf", "--model_args", "pretrained=EleutherAI/pythia-70m,dtype=float32,revision=step3",
                   "attn_implementation=eager", "--tasks", "piqa", "arc_easy,sciq", "--num_fewshot", "5",
                   "--batch_size", "auto:4", "--include_path", "my_tasks", "--log_samples", "--trust_remote_code",
                   "--limit", "0.1"], COMMANDS)
    assert t.argv == ["run", "--model", "EleutherAI/pythia-70m", "--tasks", "piqa,arc_easy,sciq", "--num-fewshot", "5",
                      "--batch-size", "auto", "--include-path", "my_tasks", "--log-samples", "--trust-remote-code",
                      "--limit", "0.1", "--dtype", "float32", "--revision", "step3",
                      "--model-args", "attn_implementation=eager"]
    assert t.notes == [
        "lm-eval's command line without a command read as `evalkit run`",
        "lm-eval flag --num_fewshot read as --num-fewshot",
        "lm-eval flag --batch_size auto:4 read as --batch-size auto (evalkit sizes each task's batches once, "
        "from its longest batch)",
        "lm-eval flag --include_path read as --include-path",
        "lm-eval flag --log_samples read as --log-samples",
        "lm-eval flag --trust_remote_code read as --trust-remote-code",
        "lm-eval's --model hf --model_args pretrained=EleutherAI/pythia-70m read as --model EleutherAI/pythia-70m",
        "lm-eval model argument dtype= read as --dtype float32",
        "lm-eval model argument revision= read as --revision step3",
        "lm-eval flag --model_args read as --model-args",
    ]
    assert t.output_path is None


def test_short_flags_json_model_args_and_evalkit_spelling_pass_through():
    t = translate(["run", "-M", "hf", "-a", '{"pretrained": "gpt2", "parallelize": true}', "-t", "piqa", "-f", "2",
                   "-b", "8", "--device", "cuda:0", "--seed", "42"], COMMANDS)
    assert t.argv == ["run", "--model", "gpt2", "--tasks", "piqa", "--num-fewshot", "2", "--batch-size", "8",
                      "--device", "cuda:0", "--seed", "42", "--parallelize"]
    own = ["run", "--model", "gpt2", "--tasks", "piqa", "--model-args", "attn_implementation=eager", "--limit", "5"]
    assert translate(own, COMMANDS).argv == own and translate(own, COMMANDS).notes == []
    assert translate(["tasks", "--include-path", "x"], COMMANDS).argv == ["tasks", "--include-path", "x"]


def test_chat_and_generation_flags_in_lm_eval_spelling_parse_as_evalkit_spelling():
    from evalkit.cli.main import parse_command_line
    from evalkit.cli.parser import build_parser

    lm_eval = ["run", "--model", "m", "--tasks", "gsm8k", "--apply_chat_template", "--system_instruction",
               "Be brief.", "--fewshot_as_multiturn", "false", "--gen_kwargs", "max_gen_toks=64,do_sample=False",
               "temperature=0.0"]
    own = ["run", "--model", "m", "--tasks", "gsm8k", "--apply-chat-template", "--system-instruction", "Be brief.",
           "--fewshot-as-multiturn", "false", "--max-gen-toks", "64"]
    theirs, notes = parse_command_line(build_parser(), lm_eval, COMMANDS)
    ours, own_notes = parse_command_line(build_parser(), own, COMMANDS)
    assert vars(theirs) == vars(ours) and own_notes == []
    assert (theirs.apply_chat_template, theirs.system_instruction, theirs.fewshot_as_multiturn,
            theirs.max_gen_toks) == (True, "Be brief.", False, 64)
    assert notes == ["lm-eval flag --apply_chat_template read as --apply-chat-template",
                     "lm-eval flag --system_instruction read as --system-instruction",
                     "lm-eval flag --fewshot_as_multiturn read as --fewshot-as-multiturn",
                     "lm-eval --gen_kwargs max_gen_toks=64 read as --max-gen-toks 64",
                     "lm-eval --gen_kwargs do_sample=False: greedy decoding, as evalkit always decodes",
                     "lm-eval --gen_kwargs temperature=0.0: greedy decoding, as evalkit always decodes"]
    bare, _ = parse_command_line(build_parser(), ["run", "--model", "m", "--tasks", "x", "--fewshot_as_multiturn"],
                                 COMMANDS)
    assert bare.fewshot_as_multiturn is True


def test_output_path_is_a_file_when_it_ends_in_json_else_a_folder():
    t = translate(["run", "--model", "m", "--tasks", "piqa", "--output_path", "out/run.json"], COMMANDS)
    assert t.argv[-2:] == ["--output-dir", "out"] and t.output_path == "out/run.json"
    t = translate(["run", "--model", "m", "--tasks", "piqa", "-o", "out"], COMMANDS)
    assert t.argv[-2:] == ["--output-dir", "out"] and t.output_path == "out"
    assert lm_eval_results_path("out/run.json", "x", "2026-01-02T03-04-05") == (
        Path("out/run_2026-01-02T03-04-05.json"), Path("out"))
    assert lm_eval_results_path("out", "EleutherAI/pythia-70m", "S") == (
        Path("out/EleutherAI__pythia-70m/results_S.json"), Path("out/EleutherAI__pythia-70m"))
    assert sanitized_model_name('a:b/c"d') == "a__b__c__d"


@pytest.mark.parametrize("argv, expected", [
    (["--apply_chat_template", "chatml"], "lm-eval flag --apply_chat_template chatml: evalkit applies the "
                                          "tokenizer's default chat template and cannot choose a named one"),
    (["--gen_kwargs", "temperature=0.8"], "lm-eval --gen_kwargs temperature=0.8: evalkit decodes greedily"),
    (["--gen_kwargs", "do_sample=True,top_p=0.9"], "lm-eval --gen_kwargs do_sample=True: evalkit decodes greedily"),
    (["--gen_kwargs", 'until=["\\n"]'], "(nearest: --max-gen-toks N; sampling and stop strings belong in a task "
                                        "file)"),
    (["--gen_kwargs", "max_gen_toks=0"], "--gen_kwargs max_gen_toks=0: expected a whole number above 0"),
    (["--use_cache", "db"], "(nearest: --cache-dir DIR; --no-cache)"),
    (["--cache_requests", "true"], "(nearest: --cache-dir; --no-cache)"),
    (["--write_out"], "(nearest: --log-samples"),
    (["-w"], "(nearest: --log-samples"),
    (["--show_config"], "(nearest: the results JSON's 'config'"),
    (["--wandb_args", "project=x"], "(nearest: evalkit export --format lm-eval|csv)"),
    (["--hf_hub_log_args", "hub_results_org=x"], "(nearest: evalkit export --format lm-eval"),
    (["--predict_only"], "(nearest: --log-samples"),
    (["--seed", "0,1234,1234,1234"], "(nearest: --seed N for subsets, random weights and the bootstrap; "
                                     "--fewshot-seed N)"),
    (["--max_batch_size", "64"], "(nearest: --max-batch-tokens N"),
    (["--model", "vllm", "--model_args", "pretrained=x"], "--model vllm: evalkit scores with transformers"),
    (["--model", "hf"], "--model hf: name the model with --model_args pretrained=NAME"),
    (["--model_args", "pretrained=x,peft=adapter"], "--model_args peft=: lm-eval's hf model option 'peft' has no "
                                                    "evalkit counterpart"),
])
def test_what_evalkit_lacks_is_refused_in_one_line_naming_the_nearest_flag(argv, expected, capsys):
    status = main(["run", "--tasks", "piqa", *argv])
    err = capsys.readouterr().err
    assert status == 2 and expected in err
    assert err.count("\n") == 1 and "usage:" not in err


@pytest.mark.parametrize("argv, expected", [
    (["run", "--model", "m", "--tasks", "piqa", "--lmit", "5"], "evalkit run: unknown flag --lmit; did you mean "
                                                                "--limit?"),
    (["run", "--model", "m", "--tasks", "piqa", "--fewshot_seed", "3"], "evalkit run: unknown flag --fewshot_seed; "
                                                                        "did you mean --fewshot-seed?"),
    (["tasks", "--incldue-path", "x"], "evalkit tasks: unknown flag --incldue-path; did you mean --include-path?"),
    (["compare", "a.json", "--zzzz"], "evalkit compare: unknown flag --zzzz (`evalkit compare --help` lists them)"),
])
def test_an_unknown_flag_gets_one_line_with_the_closest_known_flag(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"evalkit: error: {expected}\n"


def test_tasks_list_prints_the_task_list_like_evalkit_tasks(capsys):
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert main(["--model", "hf", "--model_args", "pretrained=x", "--tasks", "list"]) == 0
    assert capsys.readouterr().out == listed
    assert "\npiqa: " in listed and "arc_easy" in listed


def test_a_run_in_lm_eval_spelling_writes_lm_evals_files(tmp_path, data_dir, capsys, caplog):
    caplog.set_level("INFO", logger="evalkit.cli")
    target = tmp_path / "lm" / "piqa_run.json"
    status = main(["--model", "hf", "--model_args", "pretrained=random:pythia-14m,dtype=float32",
                   "--tasks", "piqa", "--limit", "0.003", "--log_samples", "--output_path", str(target),
                   "--tokenizer", str(TOKENIZER_JSON), "--data-dir", str(data_dir), "--device", "cpu",
                   "--bootstrap-iters", "0", "--no-figure", "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "lm-eval flag --log_samples read as --log-samples" in caplog.messages
    own = json.loads(next((tmp_path / "lm" / "results").rglob("*.json")).read_text())
    assert own["model"]["name"] == "random:pythia-14m" and own["config"]["dtype"] == "float32"
    assert own["tasks"]["piqa"]["n"] == 6  # ceil(1838 * 0.003) = ceil(5.514)
    written = sorted(p.name for p in (tmp_path / "lm").iterdir() if p.is_file())
    assert len(written) == 2 and written[0].startswith("piqa_run_") and written[1].startswith("samples_piqa_")
    lm = json.loads((tmp_path / "lm" / written[0]).read_text())
    assert lm["results"]["piqa"]["acc,none"] == own["tasks"]["piqa"]["metrics"]["acc"]["value"]
    assert f"lm-eval: {tmp_path / 'lm' / written[0]}" in out
    samples = (tmp_path / "lm" / written[1]).read_text().splitlines()
    assert len(samples) == 6 and {json.loads(s)["doc_id"] for s in samples} == set(own["tasks"]["piqa"]["documents"]
                                                                                  ["doc_id"])


def test_output_path_folder_gets_the_models_sanitized_folder(tmp_path, data_dir, capsys, caplog):
    caplog.set_level("INFO", logger="evalkit.models.hf_loading")
    status = main(["run", "--model", "random:pythia-14m", "--tasks", "piqa", "--limit", "3", "-o", str(tmp_path),
                   "--tokenizer", str(TOKENIZER_JSON), "--data-dir", str(data_dir), "--device", "cpu",
                   "--bootstrap-iters", "0", "--no-figure", "--no-progress"])
    assert status == 0
    files = list((tmp_path / "random__pythia-14m").iterdir())
    assert len(files) == 1 and files[0].name.startswith("results_") and files[0].suffix == ".json"
    assert json.loads(files[0].read_text())["results"]["piqa"]["alias"] == "piqa"
    assert "loading the model random:pythia-14m (random weights, dtype auto, on cpu)..." in caplog.messages
    [results] = (tmp_path / "results").rglob("*.json")
    plain, published = tmp_path / "plain.md", tmp_path / "published.md"
    assert main(["compare", str(results), str(results), "--output", str(plain), "--bootstrap-iters", "20"]) == 0
    assert main(["compare", str(results), str(results), "--output", str(published), "--bootstrap-iters", "20",
                 "--published"]) == 0
    assert "(unpaired)" not in plain.read_text() and "(unpaired)" in published.read_text()


ARC_EASY_YAML = """tag:
  - ai2_arc
task: arc_easy
dataset_path: allenai/ai2_arc
dataset_name: ARC-Easy
output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices.label.index(answerKey)}}"
doc_to_choice: "{{choices.text}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

ROLLING_YAML = """task: {name}
dataset_path: some/corpus
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{content}}}}"
target_delimiter: ""
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""

ROLLING_GROUP_YAML = """group: rolling_eval
task:
  - rolling_a
  - rolling_b
aggregate_metric_list:
  - metric: bits_per_byte
    aggregation: mean
    weight_by_size: true
"""


@pytest.fixture
def installed_lm_eval(tmp_path, monkeypatch) -> Path:
    """A package ``lm_eval`` on sys.path with lm-eval's task folder layout: its own code (``manager.py``, which
    cannot be imported here, like lm-eval's without its dependencies), ``arc/arc_easy.yaml``, and a group of
    perplexity tasks averaged by size, which evalkit does not support (as lm-eval's ``uncheatable_eval``)."""
    tasks = tmp_path / "site" / "lm_eval" / "tasks"
    (tasks / "arc").mkdir(parents=True)
    (tasks / "rolling").mkdir()
    (tasks.parent / "__init__.py").write_text("raise ImportError('lm_eval must not be imported')\n")
    (tasks / "__init__.py").write_text("")
    (tasks / "manager.py").write_text("import sacrebleu_not_installed\n")
    (tasks / "arc" / "arc_easy.yaml").write_text(ARC_EASY_YAML)
    for name in ("rolling_a", "rolling_b"):
        (tasks / "rolling" / f"{name}.yaml").write_text(ROLLING_YAML.format(name=name))
    (tasks / "rolling" / "rolling_eval.yaml").write_text(ROLLING_GROUP_YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert lmeval_locate.lm_eval_task_dir() == tasks
    return tasks


def test_lm_eval_task_names_find_the_installed_folder_without_include_path(installed_lm_eval, data_dir, tmp_path,
                                                                            capsys):
    registry = load_registry([], ["lm_eval.arc_easy:0"])
    assert registry.files["lm_eval.arc_easy"] == installed_lm_eval / "arc" / "arc_easy.yaml"
    assert "lm_eval.rolling_a" not in registry.tasks  # only the folder that declares the name is read
    status = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks",
                   "lm_eval.arc_easy", "--data-dir", str(data_dir), "--limit", "4", "--device", "cpu",
                   "--bootstrap-iters", "0", "--output-dir", str(tmp_path), "--no-figure", "--no-progress"])
    assert status == 0
    assert "subset (--limit 4, seed 1234, rule v2): lm_eval.arc_easy 4 of 2,376" in capsys.readouterr().out


def test_the_whole_lm_eval_folder_lists_and_skips_what_is_unsupported(installed_lm_eval, capsys):
    assert main(["tasks", "--lm-eval"]) == 0
    out = capsys.readouterr().out
    assert "\nlm_eval.arc_easy: allenai/ai2_arc ARC-Easy test n not declared; acc; few-shot from train" in out
    assert "\nlm_eval.rolling_a: some/corpus test n not declared; bits_per_byte; few-shot from test without" in out
    assert "refused (1 file):\n" in out
    assert (f"(group 'lm_eval.rolling_eval'): group 'lm_eval.rolling_eval' ({installed_lm_eval}/rolling/"
            f"rolling_eval.yaml) has aggregation 'micro', but its tasks share no metric that averages over "
            f"documents (acc, acc_norm)") in out
    with pytest.raises(EvalkitError, match="task 'lm_eval.rolling_eval' was not loaded: group"):
        load_registry([str(installed_lm_eval)]).expand(["lm_eval.rolling_eval"])


def test_an_lm_eval_name_no_file_declares_is_one_line(installed_lm_eval, capsys):
    assert main(["run", "--model", "m", "--tasks", "lm_eval.gsm8k"]) == 2
    err = capsys.readouterr().err
    assert err == (f"evalkit: error: no task file of the installed lm-eval ({installed_lm_eval}) declares "
                   f"lm_eval.gsm8k (`evalkit tasks --lm-eval` lists its tasks)\n")


def test_without_lm_eval_an_lm_eval_name_never_suggests_the_builtin_task(monkeypatch, capsys):
    monkeypatch.setattr(lmeval_locate, "lm_eval_task_dir", lambda: None)
    monkeypatch.setattr("evalkit.tasks.registry.lm_eval_task_dir", lambda: None)
    assert main(["run", "--model", "m", "--tasks", "lm_eval.arc_easy"]) == 2
    err = capsys.readouterr().err
    assert err == ("evalkit: error: unknown task 'lm_eval.arc_easy': lm-eval is not installed and no --include-path "
                   "folder defines it (pip install lm-eval==0.4.13, or point --include-path at a folder of lm-eval "
                   "task YAMLs)\n")
    assert main(["tasks", "--lm-eval"]) == 2
    assert "--lm-eval: lm-eval is not installed (pip install lm-eval==0.4.13" in capsys.readouterr().err


def test_declaring_folders_are_found_by_task_group_or_tag_quoted_or_not(tmp_path):
    for folder, text in (("a", '"dataset_name": "anatomy"\n"task": "mmlu_anatomy"\n'),
                         ("b", "tag:\n  - ai2_arc\n  - arc_tasks\ntask: arc_easy\n"),
                         ("c", "task: other  # not mmlu_anatomy\ngroup_alias: ai2_arc\n"),
                         ("d", "group: mmlu\ntask:\n  - mmlu_anatomy\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.yaml").write_text(text)
    assert lmeval_locate.folders_declaring(tmp_path, ["mmlu_anatomy"]) == [tmp_path / "a"]
    assert lmeval_locate.folders_declaring(tmp_path, ["arc_tasks"]) == [tmp_path / "b"]
    assert lmeval_locate.folders_declaring(tmp_path, ["other", "mmlu"]) == [tmp_path / "c", tmp_path / "d"]
    assert lmeval_locate.folders_declaring(tmp_path, ["anatomy"]) == []


def test_the_terminal_table_folds_a_groups_members_into_its_rows():
    from evalkit.results.summary import folded_rows, format_summary

    def entry(value, n):
        return {"metrics": {"acc": {"value": value, "stderr": (value * (1 - value) / (n - 1)) ** 0.5, "n": n}},
                "num_fewshot": 0}

    results = {"tasks": {"a": entry(0.5, 10), "b": entry(0.7, 10), "c": entry(0.25, 5)},
               "groups": {"g": {"aggregation": "micro", "tasks": ["a", "b"],
                                "metrics": {"acc": {"value": 0.6, "stderr": 0.1124, "n": 20}}},
                          "tag": {"aggregation": None, "tasks": ["c"]}}}
    rows, notes = folded_rows(results)
    assert [(r["task"], r["kind"], r["value"]) for r in rows] == [("c", "task", 0.25), ("g", "group", 0.6)]
    assert notes == ["g: 2 member tasks folded (each task's rows are in the report)"]
    table = format_summary(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| c ") and table[3].startswith("| g (micro group) ")
    assert "0.6000 | ± | 0.1124 | [0.3866, 0.7812] | 20 |" in table[3]  # Wilson 95% of 12/20, by hand below
    z = 1.959964
    centre, half = (0.6 + z * z / 40) / (1 + z * z / 20), z / (1 + z * z / 20) * (0.24 / 20 + z * z / 1600) ** 0.5
    assert (round(centre - half, 4), round(centre + half, 4)) == (0.3866, 0.7812)
