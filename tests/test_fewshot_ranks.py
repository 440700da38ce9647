"""A few-shot run over 2 gloo ranks under torchrun gives every document the examples, contexts and
log-likelihoods the single process gives (every rank draws the same examples for every row)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, TOKENIZER_JSON
from tests.test_distributed import _env, _outputs, _torchrun


def _args(out_dir, data_dir) -> list[str]:
    return ["run", "--model", "random:pythia-14m", "--tasks", "sciq,lambada_openai,piqa:0", "--num-fewshot", "2",
            "--tokenizer", str(TOKENIZER_JSON), "--data-dir", str(data_dir), "--limit", "4", "--batch-size", "1",
            "--bootstrap-iters", "0", "--output-dir", str(out_dir), "--log-samples", "--no-progress", "--no-cache"]


def test_two_ranks_draw_the_examples_of_one_process(data_dir, tmp_path):
    single = subprocess.run([sys.executable, "-m", "evalkit", *_args(tmp_path / "one", data_dir)], env=_env(),
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert single.returncode == 0, single.stderr[-4000:]
    ranked = _torchrun(2, ["-m", "evalkit"], _args(tmp_path / "two", data_dir))
    assert ranked.returncode == 0, ranked.stderr[-4000:]
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert two["samples"] == one["samples"]  # examples, contexts, log-likelihoods and greedy flags, bit for bit
    rows = [json.loads(line) for line in one["samples"].splitlines()]
    assert {len(r["fewshot_doc_ids"]) for r in rows if r["task"] != "piqa"} == {2}
    assert {len(r["fewshot_doc_ids"]) for r in rows if r["task"] == "piqa"} == {0}
    assert two["results"]["distributed"]["world_size"] == 2
    for name, task in one["results"]["tasks"].items():
        assert two["results"]["tasks"][name]["prompt_sha256"] == task["prompt_sha256"]
        assert two["results"]["tasks"][name]["num_fewshot"] == task["num_fewshot"]
