"""Work size of the paper's suite, per task, zero-shot, on the full splits under a data folder; no model is loaded.

Usage::

    python3 benchmarks/suite_work_size.py                                    # every task with local data
    python3 benchmarks/suite_work_size.py --tasks neox20b_paper --window 2048 --window 1024
    python3 benchmarks/suite_work_size.py --data-dir ../shared/data --tokenizer ../shared/data/tokenizers/20B_tokenizer.json

For each selected task (default: every task in the registry) whose local files exist: documents (n), requests,
and per model window: tokens forwarded when requests sharing a context are packed into one sequence
(``evalkit.scoring.batching.pack_groups``, what evalkit runs), tokens forwarded one request per sequence (what a harness
without context sharing runs), scored positions (continuation tokens, each through the output layer once) and
requests whose context is cut on the left to fit the window. Requests come from ``evalkit.run.prepare.prepare_task``,
tokens from the real tokenizer (``--tokenization separate``, lm-eval v0.2.0's split). A rolling task (wikitext) is
counted by SPEC-suite B.24's windows: the first window forwards min(L, N) tokens, every later one L, and every token
is scored once. Tasks without local data are listed at the end. Nothing is asserted: these are figures to read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evalkit.scoring.batching import pack_groups  # noqa: E402
from evalkit.data.documents import missing_local_files  # noqa: E402
from evalkit.tasks.registry import load_registry  # noqa: E402
from evalkit.run.prepare import prepare_task  # noqa: E402
from evalkit.scoring.tokenization import tokenize_requests  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags of the script."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared/data"))
    p.add_argument("--tokenizer", default=str(REPO.parent / "shared/data/tokenizers/20B_tokenizer.json"))
    p.add_argument("--tasks", default="", help="comma-separated tasks or groups (default: every registered task)")
    p.add_argument("--window", type=int, action="append", help="model window in tokens (repeatable; default 2048)")
    p.add_argument("--include-path", action="append", default=[], help="extra folder of task files")
    return p.parse_args(argv)


def rolling_windows(n_tokens: int, window: int) -> list[tuple[int, int]]:
    """(input tokens, predicted tokens) of each rolling window over a text of ``n_tokens`` tokens (SPEC-suite B.24):
    the first window predicts min(L, N) tokens from the end-of-text token and the tokens before each; every later
    window forwards L tokens and predicts the next p = min(N - done, L)."""
    first = min(window, n_tokens)
    windows, done = [(first, first)], first
    while done < n_tokens:
        p = min(n_tokens - done, window)
        windows.append((window, p))
        done += p
    return windows


def work(prepared, tokenizer, window: int) -> dict[str, int]:
    """Forwarded tokens (packed and one request per sequence), scored positions, truncated requests, for a window."""
    if prepared.task.scoring == "rolling":
        texts = [r.continuation for r in prepared.requests]
        lengths = [len(ids) for ids in tokenizer.encode_batch(texts)]
        windows = [w for n in lengths for w in rolling_windows(n, window)]
        forwarded = sum(i for i, _ in windows)
        return {"packed": forwarded, "unpacked": forwarded, "scored": sum(lengths), "truncated": 0,
                "sequences": len(windows)}
    tokenized = tokenize_requests(prepared.requests, tokenizer.encode_batch, tokenizer.eot_id, window, "separate")
    groups = pack_groups(tokenized, window)
    return {
        "packed": sum(g.length for g in groups),
        "unpacked": sum(len(t.context_ids) + len(t.continuation_ids) - 1 for t in tokenized),
        "scored": sum(len(c) for g in groups for c in g.continuations),
        "truncated": sum(1 for t in tokenized if t.truncated_tokens),
        "sequences": len(groups),
    }


def main(argv=None) -> int:
    """Print one line per task and window, then the totals and the tasks without local data."""
    from evalkit.models.tokenizer_loading import load_tokenizer

    args = parse_args(argv)
    windows = args.window or [2048]
    registry = load_registry(args.include_path)
    names = [t for t in args.tasks.split(",") if t.strip()]
    tasks = registry.expand(names) if names else [registry.tasks[n] for n in sorted(registry.tasks)]
    data_dir = Path(args.data_dir)
    missing = missing_local_files(tasks, data_dir, {})
    tokenizer = load_tokenizer(args.tokenizer, None)
    print(f"tokenizer {args.tokenizer}; data {data_dir}; zero-shot, full splits")
    header = (f"{'task':36s} {'n':>6s} {'requests':>9s} {'window':>6s} {'sequences':>9s} {'forwarded (packed)':>18s} "
              f"{'forwarded (1/request)':>21s} {'scored positions':>16s} {'truncated':>9s}")
    print(header)
    totals = {w: dict.fromkeys(("n", "requests", "packed", "unpacked", "scored", "truncated", "sequences"), 0)
              for w in windows}
    started = time.perf_counter()
    for task in tasks:
        if task.name in missing:
            continue
        prepared = prepare_task(task, data_dir, None, 1234)
        for window in windows:
            w = work(prepared, tokenizer, window)
            print(f"{task.name:36s} {len(prepared.docs):6d} {len(prepared.requests):9d} {window:6d} "
                  f"{w['sequences']:9,d} {w['packed']:18,d} {w['unpacked']:21,d} {w['scored']:16,d} "
                  f"{w['truncated']:9d}")
            t = totals[window]
            t["n"] += len(prepared.docs)
            t["requests"] += len(prepared.requests)
            for key in ("packed", "unpacked", "scored", "truncated", "sequences"):
                t[key] += w[key]
    for window, t in totals.items():
        print(f"{'TOTAL':36s} {t['n']:6d} {t['requests']:9d} {window:6d} {t['sequences']:9,d} {t['packed']:18,d} "
              f"{t['unpacked']:21,d} {t['scored']:16,d} {t['truncated']:9d}")
    print(f"({time.perf_counter() - started:.1f} s)")
    if missing:
        print(f"no local data ({len(missing)} tasks):")
        for name, paths in missing.items():
            print(f"  {name}: no {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
