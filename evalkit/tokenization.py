"""(context, continuation) text -> token ids, with the rules of SPEC.md.

Two encodings are supported:

* ``separate`` (default; lm-evaluation-harness v0.2.0, the harness behind the GPT-NeoX-20B card): the context
  and the continuation are encoded on their own and the id lists concatenated.
* ``joint`` (lm-evaluation-harness 0.4): trailing whitespace of the context moves onto the continuation, then
  ``context + continuation`` is encoded once and split at the context's own token length. When a token spans
  the join the continuation can come out empty; then the context and the continuation are each encoded alone
  (never a crash, and never a context that already contains the continuation's text).

Both: an empty context, or one that encodes to no tokens, becomes the end-of-text token; inputs longer than the
window ``max_length`` are truncated on the left, keeping the whole continuation.

BOS: GPT-NeoX (the card's models) never gets one. Other tokenizers whose own configuration adds special tokens
in front of every text (Llama-style BOS) get those before every context, as lm-eval 0.4 encodes contexts with
the tokenizer's default ``add_special_tokens``; an empty context then is the BOS alone (lm-eval 0.4's
``prefix_token_id``). See :func:`context_prefix`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from evalkit.types import EvalkitError, LoglikelihoodRequest, TokenizedRequest

EncodeBatch = Callable[[list[str]], list[list[int]]]
"""Encodes texts to token ids without special tokens: ``list[str] -> list[list[int]]``."""

MODES = ("separate", "joint")


NEVER_PREFIXED = frozenset({"gpt_neox"})
"""Model types that are never given a BOS: the card's models were evaluated without one (lm-eval v0.2.0)."""


def context_prefix(model_type: str | None, tokenizer_prefix: Sequence[int]) -> tuple[int, ...]:
    """The token ids placed before every context: those the tokenizer's own configuration adds (lm-eval 0.4,
    ``HFLM.tok_encode`` with the tokenizer's default special tokens), except for GPT-NeoX, which never gets any.

    Args:
        model_type: the model config's ``model_type`` (e.g. ``"llama"``, ``"gpt_neox"``).
        tokenizer_prefix: what the tokenizer puts before a text (see ``LoadedTokenizer.prefix_ids``).
    """
    if model_type in NEVER_PREFIXED:
        return ()
    return tuple(int(i) for i in tokenizer_prefix)


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation (lm-eval 0.4 rule)."""
    stripped = context.rstrip()
    return stripped, context[len(stripped):] + continuation


def _encode_unique(texts: Sequence[str], encode_batch: EncodeBatch) -> dict[str, list[int]]:
    unique = sorted(set(texts))
    return dict(zip(unique, encode_batch(unique))) if unique else {}


def encode_pairs(
    pairs: Sequence[tuple[str, str]], encode_batch: EncodeBatch, eot_id: int, mode: str = "separate",
    prefix_ids: Sequence[int] = (),
) -> list[tuple[list[int], list[int]]]:
    """Token ids for each (context, continuation) pair, before truncation.

    Args:
        pairs: (context, continuation) strings.
        encode_batch: tokenizer call, no special tokens added.
        eot_id: end-of-text token id, used as the context when the context is empty or encodes to no tokens
            (when ``prefix_ids`` is empty).
        mode: ``"separate"`` or ``"joint"`` (see module docstring).
        prefix_ids: ids put before every context (a BOS, see :func:`context_prefix`); an empty context is then
            ``prefix_ids`` alone.

    Returns:
        one (context_ids, continuation_ids) per pair; context_ids is never empty, continuation_ids is non-empty for
        a non-empty continuation.

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
            out.append(([], list(conts[continuation])))
            continue
        ctx_ids = list(contexts[context])
        if mode == "separate":
            out.append((ctx_ids, list(conts[continuation])))
            continue
        whole = wholes[context + continuation]
        cont_ids = whole[len(ctx_ids):]
        if not cont_ids:
            # A token spans the join ("Ans" + "wer" -> "Answer"), so whole[:len(ctx_ids)] already holds the
            # continuation's text: score the context and the continuation each encoded alone instead.
            out.append((ctx_ids, list(conts[continuation])))
            continue
        # SPEC.md's rule: split the joint encoding at the context's token length. lm-eval 0.4 keeps the context
        # encoded alone instead; the two differ only when a token spans the join, which never happens on the
        # card's 133,662 requests with the 20B tokenizer, and splitting keeps context + continuation == text.
        out.append((whole[: len(ctx_ids)], list(cont_ids)))
    # A context that encodes to no tokens (spaces or zero-width characters for some tokenizers) is scored like
    # an empty one: the first continuation token needs a position that predicts it.
    if prefix_ids:
        return [(list(prefix_ids) + ctx_ids, cont_ids) for ctx_ids, cont_ids in out]
    return [(ctx_ids or [eot_id], cont_ids) for ctx_ids, cont_ids in out]


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
    prefix_ids: Sequence[int] = (),
) -> list[TokenizedRequest]:
    """Tokenize and left-truncate requests, in order. ``prefix_ids`` go before every context (see
    :func:`encode_pairs`); like any context token, they are the first dropped by left truncation (lm-eval 0.4
    keeps the last ``max_length + 1`` tokens of context + continuation the same way).

    Raises:
        EvalkitError: a continuation that tokenizes to nothing or cannot fit the window (names task and doc).
    """
    encoded = encode_pairs([(r.context, r.continuation) for r in requests], encode_batch, eot_id, mode, prefix_ids)
    out = []
    for request, (ctx_ids, cont_ids) in zip(requests, encoded):
        where = f"task {request.task} doc {request.doc_id} choice {request.choice_index}"
        if not cont_ids:
            raise EvalkitError(f"{where}: continuation {request.continuation!r} encodes to no tokens")
        try:
            out.append(truncate_left(ctx_ids, cont_ids, max_length))
        except EvalkitError as exc:
            raise EvalkitError(f"{where}: {exc}") from None
    return out
