"""``--skip-missing-data``: tasks whose local files are missing are named and left out before any model work;
without the flag one message names every missing file. Arithmetic and wikitext have no local data; piqa has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.data.documents import missing_local_files, needed_splits
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model
from evalkit.types import DatasetSpec, EvalkitError, RunConfig, Task
from tests.conftest import DATA_DIR, TOKENIZER_JSON

ARITHMETIC = [f"arithmetic_{s}" for s in ("2da", "2ds", "3da", "3ds", "4da", "4ds", "5da", "5ds", "2dm", "1dc")]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: missing data must stop the run before that."""
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although data was missing")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)


def _config(tmp_path: Path, **changes) -> RunConfig:
    base = dict(model="random:pythia-14m", tasks=("arithmetic_2da", "piqa", "wikitext"), tokenizer=str(TOKENIZER_JSON),
                data_dir=str(DATA_DIR), limit=3, bootstrap_iters=0, output_dir=str(tmp_path / "out"), use_cache=False)
    return RunConfig(**(base | changes))


def test_without_the_flag_one_message_names_every_missing_file(tmp_path, no_model):
    from evalkit.run.pipeline import run

    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path), progress=False)
    assert str(caught.value) == (
        f"2 of 3 selected tasks have no local data file under {DATA_DIR}: "
        f"arithmetic_2da: {DATA_DIR / 'arithmetic_2da' / 'validation.jsonl'}; "
        f"wikitext: {DATA_DIR / 'wikitext' / 'test.jsonl'} (add --skip-missing-data to run the others)")
    assert not (tmp_path / "out").exists()


def test_every_task_missing_is_an_error_after_naming_them(tmp_path, no_model, capsys):
    from evalkit.run.pipeline import run

    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, tasks=("arithmetic_2da", "wikitext"), skip_missing_data=True), progress=False)
    assert str(caught.value) == f"nothing to run: all 2 selected tasks lack local data under {DATA_DIR}"
    assert capsys.readouterr().err.splitlines() == [
        f"skipped arithmetic_2da: no {DATA_DIR / 'arithmetic_2da' / 'validation.jsonl'}",
        f"skipped wikitext: no {DATA_DIR / 'wikitext' / 'test.jsonl'}",
    ]


def test_the_flag_needs_a_data_folder(tmp_path, no_model):
    from evalkit.run.pipeline import run

    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, data_dir=None, skip_missing_data=True), progress=False)
    assert str(caught.value) == ("--skip-missing-data needs --data-dir (or $EVALKIT_DATA_DIR): without a data folder "
                                 "documents come from the hub")
    with pytest.raises(EvalkitError) as caught:
        run(_config(tmp_path, data_dir=str(tmp_path / "nowhere"), skip_missing_data=True), progress=False)
    assert str(caught.value) == (f"data folder not found: {tmp_path / 'nowhere'} (from --data-dir or "
                                 f"$EVALKIT_DATA_DIR)")


def test_a_few_shot_split_counts_only_when_shots_are_asked(tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "test.jsonl").write_text('{"q": "x"}\n', encoding="utf-8")
    toy = Task(name="toy", version="1", dataset=DatasetSpec("org/toy", None, "test", 1, {"q": str}),
               context=lambda d: d["q"], continuations=lambda d: [" y"], gold=lambda d: 0, scoring="target",
               metrics=("acc",), fewshot_split="train")
    route3 = Task(name="toy3", version="1", dataset=DatasetSpec("org/toy", None, "test", 1, {"q": str}, "toy"),
                  context=lambda d: d["q"], continuations=lambda d: [" y"], gold=lambda d: 0, scoring="target",
                  metrics=("acc",), fewshot_split="test")
    assert needed_splits(toy, 0) == ["test"] and needed_splits(toy, 2) == ["test", "train"]
    assert needed_splits(route3, 5) == ["test"]  # examples from the evaluated split itself
    assert missing_local_files([toy, route3], tmp_path, {}) == {}
    assert missing_local_files([toy, route3], tmp_path, {"toy": 2, "toy3": 2}) == {
        "toy": [tmp_path / "toy" / "train.jsonl"]}


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory):
    """A CLI run over the arithmetic group (hand-made 2da rows only), wikitext and piqa (the real copy)."""
    root = tmp_path_factory.mktemp("skip")
    data = root / "data"
    (data / "arithmetic_2da").mkdir(parents=True)
    rows = [("\n\nQ: What is 98 plus 45?\n\nA:", " 143"), ("\n\nQ: What is 12 plus 30?\n\nA:", " 42"),
            ("\n\nQ: What is 1 plus 1?\n\nA:", " 2")]
    (data / "arithmetic_2da" / "validation.jsonl").write_text(
        "".join(json.dumps({"context": c, "completion": a}) + "\n" for c, a in rows), encoding="utf-8")
    (data / "piqa").symlink_to(DATA_DIR / "piqa")
    (data / "tokenizers").symlink_to(DATA_DIR / "tokenizers")
    return root, data


