"""(context, continuation) text -> token ids, with the rules of SPEC.md.

Two encodings are supported:

* ``separate`` (default; lm-evaluation-harness v0.2.0, the harness behind the GPT-NeoX-20B card): the context
  and the continuation are encoded on their own and the id lists concatenated.
* ``joint`` (lm-evaluation-harness 0.4): trailing whitespace of the context moves onto the continuation, then
  ``context + continuation`` is encoded once and split at the context's own token length. When a token spans
  the join (the joint encoding's first tokens are not the context's own tokens: ``"hello wor" + "ld is big"``
  encodes as ``hello| world| is| big``), splitting would score ``" is big"`` after ``"hello world"``; then the
  context and the continuation are each encoded alone instead, so the continuation scored is always exactly the
  continuation's text, and the request is counted as a *joint fallback* (:attr:`TokenizedRequest.joint_fallback`,
  reported per task in the results).

Both: an empty context, or one that encodes to no tokens, becomes the end-of-text token; no BOS is added; inputs longer than the window
``max_length`` are truncated on the left, keeping the whole continuation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from evalkit.types import EvalkitError, LoglikelihoodRequest, TokenizedRequest

EncodeBatch = Callable[[list[str]], list[list[int]]]
"""Encodes texts to token ids without special tokens: ``list[str] -> list[list[int]]``."""

MODES = ("separate", "joint")


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation (lm-eval 0.4 rule)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped):] + continuation


def _encode_unique(texts: Sequence[str], encode_batch: EncodeBatch) -> dict[str, list[int]]:
    unique = sorted(set(texts))
    return dict(zip(unique, encode_batch(unique))) if unique else {}


def encode_pairs(
    pairs: Sequence[tuple[str, str]], encode_batch: EncodeBatch, eot_id: int, mode: str = "separate"
) -> list[tuple[list[int], list[int]]]:
    """Token ids for each (context, continuation) pair, before truncation.

    Args:
        pairs: (context, continuation) strings.
        encode_batch: tokenizer call, no special tokens added.
        eot_id: end-of-text token id, used as the context when the context is empty or encodes to no tokens.
        mode: ``"separate"`` or ``"joint"`` (see module docstring).

    Returns:
        one (context_ids, continuation_ids) per pair; context_ids is never empty, continuation_ids is non-empty for
        a non-empty continuation.

    Raises:
        ValueError: unknown mode.
    """
    return [(ctx, cont) for ctx, cont, _ in encode_pairs_flagged(pairs, encode_batch, eot_id, mode)]


def encode_pairs_flagged(
    pairs: Sequence[tuple[str, str]], encode_batch: EncodeBatch, eot_id: int, mode: str = "separate"
) -> list[tuple[list[int], list[int], bool]]:
    """As :func:`encode_pairs`, with a third element per pair: True when ``joint`` mode fell back to the separate
    encodings because a token spans the join (always False in ``separate`` mode).

    Raises:
        ValueError: unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown tokenization mode {mode!r}; expected one of {MODES}")
    if mode == "joint":
        pairs = [split_trailing_whitespace(c, x) if c else (c, x) for c, x in pairs]
    contexts = _encode_unique([c for c, _ in pairs if c], encode_batch)
    conts = _encode_unique([x for _, x in pairs], encode_batch)
    wholes = _encode_unique([c + x for c, x in pairs if c], encode_batch) if mode == "joint" else {}
    out = []
    for context, continuation in pairs:
        if not context:
            out.append(([eot_id], list(conts[continuation]), False))
            continue
        ctx_ids = list(contexts[context])
        if mode == "separate":
            out.append((ctx_ids, list(conts[continuation]), False))
            continue
        whole = wholes[context + continuation]
        n = len(ctx_ids)
        if whole[:n] != ctx_ids or len(whole) == n:
            # A token spans the join ("hello wor" + "ld is big" -> "hello| world| is| big"; "Ans" + "wer" ->
            # "Answer"): split at the context's length, the scored continuation would lose text to the context.
            # Score the context and the continuation each encoded alone instead: exactly the continuation's text.
            out.append((ctx_ids, list(conts[continuation]), True))
            continue
        # The joint encoding starts with the context's own tokens, so the rest encodes exactly the continuation
        # (lm-eval 0.4's split; identical to the separate encodings on all 133,662 card requests with the 20B
        # tokenizer).
        out.append((ctx_ids, list(whole[n:]), False))
    # A context that encodes to no tokens (spaces or zero-width characters for some tokenizers) is scored like
    # an empty one: the first continuation token needs a position that predicts it.
    return [(ctx_ids or [eot_id], cont_ids, fell_back) for ctx_ids, cont_ids, fell_back in out]


def truncate_left(context_ids: list[int], continuation_ids: list[int], max_length: int) -> TokenizedRequest:
    """Fit context + continuation into a window of ``max_length`` input tokens.

    The model reads ``(context + continuation)[:-1]``, so up to ``max_length + 1`` tokens fit. Extra tokens
    are dropped from the left of the context (lm-eval v0.2.0 rule), keeping at least one context token.

    Raises:
        EvalkitError: the continuation alone does not fit (it has more than ``max_length`` tokens).
    """
    if len(continuation_ids) > max_length:
        raise EvalkitError(
            f"continuation of {len(continuation_ids)} tokens does not fit the model window of {max_length}"
        )
    excess = len(context_ids) + len(continuation_ids) - (max_length + 1)
    dropped = max(0, excess)
    return TokenizedRequest(tuple(context_ids[dropped:]), tuple(continuation_ids), dropped)


def tokenize_requests(
    requests: Sequence[LoglikelihoodRequest],
    encode_batch: EncodeBatch,
    eot_id: int,
    max_length: int,
    mode: str = "separate",
) -> list[TokenizedRequest]:
    """Tokenize and left-truncate requests, in order.

    Each result's ``joint_fallback`` says whether ``joint`` mode scored it with the separate encodings.

    Raises:
        EvalkitError: a continuation that tokenizes to nothing or cannot fit the window (names task and doc), or
            text the tokenizer refuses (names the request).
    """
    texts = [(r.context, r.continuation) for r in requests]
    try:
        encoded = encode_pairs_flagged(texts, encode_batch, eot_id, mode)
    except (TypeError, ValueError, UnicodeError) as exc:
        if mode not in MODES:
            raise
        raise EvalkitError(f"the tokenizer cannot encode {_first_refused(requests, encode_batch)}: {exc}") from None
    out = []
    for request, (ctx_ids, cont_ids, fell_back) in zip(requests, encoded):
        where = f"task {request.task} doc {request.doc_id} choice {request.choice_index}"
        if not cont_ids:
            raise EvalkitError(f"{where}: continuation {request.continuation!r} encodes to no tokens")
        try:
            fitted = truncate_left(ctx_ids, cont_ids, max_length)
        except EvalkitError as exc:
            raise EvalkitError(f"{where}: {exc}") from None
        out.append(replace(fitted, joint_fallback=True) if fell_back else fitted)
    return out


def _first_refused(requests: Sequence[LoglikelihoodRequest], encode_batch: EncodeBatch) -> str:
    """``task T doc D choice C (context|continuation)``: the first request text that ``encode_batch`` refuses."""
    for r in requests:
        for part, text in (("context", r.context), ("continuation", r.continuation)):
            try:
                encode_batch([text])
            except (TypeError, ValueError, UnicodeError):
                return f"the {part} of task {r.task} doc {r.doc_id} choice {r.choice_index} ({text!r:.60})"
    return "a request's text"
