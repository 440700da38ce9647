"""Few-shot contexts against an independent construction from SPEC-suite part A, on the real data.

The expected contexts are built here from the files themselves (``json`` lines, a ``random.Random(42)`` driven as
SPEC-suite A.1/A.4 describe, and the prompts written out as literal f-strings), never through evalkit's task code.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.cli.parser import split_shots
from evalkit.fewshot.v020 import (
    SOURCE_NONE,
    SOURCE_SAME_SPLIT,
    SOURCE_SPLIT,
    choice_contexts,
    draw_examples,
    fewshot_context,
    replace_last_piece,
)
from evalkit.tasks.registry import load_registry
from evalkit.run.prepare import prepare_task
from evalkit.run.pipeline import run
from evalkit.types import DatasetSpec, EvalkitError, RunConfig, Task

from .conftest import TOKENIZER_JSON


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def expected_draws(n_eval: int, n_pool: int, k: int) -> dict[int, list[int]]:
    """Row of the evaluated split -> sampled pool rows (SPEC-suite A.6 route 1, written out from the spec)."""
    rnd = random.Random()
    rnd.seed(42)
    order = list(range(n_eval))
    rnd.shuffle(order)
    return {row: rnd.sample(range(n_pool), k) for row in order}


def doc_contexts(prepared, row: int) -> list[str]:
    """The contexts of one document's requests, in choice order."""
    return [r.context for r in prepared.requests if r.doc_id == row]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


# --- route 1: a separate training split ---------------------------------------------------------------------------

def arc_text(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def arc_target(doc: dict) -> str:
    key = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}.get(doc["answerKey"], doc["answerKey"])
    return " " + doc["choices"]["text"]["ABCDE".index(key)]  # SPEC-suite B.2: the key's place in A..E


def sciq_text(doc: dict) -> str:
    return f"{doc['support']}\nQuestion: {doc['question']}\nAnswer:".strip()


def sciq_target(doc: dict) -> str:
    return " " + doc["correct_answer"]


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("name,text,target", [("arc_challenge", arc_text, arc_target),
                                              ("sciq", sciq_text, sciq_target)])
def test_route1_contexts_equal_an_independent_construction(registry, data_dir, name, text, target, k):
    test, train = rows(data_dir / name / "test.jsonl"), rows(data_dir / name / "train.jsonl")
    draws = expected_draws(len(test), len(train), k)
    prepared = prepare_task(registry.get(name), data_dir, None, 1234, k)
    assert prepared.fewshot.source == SOURCE_SPLIT and prepared.fewshot.pool_size == len(train)
    order = list(draws)
    for row in order[:3] + order[-2:] + [17, 400]:
        shots = "\n\n".join(text(train[i]) + target(train[i]) for i in draws[row]) + "\n\n"
        conts = len(test[row]["choices"]["text"]) if name == "arc_challenge" else 4
        assert doc_contexts(prepared, row) == [shots + text(test[row])] * conts, (name, k, row)
        assert list(prepared.fewshot.examples[row]) == draws[row]


def test_arc_challenge_five_shot_matches_spec_table_a9(registry, data_dir):
    prepared = prepare_task(registry.get("arc_challenge"), data_dir, None, 1234, 5)
    assert prepared.fewshot.examples[595] == (888, 201, 205, 908, 340)  # eval position 0 is test row 595
    assert prepared.fewshot.examples[716] == (613, 59, 94, 664, 114)  # position 1 is row 716


def test_arc_challenge_numeric_label_training_rows_give_the_letter_mapping_gold(registry, data_dir):
    task = registry.get("arc_challenge")
    train = rows(data_dir / "arc_challenge" / "train.jsonl")
    numeric = [d for d in train if d["answerKey"] in "12345"]
    assert len(numeric) == 23
    for doc in numeric:
        task.validate(doc)
        assert task.continuations(doc)[task.gold(doc)] == arc_target(doc)
    row = train.index(numeric[0])  # 16: labels 1..4, key "2" -> B -> the second choice
    assert (row, numeric[0]["answerKey"], task.gold(numeric[0])) == (16, "2", 1)
    assert fewshot_context(task, {"question": "Q?"}, [numeric[0]]).endswith(
        f"Answer: {numeric[0]['choices']['text'][1]}\n\nQuestion: Q?\nAnswer:")


