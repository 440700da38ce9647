"""``evalkit compare`` and the report on generation tasks: paired tests on ``metric,filter`` rows (names with a
comma), notes when two runs generated under other settings or filters, and the generation facts of the report and
the end-of-run summary."""

from __future__ import annotations

import pytest

from evalkit.reports.compare import generation_notes, paired_table
from evalkit.reports.report import generation_facts, generation_timing
from evalkit.results.summary import format_summary, is_proportion

STRICT, FLEX = "exact_match,strict-match", "exact_match,flexible-extract"


def _task(strict: list[float], flex: list[float], until=("Question:",), max_new_tokens=(256,), prompt="p1"):
    n = len(strict)
    metric = lambda xs: {"value": sum(xs) / n, "stderr": 0.0, "stderr_bootstrap": 0.0, "n": n,  # noqa: E731
                         "higher_is_better": True}
    return {"version": "3.0", "prompt_sha256": prompt, "num_fewshot": 5, "output_type": "generate_until",
            "until": list(until), "max_new_tokens": list(max_new_tokens),
            "metrics": {STRICT: metric(strict), FLEX: metric(flex)},
            "documents": {"doc_id": list(range(n)), STRICT: strict, FLEX: flex}}


def test_paired_rows_on_comma_metric_names_with_mcnemar():
    a = {"tasks": {"gsm8k": _task([0.0] * 6, [1, 0, 1, 0, 1, 1])}}
    b = {"tasks": {"gsm8k": _task([1.0] * 6, [1, 1, 1, 1, 1, 0])}}
    table = paired_table(a, b, ("A", "B"), ("a.json", "b.json"), iters=500, seed=1)
    rows = {r.metric: r for r in table.rows}
    assert set(rows) == {STRICT, FLEX} and table.notes == ()
    strict = rows[STRICT]
    assert (strict.n, strict.value_a, strict.value_b, strict.delta) == (6, 0.0, 1.0, 1.0)
    # McNemar exact: 6 discordant documents, all right in B only: p = 2 * 0.5**6
    assert (strict.test, strict.only_a, strict.only_b) == ("McNemar exact", 0, 6)
    assert strict.p_value == pytest.approx(2 * 0.5 ** 6)
    flex = rows[FLEX]
    assert (flex.only_a, flex.only_b, flex.delta) == (1, 2, pytest.approx(1 / 6))
    assert flex.p_value == pytest.approx(1.0)  # 3 discordant, split 1/2: 2 * P(X <= 1) = 2 * 4/8
    assert strict.p_holm == pytest.approx(min(1.0, 2 * 2 * 0.5 ** 6))


def test_notes_name_other_stop_strings_lengths_and_filters():
    a = _task([0.0], [0.0])
    b = _task([0.0], [0.0], until=("Question:", "\n\n"), max_new_tokens=(128,), prompt="p2")
    del b["metrics"][FLEX]
    b["metrics"]["exact_match,custom"] = a["metrics"][STRICT]
    notes = generation_notes("gsm8k", a, b)
    assert notes == [
        "gsm8k: the generation settings differ (until ['Question:'] vs ['Question:', '\\n\\n']; max_new_tokens "
        "[256] vs [128]), and the prompt hash, which covers them, may also hide other prompt changes, so Δ mixes "
        "the model and the generation settings",
        "gsm8k: the filters differ; rows of one run only are not compared (A: exact_match,flexible-extract; "
        "B: exact_match,custom)"]
    table = paired_table({"tasks": {"gsm8k": a}}, {"tasks": {"gsm8k": b}}, ("A", "B"), ("a", "b"), iters=50)
    assert list(table.notes) == notes  # the settings note replaces the plain "prompts differ" one
    assert [r.metric for r in table.rows] == [STRICT]
    assert generation_notes("gsm8k", a, _task([1.0], [1.0])) == []
    baseline_entry = {k: v for k, v in a.items() if k not in ("until", "max_new_tokens")}  # as a baseline stores
    assert generation_notes("gsm8k", baseline_entry, a) == []
    assert generation_notes("piqa", {"metrics": {"acc": 1}}, {"metrics": {"acc": 1}}) == []


def test_report_and_summary_state_generation_facts():
    task = _task([1.0, 0.0, 0.0], [1.0, 1.0, 0.0], until=("\n", "."), max_new_tokens=(32,))
    task |= {"generated_tokens": 41, "stop_reasons": {"stop": 2, "eot": 0, "length": 1}}
    assert generation_facts(task) == ("; generated until ['\\n', '.'], at most 32 new tokens, 41 tokens generated, "
                                      "stopped by stop string 2, the length limit 1")
    assert generation_facts({"output_type": "multiple_choice"}) == ""
    timing = {"generation": {"generate_s": 4.0, "generated_tokens": 41, "requests": 3}}
    assert generation_timing(timing)["tokens_per_s"] == "10.2"
    assert generation_timing({"requests": 3}) is None
    assert is_proportion(STRICT, 0.5) and is_proportion("exact_match", 0.5) and not is_proportion("f1", 0.5)
    table = format_summary({"tasks": {"gsm8k": task}})
    # Wilson 95% interval of 1/3: [0.0615, 0.7923]
    assert "| gsm8k |     5 | exact_match,strict-match     | 0.3333 | ± | 0.0000 | [0.0615, 0.7923] | 3 |" in table
