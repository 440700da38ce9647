"""``evalkit baseline`` and ``evalkit check``: pass on an unchanged tree, fail with the reason on any change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit.regression.baseline import DATA_DIR_MARK, config_from_baseline, load_baseline, portable_path, resolve_path
from evalkit.cli.main import main
from evalkit.tasks.registry import load_registry
from evalkit.run.prepare import prepare_task
from evalkit.run.task_results import prompt_hash
from evalkit.types import EvalkitError
from .conftest import REPO

SHIPPED = REPO / "baselines" / "random-pythia-70m.json"
ORIGINAL = "return f\"Question: {doc['goal']}\\nAnswer:\""
CHANGED = "return f\"Question: {doc['goal']}\\nAnswer;\""


@pytest.fixture(scope="module")
def checked(tmp_path_factory, data_dir) -> Path:
    """A folder with a copy of the PIQA task named piqa_copy, a data folder for it, and a baseline of 6 documents."""
    root = tmp_path_factory.mktemp("check")
    source = (REPO / "tasks" / "piqa.py").read_text(encoding="utf-8")
    assert ORIGINAL in source
    (root / "tasks").mkdir()
    (root / "tasks" / "piqa_copy.py").write_text(source.replace('name="piqa"', 'name="piqa_copy"'), encoding="utf-8")
    (root / "data").mkdir()
    (root / "data" / "piqa_copy").symlink_to(data_dir / "piqa")
    (root / "data" / "tokenizers").symlink_to(data_dir / "tokenizers")
    status = main([
        "baseline", "--model", "random:pythia-14m", "--tasks", "piqa_copy",
        "--tokenizer", str(root / "data" / "tokenizers" / "20B_tokenizer.json"), "--data-dir", str(root / "data"),
        "--include-path", str(root / "tasks"), "--limit", "6", "--seed", "9", "--dtype", "float32", "--device", "cpu",
        "--bootstrap-iters", "0", "--output", str(root / "baseline.json"), "--output-dir", str(root / "out"),
    ])
    assert status == 0
    return root


def _check(root: Path, baseline: Path, capsys) -> tuple[int, str]:
    status = main(["check", "--baseline", str(baseline), "--data-dir", str(root / "data"),
                   "--output-dir", str(root / "out")])
    return status, capsys.readouterr().out


def test_baseline_records_a_portable_configuration(checked):
    baseline = load_baseline(checked / "baseline.json")
    config = baseline["config"]
    assert config["tokenizer"] == "{data_dir}/tokenizers/20B_tokenizer.json"
    assert config["data_dir"] == DATA_DIR_MARK
    assert (config["model"], config["limit"], config["seed"], config["dtype"], config["device"]) == (
        "random:pythia-14m", 6, 9, "float32", "cpu")
    task = baseline["tasks"]["piqa_copy"]
    assert len(task["requests"]["doc_id"]) == 12 and task["documents"]["doc_id"] == sorted(set(task["requests"]["doc_id"]))
    assert "--tokenizer {data_dir}/tokenizers/20B_tokenizer.json --data-dir {data_dir}" in baseline["equivalent_run"]


def test_check_passes_on_an_unchanged_tree(checked, capsys):
    status, out = _check(checked, checked / "baseline.json", capsys)
    assert status == 0, out
    assert (f"check passed: 1 tasks, 12 requests match {checked / 'baseline.json'} (log-likelihoods within "
            "0.0001 + 1e-05·|ll| nats; greedy flags, prompts and metrics unchanged)") in out
    assert "FAIL" not in out
    [report] = [line.removeprefix("report: ") for line in out.splitlines() if line.startswith("report: ")]
    assert Path(report).parent == checked / "out" / "reports" and Path(report).read_text().startswith("# evalkit report")


def test_check_fails_on_a_moved_log_likelihood_and_a_flipped_greedy_flag(checked, tmp_path, capsys):
    baseline = json.loads((checked / "baseline.json").read_text(encoding="utf-8"))
    requests = baseline["tasks"]["piqa_copy"]["requests"]
    requests["loglikelihood"][3] += 0.01
    requests["greedy"][5] = not requests["greedy"][5]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(baseline), encoding="utf-8")
    status, out = _check(checked, tampered, capsys)
    assert status == 1
    doc3, choice3 = requests["doc_id"][3], requests["choice_index"][3]
    old = requests["loglikelihood"][3]
    assert "FAIL piqa_copy: 1 log-likelihoods moved beyond 0.0001 + 1e-05·|ll| nats" in out
    assert f"  log-likelihood: doc {doc3} choice {choice3}: {old:.6f} -> {old - 0.01:.6f} nats (Δ -0.010000)" in out
    assert "FAIL piqa_copy: 1 greedy flags changed" in out
    assert f"check failed: 1 of 1 tasks differ from {tampered}" in out
    assert "prompt" not in out


def test_check_fails_when_a_prompt_changes_by_one_character(checked, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    shutil.copytree(checked / "tasks", tasks)
    task_file = tasks / "piqa_copy.py"
    task_file.write_text(task_file.read_text(encoding="utf-8").replace(ORIGINAL, CHANGED), encoding="utf-8")
    baseline = json.loads((checked / "baseline.json").read_text(encoding="utf-8"))
    baseline["config"]["include_paths"] = [str(tasks)]
    copy = tmp_path / "baseline.json"
    copy.write_text(json.dumps(baseline), encoding="utf-8")

    status, out = _check(checked, copy, capsys)
    assert status == 1
    old_sha = baseline["tasks"]["piqa_copy"]["prompt_sha256"]
    assert f"FAIL piqa_copy: prompt_sha256 {old_sha[:12]}… -> " in out
    assert "FAIL piqa_copy: prompt changed: 12 of 12 requests differ" in out
    first = baseline["tasks"]["piqa_copy"]["documents"]["doc_id"][0]
    line = next(x for x in out.splitlines() if x.startswith(f"  request: doc {first} choice 0:"))
    assert line.startswith(f"  request: doc {first} choice 0: context changed; context now 'Question: ")
    assert line.endswith("\\nAnswer;'")
    assert "log-likelihoods moved" not in out
    assert f"check failed: 1 of 1 tasks differ from {copy}" in out


def test_portable_paths_round_trip(tmp_path):
    data = tmp_path / "data"
    (data / "tokenizers").mkdir(parents=True)
    stored = portable_path(str(data / "tokenizers" / "t.json"), str(data))
    assert stored == "{data_dir}/tokenizers/t.json"
    assert resolve_path(stored, "/elsewhere/data", Path("b.json")) == "/elsewhere/data/tokenizers/t.json"
    assert portable_path("EleutherAI/pythia-70m", str(data)) == "EleutherAI/pythia-70m"
    with pytest.raises(EvalkitError, match=r"b.json: it needs --data-dir \(or \$EVALKIT_DATA_DIR\) for"):
        resolve_path(stored, None, Path("b.json"))


def test_load_baseline_names_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(EvalkitError, match=r"bad.json: not an evalkit baseline \(format 'something-else'"):
        load_baseline(bad)
    with pytest.raises(EvalkitError, match="baseline file not found"):
        load_baseline(tmp_path / "missing.json")


def test_shipped_baseline_is_portable_and_matches_the_current_prompts(data_dir):
    """The CI baseline re-runs from a fresh clone: no absolute path, and its prompts are today's prompts."""
    baseline = load_baseline(SHIPPED)
    config = config_from_baseline(baseline, SHIPPED, str(data_dir), ".")
    assert baseline["config"]["tokenizer"].startswith("{data_dir}/")
    assert (config.model, config.limit, config.dtype, config.device) == ("random:pythia-70m", 20, "float32", "cpu")
    assert config.use_cache is False  # a check scores with today's code; cached answers could hide a regression
    tasks = load_registry(config.include_paths).expand(config.tasks)
    assert [t.name for t in tasks] == list(baseline["tasks"])
    for task in tasks:
        prepared = prepare_task(task, data_dir, config.limit, config.seed)
        frozen = baseline["tasks"][task.name]
        assert prepared.doc_ids == frozen["documents"]["doc_id"], task.name
        assert prompt_hash(prepared.requests) == frozen["prompt_sha256"], (
            f"{task.name}: the prompt changed since {SHIPPED.name} was made; regenerate it with its equivalent_run "
            f"(evalkit baseline ...) if the change is intended")


