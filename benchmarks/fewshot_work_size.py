"""Work size of few-shot runs: requests, forwarded tokens, scored positions and truncation per task (no model).

For each card task whose few-shot split is in the data folder, at K examples per document (default 5) and for each
window (default 2048, the NeoX-20B config, and 1024, the gpt-neox evaluation adapter's ``max_position_embeddings // 2``,
SPEC-suite A.11), the requests of the full split are built exactly as ``evalkit run --num-fewshot K`` builds them,
tokenized with the 20B tokenizer and left-truncated to the window, then packed as the backend packs them
(:func:`evalkit.scoring.batching.pack_groups`, shared contexts). Printed per task and window:

* requests: log-likelihood requests (one per continuation);
* forwarded: input tokens of the packed sequences (each shared context once, then every continuation but its last
  token), i.e. the tokens the model runs over;
* scored: positions that predict a continuation token (where the output layer and log-softmax run);
* truncated: requests whose context was cut on the left, and the context tokens dropped.

    python benchmarks/fewshot_work_size.py                       # K = 5, windows 2048 and 1024, full splits
    python benchmarks/fewshot_work_size.py --num-fewshot 0 25 --windows 2048 --limit 100

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CARD_TASKS = "lambada_openai,sciq,piqa,arc_challenge,triviaqa"


def build_parser() -> argparse.ArgumentParser:
    """Flags of the script."""
    data = REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=CARD_TASKS, help="comma-separated task names")
    parser.add_argument("--num-fewshot", type=int, nargs="+", default=[5], metavar="K", help="shots (several allowed)")
    parser.add_argument("--windows", type=int, nargs="+", default=[2048, 1024], help="model windows in tokens")
    parser.add_argument("--data-dir", default=str(data), help="folder of <task>/<split>.jsonl")
    parser.add_argument("--tokenizer", default=str(data / "tokenizers" / "20B_tokenizer.json"))
    parser.add_argument("--limit", type=int, help="seeded subset of documents per task (default: the full split)")
    parser.add_argument("--seed", type=int, default=1234, help="subset seed")
    parser.add_argument("--fewshot-seed", type=int, default=42)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print one line per task, K and window."""
    from evalkit.scoring.batching import pack_groups
    from evalkit.data.documents import local_path
    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.tasks.registry import load_registry
    from evalkit.run.prepare import prepare_task
    from evalkit.scoring.tokenization import encode_pairs, truncate_left

    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    tokenizer = load_tokenizer(args.tokenizer, None)
    registry = load_registry()
    print(f"{'task':15s} {'K':>3s} {'window':>6s} {'docs':>6s} {'requests':>9s} {'forwarded':>11s} "
          f"{'scored':>9s} {'truncated':>9s} {'dropped':>10s} {'max ctx':>8s}")
    totals: dict[tuple[int, int], list[int]] = {}
    for name in args.tasks.split(","):
        task = registry.get(name)
        for k in args.num_fewshot:
            if k and (task.fewshot_split is None or not local_path(task, data_dir, task.fewshot_split).is_file()):
                print(f"{name:15s} {k:3d} skipped: no local few-shot split "
                      f"({local_path(task, data_dir, task.fewshot_split or '-')})")
                continue
            t0 = time.perf_counter()
            prepared = prepare_task(task, data_dir, args.limit, args.seed, k, args.fewshot_seed)
            encoded = encode_pairs([(r.context, r.continuation) for r in prepared.requests], tokenizer.encode_batch,
                                   tokenizer.eot_id)
            longest = max(len(c) + len(x) for c, x in encoded)
            for window in args.windows:
                requests = [truncate_left(c, x, window) for c, x in encoded]
                groups = pack_groups(requests, window)
                forwarded = sum(g.length for g in groups)
                scored = sum(len(c) for g in groups for c in g.continuations)
                cut = [r.truncated_tokens for r in requests if r.truncated_tokens]
                row = [len(prepared.docs), len(requests), forwarded, scored, len(cut), sum(cut)]
                total = totals.setdefault((k, window), [0] * 6)
                totals[(k, window)] = [a + b for a, b in zip(total, row)]
                print(f"{name:15s} {k:3d} {window:6d} {row[0]:6d} {row[1]:9,d} {row[2]:11,d} {row[3]:9,d} "
                      f"{row[4]:9,d} {row[5]:10,d} {longest:8,d}")
            print(f"{'':15s} ({time.perf_counter() - t0:.1f} s to build and tokenize)")
    for (k, window), row in sorted(totals.items()):
        print(f"{'all':15s} {k:3d} {window:6d} {row[0]:6d} {row[1]:9,d} {row[2]:11,d} {row[3]:9,d} "
              f"{row[4]:9,d} {row[5]:10,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
