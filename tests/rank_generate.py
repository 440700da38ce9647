"""Entry point for the data-parallel generation test, run by ``torchrun`` (or alone for one process): a tiny
seeded GPT-NeoX generates the same requests over the ranks, twice (the process group kept open for the second
gather), and rank 0 writes the answers and the per-rank figures as JSON to the path in ``argv[1]``."""

import json
import sys

import torch

from evalkit.models.tokenizer_loading import load_tokenizer
from evalkit.scoring import distributed
from evalkit.scoring.generation import HFGenerator
from evalkit.types import RunConfig, TokenizedGeneration
from tests.conftest import TOKENIZER_JSON, make_tiny_model

CONTEXTS = ["Question: What melts ice?\nAnswer:", "The capital of France is", "Two plus two equals",
            "Rain falls from the sky and", "A", "She opened the door and saw", "def f(x):\n    return"]


def build_requests(tokenizer) -> list[TokenizedGeneration]:
    """14 distinct requests (7 contexts x 2 stop/budget settings), then 3 repeats of the first three."""
    contexts = [tuple(ids) for ids in tokenizer.encode_batch(CONTEXTS)]
    requests = [TokenizedGeneration(c, (until,), budget) for c in contexts for until, budget in (("e", 6), ("\n", 9))]
    return requests + requests[:3]


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(str(TOKENIZER_JSON), None)
    requests = build_requests(tokenizer)
    ranks = distributed.start(RunConfig(model="random:tiny", tasks=()))
    generator = HFGenerator(make_tiny_model(0), 2048, 3, tokenizer.eot_id, tokenizer.decode, progress=False)
    first = ranks.generate(generator, requests, close=False)
    second = ranks.generate(generator, requests[::-1])
    if ranks.info.is_main:
        answers = [[a.text, a.tokens, a.stop_reason] for a in first]
        assert [[a.text, a.tokens, a.stop_reason] for a in second] == answers[::-1]
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump({"answers": answers, "per_rank": ranks.per_rank_generation, "world": ranks.info.world_size},
                      handle)


if __name__ == "__main__":
    main(sys.argv[1])