@pytest.fixture()
def piqa_data(tmp_path, data_dir) -> Path:
    """The real PIQA validation split beside a hand-made train split of 40 rows in the hub schema."""
    folder = tmp_path / "data" / "piqa"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").symlink_to(data_dir / "piqa" / "validation.jsonl")
    train = [{"goal": f"goal number {i}", "sol1": f"first way {i}", "sol2": f"second way {i}", "label": i % 2}
             for i in range(40)]
    (folder / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in train), encoding="utf-8")
    return tmp_path / "data"


@pytest.mark.parametrize("k", [1, 5])
def test_piqa_contexts_on_a_hand_made_train_split(registry, piqa_data, k):
    validation = rows(piqa_data / "piqa" / "validation.jsonl")
    draws = expected_draws(len(validation), 40, k)
    prepared = prepare_task(registry.get("piqa"), piqa_data, 5, 1234, k)
    for row in prepared.doc_ids:
        gold = lambda i: f"first way {i}" if i % 2 == 0 else f"second way {i}"  # noqa: E731 - label i % 2
        shots = "".join(f"Question: goal number {i}\nAnswer: {gold(i)}\n\n" for i in draws[row])
        assert doc_contexts(prepared, row) == [shots + f"Question: {validation[row]['goal']}\nAnswer:"] * 2


def test_too_many_shots_for_the_pool_names_task_k_and_pool_size(registry, piqa_data):
    with pytest.raises(EvalkitError, match=r"task 'piqa': 41 few-shot examples asked for, but its few-shot split "
                                           r"'train' has only 40 rows"):
        prepare_task(registry.get("piqa"), piqa_data, 5, 1234, 41)


def test_a_bad_few_shot_row_is_named_by_file_line_and_field(registry, piqa_data):
    path = piqa_data / "piqa" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = json.dumps({"goal": "g", "sol1": "a", "sol2": "b", "label": 3})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalkitError, match=rf"{path} line 7: field 'label': 3 is not 0 or 1"):
        prepare_task(registry.get("piqa"), piqa_data, 5, 1234, 1)


