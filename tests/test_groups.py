"""Group aggregation: micro and macro values and stderrs worked by hand, the registry's checks, and a group's
row in the results JSON, the printed summary and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evalkit.stats.groups import aggregate_group
from evalkit.stats.metrics import group_metrics
from evalkit.tasks.registry import load_registry
from evalkit.stats.stderr import macro_bootstrap_stderr, macro_mean_stderr
from evalkit.types import EvalkitError, TaskGroup
from tests.conftest import TOKENIZER_JSON

# task a: acc 1, 0, 1, 1 (mean 3/4), acc_norm always 1; task b: acc 0, 1 (mean 1/2), acc_norm always 0
FIXTURE = {
    "a": {"metrics": {"acc": {}, "acc_norm": {}}, "documents": {"doc_id": [0, 1, 2, 3], "acc": [1.0, 0.0, 1.0, 1.0],
                                                                "acc_norm": [1.0, 1.0, 1.0, 1.0]}},
    "b": {"metrics": {"acc": {}, "acc_norm": {}}, "documents": {"doc_id": [5, 9], "acc": [0.0, 1.0],
                                                                "acc_norm": [0.0, 0.0]}},
}


def test_micro_pools_the_documents_of_all_tasks():
    entry = aggregate_group(TaskGroup("g", ("a", "b"), aggregation="micro"), ["a", "b"], FIXTURE, 20000, 5)
    assert (entry["aggregation"], entry["tasks"], entry["n"]) == ("micro", ["a", "b"], 6)
    acc = entry["metrics"]["acc"]
    # pooled 1, 0, 1, 1, 0, 1: mean 4/6; Σ(x - 2/3)² = 4·(1/9) + 2·(4/9) = 4/3; stderr sqrt(4/3 / 5 / 6)
    assert acc["value"] == pytest.approx(2 / 3, abs=1e-15)
    assert acc["stderr"] == pytest.approx(math.sqrt(4 / 90), rel=1e-12)        # 0.21082
    # the bootstrap of a mean: sqrt(population variance / n) = sqrt((4/3 / 6) / 6) = sqrt(1/27) = 0.19245
    assert acc["stderr_bootstrap"] == pytest.approx(math.sqrt(1 / 27), rel=0.02)
    assert (acc["n"], acc["higher_is_better"]) == (6, True)
    norm = entry["metrics"]["acc_norm"]  # 1, 1, 1, 1, 0, 0: mean 4/6 as well
    assert norm["value"] == pytest.approx(2 / 3, abs=1e-15)


def test_macro_averages_the_task_means():
    entry = aggregate_group(TaskGroup("g", ("a", "b"), aggregation="macro"), ["a", "b"], FIXTURE, 20000, 5)
    acc = entry["metrics"]["acc"]
    # (3/4 + 1/2) / 2; se_a = sqrt(3/4 / 3 / 4) = 1/4, se_b = sqrt(1/2 / 1 / 2) = 1/2; sqrt(1/16 + 1/4) / 2
    assert acc["value"] == pytest.approx(0.625, abs=1e-15)
    assert acc["stderr"] == pytest.approx(math.sqrt(0.3125) / 2, rel=1e-12)   # 0.27951
    # stratified bootstrap: sqrt((σa²/na + σb²/nb) / 4) = sqrt((0.1875/4 + 0.25/2) / 4) = 0.20729
    assert acc["stderr_bootstrap"] == pytest.approx(math.sqrt((0.1875 / 4 + 0.25 / 2) / 4), rel=0.02)
    # acc_norm: task a is always right (se 0), b always wrong (se 0): (1 + 0) / 2, no spread at all
    norm = entry["metrics"]["acc_norm"]
    assert (norm["value"], norm["stderr"]) == (0.5, 0.0)
    assert norm["stderr_bootstrap"] == pytest.approx(0.0, abs=1e-15)
    assert entry["n"] == acc["n"] == 6


def test_a_group_reports_only_the_means_all_its_tasks_report():
    assert group_metrics([("acc", "acc_norm"), ("acc",)]) == ("acc",)
    assert group_metrics([("acc", "perplexity"), ("acc", "perplexity")]) == ("acc",)  # LAMBADA-like tasks
    assert group_metrics([("acc_norm", "acc"), ("acc", "acc_norm")]) == ("acc_norm", "acc")  # the first's order
    assert group_metrics([("word_perplexity",), ("word_perplexity",)]) == ()
    fixture = {"a": FIXTURE["a"], "b": {"metrics": {"acc": {}}, "documents": {"doc_id": [5, 9], "acc": [0.0, 1.0]}}}
    entry = aggregate_group(TaskGroup("g", ("a", "b"), aggregation="micro"), ["a", "b"], fixture, 0, 5)
    assert list(entry["metrics"]) == ["acc"] and entry["metrics"]["acc"]["stderr_bootstrap"] is None


def test_one_document_tasks_give_no_closed_form_stderr_rather_than_a_wrong_one():
    assert math.isnan(macro_mean_stderr([np.array([1.0]), np.array([0.0, 1.0])]))
    assert macro_bootstrap_stderr([np.array([1.0]), np.array([0.0, 1.0])], 2000, 1) == pytest.approx(
        math.sqrt(0.25 / 2 / 4), rel=0.05)  # the one-document task adds no spread
    fixture = {"a": {"metrics": {"acc": {}}, "documents": {"doc_id": [0], "acc": [1.0]}}}
    entry = aggregate_group(TaskGroup("g", ("a",), aggregation="micro"), ["a"], fixture, 10, 5)
    assert entry["metrics"]["acc"]["stderr"] is None and entry["metrics"]["acc"]["stderr_bootstrap"] is None


def test_aggregate_group_refuses_a_plain_group_and_a_missing_task():
    with pytest.raises(ValueError, match="aggregation None"):
        aggregate_group(TaskGroup("g", ("a",)), ["a"], FIXTURE, 0, 1)
    with pytest.raises(ValueError, match="tasks c have no results"):
        aggregate_group(TaskGroup("g", ("a", "c"), aggregation="macro"), ["a", "c"], FIXTURE, 0, 1)


# --- task files ------------------------------------------------------------------------------------------------

TASKS_FILE = '''
from evalkit.types import DatasetSpec, Task, TaskGroup


def _task(name, metrics=("acc", "acc_norm"), aliases=()):
    return Task(
        name=name, version="1",
        dataset=DatasetSpec("none/none", None, "test", 0, {"question": str, "choices": list, "label": int}),
        context=lambda doc: "Question: " + doc["question"] + "\\nAnswer:",
        continuations=lambda doc: [" " + c for c in doc["choices"]], gold=lambda doc: doc["label"],
        scoring="multiple_choice", metrics=metrics, aliases=aliases, description="tiny", source="test",
    )


TASKS = [_task("tiny_a", aliases=("ta",)), _task("tiny_b", metrics=("acc",))]
GROUPS = [
    TaskGroup("tiny_micro", ("ta", "tiny_b"), "two tiny tasks, every document counted once", aggregation="micro"),
    TaskGroup("tiny_macro", ("tiny_a", "tiny_b"), "two tiny tasks, each weighing the same", aggregation="macro"),
    TaskGroup("tiny_plain", ("tiny_a", "tiny_b"), "a plain selection"),
]
'''

QUESTIONS = {
    "tiny_a": [("What is red?", ["a fire truck", "the sky", "grass"], 0), ("Two plus two?", ["four", "five"], 0),
               ("Which is a fruit?", ["a chair", "an apple", "a road"], 1), ("Cold season?", ["summer", "winter"], 1),
               ("Opposite of up?", ["down", "left", "around"], 0)],
    "tiny_b": [("Where do fish live?", ["in water", "in trees"], 0), ("What barks?", ["a cat", "a dog"], 1),
               ("Sun rises in the?", ["west", "east", "north"], 1)],
}


def _write_tasks(folder: Path, text: str = TASKS_FILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.py").write_text(text, encoding="utf-8")
    return folder


def test_registry_keeps_the_selected_groups_and_resolves_their_aliases(tmp_path):
    registry = load_registry([str(_write_tasks(tmp_path / "tasks"))])
    groups = registry.selected_groups(["tiny_a", " tiny_macro", "tiny_plain", "tiny_macro", "neox20b_card", ""])
    assert [g.name for g in groups] == ["tiny_macro", "tiny_plain", "neox20b_card"]
    assert registry.members(registry.groups["tiny_micro"]) == ["tiny_a", "tiny_b"]
    assert [t.name for t in registry.expand(["tiny_micro"])] == ["tiny_a", "tiny_b"]  # expand is unchanged


@pytest.mark.parametrize("group, message", [
    ('TaskGroup("bad", ("piqa",), aggregation="mean")',
     r"group 'bad' \(.*tiny.py\) has aggregation 'mean'; expected None, 'micro' or 'macro'"),
    ('TaskGroup("bad", ("piqa",), aggregation="Micro")', r"has aggregation 'Micro'"),
    ('TaskGroup("bad", ("lambada_openai", "tiny_pages"), aggregation="macro")',
     r"group 'bad' .* has aggregation 'macro', but its tasks share no metric that averages over documents"),
])
def test_registry_refuses_a_group_it_cannot_aggregate(tmp_path, group, message):
    text = ('from evalkit.types import DatasetSpec, Task, TaskGroup\n'
            'TASK = Task(name="tiny_pages", version="1", dataset=DatasetSpec("x", None, "test", 1, {"t": str}),\n'
            '            context=lambda d: "", continuations=lambda d: [d["t"]], gold=lambda d: 0, scoring="rolling",\n'
            '            metrics=("bits_per_byte",), primary_metric="bits_per_byte")\n'
            f'GROUP = {group}\n')
    with pytest.raises(EvalkitError, match=message):
        load_registry([str(_write_tasks(tmp_path / "tasks", text))])


# --- end to end ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    from evalkit.cli.main import main

    folder = tmp_path_factory.mktemp("groups")
    tasks = _write_tasks(folder / "tasks")
    for name, rows in QUESTIONS.items():
        (folder / "data" / name).mkdir(parents=True)
        (folder / "data" / name / "test.jsonl").write_text("".join(
            json.dumps({"question": q, "choices": c, "label": g}) + "\n" for q, c, g in rows), encoding="utf-8")
    argv = ["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--data-dir",
            str(folder / "data"), "--include-path", str(tasks), "--tasks", "tiny_micro,tiny_macro,tiny_plain",
            "--output-dir", str(folder / "out"), "--bootstrap-iters", "300", "--no-cache"]
    return folder, argv, main


def test_selected_groups_get_their_rows_in_results_summary_and_report(group_run, capsys):
    folder, argv, main = group_run
    assert main(argv) == 0
    printed = capsys.readouterr().out
    path = Path(next(line for line in printed.splitlines() if line.startswith("results: ")).split(": ", 1)[1])
    results = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the results JSON"))
    assert list(results["groups"]) == ["tiny_micro", "tiny_macro"]  # the plain group gets no row
    a, b = (np.array(results["tasks"][t]["documents"]["acc"]) for t in ("tiny_a", "tiny_b"))
    assert (a.size, b.size) == (5, 3)
    micro, macro = results["groups"]["tiny_micro"], results["groups"]["tiny_macro"]
    assert (micro["aggregation"], micro["tasks"], micro["n"]) == ("micro", ["tiny_a", "tiny_b"], 8)
    assert list(micro["metrics"]) == list(macro["metrics"]) == ["acc"]  # tiny_b has no acc_norm
    pooled = np.concatenate([a, b])
    assert micro["metrics"]["acc"]["value"] == pytest.approx(pooled.mean(), abs=1e-15)
    assert micro["metrics"]["acc"]["stderr"] == pytest.approx(pooled.std(ddof=1) / math.sqrt(8), rel=1e-12)
    assert macro["metrics"]["acc"]["value"] == pytest.approx((a.mean() + b.mean()) / 2, abs=1e-15)
    se = [x.std(ddof=1) / math.sqrt(x.size) for x in (a, b)]
    assert macro["metrics"]["acc"]["stderr"] == pytest.approx(math.hypot(*se) / 2, rel=1e-12)
    assert results["tasks"]["tiny_a"]["metrics"]["acc"]["value"] == pytest.approx(a.mean(), abs=1e-15)
    lines = printed.splitlines()
    assert any(line.startswith("| tiny_micro (micro group) ") and "| 8 |" in line and
               f"| {micro['metrics']['acc']['value']:.4f} |" in line for line in lines), printed
    assert any(line.startswith("| tiny_macro (macro group) ") for line in lines), printed
    assert not any(line.startswith("| tiny_plain") for line in lines)
    report = Path(next(line for line in lines if line.startswith("report: ")).split(": ", 1)[1]).read_text()
    value = f"{micro['metrics']['acc']['value']:.4f}"
    assert f"| tiny_micro | micro | 2 | acc | {value} |" in report
    assert f"| tiny_macro | macro | 2 | acc | {macro['metrics']['acc']['value']:.4f} |" in report
    assert "- tiny_micro (micro, 8 documents): tiny_a, tiny_b" in report
    assert "tiny_plain" not in report