def test_statistical_check_passes_unchanged_and_fails_on_a_significant_change(checked, tmp_path, capsys):
    common = ["--data-dir", str(checked / "data"), "--output-dir", str(checked / "out"), "--statistical",
              "--bootstrap-iters", "200"]
    assert main(["check", "--baseline", str(checked / "baseline.json"), *common]) == 0
    out = capsys.readouterr().out
    assert "ok piqa_copy acc: " in out and "McNemar exact p = 1, Holm p = 1" in out
    assert "check passed: no significant change (Holm, alpha 0.05)" in out

    # A baseline claiming every document right: the new run's wrong documents are all discordant one way.
    baseline = json.loads((checked / "baseline.json").read_text(encoding="utf-8"))
    task = baseline["tasks"]["piqa_copy"]
    wrong = task["documents"]["acc"].count(0.0)
    assert wrong >= 3, "the random model should miss at least 3 of the 6 PIQA documents (Holm p < 0.99)"
    task["documents"]["acc"] = [1.0] * 6
    tampered = tmp_path / "all-right.json"
    tampered.write_text(json.dumps(baseline), encoding="utf-8")
    status = main(["check", "--baseline", str(tampered), *common, "--alpha", "0.99"])
    out = capsys.readouterr().out
    p = 2 / 2**wrong                      # McNemar: `wrong` discordant documents, all right in the baseline only
    holm = min(1.0, 2 * p)                # two tests (acc, acc_norm); acc_norm is unchanged (p = 1)
    assert status == 1
    assert f"FAIL piqa_copy acc: 1 -> {1 - wrong / 6:.6g} (Δ {-wrong / 6:+.4g}" in out
    assert f"McNemar exact p = {p:.3g}, Holm p = {holm:.3g}" in out
    assert "check failed: significant change (Holm, alpha 0.99)" in out
