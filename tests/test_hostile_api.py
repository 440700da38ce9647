"""The Python API given values of the wrong type (what a caller passing strings from a config file does): one
clear message naming the option, never a TypeError from deep in the run, and nothing loaded."""

from __future__ import annotations

import pytest

import evalkit
from evalkit.types import EvalkitError
from tests.conftest import DATA_DIR, TOKENIZER_JSON

BASE = dict(model="random:pythia-14m", tasks=["copa"], tokenizer=str(TOKENIZER_JSON), data_dir=str(DATA_DIR),
            use_cache=False, bootstrap_iters=0, limit=2)


@pytest.fixture
def no_model(monkeypatch):
    from evalkit.models import hf_loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although an option was of the wrong type")

    monkeypatch.setattr(hf_loading, "load_model", refuse)


@pytest.mark.parametrize("option, value, flag", [
    ("seed", "1", "--seed"), ("fewshot_seed", 4.5, "--fewshot-seed"),
    ("bootstrap_iters", "100", "--bootstrap-iters"), ("max_length", "128", "--max-length"),
    ("max_batch_tokens", "4096", "--max-batch-tokens"),
])
def test_an_option_that_is_not_a_whole_number_is_named(no_model, option, value, flag):
    with pytest.raises(EvalkitError) as caught:
        evalkit.evaluate(**(BASE | {option: value}))
    assert str(caught.value) == f"{flag} must be a whole number, got {value!r}"


@pytest.mark.parametrize("value, message", [
    ("2", "--limit must be a positive whole number or a fraction between 0 and 1, got '2'"),
    (True, "--limit must be a positive whole number or a fraction between 0 and 1, got True"),
    (0, "--limit must be a positive whole number or a fraction between 0 and 1, got 0"),
    (-0.5, "--limit must be a positive whole number or a fraction between 0 and 1, got -0.5"),
    (1.5, "--limit 1.5: a count must be a whole number (a fraction of the documents is between 0 and 1)"),
])
def test_a_limit_that_is_neither_a_count_nor_a_fraction_is_named(no_model, value, message):
    with pytest.raises(EvalkitError) as caught:
        evalkit.evaluate(**(BASE | {"limit": value}))
    assert str(caught.value) == message
