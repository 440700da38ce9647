"""A slow, obviously-correct scorer that tests compare the fast backend against.

One request at a time, the full sequence through the full model in fp32, log_softmax over all positions,
gather the continuation tokens: the definition of SPEC.md's log-likelihood and greedy flag, nothing shared.
"""

from __future__ import annotations

import torch

from evalkit.types import TokenizedRequest


def naive_loglikelihood(model: torch.nn.Module, request: TokenizedRequest) -> tuple[float, bool]:
    """(summed log-likelihood in nats, greedy flag) of one request."""
    tokens = list(request.context_ids) + list(request.continuation_ids)
    ids = torch.tensor([tokens[:-1]])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    n = len(request.continuation_ids)
    rows = logprobs[-n:]
    target = torch.tensor(request.continuation_ids)
    total = float(rows.gather(1, target[:, None]).double().sum())
    greedy = bool((rows.argmax(dim=-1) == target).all())
    return total, greedy
