"""The Python API: the same numbers as the CLI, no files unless asked, lazy imports, data frames with the
documented columns and dtypes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.cli.main import main
from evalkit.results.frames import METRIC_COLUMNS
from evalkit.types import EvalkitError

from .conftest import REPO, TOKENIZER_JSON

FIXTURE = Path(__file__).with_name("fixtures") / "small_results.json"
RUN = dict(tokenizer=TOKENIZER_JSON, limit=12, bootstrap_iters=100, use_cache=False)


@pytest.fixture(scope="module")
def api_and_cli(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "lambada,piqa",
                 "--data-dir", str(data_dir), "--limit", "12", "--bootstrap-iters", "100", "--no-cache",
                 "--output-dir", str(out), "--log-samples", "--no-progress"])
    assert code == 0
    [path] = (out / "results" / "random_pythia-14m").glob("*Z.json")
    api = evalkit.evaluate(model="random:pythia-14m", tasks=["lambada", "piqa"], data_dir=data_dir, **RUN)
    return api, json.loads(path.read_text()), path


def test_api_returns_the_cli_numbers(api_and_cli):
    api, cli, _ = api_and_cli
    assert list(api["tasks"]) == list(cli["tasks"]) == ["lambada_openai", "piqa"]
    for name in api["tasks"]:
        assert api["tasks"][name]["metrics"] == cli["tasks"][name]["metrics"]
        assert api["tasks"][name]["documents"] == cli["tasks"][name]["documents"]
        assert api["tasks"][name]["prompt_sha256"] == cli["tasks"][name]["prompt_sha256"]
    assert api["model"] == cli["model"] and api["config"]["limit"] == 12


def test_api_writes_no_files_unless_asked(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evalkit.evaluate(model="random:pythia-14m", tasks="piqa", data_dir=data_dir, **(RUN | {"limit": 3}))
    assert list(tmp_path.iterdir()) == []
    evalkit.evaluate(model="random:pythia-14m", tasks="piqa", data_dir=data_dir, output_dir=tmp_path / "o",
                     **(RUN | {"limit": 3}))
    assert len(list((tmp_path / "o" / "results" / "random_pythia-14m").glob("*.json"))) == 1


def test_model_args_as_text_are_parsed():
    config = evalkit.make_config("org/m", "piqa,sciq", model_args="attn_implementation=eager,low_cpu_mem_usage=true",
                                 revision="v2", batch_size="auto")
    assert config.tasks == ("piqa", "sciq") and config.batch_size == "auto"
    assert config.extra["model_args"] == {"attn_implementation": "eager", "low_cpu_mem_usage": True}
    assert config.extra["revision"] == "v2"


def test_every_run_flag_has_an_option():
    """docs/python-api.md: evaluate's options are the `evalkit run` flags with underscores."""
    from evalkit import api
    from evalkit.cli.parser import build_parser

    renamed = {"no_cache": "use_cache", "no_shared_context": "share_context", "include_path": "include_paths",
               "no_figure": "figure", "parallelize": "load_kwargs", "max_memory": "load_kwargs",
               "dist_timeout": "dist_timeout_s", "no_prefix_cache": "prefix_cache"}
    not_options = {"help", "verbose", "quiet", "model", "tasks", "gguf_file", "no_progress"}  # arguments, or progress=
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    flags = {a.dest for a in sub.choices["run"]._actions} - not_options
    accepted = set(api._FIELDS) | set(api.EXTRA_OPTIONS)
    assert {renamed.get(flag, flag) for flag in flags} - accepted == set()
    config = evalkit.make_config("random:pythia-14m", "piqa", allow_non_finite=True, full_weight_hash=True,
                                 figure=False)
    assert (config.extra["allow_non_finite"], config.extra["full_weight_hash"], config.extra["figure"]) == (
        True, True, False)


def test_unknown_option_is_named():
    with pytest.raises(EvalkitError, match="unknown option.*batchsize.*accepted: .*batch_size"):
        evalkit.make_config("random:pythia-14m", ["piqa"], batchsize=4)


def test_import_evalkit_loads_neither_torch_nor_pandas():
    code = ("import sys, evalkit; print('torch' in sys.modules, 'pandas' in sys.modules, "
            "callable(evalkit.evaluate), evalkit.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False", "True", evalkit.__version__]


def test_metrics_frame_columns_and_dtypes():
    frame = evalkit.metrics_frame(FIXTURE)
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == METRIC_COLUMNS
    assert len(frame) == 5 and set(frame["run"]) == {"small_results"}
    piqa = frame[(frame.task == "piqa") & (frame.metric == "acc")].iloc[0]
    assert (piqa.value, piqa.stderr, piqa.stderr_bootstrap, piqa.n, piqa.shots) == (0.75, 0.25, 0.21, 4, 5)
    assert round(piqa.ci_low, 4) == 0.3006 and piqa.model == "random:pythia-14m" and piqa.revision == "seed=1234"
    ppl = frame[frame.metric == "perplexity"].iloc[0]
    assert pd.isna(ppl.stderr) and pd.isna(ppl.ci_low) and not ppl.higher_is_better
    assert frame[frame.kind == "group"].task.tolist() == ["mini"]


def test_metrics_frame_of_several_runs():
    data = json.loads(FIXTURE.read_text())
    other = data | {"created": "2026-12-01T00:00:00+00:00"}
    frame = evalkit.metrics_frame([data, other])
    assert frame.groupby("run").size().to_dict() == {"2026-11-30T12:00:00+00:00": 5, "2026-12-01T00:00:00+00:00": 5}


def test_documents_frame_from_results_values():
    frame = evalkit.documents_frame(FIXTURE)
    assert list(frame.columns) == ["task", "doc_id", "acc", "acc_norm", "loglikelihood", "loglikelihoods", "greedy"]
    assert frame.doc_id.dtype == "int64" and frame.acc.dtype == "float64"
    assert frame[frame.task == "piqa"].doc_id.tolist() == [3, 17, 40, 99]
    assert frame[frame.task == "lambada_openai"].loglikelihood.tolist() == [-1.5, -20.25, -0.5, -15.434245285167329]
    assert frame.acc.mean() == 0.5  # 4 of 8 documents, the group's micro acc


def test_documents_frame_from_a_samples_file(api_and_cli):
    _, cli, path = api_and_cli
    frame = evalkit.documents_frame(path.with_suffix(".samples.jsonl"))
    assert len(frame) == 24 and frame.doc_id.dtype == "int64"
    piqa = frame[frame.task == "piqa"]
    assert piqa.doc_id.tolist() == cli["tasks"]["piqa"]["documents"]["doc_id"]
    assert piqa.acc.tolist() == cli["tasks"]["piqa"]["documents"]["acc"]
    assert all(len(x) == 2 for x in piqa.loglikelihoods) and all(len(x) == 2 for x in piqa.greedy)
    # the results file names its samples file: the same frame from the results path
    assert evalkit.documents_frame(path).equals(frame)


def test_load_results_and_summary(api_and_cli):
    _, cli, path = api_and_cli
    assert evalkit.load_results(path) == cli
    assert evalkit.format_summary(cli).splitlines()[0].startswith("| task ")