def test_triviaqa_examples_show_the_answer_value_and_a_row_without_one_is_refused(registry, tmp_path):
    task = registry.get("triviaqa")
    example = {"question": "Capital of France?", "answer": {"aliases": ["Paris", "paris"], "value": "Paris"}}
    doc = {"question": "Largest ocean?", "answer": {"aliases": ["Pacific"]}}
    assert fewshot_context(task, doc, [example]) == (
        "Question: Capital of France?\nAnswer: Paris\n\nQuestion: Largest ocean?\nAnswer:")
    folder = tmp_path / "triviaqa"
    folder.mkdir()
    (folder / "validation.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(doc) + "\n")
    (folder / "train.jsonl").write_text(json.dumps(example) + "\n" + json.dumps(doc) + "\n")
    with pytest.raises(EvalkitError, match=r"train.jsonl line 2: field 'answer.value'"):
        prepare_task(task, tmp_path, None, 1234, 1)


# --- route 3: the evaluated split without the document ------------------------------------------------------------

def test_lambada_route3_drops_the_document_and_matches_spec_table_a9(registry, data_dir):
    texts = [d["text"] for d in rows(data_dir / "lambada_openai" / "test.jsonl")]
    prepared = prepare_task(registry.get("lambada_openai"), data_dir, None, 1234, 5)
    plan = prepared.fewshot
    assert (plan.source, plan.split, plan.pool_size) == (SOURCE_SAME_SPLIT, "test", 5153)
    assert plan.examples[95] == (3882, 1280, 4370, 1801, 1117)  # position 0: six drawn, the last dropped
    assert plan.examples[4263] == (4470, 2416, 1180, 2441, 3056)  # position 1
    assert plan.examples[1709] == (4025, 655, 3834, 497, 2956)  # position 162: the document itself was drawn
    shots = "".join(texts[i] + "\n\n" for i in (4025, 655, 3834, 497, 2956))
    assert doc_contexts(prepared, 1709) == [shots + texts[1709].rsplit(" ", 1)[0]]
    # the independent construction for every row: k + 1 draws, the document (by value) removed, first five kept
    rnd = random.Random(42)
    order = list(range(len(texts)))
    rnd.shuffle(order)
    for row in order:
        drawn = [i for i in rnd.sample(range(len(texts)), 6) if texts[i] != texts[row]][:5]
        assert list(plan.examples[row]) == drawn
    assert not plan.short_rows


def _tiny_task(split: str, fewshot_split: str | None, **changes) -> Task:
    return Task(
        name="tiny", version="0", dataset=DatasetSpec("none", None, split, 4, {"text": str}),
        context=lambda d: d["text"].rsplit(" ", 1)[0], continuations=lambda d: [" " + d["text"].rsplit(" ", 1)[1]],
        gold=lambda d: 0, scoring="target", metrics=("acc",), fewshot_split=fewshot_split, **changes,
    )


def test_route3_removes_every_value_equal_document_and_warns_when_fewer_remain(tmp_path):
    docs = [{"text": "a b"}, {"text": "c d"}, {"text": "a b"}, {"text": "e f"}]
    task = _tiny_task("test", "test")
    plan = draw_examples(task, docs, docs, 3)
    rnd = random.Random(42)
    order = list(range(4))
    rnd.shuffle(order)
    for row in order:
        drawn = rnd.sample(range(4), 4)  # k + 1 = 4 of 4: every row sees all the others
        assert list(plan.examples[row]) == [i for i in drawn if docs[i] != docs[row]][:3]
    assert plan.short_rows == (0, 2)  # the two equal documents each lose their twin too
    assert len(plan.examples[0]) == 2 and 2 not in plan.examples[0]
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    prepared = prepare_task(task, tmp_path, None, 1234, 3)
    assert any("2 documents show fewer than 3 few-shot examples" in w for w in prepared.warnings)


def test_fewshot_filter_keeps_only_some_rows_and_indices_stay_split_rows():
    pool = [{"text": f"w{i} x", "keep": i % 3 == 0} for i in range(30)]
    task = _tiny_task("test", "train", fewshot_filter=lambda d: d["keep"])
    plan = draw_examples(task, [{"text": "q a"}] * 5, pool, 2)
    assert plan.pool_size == 10
    rnd = random.Random(42)
    order = list(range(5))
    rnd.shuffle(order)
    kept = [i for i in range(30) if i % 3 == 0]
    for row in order:
        assert list(plan.examples[row]) == rnd.sample(kept, 2)


def test_zero_shot_draws_nothing_and_keeps_the_context():
    task = _tiny_task("test", None)
    plan = draw_examples(task, [{"text": "a b"}] * 3, [], 0)
    assert (plan.source, plan.examples, plan.pool_size) == (SOURCE_NONE, ((), (), ()), 0)
    assert fewshot_context(task, {"text": "a b"}, []) == "a"


def test_description_goes_first_with_a_blank_line():
    task = _tiny_task("test", "train")
    ex = [{"text": "one two"}, {"text": "three four"}]
    assert fewshot_context(task, {"text": "q a"}, ex, "Fill in.") == "Fill in.\n\none two\n\nthree four\n\nq"
    assert fewshot_context(task, {"text": "q a"}, [], "Fill in.") == "Fill in.\n\nq"


# --- per-choice contexts (WinoGrande partial evaluation) ----------------------------------------------------------

def test_replace_last_piece_follows_spec_b4():
    assert replace_last_piece("Sarah beat Maria so Sarah", "Sarah beat Maria so Maria") == "Sarah beat Maria so Maria"
    assert replace_last_piece("D\n\nex1\n\nex2\n\nquery", "partial") == "D\n\nex1\n\nex2\n\npartial"
    assert replace_last_piece("", "partial") == "partial"


def test_choice_contexts_one_per_continuation():
    task = replace(_tiny_task("test", "train", choice_contexts=lambda d: ["x A", "x B"]),
                   continuations=lambda d: [" end", " end"])
    assert choice_contexts(task, {"text": "q a"}, "ex\n\nq") == ["ex\n\nx A", "ex\n\nx B"]
    bad = replace(task, choice_contexts=lambda d: ["only one"])
    with pytest.raises(ValueError, match="choice_contexts gave 1 contexts for 2 continuations"):
        choice_contexts(bad, {"text": "q a"}, "q")


# --- refusals -----------------------------------------------------------------------------------------------------

def _config(data_dir: Path, tmp_path: Path, tasks: tuple[str, ...], **changes) -> RunConfig:
    return RunConfig(model="random:pythia-14m", tasks=tasks, tokenizer=str(TOKENIZER_JSON), data_dir=str(data_dir),
                     output_dir=str(tmp_path / "out"), bootstrap_iters=0, **changes)


def test_a_task_without_a_few_shot_source_is_refused_by_name(tmp_path, data_dir):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "no_shots.py").write_text(
        "from evalkit.types import DatasetSpec, Task\n"
        "TASK = Task(name='no_shots', version='0', dataset=DatasetSpec('x', None, 'validation', 1838, {'goal': str}),"
        " context=lambda d: d['goal'], continuations=lambda d: [' a'], gold=lambda d: 0, scoring='target',"
        " metrics=('acc',))\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "no_shots").symlink_to(data_dir / "piqa")
    config = _config(tmp_path / "data", tmp_path, ("no_shots",), num_fewshot=2,
                     include_paths=(str(tmp_path / "tasks"),))
    with pytest.raises(EvalkitError, match=r"(?s)no_shots \(2-shot\) has no few-shot source.*--tasks no_shots:0$"):
        run(config, progress=False)
    with pytest.raises(EvalkitError, match="task 'no_shots' has no few-shot source"):
        prepare_task(load_registry((str(tmp_path / "tasks"),)).get("no_shots"), tmp_path / "data", 3, 1, 1)


def test_the_card_refuses_five_shot_naming_each_missing_train_file_and_the_fix(data_dir, capsys, tmp_path):
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "neox20b_card",
                 "--num-fewshot", "5", "--data-dir", str(data_dir), "--limit", "50", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "2 of 5 tasks cannot be run few-shot" in err
    assert f"piqa (5-shot) needs its few-shot split 'train': {data_dir / 'piqa' / 'train.jsonl'} not found" in err
    assert f"triviaqa (5-shot) needs its few-shot split 'train': {data_dir / 'triviaqa' / 'train.jsonl'}" in err
    assert "run them zero-shot with --tasks neox20b_card,piqa:0,triviaqa:0" in err
    assert not (tmp_path / "results").exists()


def test_shot_counts_in_tasks_and_bad_values(capsys):
    assert split_shots(["arc_challenge:25", "piqa", "neox20b_card:5"]) == (
        ("arc_challenge", "piqa", "neox20b_card"), {"arc_challenge": 25, "neox20b_card": 5})
    for bad in ("piqa:x", "piqa:-1", "piqa:", "piqa:1.5"):
        with pytest.raises(EvalkitError, match=rf"--tasks {bad}: the few-shot count after ':' must be"):
            split_shots([bad])
    with pytest.raises(EvalkitError, match="'piqa' is given two few-shot counts"):
        split_shots(["piqa:1", "piqa:2"])
    for flag in ("--num-fewshot", "--fewshot-seed"):
        with pytest.raises(SystemExit):
            main(["run", "--model", "random:pythia-14m", "--tasks", "piqa", flag, "-1"])
        assert "expected a non-negative integer, got '-1'" in capsys.readouterr().err


def test_group_counts_apply_to_members_and_a_task_count_beats_its_group(registry):
    from evalkit.fewshot.v020 import resolve_shots

    tasks = registry.expand(["neox20b_card"])
    overrides = {"piqa": 0, "neox20b_card": 5, "arc": 2}  # the task's own count wins whatever the order
    assert resolve_shots(tasks, 1, overrides, registry.groups) == {
        "lambada_openai": 5, "sciq": 5, "piqa": 0, "triviaqa": 5, "arc_challenge": 2}
    assert resolve_shots(tasks, 1, {}, registry.groups) == dict.fromkeys(
        ["lambada_openai", "sciq", "piqa", "triviaqa", "arc_challenge"], 1)
    with pytest.raises(EvalkitError, match="not among the selected tasks"):
        resolve_shots(registry.expand(["piqa"]), 0, {"sciq": 1}, registry.groups)
    with pytest.raises(EvalkitError, match="few-shot count for piqa must be a non-negative integer, got -2"):
        resolve_shots(registry.expand(["piqa"]), 0, {"piqa": -2}, registry.groups)
