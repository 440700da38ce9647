"""Lines of the report, the terminal summary and ``compare`` that say what happened: the scoring rate only when the
model scored, MMLU members' categories, the subset line with whole splits and the draw rule, MMLU's category rows,
and a paired row per aggregated group."""

from __future__ import annotations

import copy
import json

import pytest

from evalkit.reports.compare import paired_table
from evalkit.reports.report import render_report
from evalkit.results.summary import folded_rows, format_summary, subset_banner
from evalkit.run.pipeline import run
from evalkit.types import RunConfig
from tests.conftest import TOKENIZER_JSON
from tests.test_suite_report import _metric, _task, hand_results


@pytest.fixture(scope="module")
def mmlu_run(tmp_path_factory, data_dir):
    """``--tasks mmlu --limit 1`` on random:pythia-14m: (results dict, report text, output)."""
    out = tmp_path_factory.mktemp("mmlu")
    config = RunConfig(model="random:pythia-14m", tasks=("mmlu",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(data_dir), limit=1, seed=1234, dtype="float32", device="cpu", bootstrap_iters=0,
                       output_dir=str(out), use_cache=False)
    output = run(config, progress=False)
    results = json.loads(output.results_path.read_text(encoding="utf-8"))
    return results, output.report_path.read_text(encoding="utf-8"), output


def _wall_line(timing: dict) -> str:
    results = copy.deepcopy(hand_results())
    results["timing"] = {"wall_time_s": 7.004, "batch_size_final": 16, "oom_retries": 0, **timing}
    return next(line for line in render_report([results]).splitlines() if line.startswith("- Wall time:"))


def test_wall_time_line_gives_a_rate_only_when_the_model_scored():
    every_answer_cached = {"requests": 456, "requests_per_s": 30013.24, "requests_scored": 0, "requests_cached": 456}
    assert _wall_line(every_answer_cached) == ("- Wall time: 7.004 s (456 requests, all 456 answers from the request "
                                               "cache)")
    generation_only = {"requests": 0, "requests_per_s": None, "requests_scored": 0, "requests_cached": 0}
    assert _wall_line(generation_only) == "- Wall time: 7.004 s (no log-likelihood requests)"
    scored = {"requests": 456, "requests_per_s": 65.14, "requests_scored": 456, "requests_cached": 0}
    assert _wall_line(scored) == "- Wall time: 7.004 s (456 requests, 65.14 requests/s while scoring)"
    part_cached = {"requests": 456, "requests_per_s": 90.2, "requests_scored": 400, "requests_cached": 56}
    assert _wall_line(part_cached) == ("- Wall time: 7.004 s (456 requests, 90.2 requests/s while scoring, the 56 "
                                       "cached answers included)")
    before_the_counters = {"requests": 10, "requests_per_s": 10.0}  # an older results file: the rate as recorded
    assert _wall_line(before_the_counters) == "- Wall time: 7.004 s (10 requests, 10.0 requests/s while scoring)"


def test_mmlu_members_show_the_category_their_definition_gives(mmlu_run):
    results, report, _ = mmlu_run
    table = report.split("| Task | Category |", 1)[1].split("\n\n", 1)[0].splitlines()
    category = {line.split(" | ")[0].lstrip("| ").split(" v")[0]: line.split(" | ")[1] for line in table[2:]}
    assert len(category) == 57 and "—" not in category.values()
    # categories.py of the MMLU authors: anatomy is under Other (lm-eval 0.4 moves it to STEM)
    assert category["hendrycksTest-anatomy"] == "mmlu_other"
    assert category["hendrycksTest-abstract_algebra"] == "mmlu_stem"
    assert category["hendrycksTest-formal_logic"] == "mmlu_humanities"
    assert category["hendrycksTest-econometrics"] == "mmlu_social_sciences"
    counts = {c: list(category.values()).count(c) for c in set(category.values())}
    assert counts == {"mmlu_stem": 18, "mmlu_humanities": 13, "mmlu_social_sciences": 12, "mmlu_other": 14}
    assert results["tasks"]["hendrycksTest-anatomy"]["category"] == "mmlu_other"


def test_mmlu_shows_its_category_rows_beside_its_total(mmlu_run):
    results, _, _ = mmlu_run
    rows, notes = folded_rows(results)
    assert [(r["task"], r["metric"], r["n"]) for r in rows if r["metric"] == "acc"] == [
        ("mmlu", "acc", 57), ("mmlu_stem", "acc", 18), ("mmlu_humanities", "acc", 13),
        ("mmlu_social_sciences", "acc", 12), ("mmlu_other", "acc", 14)]
    assert notes == ["mmlu: 57 member tasks folded (each task's rows are in the report; 4 categories shown as groups)"]
    right = {}  # each category's right answers counted from its members' one document each
    for name, task in results["tasks"].items():
        right[task["category"]] = right.get(task["category"], 0) + task["documents"]["acc"][0]
    by_name = {r["task"]: r for r in rows if r["metric"] == "acc"}
    for category, n in (("mmlu_stem", 18), ("mmlu_humanities", 13), ("mmlu_social_sciences", 12), ("mmlu_other", 14)):
        assert by_name[category]["value"] == pytest.approx(right[category] / n, abs=1e-12)
    assert by_name["mmlu"]["value"] == pytest.approx(sum(right.values()) / 57, abs=1e-12)  # the total as before
    table = format_summary(rows).splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == [
        "mmlu (micro group)", "mmlu (micro group)", "mmlu_stem (micro group)", "mmlu_stem (micro group)",
        "mmlu_humanities (micro group)", "mmlu_humanities (micro group)", "mmlu_social_sciences (micro group)",
        "mmlu_social_sciences (micro group)", "mmlu_other (micro group)", "mmlu_other (micro group)"]


def card_subset_results() -> dict:
    """The GPT-NeoX-20B card's tasks at ``--limit 1000``: sciq's test split has exactly 1,000 documents."""
    results = copy.deepcopy(hand_results())
    splits = {"lambada_openai": 5153, "piqa": 1838, "sciq": 1000, "triviaqa": 11313, "arc_challenge": 1172}
    results["tasks"] = {name: _task("acc", {"acc": _metric(0.5, 0.01, 0.0158, n=1000)}, n=1000) | {
        "n_split": size, "subset": size > 1000, "subset_rule": 2} for name, size in splits.items()}
    results["groups"] = {}
    results["config"] = {"limit": 1000, "seed": 1234}
    return results


def test_subset_line_names_whole_splits_and_the_draw_rule():
    results = card_subset_results()
    assert subset_banner(results) == (
        "subset (--limit 1000, seed 1234, rule v2): lambada_openai 1,000 of 5,153; piqa 1,000 of 1,838; sciq 1,000 "
        "(whole split); triviaqa 1,000 of 11,313; arc_challenge 1,000 of 1,172")
    [banner] = [line for line in render_report([results]).splitlines() if line.startswith("> **Subset:**")]
    assert banner == (
        "> **Subset:** toy (float32) scored a seeded random subset (`--limit 1000`, seed 1234, rule v2): "
        "lambada_openai 1,000 of 5,153; piqa 1,000 of 1,838; sciq 1,000 (whole split); triviaqa 1,000 of 11,313; "
        "arc_challenge 1,000 of 1,172; its numbers are not comparable to full-split rows without allowing for the "
        "larger stderr.")


def test_summarised_subset_line_counts_the_whole_splits():
    # MMLU at --limit 100: subjects of exactly 100 test questions run whole, the others are cut to 100
    results = card_subset_results()
    sizes = [100] * 3 + [102, 135, 1534]
    results["tasks"] = {f"hendrycksTest-subject_{i:02d}_with_a_long_name": _task(
        "acc", {"acc": _metric(0.25, 0.04, 0.04, n=100)}, n=100) | {"n_split": size, "subset": size > 100,
                                                                  "subset_rule": 2} for i, size in enumerate(sizes)}
    results["config"] = {"limit": 100, "seed": 1234}
    assert subset_banner(results) == ("subset (--limit 100, seed 1234, rule v2): 100 of 102-1,534 documents in each "
                                      "of 3 tasks; 3 tasks on their whole split (100 documents)")


def _compare_run(t1: list[int], t2: list[int], aggregation: str = "micro", extra_group: bool = False) -> dict:
    """Two tasks of a family by hand (acc per document) and their group."""
    def task(acc: list[int]) -> dict:
        return {"version": "1.0", "prompt_sha256": "p", "metrics": {"acc": {}},
                "documents": {"doc_id": list(range(len(acc))), "acc": acc}}
    pooled = t1 + t2
    groups = {"fam": {"aggregation": aggregation, "tasks": ["t1", "t2"], "n": len(pooled),
                      "metrics": {"acc": {"value": sum(pooled) / len(pooled)}}}}
    if extra_group:
        groups["fam_part"] = {"aggregation": "micro", "tasks": ["t1"], "n": len(t1), "metrics": {"acc": {}}}
    return {"tasks": {"t1": task(t1), "t2": task(t2)}, "groups": groups}


def test_compare_tests_a_micro_group_over_its_pooled_documents():
    a = _compare_run([1, 0, 1], [0, 0, 1, 1])
    b = _compare_run([1, 1, 1], [0, 1, 1, 1], extra_group=True)
    table = paired_table(a, b, ("A", "B"), ("a.json", "b.json"), iters=200)
    group = table.rows[-1]
    # pooled: A right on 4 of 7, B on 6 of 7; B alone right on t1 doc 1 and t2 doc 1, A alone on none:
    # McNemar exact p = 2 * 0.5**2 = 0.5; Holm over 3 rows: min(1, 3 * 0.5) = 1
    assert (group.name, group.kind, group.n, group.only_a, group.only_b) == ("fam (group)", "group", 7, 0, 2)
    assert (group.value_a, group.value_b, group.delta) == pytest.approx((4 / 7, 6 / 7, 2 / 7), abs=1e-12)
    assert (group.p_value, group.p_holm) == pytest.approx((0.5, 1.0), abs=1e-12)
    assert [(r.name, r.p_value) for r in table.rows[:2]] == [("t1", 1.0), ("t2", 1.0)]  # 0 / 1 discordant each
    assert table.notes == ("group fam_part: aggregated in B only, so it has no paired row",)


def test_compare_says_why_a_macro_group_has_no_row():
    a = _compare_run([1, 0, 1], [0, 0, 1, 1], aggregation="macro")
    b = _compare_run([1, 1, 1], [0, 1, 1, 1], aggregation="macro")
    table = paired_table(a, b, ("A", "B"), ("a.json", "b.json"), iters=200)
    assert [r.name for r in table.rows] == ["t1", "t2"]
    assert table.notes == ("group fam: a macro mean of its tasks in A and macro in B; only a micro mean (over "
                           "pooled documents) is tested paired here, so it has no paired row",)
