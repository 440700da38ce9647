"""Rolling log-likelihood parity with lm-evaluation-harness 0.4.13: the window rule and document log-likelihoods.

1. Windows: for every document length N = 1..300 and window L in (1, 2, 3, 4, 7, 16, 64, 2048), evalkit's
   ``rolling_windows`` against lm-eval's ``get_rolling_token_windows(..., context_len=1)`` followed by
   ``make_disjoint_window`` (the pair its ``HFLM.loglikelihood_rolling`` scores). Prints the mismatches.
2. Scores: pages made of consecutive OpenAI LAMBADA passages, scored by a seeded random model through
   ``evalkit.run.pipeline.run`` (a rolling task file written at run time) and through lm-eval's
   ``HFLM.loglikelihood_rolling``, both with the same window (``--max-length``). Prints the largest
   per-document difference and both word perplexities.

Needs lm-eval (``python3 -m pip install -e '.[bench]'``); runs on CPU in about a minute:

    python3 benchmarks/rolling_vs_lm_eval.py
    python3 benchmarks/rolling_vs_lm_eval.py --model random:pythia-160m --pages 24 --max-length 512
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASK_FILE = '''
from evalkit.types import DatasetSpec, Task

TASK = Task(
    name="lambada_pages", version="1",
    dataset=DatasetSpec("none/none", None, "test", {n}, {{"text": str}}),
    context=lambda doc: "", continuations=lambda doc: [doc["text"]], gold=lambda doc: 0,
    scoring="rolling", metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"),
    primary_metric="word_perplexity", description="pages of LAMBADA passages", source="benchmark",
)
'''


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:pythia-70m")
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "data" / "tokenizers" /
                                                   "20B_tokenizer.json"))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--pages", type=int, default=12, help="documents scored")
    parser.add_argument("--passages", type=int, default=8, help="LAMBADA passages per page")
    parser.add_argument("--max-length", type=int, default=256, help="the model window L of both sides")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


def window_mismatches() -> tuple[int, int]:
    """(cases compared, cases whose windows differ) over N = 1..300 and a range of windows."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from evalkit.scoring.tokenization import rolling_windows

    cases = bad = 0
    for window in (1, 2, 3, 4, 7, 16, 64, 2048):
        for n in range(1, 301):
            tokens = list(range(1000, 1000 + n))
            theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, window, 1)]
            ours = [(list(w.context_ids), list(w.continuation_ids)) for w in rolling_windows(tokens, 0, window)]
            cases += 1
            bad += theirs != ours
    return cases, bad


def pages(args) -> list[str]:
    """``--pages`` texts, each ``--passages`` consecutive LAMBADA passages joined by blank lines."""
    path = Path(args.data_dir) / "lambada_openai" / "test.jsonl"
    rows = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()[: args.pages *
                                                                                                 args.passages]]
    return ["\n\n".join(rows[i : i + args.passages]) for i in range(0, len(rows), args.passages)]


def run_evalkit(args, texts: list[str], workdir: Path) -> tuple[list[float], dict, float]:
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    (workdir / "tasks").mkdir()
    (workdir / "tasks" / "lambada_pages.py").write_text(TASK_FILE.format(n=len(texts)), encoding="utf-8")
    (workdir / "data" / "lambada_pages").mkdir(parents=True)
    (workdir / "data" / "lambada_pages" / "test.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    config = RunConfig(model=args.model, tasks=("lambada_pages",), tokenizer=args.tokenizer,
                       data_dir=str(workdir / "data"), include_paths=(str(workdir / "tasks"),), seed=args.seed,
                       batch_size=args.batch_size, max_length=args.max_length, dtype="float32", device="cpu",
                       bootstrap_iters=0, output_dir=str(workdir / "out"), use_cache=False)
    out = run(config, progress=False)
    entry = out.results["tasks"]["lambada_pages"]
    return entry["documents"]["loglikelihood"], entry, out.results["timing"]["score_s"]


def run_lm_eval(args, texts: list[str]) -> tuple[list[float], float]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import PreTrainedTokenizerFast

    from evalkit.models.hf_loading import load_model
    from evalkit.models.resolve import resolve_model

    model = load_model(resolve_model(args.model), "float32", "cpu", args.seed)[0]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, max_length=args.max_length,
              device="cpu")
    instances = [Instance("loglikelihood_rolling", {"text": t}, (t,), i) for i, t in enumerate(texts)]
    start = time.perf_counter()
    lls = [float(x) for x in lm.loglikelihood_rolling(instances, disable_tqdm=True)]
    return lls, time.perf_counter() - start


def main(argv=None) -> None:
    """Print the window-rule check and the per-document parity."""
    args = parse_args(argv)
    cases, bad = window_mismatches()
    print(f"window rule: {cases} (N, L) cases, {bad} differ from lm-eval 0.4.13")
    texts = pages(args)
    with tempfile.TemporaryDirectory(prefix="evalkit-rolling-") as tmp:
        ours, entry, wall_ours = run_evalkit(args, texts, Path(tmp))
    theirs, wall_theirs = run_lm_eval(args, texts)
    deltas = [abs(a - b) for a, b in zip(ours, theirs)]
    worst = max(range(len(deltas)), key=deltas.__getitem__)
    words = sum(entry["documents"]["words"])
    print(f"documents: {len(texts)}, {entry['tokens']} input tokens in {entry['sequences']} windows of at most "
          f"{args.max_length} (model {args.model}, fp32, CPU)")
    print(f"max |Δ log-likelihood|: {deltas[worst]:.3g} nats on document {worst} "
          f"({ours[worst]:.4f} vs {theirs[worst]:.4f}; relative {deltas[worst] / abs(theirs[worst]):.2g})")
    print(f"word perplexity: evalkit {math.exp(-sum(ours) / words):.6f}, lm-eval {math.exp(-sum(theirs) / words):.6f}")
    print(f"scoring time (one pass each, same process, no cache): evalkit {wall_ours:.1f} s, "
          f"lm-eval {wall_theirs:.1f} s")


if __name__ == "__main__":
    main()
