"""How a run with task families reads: the report's group block and folded members, one stderr per table, the short
subset line, the figure's group panels, panel cap, wrapped titles and chance level, and the recorded chance."""

from __future__ import annotations

import copy
import json
import math
import re
import struct

import pytest

from evalkit.reports.figure import MAX_PANELS, wrap_title
from evalkit.reports.report import figure_panels, group_blocks, group_chance, render_report, write_report_file
from evalkit.results.summary import subset_banner
from evalkit.run.pipeline import run
from evalkit.types import RunConfig
from tests.conftest import TOKENIZER_JSON
from tests.test_suite_report import _metric, _task, hand_results

STEM = ["hendrycksTest-astronomy"]
OTHER = ["hendrycksTest-anatomy"]


def family_results() -> dict:
    """hand_results' run with MMLU's two tasks split into two categories and chance levels recorded (anatomy 4
    choices, astronomy given 2 so the group's chance is a weighted mean worth checking)."""
    results = copy.deepcopy(hand_results())
    results["tasks"]["hendrycksTest-anatomy"]["metrics"]["acc"]["n"] = 135  # each metric over its task's documents
    results["tasks"]["hendrycksTest-astronomy"]["metrics"]["acc"]["n"] = 152
    results["tasks"]["hendrycksTest-anatomy"]["chance"] = 0.25
    results["tasks"]["hendrycksTest-astronomy"]["chance"] = 0.5
    results["tasks"]["arc_easy"]["chance"] = 0.25
    results["tasks"]["lambada_openai"]["chance"] = None
    results["groups"]["mmlu_stem"] = {"aggregation": "micro", "tasks": STEM, "n": 152,
                                      "metrics": {"acc": _metric(0.3, 0.04, 0.0373, n=152)}}
    results["groups"]["mmlu_other"] = {"aggregation": "micro", "tasks": OTHER, "n": 135,
                                       "metrics": {"acc": _metric(0.2, 0.03, 0.0345, n=135)}}
    return results


