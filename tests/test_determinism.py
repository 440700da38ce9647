"""The same command gives byte-identical results JSON apart from timestamps and timings, cached or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.run.pipeline import run
from evalkit.types import RunConfig
from tests.conftest import TOKENIZER_JSON

pytestmark = pytest.mark.usefixtures("one_thread")


def comparable_text(path: Path, drop: tuple[str, ...] = ("created", "timing")) -> str:
    """The results file as written (``json.dumps(indent=1)``) without the keys that legitimately differ."""
    results = json.loads(path.read_text(encoding="utf-8"))
    assert set(drop) <= set(results)
    return json.dumps({k: v for k, v in results.items() if k not in drop}, indent=1)


def test_two_identical_runs_give_identical_results(data_dir, tmp_path):
    def once(use_cache: bool) -> Path:
        config = RunConfig(model="random:pythia-14m", tasks=("lambada", "arc"), tokenizer=str(TOKENIZER_JSON),
                           data_dir=str(data_dir), limit=6, batch_size=4, bootstrap_iters=200,
                           output_dir=str(tmp_path), use_cache=use_cache, cache_dir=str(tmp_path / "cache"))
        return run(config, progress=False).results_path

    scored_a, scored_b = once(False), once(False)  # the model scores every request both times
    stored, served = once(True), once(True)  # scored and stored, then answered from the cache
    assert len({scored_a, scored_b, stored, served}) == 4
    assert comparable_text(scored_a) == comparable_text(scored_b)
    assert comparable_text(stored) == comparable_text(served)
    run_facts = ("created", "timing", "config", "cache")
    assert comparable_text(scored_a, run_facts) == comparable_text(served, run_facts)

    results = [json.loads(p.read_text(encoding="utf-8")) for p in (scored_a, stored, served)]
    requests = results[0]["tasks"]["lambada_openai"]["requests"] + results[0]["tasks"]["arc_challenge"]["requests"]
    assert results[0]["tasks"]["lambada_openai"]["requests"] == 6 and requests > 6 + 2 * 6
    assert [(r["timing"]["requests_scored"], r["timing"]["requests_cached"]) for r in results] == [
        (requests, 0), (requests, 0), (0, requests)]
