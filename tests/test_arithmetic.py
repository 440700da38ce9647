"""The ten arithmetic tasks (SPEC-suite B.23) on hand-made rows in the hub schema (no local copy exists)."""

from __future__ import annotations

import json

import pytest

from evalkit.data.documents import load_docs
from evalkit.stats.metrics import doc_metrics
from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError

SUFFIXES = ["2da", "2ds", "3da", "3ds", "4da", "4ds", "5da", "5ds", "2dm", "1dc"]

# (task, raw context, raw completion, expected context): the raw form of the openai/gpt-3 files.
ROWS = [
    ("arithmetic_2da", "\n\nQ: What is 98 plus 45?\n\nA:", " 143", "Question: What is 98 plus 45?\nAnswer:"),
    ("arithmetic_1dc", "\n\nQ: What is (9 + 8) * 2?\n\nA:", " 34", "Question: What is (9 + 8) * 2?\nAnswer:"),
    ("arithmetic_5ds", "\n\nQ: What is 17001 minus 55098?\n\nA:", " -38097",
     "Question: What is 17001 minus 55098?\nAnswer:"),
    ("arithmetic_2dm", "\n\nQ: What is 24 times 7?\n\nA:", " 168", "Question: What is 24 times 7?\nAnswer:"),
]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_ten_tasks_read_the_hub_dataset_validation_split(registry):
    assert [t for t in registry.groups["arithmetic"].tasks] == [f"arithmetic_{s}" for s in SUFFIXES]
    assert registry.groups["arithmetic"].aggregation is None
    for suffix in SUFFIXES:
        task = registry.get(f"arithmetic_{suffix}")
        ds = task.dataset
        assert (ds.hub_id, ds.config, ds.split, ds.n) == ("EleutherAI/arithmetic", f"arithmetic_{suffix}",
                                                         "validation", 2000)
        assert dict(ds.fields) == {"context": str, "completion": str}
        assert (task.scoring, task.metrics, task.primary_metric) == ("target", ("acc",), "acc")
        assert task.fewshot_split == "validation" == ds.split  # route 3: examples from the evaluated split
        assert task.target is None and task.choice_contexts is None


@pytest.mark.parametrize("name, raw_context, completion, expected", ROWS, ids=[r[0] for r in ROWS])
def test_exact_context_and_continuation(registry, name, raw_context, completion, expected):
    task = registry.get(name)
    doc = {"context": raw_context, "completion": completion}
    assert task.context(doc) == expected
    assert task.continuations(doc) == [completion]
    assert task.gold(doc) == 0


def test_transform_order_and_idempotence(registry):
    task = registry.get("arithmetic_3da")
    # "\n\n" -> "\n" runs before the Q:/A: replacements, and only once: "\n\n\n" keeps two newlines.
    assert task.context({"context": "  Q: x\n\n\nA: ", "completion": " 1"}) == "Question: x\n\nAnswer:"
    # every occurrence is replaced, not only the first
    assert task.context({"context": "Q: Q: A:A:", "completion": " 1"}) == "Question: Question: Answer:Answer:"
    # rows already in the Question:/Answer: form (as some hub copies store them) come out unchanged
    done = "Question: What is 98 plus 45?\nAnswer:"
    assert task.context({"context": done, "completion": " 143"}) == done


def test_acc_is_the_greedy_flag_of_the_whole_answer():
    assert doc_metrics("target", [-0.5], [True], [" 143"], 0)["acc"] == 1.0
    assert doc_metrics("target", [-0.01], [False], [" 143"], 0)["acc"] == 0.0


def test_local_rows_load_and_a_bad_row_names_file_line_and_field(registry, tmp_path):
    task = registry.get("arithmetic_2da")
    folder = tmp_path / "arithmetic_2da"
    folder.mkdir()
    rows = [{"context": c, "completion": a} for _, c, a, _ in ROWS]
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    docs = load_docs(task, tmp_path)
    assert [task.context(d) for d in docs] == [e for _, _, _, e in ROWS]
    (folder / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps({"context": "Q: 1?"}) + "\n")
    with pytest.raises(EvalkitError) as caught:
        load_docs(task, tmp_path)
    assert str(caught.value) == f"{folder / 'validation.jsonl'} line 2: missing field 'completion'"
    (folder / "validation.jsonl").write_text(json.dumps({"context": " \n\n ", "completion": " 1"}) + "\n")
    with pytest.raises(EvalkitError) as caught:
        load_docs(task, tmp_path)
    assert str(caught.value) == f"{folder / 'validation.jsonl'} line 1: field 'context' is blank: no question to ask"


def test_sources_name_the_original_file_and_its_sha256(registry):
    task = registry.get("arithmetic_1dc")
    assert "https://raw.githubusercontent.com/openai/gpt-3/master/data/single_digit_three_ops.jsonl" in task.source
    assert "08b34e3272a8ff1d4932d63f251519d14c485c38d582366e1e323d0b859c3925" in task.source
