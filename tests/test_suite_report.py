"""The paper suite's reference rows and the report's suite table, rendered from a hand-written results dict."""

from __future__ import annotations

import copy
import json


from evalkit.reports.report import reference_tables, render_report, suite_references
from evalkit.reports.suite_table import reference_cell
from tasks import neox20b_paper
from tests.conftest import DATA_DIR

SHARED_SUITE = DATA_DIR.parent / "references" / "neox20b_paper_suite.json"


def _metric(value, stderr_bootstrap=None, stderr=None, n=100, higher=True):
    return {"value": value, "stderr": stderr, "stderr_bootstrap": stderr_bootstrap, "n": n, "higher_is_better": higher}


def _task(primary, metrics, n=100, **extra):
    return {"version": "1.0", "description": "", "n": n, "n_split": n, "expected_n": n, "subset": False,
            "primary_metric": primary, "requests": n, "truncated_requests": 0, "warnings": [], "metrics": metrics,
            **extra}


def hand_results() -> dict:
    """A run over a few paper tasks and one MMLU group, every number chosen by hand."""
    return {
        "model": {"name": "toy", "dtype": "float32", "kind": "random", "revision": "seed 1", "parameters": 1000,
                  "device": "cpu"},
        "tokenizer": {"name": "20B_tokenizer.json"},
        "created": "2026-12-02T07:00:00+00:00",
        "versions": {"evalkit": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0"},
        "config": {"limit": None, "seed": 1},
        "timing": {"wall_time_s": 1.0, "requests": 10, "requests_per_s": 10.0},
        "tasks": {
            "lambada_openai": _task("acc", {"acc": _metric(0.5, 0.05, 0.049),
                                            "perplexity": _metric(12.0, 1.5, higher=False)}),
            "arc_easy": _task("acc", {"acc": _metric(0.6, 0.01, 0.0102), "acc_norm": _metric(0.55, 0.011)},
                              num_fewshot=5),
            "hellaswag": _task("acc", {"acc": _metric(0.3, 0.02, 0.021), "acc_norm": _metric(0.35, 0.02)},
                               num_fewshot=0),
            "hendrycksTest-anatomy": _task("acc", {"acc": _metric(0.2, 0.03, 0.0345)}, n=135),
            "hendrycksTest-astronomy": _task("acc", {"acc": _metric(0.3, 0.04, 0.0373)}, n=152),
            "wikitext": _task("word_perplexity", {"word_perplexity": _metric(20.5, None, higher=False),
                                                  "bits_per_byte": _metric(1.25, None, higher=False)}, n=62),
        },
        "groups": {"mmlu": {"aggregation": "micro", "tasks": ["hendrycksTest-anatomy", "hendrycksTest-astronomy"],
                            "n": 287, "metrics": {"acc": _metric(0.253, 0.025, 0.0257, n=287)}}},
    }


def _lines(text: str, start: str) -> list[str]:
    """The Markdown table that follows the heading line ``start``."""
    after = text.split(start + "\n", 1)[1]
    table = after.split("\n| ", 1)[1].split("\n\n", 1)[0]
    return ("| " + table).splitlines()


def test_suite_table_golden():
    text = render_report([hand_results()])
    assert _lines(text, "## GPT-NeoX-20B paper suite") == [
        "| Model | LAMBADA acc | ARC-e acc | HellaSwag acc | MMLU acc | WikiText-2 word_perplexity |",
        "| --- | :-: | :-: | :-: | :-: | :-: |",
        "| **toy (float32)** | **0.500 ± 0.050 (0-shot)** | **0.600 ± 0.010 (5-shot)** | **0.300 ± 0.020 (0-shot)** | "
        "**0.253 ± 0.025 (0-shot)** | **20.500 (0-shot)** |",
        "| GPT-3-Babbage (release blog, Feb 2022, preliminary) | 0.625 (0-shot) | — | 0.545 (0-shot) | 0.268 (0-shot) | — |",
        "| GPT-3-Curie (release blog, Feb 2022, preliminary) | 0.695 (0-shot) | — | 0.495 (0-shot) | 0.269 (0-shot) | — |",
        "| GPT-J-6B (release blog, Feb 2022, preliminary) | 0.683 (0-shot) | — | 0.495 (0-shot) | 0.274 (0-shot) | — |",
        "| FairSeq-13B (release blog, Feb 2022, preliminary) | 0.710 (0-shot) | — | 0.554 (0-shot) | 0.265 (0-shot) | — |",
        "| GPT-NeoX-20B (release blog, Feb 2022, preliminary) | 0.720 (0-shot) | — | 0.490 (0-shot) | 0.288 (0-shot) | — |",
        "| GPT-3-DaVinci (release blog, Feb 2022, preliminary) | 0.752 (0-shot) | — | 0.592 (0-shot) | 0.329 (0-shot) | — |",
        "| GPT-NeoX-20B (NeoX team's result files, 2022-02-08) | — | 0.726 ± 0.009 (0-shot) | 0.536 ± 0.005 (0-shot) | — | — |",
        "| GPT-NeoX-20B (minimal-gpt-neox-20b, 2 GPUs) | 0.721 ± 0.006 (0-shot) | — | 0.535 ± 0.005 (0-shot) | — | — |",
        "| GPT-NeoX-20B (Papers with Code) | — | — | — | 0.286 (0-shot) | — |",
        "| GPT-J-6B (Papers with Code) | — | — | — | 0.273 (0-shot) | — |",
        "| pythia-70m (Pythia evals, step 143000) | 0.185 ± 0.005 (0-shot) | 0.374 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-160m (Pythia evals, step 143000) | 0.328 ± 0.007 (0-shot) | 0.435 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-410m (Pythia evals, step 143000) | 0.516 ± 0.007 (0-shot) | 0.521 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-1b (folder pythia-1b-bf16) (Pythia evals, step 143000) | 0.562 ± 0.007 (0-shot) | "
        "0.569 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-70m-deduped (Pythia evals, step 143000) | 0.192 ± 0.005 (0-shot) | 0.385 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-160m-deduped (Pythia evals, step 143000) | 0.342 ± 0.007 (0-shot) | 0.440 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-410m-deduped (Pythia evals, step 143000) | 0.524 ± 0.007 (0-shot) | 0.517 ± 0.010 (0-shot) | — | — | — |",
        "| pythia-1b-deduped (Pythia evals, step 143000) | 0.580 ± 0.007 (0-shot) | 0.585 ± 0.010 (0-shot) | — | — | — |",
    ]
    # one stderr per table (the bootstrap, as in the suite's cells); the group's members are folded under its block
    assert _lines(text, "### GPT-NeoX-20B paper suite: tasks behind the columns, toy (float32)") == [
        "| Task | Column | Metric | Shots | n | Value | Stderr (bootstrap) |",
        "| --- | --- | --- | --: | --: | --: | --: |",
        "| lambada_openai | LAMBADA | acc | 0 | 100 | 0.5000 | 0.0500 |",
        "| arc_easy | ARC-e | acc | 5 | 100 | 0.6000 | 0.0100 |",
        "| hellaswag | HellaSwag | acc | 0 | 100 | 0.3000 | 0.0200 |",
        "| mmlu (micro, 2 tasks) | MMLU | acc | 0 | 287 | 0.2530 | 0.0250 |",
        "| wikitext | WikiText-2 | word_perplexity | 0 | 62 | 20.5000 | — |",
    ]
    sources = text.split("Sources:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split(":", 1)[0] for line in sources] == [
        "- release blog, Feb 2022, preliminary", "- NeoX team's result files, 2022-02-08",
        "- minimal-gpt-neox-20b, 2 GPUs", "- Papers with Code", "- Pythia evals, step 143000"]
    assert "caveat: hellaswag row looks inconsistent with other runs" in sources[0]
    assert "harness_pin: lm-evaluation-harness dcef7c8f" in sources[1]
    # the card table keeps its shape: the run's LAMBADA among the card's published rows, shots in a column of their own
    assert "| **toy (float32)** | **0-shot** | **0.500 ± 0.050 [0.404, 0.596]** | **—** | **—** | **—** | **—** |" in text
    assert ("| GPT-NeoX-20B | 0-shot | 0.720 ± 0.006 | 0.928 ± 0.008 | 0.779 ± 0.010 | 0.259 ± 0.004 | 0.380 ± 0.014 |"
            in text)


def test_another_metric_is_labelled_never_mixed():
    results = hand_results()
    results["tasks"]["hellaswag"]["primary_metric"] = "acc_norm"
    lines = _lines(render_report([results]), "## GPT-NeoX-20B paper suite")
    assert lines[0].split(" | ")[3] == "HellaSwag acc_norm"
    cells = {line.split(" | ")[0]: line.split(" | ")[3] for line in lines[2:]}
    assert cells["| **toy (float32)**"] == "**0.350 ± 0.020 (0-shot)**"
    assert cells["| GPT-NeoX-20B (NeoX team's result files, 2022-02-08)"] == "0.715 ± 0.005 (0-shot)"
    assert cells["| GPT-NeoX-20B (release blog, Feb 2022, preliminary)"] == "0.490 acc (0-shot)"  # only acc published
    lambada = [{"metric": "acc", "value": 0.72, "stderr": None, "shots": 0}]
    assert reference_cell(lambada, "perplexity", 0) == "—"  # an accuracy never stands in for a perplexity


def test_reference_cells_prefer_the_runs_shots_and_say_theirs():
    mmlu = next(r for s in suite_references()[0]["sources"] if s["id"] == "paperswithcode_mmlu"
                for r in s["rows"] if r["model"] == "GPT-NeoX-20B")["values"]["mmlu"]
    assert reference_cell(mmlu, "acc", 5) == "0.336 (5-shot)"
    assert reference_cell(mmlu, "acc", 0) == "0.286 (0-shot)"
    assert reference_cell(mmlu, "acc", 25) == "0.336 (5-shot)"  # no 25-shot value: the first, labelled as it is
    assert reference_cell(mmlu, "acc", "mixed") == "0.336 (5-shot)"


def test_a_run_without_suite_columns_gets_no_suite_table():
    results = hand_results()
    results["tasks"] = {"toy_task": results["tasks"]["arc_easy"]}
    results.pop("groups")
    assert "paper suite" not in render_report([results])


def test_shipped_suite_keeps_every_published_value_with_its_metric_and_provenance():
    shipped = suite_references()
    assert [s["name"] for s in shipped] == ["neox20b_paper_suite"]
    assert "neox20b_paper_suite" not in [t["name"] for t in reference_tables()]  # card-style tables only
    suite = shipped[0]
    original = json.loads(SHARED_SUITE.read_text(encoding="utf-8"))
    assert suite["about"] == original["_about"]
    rename_task = {"mmlu_social_science": "mmlu_social_sciences", "mmlu_total": "mmlu", "mmlu_avg_5shot": "mmlu",
                   "mmlu_avg_0shot": "mmlu"}
    by_id = {s["id"]: s for s in suite["sources"]}
    assert list(by_id) == [k for k in original if not k.startswith("_")]
    count = 0
    for sid, block in original.items():
        if sid.startswith("_"):
            continue
        assert by_id[sid]["meta"] == block["_meta"]  # provenance and caveats verbatim
        rows = {r["model"]: r["values"] for r in by_id[sid]["rows"]}
        assert list(rows) == [m for m in block if m != "_meta"]
        for model, published in block.items():
            if model == "_meta":
                continue
            for name, entry in published.items():
                shipped_entries = rows[model][rename_task.get(name, name)]
                if "value" in entry:
                    wanted = [(entry.get("metric", "acc"), entry["value"], entry.get("stderr"))]
                else:
                    wanted = [({"ppl": "perplexity"}.get(k, k), v, entry.get(k + "_stderr"))
                              for k, v in entry.items() if not k.endswith("_stderr") and k != "task_version"]
                for metric, value, stderr in wanted:
                    match = [e for e in shipped_entries if e["metric"] == metric and e["value"] == value
                             and e["stderr"] == stderr and e.get("published_as_task", name) == name]
                    assert len(match) == 1, (sid, model, name, metric)
                    assert match[0]["shots"] == (5 if name.endswith("_5shot") else 0)
                    count += 1
    assert count == sum(len(e) for s in suite["sources"] for r in s["rows"] for e in r["values"].values()) == 186


def test_suite_columns_are_the_paper_tasks_and_mmlu_groups():
    columns = suite_references()[0]["columns"]
    keys = [c["key"] for c in columns]
    groups = ["mmlu_humanities", "mmlu_social_sciences", "mmlu_stem", "mmlu_other", "mmlu"]
    assert [c["key"] for c in columns if c["kind"] == "group"] == groups
    subjects = {f"hendrycksTest-{s}" for s in neox20b_paper.MMLU_SUBJECTS}
    unpublished = set(neox20b_paper.MATH_TASKS)  # no published MATH numbers in the references: no column
    assert [k for k in keys if k not in groups] == [t for t in neox20b_paper.PAPER_TASKS
                                                     if t not in subjects | unpublished]
    assert len(set(c["label"] for c in columns)) == len(columns) == 44


def test_rendering_does_not_change_the_results():
    results = hand_results()
    before = copy.deepcopy(results)
    render_report([results])
    assert results == before
