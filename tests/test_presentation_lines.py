"""Lines of the report, the terminal summary and ``compare`` that say what happened: the scoring rate only when the
model scored, MMLU members' categories, the subset line with whole splits and the draw rule, MMLU's category rows,
and a paired row per aggregated group."""

from __future__ import annotations

import copy

from evalkit.reports.report import render_report
from tests.test_suite_report import hand_results


def _wall_line(timing: dict) -> str:
    results = copy.deepcopy(hand_results())
    results["timing"] = {"wall_time_s": 7.004, "batch_size_final": 16, "oom_retries": 0, **timing}
    return next(line for line in render_report([results]).splitlines() if line.startswith("- Wall time:"))


def test_wall_time_line_gives_a_rate_only_when_the_model_scored():
    every_answer_cached = {"requests": 456, "requests_per_s": 30013.24, "requests_scored": 0, "requests_cached": 456}
    assert _wall_line(every_answer_cached) == "- Wall time: 7.004 s (456 requests, all 456 answers from the request cache)"
    generation_only = {"requests": 0, "requests_per_s": None, "requests_scored": 0, "requests_cached": 0}
    assert _wall_line(generation_only) == "- Wall time: 7.004 s (no log-likelihood requests)"
    scored = {"requests": 456, "requests_per_s": 65.14, "requests_scored": 456, "requests_cached": 0}
    assert _wall_line(scored) == "- Wall time: 7.004 s (456 requests, 65.14 requests/s while scoring)"
    part_cached = {"requests": 456, "requests_per_s": 90.2, "requests_scored": 400, "requests_cached": 56}
    assert _wall_line(part_cached) == ("- Wall time: 7.004 s (456 requests, 90.2 requests/s while scoring, the 56 "
                                       "cached answers included)")
    before_the_counters = {"requests": 10, "requests_per_s": 10.0}  # an older results file: the rate as recorded
    assert _wall_line(before_the_counters) == "- Wall time: 7.004 s (10 requests, 10.0 requests/s while scoring)"
