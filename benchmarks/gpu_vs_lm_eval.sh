#!/usr/bin/env bash
# evalkit vs lm-evaluation-harness 0.4.13 on one GPU: random:neox-20b (the card's architecture, seeded random
# weights, no download) in float16 over a fixed seeded subset of 20 documents per task, one round each side.
# Prints tokens/s, peak GPU memory and model FLOP utilisation against the GPU's measured fp16 matmul rate.
# Needs about 45 GB of GPU memory and `pip install -e '.[bench]'`; stops after 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 480 python3 benchmarks/vs_lm_eval.py --model random:neox-20b --dtype float16 --device cuda \
    --docs 20 --rounds 1 --batch-size 32 --no-invariance "$@"
