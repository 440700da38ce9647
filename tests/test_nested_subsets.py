"""``--limit``: nested seeded subsets (rule 2), lm-eval's fractions, and a baseline drawn by the old rule."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from evalkit.cli.main import main
from evalkit.data.documents import SUBSET_RULE, limit_count, load_docs, subset_ids
from evalkit.regression.check import _task_diffs, subset_rule_of
from evalkit.regression.baseline import Tolerance, load_baseline
from evalkit.run.prepare import prepare_task
from evalkit.tasks.registry import load_registry
from evalkit.types import EvalkitError
from .conftest import REPO, TOKENIZER_JSON


def test_a_smaller_limit_is_a_subset_of_a_larger_one_with_the_same_seed():
    for seed in (0, 1234, 2 ** 40 + 3):
        pilot, full = set(subset_ids(5000, 100, seed)), set(subset_ids(5000, 1000, seed))
        assert len(pilot) == 100 and len(full) == 1000 and pilot <= full
        sizes = [set(subset_ids(5000, k, seed)) for k in (1, 7, 50, 333, 4999)]
        assert all(a <= b for a, b in zip(sizes, sizes[1:]))


def test_the_subset_is_the_first_ids_of_one_permutation_seeded_by_seed_alone():
    permutation = np.random.default_rng(1234).permutation(1838)
    assert subset_ids(1838, 10, 1234) == sorted(int(i) for i in permutation[:10])
    assert subset_ids(1838, 10, 1234) != subset_ids(1838, 10, 1235)
    assert subset_ids(20, 20, 5) == list(range(20)) and subset_ids(20, 50, 5) == list(range(20))
    assert subset_ids(20, None, 5) == list(range(20))


def test_fractions_round_up_as_lm_eval_does():
    assert limit_count(2376, 0.1) == 238  # ceil(237.6)
    assert limit_count(1838, 0.01) == 19  # ceil(18.38)
    assert limit_count(10, 0.5) == 5 and limit_count(10, 0.25) == 3
    assert limit_count(10, 100) == 100 and limit_count(10, 3.0) == 3 and limit_count(10, None) is None
    assert subset_ids(10, 0.25, 9) == sorted(int(i) for i in np.random.default_rng(9).permutation(10)[:3])
    assert set(subset_ids(1000, 0.05, 3)) <= set(subset_ids(1000, 0.2, 3))
    for bad in (0, -1, 0.0, 1.5, float("nan"), float("inf"), True, "5"):
        with pytest.raises(EvalkitError, match="--limit"):
            limit_count(10, bad)


def test_a_renamed_copy_of_a_task_draws_the_same_documents(data_dir, tmp_path):
    piqa = load_registry().get("piqa")
    copy = replace(piqa, name="piqa_renamed")
    (tmp_path / "piqa_renamed").symlink_to(data_dir / "piqa")  # the same file under the new name's folder
    a, b = prepare_task(piqa, data_dir, 12, 1234), prepare_task(copy, tmp_path, 12, 1234)
    assert a.doc_ids == b.doc_ids and len(a.doc_ids) == 12
    assert [r.context for r in a.requests] == [r.context for r in b.requests]


def test_a_run_records_a_fraction_as_given_and_the_subset_rule(tmp_path, data_dir, capsys):
    status = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                   "--data-dir", str(data_dir), "--limit", "0.005", "--device", "cpu", "--bootstrap-iters", "0",
                   "--output-dir", str(tmp_path), "--no-figure", "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert "subset (--limit 0.005, seed 1234, rule v2): piqa 10 of 1,838" in out  # ceil(1838 * 0.005) = ceil(9.19)
    results = json.loads(next((tmp_path / "results").rglob("*.json")).read_text())
    assert results["config"]["limit"] == 0.005
    task = results["tasks"]["piqa"]
    assert task["n"] == 10 and task["subset"] is True and task["subset_rule"] == SUBSET_RULE == 2
    assert task["documents"]["doc_id"] == subset_ids(1838, 10, 1234)
    assert set(task["documents"]["doc_id"]) <= set(subset_ids(1838, 100, 1234))


def test_limit_flag_refuses_what_is_neither_a_count_nor_a_fraction(tmp_path, capsys):
    for bad in ("1.5", "0", "-0.5"):
        status = main(["run", "--model", "random:pythia-14m", "--tasks", "piqa", "--limit", bad,
                       "--output-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert status == 2 and "--limit" in err and err.count("\n") == 1, err


def _task(doc_ids):
    return {"version": 0, "documents": {"doc_id": doc_ids}, "prompt_sha256": "x", "metrics": {}}


def test_check_names_a_changed_subset_rule_in_one_line_instead_of_a_pile_of_mismatches():
    old, new = _task([1, 5, 9]), _task([2, 5, 7])
    lines = _task_diffs("piqa", old, new, [], Tolerance(), old_rule=1, limited=True)
    assert lines == ["FAIL piqa: subset draw changed (rule v1 -> v2): documents differ; the baseline predates the "
                     "nested --limit draw: rebuild it with `evalkit baseline` (its equivalent_run flags)"]
    same_rule = _task_diffs("piqa", old, new, [], Tolerance(), old_rule=2, limited=True)
    assert len(same_rule) == 1 and "different documents (3 in the baseline, 3 now)" in same_rule[0]
    assert subset_rule_of({"config": {}}) == 1 and subset_rule_of({"config": {"subset_rule": 2}}) == 2


@pytest.mark.parametrize("name", ["random-pythia-70m.json", "smollm2-135m.json"])
def test_shipped_baselines_were_drawn_by_the_current_rule(name, data_dir):
    baseline = load_baseline(REPO / "baselines" / name)
    assert subset_rule_of(baseline) == SUBSET_RULE
    limit = baseline["config"]["limit"]
    registry = load_registry()
    for task_name, frozen in baseline["tasks"].items():
        task = registry.get(task_name)
        n = len(load_docs(task, data_dir))
        assert frozen["documents"]["doc_id"] == subset_ids(n, limit, baseline["config"]["seed"]), task_name
        assert len(frozen["documents"]["doc_id"]) == min(limit, n)
