"""benchmarks/gpu_sharded.py parses its flags and, without a GPU, runs its steps on the CPU with a tiny model."""

from __future__ import annotations

import importlib.util

import pytest

from evalkit.models.hf_loading import load_model
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model
from evalkit.run.prepare import prepare_task
from evalkit.scoring.tokenization import tokenize_requests
from tests.conftest import REPO, TOKENIZER_JSON
from tests.reference import naive_loglikelihood


def _script():
    spec = importlib.util.spec_from_file_location("gpu_sharded", REPO / "benchmarks" / "gpu_sharded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_the_sharded_20b_run():
    args = _script().build_parser().parse_args([])
    assert (args.model, args.dtype, args.device_map) == ("random:neox-20b", "float16", "auto")
    assert args.tasks == "lambada_openai,sciq,piqa,arc_challenge,triviaqa"
    with pytest.raises(SystemExit) as exit_:
        _script().build_parser().parse_args(["--help"])
    assert exit_.value.code == 0


def test_cpu_run_with_a_tiny_model(data_dir, tokenizer, capsys):
    figures = _script().main([
        "--model", "random:pythia-14m", "--dtype", "float32", "--tasks", "piqa", "--limit", "2",
        "--data-dir", str(data_dir), "--tokenizer", str(TOKENIZER_JSON),
    ])
    out = capsys.readouterr().out
    assert "devices: no GPU, running on the CPU" in out
    assert "speed: " in out and " tokens/s" in out
    assert figures["placement"] == "device_map=auto: cpu"
    assert (figures["documents"], figures["requests"]) == (2, 4)
    assert figures["parameters"] == 14067712
    assert figures["weights_gib"] == {"cpu": round(14067712 * 4 / 2**30, 2)}
    assert figures["peak_allocated_gib"] == {}
    # the figures come from real scoring: the mean log-likelihood matches the naive reference
    (task,) = load_registry().expand(["piqa"])
    raw = prepare_task(task, data_dir, 2, 1234).requests
    requests = tokenize_requests(raw, tokenizer.encode_batch, tokenizer.eot_id, 2048)
    model, _ = load_model(resolve_model("random:pythia-14m"), "float32", "cpu", 1234)
    mean = sum(naive_loglikelihood(model, r)[0] for r in requests) / len(requests)
    assert figures["mean_loglikelihood"] == pytest.approx(mean, abs=1e-3)
