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


def naive_rolling_loglikelihood(
    model: torch.nn.Module, token_ids: list[int], eot_id: int, max_length: int
) -> float:
    """A document's rolling log-likelihood (nats), read literally from SPEC-suite B.24, one window at a time.

    Window 1: input ``[EOT] + t[0:m-1]``, every position scored (m = min(L, N)). Then, while done < N:
    p = min(N - done, L), e = done + p, input ``t[e-L-1:e-1]`` (L tokens) through the full model, and only its
    last p positions scored against ``t[e-p:e]``. Each window's log-probabilities come from a fresh fp32 forward.
    """
    t, n, window = list(token_ids), len(token_ids), max_length
    first = min(window, n)
    windows = [([eot_id] + t[: first - 1], t[:first])]
    done = first
    while done < n:
        p = min(n - done, window)
        end = done + p
        windows.append((t[end - window - 1 : end - 1], t[end - p : end]))
        done = end
    total = 0.0
    for inputs, targets in windows:
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([inputs])).logits[0].float(), dim=-1)
        rows = logprobs[-len(targets):]
        total += float(rows.gather(1, torch.tensor(targets)[:, None]).double().sum())
    return total
