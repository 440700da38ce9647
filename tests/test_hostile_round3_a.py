"""Hostile inputs, third round: each used to give a silent wrong number or a traceback; each now gives the right
number, a loud warning, or one clear message naming the file, row and field (or flag) before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.types import EvalkitError, RunConfig
from tests.conftest import DATA_DIR, TOKENIZER_JSON
from tests.test_bad_input import edit, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def first_lines(task: str, split: str, n: int = 3) -> list[bytes]:
    """The first ``n`` lines of a real split, as bytes with their newlines."""
    with open(DATA_DIR / task / f"{split}.jsonl", "rb") as handle:
        return [next(handle) for _ in range(n)]


# --- case 2: duplicate or reordered choice labels make the gold position ambiguous --------------------------------

def _labels(labels, key):
    def change(doc):
        doc["choices"]["label"] = labels
        doc["answerKey"] = key
    return change


LABEL_CASES = [
    ("arc_challenge_duplicate", "arc_challenge", _labels(["A", "A", "B", "C"], "A"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("arc_easy_duplicate", "arc_easy", _labels(["A", "A", "B", "C"], "B"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("openbookqa_duplicate", "openbookqa", _labels(["A", "A", "B", "C"], "C"),
     "field 'choices.label': label 'A' is given to choices 0 and 1; the answer key would be ambiguous"),
    ("arc_easy_reordered", "arc_easy", _labels(["B", "A", "C", "D"], "A"),
     "field 'choices.label': ['B', 'A', 'C', 'D'] is not A, B, C, ... (or 1, 2, 3, ...) in order; the gold position "
     "is taken from the key's letter, so it would not be the labelled choice"),
    ("openbookqa_reordered", "openbookqa", _labels(["B", "A", "C", "D"], "A"),
     "field 'choices.label': ['B', 'A', 'C', 'D'] is not A, B, C, D in order; the gold position is taken from the "
     "key's letter, so it would not be the labelled choice"),
]


@pytest.mark.parametrize("task, change, message", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_duplicate_or_reordered_choice_labels_are_refused_naming_file_row_and_field(capsys, tmp_path, task, change,
                                                                                     message):
    data = tmp_path / "data"
    path = data / task / "test.jsonl"
    path.parent.mkdir(parents=True)
    lines = first_lines(task, "test")
    path.write_bytes(b"".join([lines[0], edit(lines[1], change), lines[2]]))
    status, err = run_cli(capsys, tmp_path, "--limit", "3", tasks=task, data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {path} line 2: {message}"]


def test_a_winogrande_sentence_with_two_blanks_is_refused(capsys, tmp_path):
    data = tmp_path / "data"
    path = data / "winogrande" / "validation.jsonl"
    path.parent.mkdir(parents=True)
    lines = first_lines("winogrande", "validation")
    bad = edit(lines[2], lambda d: d.update(sentence=d["sentence"].replace("_", "_ or _", 1)))
    path.write_bytes(b"".join([lines[0], lines[1], bad]))
    status, err = run_cli(capsys, tmp_path, "--limit", "3", tasks="winogrande", data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {path} line 3: field 'sentence': 2 blanks '_'; which one the options fill "
                   f"would be a guess"]


# --- case 6: a results file whose metric n or stderr is edited ----------------------------------------------------

def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON), data_dir=str(DATA_DIR),
                limit=4, bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)
    return RunConfig(**(base | changes))


@pytest.fixture(scope="module")
def good_results(tmp_path_factory) -> Path:
    from evalkit.run.pipeline import run

    return run(_config(tmp_path_factory.mktemp("good")), progress=False).results_path


def _write(tmp_path: Path, data, name: str = "edited.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


STAT_EDITS = [
    ("metric_n", lambda m: m.update(n=100000),
     "'tasks.piqa.metrics.acc.n': 100000 is not the task's number of documents (4, 'tasks.piqa.n'); the file is "
     "edited"),
    ("negative_stderr", lambda m: m.update(stderr=-m["stderr"]),
     "'tasks.piqa.metrics.acc.stderr': {value!r} is negative; a standard error never is"),
    ("negative_bootstrap_stderr", lambda m: m.update(stderr_bootstrap=-0.1),
     "'tasks.piqa.metrics.acc.stderr_bootstrap': -0.1 is negative; a standard error never is"),
    ("stderr_edited", lambda m: m.update(stderr=0.001),
     "'tasks.piqa.metrics.acc.stderr': 0.001 is not the standard error of the file's own per-document values "
     "({own!r}); the file is edited"),
]


@pytest.mark.parametrize("change, message", [e[1:] for e in STAT_EDITS], ids=[e[0] for e in STAT_EDITS])
def test_an_edited_metric_n_or_stderr_is_refused_by_report_compare_and_export(good_results, tmp_path, capsys, change,
                                                                           message):
    data = json.loads(good_results.read_text(encoding="utf-8"))
    entry = data["tasks"]["piqa"]["metrics"]["acc"]
    own = entry["stderr"]
    assert own > 0 and entry["n"] == 4
    change(entry)
    bad = _write(tmp_path, data)
    expected = (f"evalkit: error: {bad}: not a valid evalkit results file: "
                f"{message.format(value=entry['stderr'], own=own)}")
    assert main(["report", str(bad), "--output", str(tmp_path / "r.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert main(["compare", str(good_results), str(bad), "--output", str(tmp_path / "c.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert main(["export", str(bad), "--output", str(tmp_path / "e.json")]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.json"]


# --- case 7: compare across tokenizers or tokenization modes says so ---------------------------------------------

GPT2_TOKENIZER_JSON = DATA_DIR / "tokenizers" / "gpt2_tokenizer.json"


@pytest.fixture(scope="module")
def other_tokenization_runs(tmp_path_factory) -> tuple[Path, Path]:
    """piqa over the same 4 documents: once with the GPT-2 tokenizer, once with --tokenization joint."""
    from evalkit.run.pipeline import run

    folder = tmp_path_factory.mktemp("tokenizations")
    gpt2 = run(_config(folder / "gpt2", tokenizer=str(GPT2_TOKENIZER_JSON)), progress=False).results_path
    joint = run(_config(folder / "joint", extra={"tokenization": "joint"}), progress=False).results_path
    return gpt2, joint


def test_compare_notes_a_different_tokenizer_and_tokenization_mode(good_results, other_tokenization_runs, tmp_path,
                                                                   capsys):
    gpt2, joint = other_tokenization_runs
    a = json.loads(good_results.read_text(encoding="utf-8"))
    b = json.loads(gpt2.read_text(encoding="utf-8"))
    assert json.loads(joint.read_text(encoding="utf-8"))["tasks"]["piqa"]["tokenization"] == "joint"
    assert a["tasks"]["piqa"]["tokenization"] == "separate"
    tokenizer_note = (f"A and B use different tokenizers ({TOKENIZER_JSON}, sha256 {a['tokenizer']['sha256'][:12]} vs "
                      f"{GPT2_TOKENIZER_JSON}, sha256 {b['tokenizer']['sha256'][:12]}), so Δ mixes the model and "
                      f"the tokenizer")
    mode_note = "piqa: A is tokenized separate and B joint, so Δ mixes the model and the tokenization"
    for other, note, absent in ((gpt2, tokenizer_note, mode_note), (joint, mode_note, tokenizer_note)):
        report = tmp_path / f"{other.parent.name}.md"
        assert main(["compare", str(good_results), str(other), "--output", str(report), "--bootstrap-iters", "50",
                     "--no-references"]) == 0
        out = capsys.readouterr().out
        assert f"  note: {note}" in out and absent not in out
        assert note in report.read_text(encoding="utf-8")


def test_compare_of_same_tokenization_has_no_tokenizer_note(good_results, tmp_path, capsys):
    copy = _write(tmp_path, json.loads(good_results.read_text(encoding="utf-8")) | {"created": "later"}, "b.json")
    assert main(["compare", str(good_results), str(copy), "--output", str(tmp_path / "c.md"), "--bootstrap-iters",
                 "50", "--no-references"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  note:")]
    assert not [line for line in notes if "tokeniz" in line]


# --- case 8: few-shot lm-eval YAML tasks are recorded with their shots --------------------------------------------

LMEVAL_FIXTURES = Path(__file__).resolve().parent / "task_yaml" / "lmeval"


@pytest.fixture(scope="module")
def lmeval_fewshot_run(tmp_path_factory) -> Path:
    """lm_eval.sciq at --tasks lm_eval.sciq:2 (3 documents, 12 few-shot rows) with samples logged."""
    from evalkit.run.pipeline import run

    root = tmp_path_factory.mktemp("lmeval_fewshot")
    (root / "data" / "sciq").mkdir(parents=True)
    for split, rows in (("test", 3), ("train", 12)):  # small copies: the first rows of the real splits
        (root / "data" / "sciq" / f"{split}.jsonl").write_bytes(b"".join(first_lines("sciq", split, rows)))
    config = _config(root, tasks=("lm_eval.sciq",), fewshot_overrides={"lm_eval.sciq": 2}, limit=3,
                     include_paths=(str(LMEVAL_FIXTURES),), data_dir=str(root / "data"), log_samples=True)
    return run(config, progress=False).results_path


def test_lmeval_fewshot_is_recorded_in_results_samples_and_export(lmeval_fewshot_run, tmp_path, capsys):
    from evalkit.data.documents import read_jsonl

    results = json.loads(lmeval_fewshot_run.read_text(encoding="utf-8"))
    task = results["tasks"]["lm_eval.sciq"]
    assert (task["num_fewshot"], task["fewshot_source"], task["fewshot_split"], task["fewshot_seed"],
            task["fewshot_pool_size"]) == (2, "split", "train", 1234, 12)
    train = read_jsonl(lmeval_fewshot_run.parents[3] / "data" / "sciq" / "train.jsonl")
    samples = [json.loads(line) for line in lmeval_fewshot_run.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        assert len(sample["fewshot_doc_ids"]) == 2
        shown = "".join(f"{train[i]['support'].lstrip()}\nQuestion: {train[i]['question']}\nAnswer: "
                        f"{train[i]['correct_answer']}\n\n" for i in sample["fewshot_doc_ids"])
        assert sample["context"].startswith("Science questions (") and shown in sample["context"]
    assert main(["report", str(lmeval_fewshot_run), "--output", str(tmp_path / "r.md")]) == 0
    assert "| lm_eval.sciq v2.0 | 2-shot |" in (tmp_path / "r.md").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["export", str(lmeval_fewshot_run), "--output", str(tmp_path / "lm")]) == 0
    [exported] = (tmp_path / "lm").glob("results_*.json")
    lm = json.loads(exported.read_text(encoding="utf-8"))
    assert lm["n-shot"] == {"lm_eval.sciq": 2} and lm["configs"]["lm_eval.sciq"]["num_fewshot"] == 2


# --- case 9: a replaced built-in task with other prompts is not shown beside published rows without a note --------

def _replaced_piqa(tmp_path: Path, new_prompt: bool) -> Path:
    folder = tmp_path / "own_tasks"
    folder.mkdir()
    text = (Path(__file__).resolve().parents[1] / "tasks" / "piqa.py").read_text(encoding="utf-8")
    if new_prompt:
        assert 'return f"Question: {doc[\'goal\']}\\nAnswer:"' in text and 'version="1.0"' in text
        text = text.replace('return f"Question: {doc[\'goal\']}\\nAnswer:"',
                            'return f"Goal: {doc[\'goal\']}\\nSolution:"')
        text = text.replace('version="1.0"', 'version="2.0"')
    (folder / "piqa.py").write_text(text, encoding="utf-8")
    return folder


def test_a_replaced_builtin_task_with_new_prompts_is_flagged_in_results_report_and_compare(tmp_path, capsys):
    from evalkit.run.pipeline import run

    folder = _replaced_piqa(tmp_path, new_prompt=True)
    out = run(_config(tmp_path, include_paths=(str(folder),), limit=3), progress=False)
    task = out.results["tasks"]["piqa"]
    warning = (f"piqa: scored with {folder / 'piqa.py'} (version 2.0), which replaces the built-in task "
               f"(version 1.0) and gives other prompts for 3 of 3 documents: its numbers are not comparable with "
               f"the published piqa rows")
    assert warning in task["warnings"]
    assert task["builtin_prompts_differ"] == 3
    report = out.report_path.read_text(encoding="utf-8")
    assert f"> **Warning:** {warning}" in report
    card_row = next(line for line in report.splitlines() if line.startswith("| **random:pythia-14m"))
    assert "†" in card_row
    assert ("† random:pythia-14m (float32), piqa: scored with prompts other than the built-in task's (version 2.0, "
            "3 of 3 documents differ); the published rows used the built-in prompts") in report
    assert main(["compare", str(out.results_path), str(out.results_path), "--output", str(tmp_path / "c.md"),
                 "--bootstrap-iters", "20", "--published"]) == 0
    assert ("> **Changed prompts:** the run scored piqa with prompts other than the built-in task's; the published "
            "rows used the built-in prompts, so Δ mixes the model and the prompt") in (tmp_path / "c.md").read_text()


def test_a_replaced_builtin_task_with_the_same_prompts_is_not_flagged(tmp_path):
    from evalkit.run.prepare import prepare_task
    from evalkit.tasks.registry import load_registry

    folder = _replaced_piqa(tmp_path, new_prompt=False)
    registry = load_registry((str(folder),))
    assert registry.files["piqa"] == (folder / "piqa.py").resolve()
    prepared = prepare_task(registry.get("piqa"), DATA_DIR, 3, 1234, task_file=registry.files["piqa"])
    assert prepared.warnings == [] and prepared.builtin_prompts_differ == 0
    builtin = load_registry(())
    own = prepare_task(builtin.get("piqa"), DATA_DIR, 3, 1234, task_file=builtin.files["piqa"])
    assert own.builtin_prompts_differ is None


# --- tracebacks: evalkit YAML dataset.fields as a list, or a field type as a list ---------------------------------

YAML_TASK = """name: t
version: "1"
dataset: {hub_id: x/y, split: test, n: 2, fields: FIELDS}
context: "Q: {{ q }}"
continuations: [" a", " b"]
gold: 0
scoring: multiple_choice
metrics: [acc]
"""


@pytest.mark.parametrize("fields, message", [
    ("[q, a]", "key 'dataset': 'fields' must map field names to types (str, int, float, bool, list, dict), got a list"),
    ("{q: [str]}", "key 'dataset': field 'q' has type ['str']; supported: str, int, float, bool, list, dict"),
    ("{q: {a: str}}", "key 'dataset': field 'q' has type {'a': 'str'}; supported: str, int, float, bool, list, dict"),
], ids=["fields_as_a_list", "type_as_a_list", "type_as_a_mapping"])
def test_dataset_fields_of_the_wrong_shape_are_one_message_in_run_and_tasks(tmp_path, capsys, fields, message):
    from evalkit.tasks.yaml_scan import load_yaml_task_file

    folder = tmp_path / "yaml_tasks"
    folder.mkdir()
    path = folder / "t.yaml"
    path.write_text(YAML_TASK.replace("FIELDS", fields), encoding="utf-8")
    expected = f"{path} line 3, {message}"
    with pytest.raises(EvalkitError) as err:
        load_yaml_task_file(path)
    assert str(err.value) == expected
    assert main(["tasks", "--include-path", str(folder)]) == 0
    out = capsys.readouterr()
    assert f"  {expected}" in out.out + out.err and "Traceback" not in out.out + out.err


# --- tracebacks: lm-eval YAML process_docs returning no documents; a !function helper calling sys.exit ------------

LMEVAL_TASK = """task: tiny
dataset_path: nobody/tiny
output_type: multiple_choice
test_split: test
PROCESS
doc_to_text: TEXT
doc_to_target: label
doc_to_choice: ["yes", "no"]
metric_list:
  - metric: acc
