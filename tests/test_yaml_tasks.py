"""evalkit's own YAML task format: the same requests and results as the Python task, and errors that point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.tasks.registry import load_registry
from evalkit.tasks.yaml_scan import load_yaml_task_file
from evalkit.run.prepare import prepare_task
from evalkit.run.task_results import prompt_hash
from evalkit.types import EvalkitError

from .conftest import REPO, TOKENIZER_JSON

FIXTURES = REPO / "tests" / "task_yaml" / "evalkit"


def requests_of(task, data_dir):
    prepared = prepare_task(task, data_dir, None, 1234)
    return prepared, [(r.doc_id, r.choice_index, r.context, r.continuation) for r in prepared.requests]


def test_yaml_piqa_gives_byte_identical_requests_to_the_python_task(data_dir):
    registry = load_registry([str(FIXTURES)])
    python, yaml = registry.get("piqa"), registry.get("piqa_yaml")
    p_prep, p_reqs = requests_of(python, data_dir)
    y_prep, y_reqs = requests_of(yaml, data_dir)
    assert len(y_reqs) == 2 * 1838
    assert y_reqs == p_reqs
    assert prompt_hash(y_prep.requests) == prompt_hash(p_prep.requests)
    assert [yaml.gold(d) for d in y_prep.docs] == [python.gold(d) for d in p_prep.docs]
    assert y_reqs[0][2] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert (yaml.scoring, yaml.metrics, yaml.version) == (python.scoring, python.metrics, python.version)
    assert registry.groups["yaml_examples"].tasks == ("piqa_yaml",)


def test_yaml_piqa_gives_the_same_results_as_the_python_task(data_dir, tmp_path, capsys):
    (tmp_path / "data" / "piqa").mkdir(parents=True)
    lines = (data_dir / "piqa" / "validation.jsonl").read_text().splitlines()[:6]
    (tmp_path / "data" / "piqa" / "validation.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks",
                 "piqa,piqa_yaml", "--include-path", str(FIXTURES), "--data-dir", str(tmp_path / "data"),
                 "--output-dir", str(tmp_path), "--log-samples", "--bootstrap-iters", "0", "--no-progress",
                 "--no-cache"])
    assert code == 0
    [results] = (tmp_path / "results" / "random_pythia-14m").glob("*[0-9]Z.json")
    tasks = json.loads(results.read_text())["tasks"]
    assert tasks["piqa_yaml"]["prompt_sha256"] == tasks["piqa"]["prompt_sha256"]
    assert tasks["piqa_yaml"]["metrics"] == tasks["piqa"]["metrics"]
    assert tasks["piqa_yaml"]["documents"] == tasks["piqa"]["documents"]
    samples = [json.loads(x) for x in results.with_suffix(".samples.jsonl").read_text().splitlines()]
    by_task = {t: [s["loglikelihoods"] for s in samples if s["task"] == t] for t in ("piqa", "piqa_yaml")}
    assert len(by_task["piqa"]) == 6 and by_task["piqa_yaml"] == by_task["piqa"]


def test_a_family_file_gives_the_python_arc_challenge_requests_and_a_micro_group(data_dir):
    registry = load_registry([str(FIXTURES)])
    _, python = requests_of(registry.get("arc_challenge"), data_dir)
    _, yaml = requests_of(registry.get("arc_challenge_yaml"), data_dir)
    assert yaml == python and len(yaml) > 4 * 1100
    easy = registry.get("arc_easy_yaml")
    assert (easy.dataset.config, easy.dataset.n, easy.dataset.local_dir) == ("ARC-Easy", 2376, "arc_easy")
    assert registry.groups["arc_yaml"].aggregation == "micro"
    assert registry.groups["arc_yaml"].tasks == ("arc_challenge_yaml", "arc_easy_yaml")
    doc = {"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
    assert easy.target(doc) == " b" and easy.gold(doc) == 1 and easy.fewshot_split == "train"


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BASE = """name: t
version: "1"
dataset: {hub_id: x/y, split: test, n: 2, fields: {q: str}}
continuations: [" a", " b"]
gold: 0
scoring: multiple_choice
metrics: [acc]
"""


def test_a_template_syntax_error_names_the_file_the_field_and_the_line(tmp_path):
    path = write(tmp_path, BASE + 'context: |-\n  Question: {{ q }}\n  Answer: {{ q | }}\n')
    with pytest.raises(EvalkitError) as err:
        load_yaml_task_file(path)
    # the key is on line 8; the broken expression is on the template's second line, so line 9 of the file
    assert str(err.value).startswith(f"{path} line 9, field 'context': template syntax error")


def test_a_missing_field_at_render_time_names_the_data_line_and_the_template(tmp_path):
    path = write(tmp_path, BASE + 'context: "Q: {{ question }}"\n')
    [task], _ = load_yaml_task_file(path)
    (tmp_path / "data" / "t").mkdir(parents=True)
    (tmp_path / "data" / "t" / "test.jsonl").write_text('{"q": "fine"}\n')
    with pytest.raises(EvalkitError) as err:
        prepare_task(task, tmp_path / "data", None, 1)
    message = str(err.value)
    assert f"{tmp_path / 'data' / 't' / 'test.jsonl'} line 1: " in message  # the data line, then the template's
    assert message.endswith(f"{path} line 8, field 'context': template failed: UndefinedError: 'question' is undefined")


@pytest.mark.parametrize("extra, expected", [
    ("colour: red\n", "key 'colour': unknown key; supported: aliases"),
    ("tokenization: glued\n", "key 'tokenization': expected separate or joint"),
    ('context: "x"\ngroup: [a]\n', "key 'group': expected a mapping with name"),
])
def test_bad_keys_are_named_with_their_line(tmp_path, extra, expected):
    text = BASE + ('context: "x"\n' if "context" not in extra else "") + extra
    path = write(tmp_path, text)
    with pytest.raises(EvalkitError) as err:
        load_yaml_task_file(path)
    line = text.splitlines().index(extra.splitlines()[-1]) + 1
    assert f"{path} line {line}, {expected}" in str(err.value)


def test_a_bad_dataset_field_type_is_refused(tmp_path):
    path = write(tmp_path, BASE.replace("{q: str}", "{q: text}") + 'context: "x"\n')
    with pytest.raises(EvalkitError, match="field 'q' has type 'text'; supported: str, int, float, bool, list, dict"):
        load_yaml_task_file(path)
