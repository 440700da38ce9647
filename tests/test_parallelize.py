"""A model whose layers are spread by a device map scores exactly like the unsharded model.

On a CPU-only machine accelerate can spread a model over "cpu" and "disk": the layers mapped to disk are
offloaded (weights on the meta device, loaded by a dispatch hook at each forward), which runs the same
hooks and device hand-offs as a multi-GPU map. The reference is tests/reference.py's naive scorer on the
unsharded model with the same seed.
"""

from __future__ import annotations

import json

import pytest

from evalkit.cli.main import main
from evalkit.scoring.hf_backend import HFBackend
from evalkit.models.hf_loading import load_model
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model
from evalkit.run.prepare import prepare_task
from evalkit.scoring.tokenization import tokenize_requests
from tests.conftest import TOKENIZER_JSON
from tests.reference import naive_loglikelihood

MODEL = "random:pythia-14m"
SEED = 1234
LAYERS_ON_DISK = {
    "gpt_neox.embed_in": "cpu", "gpt_neox.emb_dropout": "cpu", "gpt_neox.rotary_emb": "cpu",
    "gpt_neox.layers.0": "cpu", "gpt_neox.layers.1": "disk", "gpt_neox.layers.2": "cpu",
    "gpt_neox.layers.3": "disk", "gpt_neox.layers.4": "disk", "gpt_neox.layers.5": "cpu",
    "gpt_neox.final_layer_norm": "disk", "lm_head": "disk",
}


@pytest.fixture(scope="module")
def requests(data_dir, tokenizer):
    """Requests of 2 seeded documents of each of the five tasks."""
    tasks = load_registry().expand(["lambada_openai", "sciq", "piqa", "arc_challenge", "triviaqa"])
    raw = [r for t in tasks for r in prepare_task(t, data_dir, 2, SEED).requests]
    return tokenize_requests(raw, tokenizer.encode_batch, tokenizer.eot_id, 2048)


@pytest.fixture(scope="module")
def reference(requests):
    """(log-likelihood, greedy) of each request from the naive scorer on the unsharded model."""
    model, _ = load_model(resolve_model(MODEL), "float32", "cpu", SEED)
    return [naive_loglikelihood(model, r) for r in requests]


def test_explicit_map_over_cpu_and_disk_matches_the_naive_reference(requests, reference):
    model, identity = load_model(resolve_model(MODEL), "float32", "cpu", SEED, device_map=LAYERS_ON_DISK)
    assert identity["device"] == "device_map=explicit: cpu, disk"
    assert model.hf_device_map == LAYERS_ON_DISK
    # the disk layers really left memory: their weights are placeholders until their forward
    assert model.gpt_neox.layers[1].attention.query_key_value.weight.device.type == "meta"
    assert model.get_output_embeddings().weight.device.type == "meta"
    assert model.gpt_neox.layers[0].attention.query_key_value.weight.device.type == "cpu"
    backend = HFBackend(model, 2048, batch_size=4, progress=False)
    assert backend.body is not None  # the output layer is still applied at scored positions only
    responses = backend.loglikelihood(requests)
    assert len(responses) == len(reference)
    for response, (ll, greedy) in zip(responses, reference):
        assert response.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert response.greedy == greedy


def test_parallelize_with_max_memory_runs_end_to_end(reference, data_dir, tmp_path):
    status = main([
        "run", "--model", MODEL, "--seed", str(SEED), "--tasks", "lambada_openai,sciq,piqa,arc_challenge,triviaqa",
        "--tokenizer", str(TOKENIZER_JSON), "--data-dir", str(data_dir), "--limit", "2", "--bootstrap-iters", "0",
        "--output-dir", str(tmp_path), "--log-samples", "--no-progress",
        "--parallelize", "--max-memory", "cpu=54MB",  # room for the embedding and 3 of 6 layers; the rest to disk
    ])
    assert status == 0
    (results_file,) = (tmp_path / "results").glob("*/*.json")
    results = json.loads(results_file.read_text())
    assert results["model"]["device"] == "device_map=auto: cpu, disk"
    assert results["config"]["extra"]["load_kwargs"] == {"device_map": "auto", "max_memory": {"cpu": "54MB"}}
    samples = [json.loads(line) for line in results_file.with_suffix(".samples.jsonl").read_text().splitlines()]
    lls = [ll for s in samples for ll in s["loglikelihoods"]]
    greedy = [g for s in samples for g in s["greedy"]]
    assert len(lls) == len(reference)  # same documents, same request order
    for ll, flag, (ref_ll, ref_greedy) in zip(lls, greedy, reference):
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert flag == ref_greedy
