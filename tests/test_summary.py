"""The end-of-run summary table: values, stderrs, Wilson intervals, n and shots, group rows, readable numbers."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.results.summary import format_number, format_summary, subset_banner, summary_rows

FIXTURE = Path(__file__).with_name("fixtures") / "small_results.json"


def small() -> dict:
    return json.loads(FIXTURE.read_text())


def test_summary_table_of_a_fixed_run():
    # Wilson 95% by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964;
    # p = 0.75, n = 4: centre 0.6275, half 0.3269 -> [0.3006, 0.9544]
    assert format_summary(small()) == "\n".join([
        "| task               | shots | metric     |    value |   |   stderr | 95% CI           | n |",
        "|--------------------|------:|------------|---------:|---|---------:|------------------|--:|",
        "| piqa               |     5 | acc        |   0.7500 | ± |   0.2500 | [0.3006, 0.9544] | 4 |",
        "| piqa               |     5 | acc_norm   |   0.5000 | ± |   0.2887 | [0.1500, 0.8500] | 4 |",
        "| lambada_openai     |     0 | acc        |   0.2500 | ± |   0.2500 | [0.0456, 0.6994] | 4 |",
        "| lambada_openai     |     0 | perplexity | 1.23e+04 | ± | 2345.50* |                  | 4 |",
        "| mini (micro group) |       | acc        |   0.5000 | ± |   0.1890 | [0.2152, 0.7848] | 8 |",
        "* bootstrap stderr (the metric has no closed form)",
    ])


def test_rows_carry_both_stderrs_and_the_interval():
    rows = summary_rows(small())
    assert [(r["task"], r["kind"], r["metric"]) for r in rows] == [
        ("piqa", "task", "acc"), ("piqa", "task", "acc_norm"), ("lambada_openai", "task", "acc"),
        ("lambada_openai", "task", "perplexity"), ("mini", "group", "acc")]
    piqa = rows[0]
    assert (piqa["value"], piqa["stderr"], piqa["stderr_bootstrap"], piqa["n"], piqa["shots"]) == (0.75, 0.25, 0.21, 4, 5)
    assert round(piqa["ci_low"], 4) == 0.3006 and round(piqa["ci_high"], 4) == 0.9544
    ppl = rows[3]
    assert ppl["ci_low"] is None and ppl["stderr"] is None and ppl["higher_is_better"] is False


def test_group_shots_are_the_members_common_value():
    data = small()
    data["tasks"]["lambada_openai"]["num_fewshot"] = 5
    assert summary_rows(data)[-1]["shots"] == 5
    data["groups"]["mini"]["num_fewshot"] = 3
    assert summary_rows(data)[-1]["shots"] == 3


def test_results_without_groups_or_shots():
    data = small()
    del data["groups"]
    del data["tasks"]["piqa"]["num_fewshot"]
    rows = summary_rows(data)
    assert len(rows) == 4 and {r["shots"] for r in rows} == {0}


def test_numbers_read_well():
    assert format_number(0.123456) == "0.1235"
    assert format_number(27.5, "perplexity") == "27.50"
    assert format_number(3.14159, "perplexity") == "3.14"
    assert format_number(939680.556) == "9.40e+05"
    assert format_number(None) == "—" and format_number(float("nan")) == "—"
    assert format_number(float("inf")) == "inf"


def test_subset_banner_says_which_tasks_ran_on_their_whole_split():
    data = small()
    data["tasks"]["lambada_openai"].update(subset=False, n_split=4)  # a split no larger than the limit
    assert subset_banner(data) == "subset (--limit 4, seed 1234): piqa 4 of 1,838; lambada_openai 4 (whole split)"
    data["tasks"]["piqa"]["subset"] = False
    assert subset_banner(data) is None


def test_report_banner_says_which_tasks_ran_on_their_whole_split(tmp_path):
    from evalkit.reports.report import render_report

    data = small()
    data["tasks"]["lambada_openai"].update(subset=False, n_split=4)
    for task in data["tasks"].values():  # the report reads these too
        task.setdefault("n_split", task["n"])
        task.update(expected_n=task["n_split"], requests=8, truncated_requests=0, warnings=[])
        task.setdefault("primary_metric", "acc")
    data.update(tokenizer={"name": "t", "sha256": "x"},
                timing={"wall_time_s": 1.0, "requests": 16, "requests_per_s": 16.0, "batch_size": 16,
                        "batch_size_final": 16, "oom_retries": 0, "requests_cached": 0, "requests_scored": 16})
    text = render_report([data])
    [banner] = [line for line in text.splitlines() if line.startswith("> **Subset:**")]
    assert ("a seeded random subset (`--limit 4`, seed 1234): piqa 4 of 1,838; lambada_openai 4 (whole split); "
            "its numbers") in banner


def test_report_cells_write_large_perplexities_in_scientific_notation():
    from evalkit.reports.report import cell, fmt

    assert fmt(2584176.5089, 4) == "2.584e+06" and fmt(27.123456, 4) == "27.1235" and fmt(None) == "—"
    assert cell(2584176.5, 3571503.7) == "2.584e+06 ± 3.572e+06"
    assert cell(0.5, 0.0288) == "0.500 ± 0.029" and cell(0.5, None) == "0.500"
