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

Both: an empty context, or one that encodes to no tokens, becomes the end-of-text token; inputs longer than the
window ``max_length`` are truncated on the left, keeping the whole continuation.

BOS: GPT-NeoX (the card's models) never gets one. Other tokenizers whose own configuration adds special tokens
in front of every text (Llama-style BOS) get those before every context, as lm-eval 0.4 encodes contexts with
the tokenizer's default ``add_special_tokens``; an empty context then is the BOS alone (lm-eval 0.4's
``prefix_token_id``). See :func:`context_prefix`.

A *rolling* request (``scoring="rolling"``: the log-likelihood of a whole document, for perplexity) has an empty
context and the document's text as its continuation. Its text is encoded alone and cut into windows that each
fit the model (:func:`rolling_windows`, SPEC-suite B.24); each window is an ordinary :class:`TokenizedRequest`,
and the document's log-likelihood is the sum over its windows. Windows are never truncated.
"""

from __future__ import annotations

from dataclasses import replace
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
    return [(ctx, cont) for ctx, cont, _ in encode_pairs_flagged(pairs, encode_batch, eot_id, mode, prefix_ids)]


def encode_pairs_flagged(
    pairs: Sequence[tuple[str, str]], encode_batch: EncodeBatch, eot_id: int, mode: str = "separate",
    prefix_ids: Sequence[int] = (), prefix_text: str = "",
) -> list[tuple[list[int], list[int], bool]]:
    """As :func:`encode_pairs`, with a third element per pair: True when ``joint`` mode fell back to the separate
    encodings because a token spans the join (always False in ``separate`` mode).

    A context that already starts with ``prefix_text`` (the text of ``prefix_ids``, e.g. ``"<bos>"`` written by
    a chat template) gets no ``prefix_ids``: its own text encodes to them (lm-eval 0.4.13 ``HFLM.tok_encode``
    adds no special tokens to a string starting with the BOS text), so the BOS is never doubled.

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
            out.append(([], list(conts[continuation]), False))
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
    if prefix_ids:
        return [((ctx_ids if prefix_text and context.startswith(prefix_text) else list(prefix_ids) + ctx_ids),
                 cont_ids, fell_back) for (context, _), (ctx_ids, cont_ids, fell_back) in zip(pairs, out)]
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


def rolling_windows(token_ids: Sequence[int], eot_id: int, max_length: int) -> list[TokenizedRequest]:
    """Cut a document's tokens into windows that predict every token exactly once (lm-eval v0.2.0
    ``loglikelihood_rolling``, SPEC-suite B.24).

    With t = ``token_ids`` (length N) and L = ``max_length``: the first window predicts t[0:m] from
    ``[EOT] + t[0:m-1]``, m = min(L, N). Then, while done < N tokens are predicted: p = min(N - done, L),
    e = done + p; the window's input is t[e-L-1:e-1] (L tokens) and its last p positions predict t[e-p:e].
    Example N = 10, L = 4: ([E,0,1,2] -> 0,1,2,3), ([3,4,5,6] -> 4,5,6,7), ([5,6,7,8] -> 8,9).

    Each window is returned as ``TokenizedRequest(context_ids, continuation_ids)``: the context is the window's
    input before its first predicted token (t[e-L-1:e-p], L + 1 - p tokens), the continuation the p predicted
    tokens, so context + continuation is the window's L + 1 tokens and the backend scores it unchanged.

    v0.2.0 cuts the context with a negative slice, so a window with p = 1 (N = 1, or N = jL + 1) gets an empty
    context and its LM class stops with an AssertionError (fixed upstream in July 2022). Here such a window
    predicts the last token from the L tokens before it (for N = 1: from EOT), the value the fix gives.

    Args:
        token_ids: the document's token ids, encoded without special tokens (length N >= 1).
        eot_id: end-of-text token id (the first window's only context token).
        max_length: the model window L (input tokens, >= 1).

    Returns:
        windows in document order; their continuation lengths sum to N; ``truncated_tokens`` is 0.

    Raises:
        ValueError: no tokens, or max_length < 1.
    """
    t = tuple(int(x) for x in token_ids)
    n, window = len(t), int(max_length)
    if n == 0:
        raise ValueError("a rolling request needs at least one token")
    if window < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    first = min(window, n)
    out = [TokenizedRequest((eot_id,), t[:first])]
    done = first
    while done < n:
        p = min(n - done, window)
        end = done + p
        # end >= window + 1 here (the first window predicted `window` tokens), so the slice never wraps
        out.append(TokenizedRequest(t[end - window - 1 : end - p], t[end - p : end]))
        done = end
    return out


