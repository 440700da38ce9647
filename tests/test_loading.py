"""Loading paths a real user takes: the hub for data (mocked, no network), a local model folder."""

from __future__ import annotations

import json

import pytest

from evalkit.data.documents import load_docs
from evalkit.tasks.registry import load_registry
from evalkit.models.resolve import resolve_model
from evalkit.types import EvalkitError

from .conftest import TOKENIZER_JSON, make_tiny_model


def test_hub_loading_asks_for_the_spec_ids(monkeypatch, data_dir):
    import datasets

    calls = []
    rows = [json.loads(line) for line in (data_dir / "arc_challenge" / "test.jsonl").read_text().splitlines()[:3]]

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("EVALKIT_DATA_DIR", raising=False)
    docs = load_docs(load_registry().get("arc"), None)
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", "test")]
    assert docs == rows


@pytest.mark.parametrize("task, expected", [
    ("lambada_openai", ("EleutherAI/lambada_openai", "default", "test")),
    ("sciq", ("allenai/sciq", None, "test")),
    ("piqa", ("baber/piqa", None, "validation")),
    ("triviaqa", ("mandarjoshi/trivia_qa", "unfiltered.nocontext", "validation")),
])
def test_hub_ids_of_every_task(task, expected):
    ds = load_registry().get(task).dataset
    assert (ds.hub_id, ds.config, ds.split) == expected


def test_hub_failure_says_how_to_use_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(EvalkitError, match=r"could not load baber/piqa .*--data-dir DIR with DIR/piqa/validation.jsonl"):
        load_docs(load_registry().get("piqa"), None)


def test_model_aliases_resolve_to_hub_ids():
    assert resolve_model("neox-20b") == {"kind": "pretrained", "path": "EleutherAI/gpt-neox-20b", "alias": "neox-20b"}
    assert resolve_model("gpt-j-6b")["path"] == "EleutherAI/gpt-j-6b"
    assert resolve_model("pythia-12b")["path"] == "EleutherAI/pythia-12b"
    assert resolve_model("org/some-model") == {"kind": "pretrained", "path": "org/some-model", "alias": None}
    random = resolve_model("random:neox-20b")
    assert random["kind"] == "random" and random["config"]["hidden_size"] == 6144
    assert random["config"]["num_hidden_layers"] == 44


def test_run_from_a_local_model_folder_with_its_own_tokenizer(tmp_path, data_dir):
    from transformers import PreTrainedTokenizerFast

    from evalkit.cli.main import main

    folder = tmp_path / "model"
    make_tiny_model(5).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), eos_token="<|endoftext|>").save_pretrained(folder)
    common = ["--tasks", "arc", "--data-dir", str(data_dir), "--limit", "4", "--bootstrap-iters", "0",
              "--no-progress", "--log-samples"]
    assert main(["run", "--model", str(folder), "--output-dir", str(tmp_path / "a"), *common]) == 0
    assert main(["run", "--model", str(folder), "--tokenizer", str(TOKENIZER_JSON),
                 "--output-dir", str(tmp_path / "b"), *common]) == 0
    [a] = (tmp_path / "a" / "results").glob("*/*.samples.jsonl")
    [b] = (tmp_path / "b" / "results").glob("*/*.samples.jsonl")
    lls_a = [json.loads(line)["loglikelihoods"] for line in a.read_text().splitlines()]
    lls_b = [json.loads(line)["loglikelihoods"] for line in b.read_text().splitlines()]
    assert lls_a == lls_b and len(lls_a) == 4  # same ids from the saved HF tokenizer and the raw tokenizer.json
    results = json.loads(next((tmp_path / "a" / "results").glob("*/*[0-9]Z.json")).read_text())
    assert results["model"]["kind"] == "pretrained" and results["model"]["name"] == str(folder)


def test_missing_model_folder_is_a_clear_error(tmp_path, data_dir, capsys):
    from evalkit.cli.main import main

    code = main(["run", "--model", str(tmp_path / "nope"), "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                 "--data-dir", str(data_dir), "--limit", "2", "--output-dir", str(tmp_path)])
    assert code == 2
    assert f"evalkit: error: model folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_random_weight_seed_is_separate_from_the_subset_seed():
    import torch

    from evalkit.models.hf_loading import load_model

    plain = resolve_model("random:pythia-14m")
    assert plain["seed"] is None and plain["name"] == "random:pythia-14m"
    seeded = resolve_model("random:pythia-14m@7")
    assert (seeded["alias"], seeded["seed"], seeded["name"]) == ("pythia-14m", 7, "random:pythia-14m@7")
    a, ident_a = load_model(seeded, "float32", "cpu", seed=1)
    b, ident_b = load_model(seeded, "float32", "cpu", seed=2)
    c, ident_c = load_model(plain, "float32", "cpu", seed=7)
    d, _ = load_model(resolve_model("random:pythia-14m@8"), "float32", "cpu", seed=1)
    wa, wb, wc, wd = (m.get_input_embeddings().weight for m in (a, b, c, d))
    assert torch.equal(wa, wb) and torch.equal(wa, wc)  # @7 wins over --seed; same as --seed 7 alone
    assert not torch.equal(wa, wd)
    assert ident_a["name"] == "random:pythia-14m@7" and ident_a["revision"] == "seed=7" == ident_c["revision"]
    with pytest.raises(EvalkitError, match="the weight seed after '@' must be a non-negative integer"):
        resolve_model("random:pythia-14m@x")