def test_cli_skips_tasks_without_files_before_loading_the_model(skip_run, capsys, monkeypatch):
    from evalkit.models import hf_loading

    root, data = skip_run
    seen_at_load: list[str] = []
    real_load = hf_loading.load_model

    def load_and_record(*args, **kwargs):
        seen_at_load.append(capsys.readouterr().err)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(hf_loading, "load_model", load_and_record)
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks",
                 "arithmetic,wikitext,piqa", "--data-dir", str(data), "--limit", "3", "--bootstrap-iters", "0",
                 "--output-dir", str(root / "out"), "--skip-missing-data", "--no-progress", "--no-cache",
                 "--log-samples"])
    out = capsys.readouterr().out
    assert code == 0
    skipped = [line for line in seen_at_load[0].splitlines() if line.startswith("skipped ")]
    expected = {name: [str(data / name / "validation.jsonl")] for name in ARITHMETIC[1:]}
    expected["wikitext"] = [str(data / "wikitext" / "test.jsonl")]
    assert skipped == [f"skipped {name}: no {paths[0]}" for name, paths in expected.items()]
    [results_path] = (root / "out" / "results" / "random_pythia-14m").glob("*.json")
    results = json.loads(results_path.read_text())
    assert list(results["tasks"]) == ["arithmetic_2da", "piqa"]
    assert results["skipped_tasks"] == expected
    assert results["config"]["skip_missing_data"] is True
    names = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert names[0] == "task" and sorted(set(names[1:]) - {""}) == ["arithmetic_2da", "piqa"]  # none for a skipped task
    [report] = (root / "out" / "reports").glob("*.md")
    assert ("- Skipped for want of local data: arithmetic_2ds, arithmetic_3da, arithmetic_3ds, arithmetic_4da, "
            "arithmetic_4ds, arithmetic_5da, arithmetic_5ds, arithmetic_2dm, arithmetic_1dc, wikitext") in report.read_text()


def test_arithmetic_acc_is_the_greedy_flag_of_a_naive_scorer(skip_run, tokenizer):
    """The run's per-document acc for the hand-made arithmetic rows equals the greedy flag of the one-request
    reference on the same seeded random weights, and the log-likelihoods agree."""
    from evalkit.models import hf_loading
    from evalkit.scoring.tokenization import tokenize_requests
    from evalkit.types import LoglikelihoodRequest
    from tests.reference import naive_loglikelihood

    root, _ = skip_run
    [samples_path] = (root / "out" / "results" / "random_pythia-14m").glob("*.samples.jsonl")
    rows = [json.loads(line) for line in samples_path.read_text().splitlines()]
    rows = [r for r in rows if r["task"] == "arithmetic_2da"]
    assert [r["context"] for r in rows] == ["Question: What is 98 plus 45?\nAnswer:",
                                            "Question: What is 12 plus 30?\nAnswer:",
                                            "Question: What is 1 plus 1?\nAnswer:"]
    model, _ = hf_loading.load_model(resolve_model("random:pythia-14m"), "float32", "cpu", 1234)
    requests = [LoglikelihoodRequest("arithmetic_2da", r["doc_id"], 0, r["context"], r["continuations"][0])
                for r in rows]
    tokenized = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048, "separate")
    for row, tok in zip(rows, tokenized):
        ll, greedy = naive_loglikelihood(model, tok)
        assert row["loglikelihoods"][0] == pytest.approx(ll, abs=1e-4)
        assert row["greedy"] == [greedy] and row["metrics"]["acc"] == float(greedy)


def test_registry_group_arithmetic_expands_to_ten_tasks():
    assert [t.name for t in load_registry().expand(["arithmetic"])] == ARITHMETIC


def test_a_baseline_repeats_the_flag(tmp_path):
    """A baseline frozen with --skip-missing-data re-runs the same selection (a task whose file has since vanished
    then shows up as missing from the new results, not as a crash)."""
    from dataclasses import asdict

    from evalkit.regression.baseline import config_from_baseline, run_command

    cfg = asdict(_config(tmp_path, skip_missing_data=True))
    assert run_command(cfg).endswith("--bootstrap-iters 0 --skip-missing-data --log-samples")
    again = config_from_baseline({"config": cfg}, tmp_path / "b.json", str(DATA_DIR), str(tmp_path))
    assert again.skip_missing_data is True
    cfg.pop("skip_missing_data")  # a baseline written before the flag existed
    assert config_from_baseline({"config": cfg}, tmp_path / "b.json", str(DATA_DIR), str(tmp_path)).skip_missing_data \
        is False


def test_a_missing_few_shot_split_is_named_as_such(tmp_path, no_model):
    from evalkit.run.pipeline import run

    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "toy.py").write_text(
        "from evalkit.types import DatasetSpec, Task\n"
        "TASK = Task(name='toy', version='1', dataset=DatasetSpec('org/toy', None, 'test', 1, {'q': str}),\n"
        "            context=lambda d: d['q'], continuations=lambda d: [' y'], gold=lambda d: 0, scoring='target',\n"
        "            metrics=('acc',), fewshot_split='train')\n", encoding="utf-8")
    data = tmp_path / "data"
    (data / "toy").mkdir(parents=True)
    (data / "toy" / "test.jsonl").write_text('{"q": "x"}\n', encoding="utf-8")
    config = _config(tmp_path, tasks=("toy", "wikitext"), data_dir=str(data), include_paths=(str(tmp_path / "tasks"),),
                     fewshot_overrides={"toy": 2})
    with pytest.raises(EvalkitError) as caught:
        run(config, progress=False)
    assert str(caught.value) == (
        f"2 of 2 selected tasks have no local data file under {data}: toy: {data / 'toy' / 'train.jsonl'} "
        f"(few-shot examples, 2 shots); wikitext: {data / 'wikitext' / 'test.jsonl'}")