def tokenize_rolling(
    requests: Sequence[LoglikelihoodRequest], encode_batch: EncodeBatch, eot_id: int, max_length: int
) -> list[tuple[TokenizedRequest, ...]]:
    """The windows of each rolling request (:func:`rolling_windows` over its continuation's tokens), in order.

    Raises:
        EvalkitError: a request with a non-empty context, or whose text encodes to no tokens (names task and doc).
    """
    for request in requests:
        if request.context:
            raise EvalkitError(f"task {request.task} doc {request.doc_id}: a rolling request scores its whole text "
                               f"and needs an empty context, got {request.context[:40]!r}")
    encoded = _encode_unique([r.continuation for r in requests], encode_batch)
    out = []
    for request in requests:
        ids = encoded[request.continuation]
        if not ids:
            raise EvalkitError(f"task {request.task} doc {request.doc_id}: text {request.continuation[:40]!r} "
                               f"encodes to no tokens")
        out.append(tuple(rolling_windows(ids, eot_id, max_length)))
    return out


def tokenize_windows(
    requests: Sequence[LoglikelihoodRequest],
    rolling: Sequence[bool],
    encode_batch: EncodeBatch,
    eot_id: int,
    max_length: int,
    mode: str = "separate",
    prefix_ids: Sequence[int] = (),
    prefix_text: str = "",
) -> list[tuple[TokenizedRequest, ...]]:
    """Every request's tokenized sequences, in request order: one for an ordinary request
    (:func:`tokenize_requests`), its windows for a rolling one (:func:`tokenize_rolling`).

    Args:
        requests: the run's requests.
        rolling: one flag per request, True for a rolling request.
        encode_batch, eot_id, max_length, mode, prefix_ids, prefix_text: as for :func:`tokenize_requests` (rolling
            windows start from the end-of-text token, v0.2.0's rule, whatever the prefix).

    Raises:
        ValueError: ``rolling`` has another length than ``requests``.
        EvalkitError: as :func:`tokenize_requests` and :func:`tokenize_rolling`.
    """
    if len(rolling) != len(requests):
        raise ValueError(f"{len(requests)} requests but {len(rolling)} rolling flags")
    plain = iter(tokenize_requests([r for r, roll in zip(requests, rolling) if not roll], encode_batch, eot_id,
                                   max_length, mode, prefix_ids, prefix_text))
    rolled = iter(tokenize_rolling([r for r, roll in zip(requests, rolling) if roll], encode_batch, eot_id,
                                   max_length))
    return [next(rolled) if roll else (next(plain),) for roll in rolling]


def tokenize_requests(
    requests: Sequence[LoglikelihoodRequest],
    encode_batch: EncodeBatch,
    eot_id: int,
    max_length: int,
    mode: str = "separate",
    prefix_ids: Sequence[int] = (),
    prefix_text: str = "",
) -> list[TokenizedRequest]:
    """Tokenize and left-truncate requests, in order. ``prefix_ids`` go before every context not already starting
    with ``prefix_text`` (see :func:`encode_pairs_flagged`); like any context token, they are the first dropped by left truncation (lm-eval 0.4
    keeps the last ``max_length + 1`` tokens of context + continuation the same way).

    Each result's ``joint_fallback`` says whether ``joint`` mode scored it with the separate encodings.

    Raises:
        EvalkitError: a continuation that tokenizes to nothing or cannot fit the window (names task and doc), or
            text the tokenizer refuses (names the request).
    """
    texts = [(r.context, r.continuation) for r in requests]
    try:
        encoded = encode_pairs_flagged(texts, encode_batch, eot_id, mode, prefix_ids, prefix_text)
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
