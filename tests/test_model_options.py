"""--revision, --trust-remote-code and --model-args reach from_pretrained, are recorded in the results and enter the
request cache's model key. The hub is a local cache folder holding two saved revisions of a tiny model (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.scoring.cache import model_key
from evalkit.cli.main import main
from evalkit.models.model_args import parse_model_args
from evalkit.types import EvalkitError

from .conftest import TOKENIZER_JSON, make_tiny_model

MAIN, V2 = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face hub cache with ``org/tiny`` at two commits: ``main`` (seed 0) and tag ``v2`` (seed 1)."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / "models--org--tiny"
    for seed, commit in ((0, MAIN), (1, V2)):
        make_tiny_model(seed).save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "v2").write_text(V2)
    return root


def run(tmp_path, data_dir, *flags) -> dict:
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"  # a folder per run: two runs in one second differ
    code = main(["run", "--model", "org/tiny", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                 "--data-dir", str(data_dir), "--limit", "3", "--bootstrap-iters", "0", "--output-dir", str(out),
                 "--no-progress", "--log-samples", *flags])
    assert code == 0
    [path] = (out / "results" / "org__tiny").glob("*Z.json")
    data = json.loads(path.read_text())
    data["_lls"] = [json.loads(x)["loglikelihoods"] for x in path.with_suffix(".samples.jsonl").read_text().splitlines()]
    return data


@pytest.fixture
def calls(monkeypatch):
    """Keyword arguments of every AutoModelForCausalLM.from_pretrained call (the real loader still runs)."""
    from transformers import AutoModelForCausalLM

    seen: list[dict] = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(spy))
    return seen


def test_revision_and_model_args_reach_from_pretrained_and_the_results(hub_cache, tmp_path, data_dir, calls):
    args = f"cache_dir={hub_cache},attn_implementation=eager"
    v2 = run(tmp_path, data_dir, "--revision", "v2", "--model-args", args)
    assert calls[-1]["revision"] == "v2" and calls[-1]["cache_dir"] == str(hub_cache)
    assert calls[-1]["attn_implementation"] == "eager" and calls[-1]["trust_remote_code"] is False
    model = v2["model"]
    assert (model["revision"], model["revision_requested"], model["trust_remote_code"]) == (V2, "v2", False)
    assert model["model_args"] == {"cache_dir": str(hub_cache), "attn_implementation": "eager"}
    assert v2["config"]["extra"]["revision"] == "v2"

    main_rev = run(tmp_path, data_dir, "--model-args", args)
    assert calls[-1]["revision"] is None and main_rev["model"]["revision"] == MAIN
    assert main_rev["_lls"] != v2["_lls"]  # other weights, other answers: the revision really was loaded
    assert main_rev["cache"]["model_key"] != v2["cache"]["model_key"]

    by_commit = run(tmp_path, data_dir, "--revision", V2, "--model-args", args)
    assert by_commit["model"]["revision"] == V2 and by_commit["_lls"] == v2["_lls"]


def test_trust_remote_code_is_off_unless_asked_and_recorded(hub_cache, tmp_path, data_dir, calls):
    trusted = run(tmp_path, data_dir, "--trust-remote-code", "--model-args", f"cache_dir={hub_cache}")
    assert calls[-1]["trust_remote_code"] is True and trusted["model"]["trust_remote_code"] is True
    plain = run(tmp_path, data_dir, "--model-args", f"cache_dir={hub_cache}")
    assert calls[-1]["trust_remote_code"] is False
    assert trusted["cache"]["model_key"] != plain["cache"]["model_key"]


def test_plain_runs_keep_their_cache_key():
    identity = {"name": "m", "kind": "pretrained", "revision": MAIN, "dtype": "float32", "config_sha256": "c"}
    versions = {"evalkit": "0.1.0", "torch": "2", "transformers": "5"}
    plain, fields = model_key(identity, "t", "hf", versions)
    recorded = identity | {"revision_requested": None, "trust_remote_code": False, "model_args": {}}
    assert model_key(recorded, "t", "hf", versions)[0] == plain
    assert "model_args" not in fields
    with_args = model_key(recorded | {"model_args": {"attn_implementation": "eager"}}, "t", "hf", versions)
    assert with_args[0] != plain and with_args[1]["model_args"] == {"attn_implementation": "eager"}


def test_model_args_values_are_read_like_lm_evals():
    assert parse_model_args("a=1,b=2.5,c=true,d=False,e=none,f=eager, g = x ") == {
        "a": 1, "b": 2.5, "c": True, "d": False, "e": None, "f": "eager", "g": "x"}
    assert parse_model_args("") == {} and parse_model_args(None) == {}


@pytest.mark.parametrize("text, message", [
    ("dtype=float16", "use --dtype instead of 'dtype'"),
    ("revision=v2", "use --revision instead of 'revision'"),
    ("a=1,a=2", "'a' is given twice"),
    ("novalue", "'novalue' is not key=value"),
])
def test_bad_model_args(text, message):
    with pytest.raises(EvalkitError, match=message):
        parse_model_args(text)


def test_bad_model_args_on_the_command_line(capsys, data_dir, tmp_path):
    with pytest.raises(SystemExit):
        main(["run", "--model", "random:pythia-14m", "--tasks", "piqa", "--model-args", "torch_dtype=float16"])
    assert "use --dtype instead of 'torch_dtype'" in capsys.readouterr().err


def test_revision_of_random_weights_is_refused(capsys, data_dir, tmp_path):
    code = main(["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", "piqa",
                 "--data-dir", str(data_dir), "--revision", "v2", "--output-dir", str(tmp_path)])
    assert code == 2 and "random weights, no hub revision" in capsys.readouterr().err