def wilson(p: float, n: int, z: float = 1.959963984540054) -> str:
    """The Wilson 95% interval written out from its formula (Wilson 1927), 4 decimals as the report prints it."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"[{centre - half:.4f}, {centre + half:.4f}]"


def _table(text: str, header: str) -> list[str]:
    """The Markdown table whose header line is ``header``."""
    after = text.split(header + "\n", 1)[1]
    return [header] + after.split("\n\n", 1)[0].splitlines()


def test_group_blocks_put_categories_under_their_group():
    [block] = group_blocks(family_results())
    assert block["name"] == "mmlu" and block["groups"] == ["mmlu", "mmlu_stem", "mmlu_other"]
    assert block["members"] == ["hendrycksTest-anatomy", "hendrycksTest-astronomy"]  # run order
    assert block["category"] == {"hendrycksTest-anatomy": "mmlu_other", "hendrycksTest-astronomy": "mmlu_stem"}


def test_report_shows_the_group_block_and_folds_its_members():
    text = render_report([family_results()])
    run_part = text.split("## Run: toy (float32)", 1)[1]
    header = "| Group | Aggregation | Tasks | Metric | Value | Stderr (closed form) | 95% CI (Wilson) | n | Better |"
    assert _table(run_part, header) == [
        header,
        "| --- | --- | --- | --- | --: | --: | :-: | --: | --- |",
        f"| mmlu | micro | 2 | acc | 0.2530 | 0.0257 | {wilson(0.253, 287)} | 287 | higher |",
        f"| ↳ mmlu_stem | micro | 1 | acc | 0.3000 | 0.0373 | {wilson(0.3, 152)} | 152 | higher |",
        f"| ↳ mmlu_other | micro | 1 | acc | 0.2000 | 0.0345 | {wilson(0.2, 135)} | 135 | higher |",
    ]
    assert wilson(0.253, 287) == "[0.2062, 0.3063]"
    # the tasks outside any group, accuracies under the closed-form stderr only
    header = ("| Task | Shots | Metric | Value | Stderr (closed form) | 95% CI (Wilson) | n | Better | "
              "Truncated requests |")
    rows = _table(run_part, header)
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| lambada_openai v1.0", "| arc_easy v1.0", "| arc_easy v1.0",
                                                     "| hellaswag v1.0", "| hellaswag v1.0"]
    assert rows[2] == "| lambada_openai v1.0 | 0-shot | acc | 0.5000 | 0.0490 | [0.4038, 0.5962] | 100 | higher | 0 |"
    # perplexities under the bootstrap stderr only: wikitext has none recorded, lambada's is 1.5
    header = "| Task | Shots | Metric | Value | Stderr (bootstrap) | n | Better | Truncated requests |"
    assert _table(run_part, header)[2:] == [
        "| lambada_openai v1.0 | 0-shot | perplexity | 12.0000 | 1.5000 | 100 | lower | 0 |",
        "| wikitext v1.0 | 0-shot | word_perplexity | 20.5000 | — | 100 | lower | 0 |",  # the metric's own n
        "| wikitext v1.0 | 0-shot | bits_per_byte | 1.2500 | — | 100 | lower | 0 |",
    ]
    folded = run_part.split("<details><summary>mmlu: 2 member tasks</summary>", 1)[1].split("</details>", 1)[0]
    header = ("| Task | Category | Shots | Metric | Value | Stderr (closed form) | 95% CI (Wilson) | n | "
              "Truncated requests |")
    assert _table(folded, header)[2:] == [
        f"| hendrycksTest-anatomy v1.0 | mmlu_other | 0-shot | acc | 0.2000 | 0.0345 | {wilson(0.2, 135)} | 135 | 0 |",
        f"| hendrycksTest-astronomy v1.0 | mmlu_stem | 0-shot | acc | 0.3000 | 0.0373 | {wilson(0.3, 152)} | 152 | 0 |",
    ]
    assert "- mmlu (micro, 287 documents): hendrycksTest-anatomy, hendrycksTest-astronomy" in folded
    assert "- hendrycksTest-anatomy:  (135 of 135 documents, 135 requests)" in folded
    # members appear in the folded block alone (and nowhere in the suite's detail table)
    before = run_part.split("<details>", 1)[0]
    assert "hendrycksTest-anatomy" not in before and text.count("| hendrycksTest-anatomy v1.0 |") == 1
    assert "Stderr: one kind per table, named in its header" in run_part


def test_subset_line_is_one_short_line_for_many_tasks():
    results = family_results()
    names = [f"hendrycksTest-subject_{i:02d}" for i in range(57)]
    results["tasks"] = {name: _task("acc", {"acc": _metric(0.25, 0.1, 0.1, n=5)}, n=5) | {
        "n_split": 100 + 24 * i, "subset": True, "subset_rule": 2} for i, name in enumerate(names)}
    results["tasks"][names[10]]["n"] = 4  # a split smaller than the limit would give fewer
    results["config"] = {"limit": 5, "seed": 1234}
    results["groups"] = {}
    assert subset_banner(results) == ("subset (--limit 5, seed 1234, rule v2): 4-5 of 100-1,444 documents in each of "
                                      "57 tasks")
    text = render_report([results])
    [banner] = [line for line in text.splitlines() if line.startswith("> **Subset:**")]
    assert banner.startswith("> **Subset:** toy (float32) scored a seeded random subset (`--limit 5`, seed 1234, "
                             "rule v2): 4-5 of 100-1,444 documents in each of 57 tasks (each task's count")
    assert len(banner) < 300
    # few tasks keep the listing by name, with the same rule
    results["tasks"] = dict(list(results["tasks"].items())[:2])
    assert subset_banner(results) == ("subset (--limit 5, seed 1234, rule v2): hendrycksTest-subject_00 5 of 100; "
                                      "hendrycksTest-subject_01 5 of 124")


def test_figure_draws_groups_not_their_members_with_chance():
    panels = figure_panels([family_results()], ["toy"])
    assert [p.title for p in panels] == [
        "mmlu (acc)\nmicro mean of 2 tasks", "mmlu_stem (acc)\nmicro mean of 1 tasks",
        "mmlu_other (acc)\nmicro mean of 1 tasks", "OpenAI's LAMBADA (acc)", "arc_easy (acc)", "hellaswag (acc)"]
    chances = [p.chance for p in panels]
    # micro: the documents' mean chance, (0.25·135 + 0.5·152) / 287
    assert chances[0] == pytest.approx((0.25 * 135 + 0.5 * 152) / 287, abs=1e-15)
    assert chances[1:] == [0.5, 0.25, None, 0.25, None]  # lambada: greedy match; hellaswag: recorded before chance
    mmlu = panels[0]
    assert [(p.label, p.value, p.measured) for p in mmlu.points] == [("toy", 0.253, True)]
    results = family_results()
    results["groups"]["mmlu"]["aggregation"] = "macro"
    assert group_chance(results, "mmlu") == pytest.approx(0.375, abs=1e-15)  # macro: the tasks' mean chance
    del results["tasks"]["hendrycksTest-anatomy"]["chance"]
    assert group_chance(results, "mmlu") is None  # a member from before the field: no line rather than a guess


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_figure_caps_its_panels_and_the_report_names_the_rest(tmp_path):
    results = copy.deepcopy(hand_results())
    results["groups"] = {}
    results["tasks"] = {f"task_{i:02d}": _task("acc", {"acc": _metric(0.5, 0.05, 0.05)}, chance=0.5) for i in range(15)}
    path = write_report_file([results], tmp_path / "r.md")
    text = path.read_text(encoding="utf-8")
    assert MAX_PANELS == 12
    assert ("The figure shows 12 panels; left out (3): task_12, task_13, task_14. Their rows are in the tables below."
            in text)
    width, height = _png_size(tmp_path / "r.png")
    assert width == 1560  # 3 columns of 5.2 inches at 100 dpi
    assert height == 4 * 240  # 4 rows of 2.4 inches: 12 panels, not 15


def test_long_titles_wrap_instead_of_clipping():
    assert wrap_title("hendrycksTest-high_school_government_and_politics (acc)") == (
        "hendrycksTest-high_school_\ngovernment_and_politics (acc)")
    assert all(len(line) <= 34 for line in wrap_title("x" * 80 + " (acc)").splitlines())
    assert wrap_title("mmlu (acc)\nmicro mean of 57 tasks") == "mmlu (acc)\nmicro mean of 57 tasks"


def test_a_run_records_each_choice_tasks_chance(tmp_path, data_dir):
    config = RunConfig(model="random:pythia-14m", tasks=("piqa", "arc_challenge", "lambada_openai"),
                       tokenizer=str(TOKENIZER_JSON), data_dir=str(data_dir), limit=6, seed=3, dtype="float32",
                       device="cpu", bootstrap_iters=0, output_dir=str(tmp_path), use_cache=False)
    results = json.loads(run(config, progress=False).results_path.read_text(encoding="utf-8"))
    tasks = results["tasks"]
    assert tasks["piqa"]["chance"] == 0.5
    assert tasks["lambada_openai"]["chance"] is None  # a greedy match has no chance level
    lines = (data_dir / "arc_challenge" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    choices = [len(json.loads(lines[i])["choices"]["text"]) for i in tasks["arc_challenge"]["documents"]["doc_id"]]
    assert tasks["arc_challenge"]["chance"] == pytest.approx(sum(1 / k for k in choices) / 6, abs=1e-15)
    report = (tmp_path / "reports").glob("*.md")
    assert re.search(r"a dotted line marks chance", next(report).read_text(encoding="utf-8"))


def test_terminal_folds_members_and_notes_the_group_once():
    from evalkit.results.summary import folded_rows, format_summary

    rows, notes = folded_rows(family_results())
    assert notes == ["mmlu: 2 member tasks folded (each task's rows are in the report; 2 categories shown as groups)"]
    lines = format_summary(rows).splitlines()
    assert [line.split(" | ")[0].strip("| ").rstrip() for line in lines[2:] if not line.startswith("*")] == [
        "lambada_openai", "lambada_openai", "arc_easy", "arc_easy", "hellaswag", "hellaswag", "wikitext", "wikitext",
        "mmlu (micro group)", "mmlu_stem (micro group)", "mmlu_other (micro group)"]
    assert lines[-4] == (f"| mmlu (micro group)       |     0 | acc             | 0.2530 | ± |  0.0257 | "
                         f"{wilson(0.253, 287)} | 287 |")
