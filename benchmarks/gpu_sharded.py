"""Sharded scoring on GPUs: a model spread over the visible GPUs with accelerate, its speed and its memory.

Default: ``random:neox-20b`` (20.55 B parameters; seeded random weights, no download) in float16, layers
spread with ``device_map="auto"`` over every visible GPU, the card's five tasks on a fixed seeded subset of
``--limit`` documents each. Prints the load time, tokens/s and requests/s of the scoring, and per device the
weights placed there and the peak memory allocated. Aim: under 8 minutes on a machine with one or more
40-80 GB GPUs (most of it is building 41 GB of random weights on the CPU).

    python benchmarks/gpu_sharded.py                         # random:neox-20b, fp16, all visible GPUs
    python benchmarks/gpu_sharded.py --max-memory 0=30GiB,1=30GiB --limit 100
    python benchmarks/gpu_sharded.py --model random:pythia-14m --dtype float32 --limit 2   # CPU smoke run

Without a GPU the same steps run on the CPU (only sensible with a small model). Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CARD_TASKS = "lambada_openai,sciq,piqa,arc_challenge,triviaqa"


def build_parser() -> argparse.ArgumentParser:
    """Flags of the benchmark."""
    data = REPO.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:neox-20b", help="model spec, as for `evalkit run --model`")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--tasks", default=CARD_TASKS, help="comma-separated task names")
    parser.add_argument("--limit", type=int, default=200, help="seeded subset: documents per task")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--data-dir", default=str(data), help="folder of <task>/<split>.jsonl")
    parser.add_argument("--tokenizer", default=str(data / "tokenizers" / "20B_tokenizer.json"))
    parser.add_argument("--device-map", default="auto", choices=["auto", "balanced", "sequential"])
    parser.add_argument("--max-memory", help="per-device memory, e.g. 0=30GiB,1=30GiB (default: all free memory)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; prints the figures and returns them as a dict."""
    args = build_parser().parse_args(argv)

    import torch

    from evalkit.scoring import hf_backend
    from evalkit.models import hf_loading
    from evalkit.models import tokenizer_loading
    from evalkit.scoring.batching import pack_groups
    from evalkit.models.placement import parse_max_memory
    from evalkit.tasks.registry import load_registry
    from evalkit.models.resolve import resolve_model
    from evalkit.run.prepare import prepare_task
    from evalkit.scoring.tokenization import tokenize_requests

    max_memory = parse_max_memory(args.max_memory) if args.max_memory else None
    gpus = torch.cuda.device_count()
    print(f"devices: {gpus} GPU(s)" if gpus else "devices: no GPU, running on the CPU")
    for i in range(gpus):
        total = torch.cuda.get_device_properties(i).total_memory / 2**30
        print(f"  cuda:{i} {torch.cuda.get_device_name(i)}, {total:.1f} GiB")
    tasks = load_registry().expand([t for t in args.tasks.split(",") if t])
    prepared = [prepare_task(t, Path(args.data_dir), args.limit, args.seed) for t in tasks]
    requests = [r for p in prepared for r in p.requests]

    t0 = time.perf_counter()
    model, identity = hf_loading.load_model(resolve_model(args.model), args.dtype, None, args.seed,
                                            device_map=args.device_map, max_memory=max_memory)
    load_s = time.perf_counter() - t0
    tokenizer = tokenizer_loading.load_tokenizer(args.tokenizer, None)
    window = hf_loading.model_window(model, None)
    tokenized = tokenize_requests(requests, tokenizer.encode_batch, tokenizer.eot_id, window)
    backend = hf_backend.HFBackend(model, window, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                                   pad_id=tokenizer.eot_id, progress=False)
    backend.loglikelihood(tokenized[:8])  # warm-up: kernels, allocator
    backend.forward_calls = 0
    for i in range(gpus):
        torch.cuda.synchronize(i)
        torch.cuda.reset_peak_memory_stats(i)
    t0 = time.perf_counter()
    responses = backend.loglikelihood(tokenized)
    for i in range(gpus):
        torch.cuda.synchronize(i)
    score_s = time.perf_counter() - t0

    packed_tokens = sum(g.length for g in pack_groups(tokenized, window))
    weights: dict[str, int] = {}
    for param in model.parameters():
        where = "offloaded" if param.device.type == "meta" else str(param.device)
        weights[where] = weights.get(where, 0) + param.numel() * param.element_size()
    figures = {
        "model": identity["name"], "parameters": identity["parameters"], "dtype": identity["dtype"],
        "placement": identity["device"], "documents": sum(len(p.doc_ids) for p in prepared),
        "requests": len(tokenized), "input_tokens": packed_tokens, "load_s": round(load_s, 1),
        "score_s": round(score_s, 2), "tokens_per_s": round(packed_tokens / score_s, 1),
        "requests_per_s": round(len(tokenized) / score_s, 1), "forward_calls": backend.forward_calls,
        "weights_gib": {k: round(v / 2**30, 2) for k, v in sorted(weights.items())},
        "peak_allocated_gib": {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 2**30, 2) for i in range(gpus)},
        "peak_reserved_gib": {f"cuda:{i}": round(torch.cuda.max_memory_reserved(i) / 2**30, 2) for i in range(gpus)},
        "mean_loglikelihood": round(sum(r.loglikelihood for r in responses) / len(responses), 4),
    }
    print(f"model: {figures['model']} ({figures['parameters'] / 1e9:.2f} B parameters, {figures['dtype']}), "
          f"{figures['placement']}; built and placed in {figures['load_s']} s")
    print(f"work: {figures['documents']} documents, {figures['requests']} requests, "
          f"{figures['input_tokens']} packed input tokens, {figures['forward_calls']} forward calls")
    print(f"speed: {figures['tokens_per_s']} tokens/s, {figures['requests_per_s']} requests/s "
          f"({figures['score_s']} s)")
    for device, gib in figures["weights_gib"].items():
        peak = figures["peak_allocated_gib"].get(device)
        extra = f", peak allocated {peak} GiB, reserved {figures['peak_reserved_gib'][device]} GiB" if peak else ""
        print(f"memory {device}: weights {gib} GiB{extra}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