"""

HELPERS = """import sys


def none(dataset):
    return None


def numbers(dataset):
    return [1, 2]


def strings(dataset):
    return ["ab", "cd"]


def leave(dataset):
    sys.exit(0)


def text_leaves(doc):
    sys.exit(3)
"""


def _lmeval_folder(tmp_path: Path, process: str, text: str = '"{{q}}"', helpers: str = HELPERS) -> tuple[Path, Path]:
    folder = tmp_path / "lmeval_tasks"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(LMEVAL_TASK.replace("PROCESS", process).replace("TEXT", text), encoding="utf-8")
    (folder / "helpers.py").write_text(helpers, encoding="utf-8")
    data = tmp_path / "data"
    (data / "tiny").mkdir(parents=True)
    (data / "tiny" / "test.jsonl").write_text('{"q": "a?", "label": 0}\n{"q": "b?", "label": 1}\n', encoding="utf-8")
    return folder, data


@pytest.mark.parametrize("fn, message", [
    ("none", "process_docs returned None, not documents (a datasets.Dataset or a list of mappings)"),
    ("numbers", "process_docs returned a list whose row 0 is an integer (1), not a document (a mapping)"),
    ("strings", "process_docs returned a list whose row 0 is a string ('ab'), not a document (a mapping)"),
    ("leave", "process_docs failed: SystemExit: 0 (the function called sys.exit)"),
], ids=["none", "numbers", "strings", "sys_exit"])
def test_process_docs_returning_no_documents_is_one_message(tmp_path, capsys, fn, message):
    folder, data = _lmeval_folder(tmp_path, f"process_docs: !function helpers.{fn}")
    status, err = run_cli(capsys, tmp_path, "--include-path", str(folder), tasks="lm_eval.tiny", data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {folder / 'tiny.yaml'} line 5, key 'process_docs': {message}"]


def test_a_function_helper_calling_sys_exit_is_one_message(tmp_path, capsys):
    folder, data = _lmeval_folder(tmp_path, "", text="!function helpers.text_leaves")
    status, err = run_cli(capsys, tmp_path, "--include-path", str(folder), tasks="lm_eval.tiny", data_dir=data)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"evalkit: error: {data / 'tiny' / 'test.jsonl'} line 1: ")
    assert err[0].endswith(f"{folder / 'tiny.yaml'} line 6, key 'doc_to_text': function failed: SystemExit: 3 "
                           f"(the function called sys.exit)")


def test_a_function_module_calling_sys_exit_on_import_is_refused(tmp_path, capsys):
    folder, data = _lmeval_folder(tmp_path, "process_docs: !function helpers.none",
                                  helpers="import sys\nsys.exit('no')\n")
    assert main(["tasks", "--include-path", str(folder)]) == 0
    out = capsys.readouterr()
    assert (f"{folder / 'tiny.yaml'} line 5, key 'process_docs': {folder / 'helpers.py'} failed to import: "
            f"SystemExit: no (the module called sys.exit)") in out.out


def test_a_python_task_calling_sys_exit_is_one_message(tmp_path, capsys):
    folder = tmp_path / "py_tasks"
    folder.mkdir()
    (folder / "leaving.py").write_text(
        "import sys\nfrom evalkit.types import DatasetSpec, Task\n\n"
        "TASK = Task(name='leaving', version='1', dataset=DatasetSpec('x/y', None, 'test', 2, {'q': str}),\n"
        "            context=lambda d: sys.exit(4), continuations=lambda d: [' a', ' b'], gold=lambda d: 0,\n"
        "            scoring='multiple_choice', metrics=('acc',))\n", encoding="utf-8")
    data = tmp_path / "data"
    (data / "leaving").mkdir(parents=True)
    (data / "leaving" / "test.jsonl").write_text('{"q": "a"}\n{"q": "b"}\n', encoding="utf-8")
    status, err = run_cli(capsys, tmp_path, "--include-path", str(folder), tasks="leaving", data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: task file {folder / 'leaving.py'}: {data / 'leaving' / 'test.jsonl'} line 1: "
                   f"task 'leaving' context() raised SystemExit: 4 (sys.exit was called)"]


# --- tracebacks: JSON nested thousands of levels deep, integers of thousands of digits, 10**400 -------------------

def _nested(depth: int) -> str:
    return "[" * depth + "0" + "]" * depth


DEEP_MESSAGE = "nested more than 100 levels deep (arrays and objects inside one another)"
DATA_JSON_CASES = [
    ("nested_5000_levels", lambda d: d.replace('"goal": ', f'"goal": {_nested(5000)}, "x": ', 1), DEEP_MESSAGE),
    ("nested_500_levels", lambda d: d.replace('"goal": ', f'"goal": {_nested(500)}, "x": ', 1), DEEP_MESSAGE),
    ("integer_of_5000_digits", lambda d: d.replace('"label": 0', '"label": ' + "7" * 5000),
     "an integer of 5000 digits; numbers above 308 digits are not read (no float holds them)"),
    ("ten_to_the_400", lambda d: d.replace('"label": 0', '"label": 1' + "0" * 400),
     "an integer of 401 digits; numbers above 308 digits are not read (no float holds them)"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in DATA_JSON_CASES], ids=[c[0] for c in DATA_JSON_CASES])
def test_a_data_line_too_deep_or_with_a_huge_integer_is_one_message(capsys, tmp_path, change, message):
    data = tmp_path / "data"
    path = data / "piqa" / "validation.jsonl"
    path.parent.mkdir(parents=True)
    lines = first_lines("piqa", "validation")
    second = json.dumps(dict(json.loads(lines[1]), label=0))
    assert '"label": 0' in second
    path.write_bytes(lines[0] + change(second).encode("utf-8") + b"\n" + lines[2])
    status, err = run_cli(capsys, tmp_path, "--limit", "3", data_dir=data)
    assert status == 2
    assert err == [f"evalkit: error: {path} line 2: {message}"]


def _raw_edit(good: Path, old: str, new: str) -> str:
    text = good.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


RESULTS_JSON_CASES = [
    ("nested_5000_levels", '"created": ', f'"deep": {_nested(5000)}, "created": ', DEEP_MESSAGE),
    ("integer_of_5000_digits", '"n": 4', '"n": ' + "7" * 5000,
     "an integer of 5000 digits; numbers above 308 digits are not read (no float holds them)"),
    ("ten_to_the_400", '"wall_time_s": ', '"wall_time_s": 1' + "0" * 400 + ', "was": ',
     "an integer of 401 digits; numbers above 308 digits are not read (no float holds them)"),
]


@pytest.mark.parametrize("old, new, message", [c[1:] for c in RESULTS_JSON_CASES],
                         ids=[c[0] for c in RESULTS_JSON_CASES])
def test_a_results_file_too_deep_or_with_a_huge_integer_is_one_message(good_results, tmp_path, capsys, old, new,
                                                                       message):
    bad = tmp_path / "edited.json"
    bad.write_text(_raw_edit(good_results, old, new), encoding="utf-8")
    expected = f"evalkit: error: {bad}: not a valid results JSON ({message})"
    for argv in (["report", str(bad), "--output", str(tmp_path / "r.md")],
                 ["compare", str(good_results), str(bad), "--output", str(tmp_path / "c.md")],
                 ["export", str(bad), "--output", str(tmp_path / "e")]):
        assert main(argv) == 2
        assert capsys.readouterr().err.splitlines() == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.json"]


def test_a_results_value_of_1e400_is_refused_as_not_finite(good_results, tmp_path, capsys):
    bad = tmp_path / "edited.json"
    bad.write_text(_raw_edit(good_results, '"wall_time_s": ', '"wall_time_s": 1e400, "was": '), encoding="utf-8")
    assert main(["report", str(bad), "--output", str(tmp_path / "r.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"evalkit: error: {bad}: not a valid evalkit results file: 'timing.wall_time_s': expected a finite number, "
        f"got a number (inf)"]


# --- tracebacks: evalkit export --output naming an existing file (lm-eval layout) or folder (csv) -----------------

def test_export_to_an_existing_file_or_folder_is_one_message_and_leaves_it(good_results, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me\n", encoding="utf-8")
    assert main(["export", str(good_results), "--output", str(taken)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"evalkit: error: --output {taken}: an existing file; the lm-eval layout is a folder (results_<date>.json "
        f"and samples_<task>_<date>.jsonl), so name a folder"]
    assert taken.read_text(encoding="utf-8") == "keep me\n"
    inside = taken / "sub"
    assert main(["export", str(good_results), "--output", str(inside)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"evalkit: error: --output {inside}: {taken} is a file, not a folder"]
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["export", str(good_results), "--format", "csv", "--output", str(folder)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"evalkit: error: --output {folder}: an existing folder; the csv export is one file, so name a file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "taken.txt"] and not any(folder.iterdir())


# --- tracebacks: symbolic-link loops among YAML files, and an include path that is itself a looping link ----------

def test_looping_yaml_links_in_an_include_folder_are_refused_files_not_a_traceback(tmp_path, capsys):
    folder, data = _lmeval_folder(tmp_path, "")
    (folder / "a.yaml").symlink_to("b.yaml")
    (folder / "b.yaml").symlink_to("a.yaml")
    (folder / "child.yaml").write_text("include: a.yaml\ntask: child\n", encoding="utf-8")
    assert main(["tasks", "--include-path", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "lm_eval.tiny" in out  # the folder's good task still loads
    for name in ("a.yaml", "b.yaml"):
        assert f"  {folder / name}: a symbolic link that loops (Too many levels of symbolic links)" in out
    assert (f"  {folder / 'child.yaml'} line 1, key 'include': {folder / 'a.yaml'} is a symbolic link that "
            f"loops") in out
    status, err = run_cli(capsys, tmp_path, "--include-path", str(folder), "--limit", "2", tasks="lm_eval.child",
                          data_dir=data)
    assert status == 2 and len(err) == 1 and "lm_eval.child" in err[0] and "loops" in err[0]


def test_an_include_path_that_is_a_looping_link_is_one_message(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["tasks", "--include-path", str(loop)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"evalkit: error: --include-path {loop}: a symbolic link that loops"]
