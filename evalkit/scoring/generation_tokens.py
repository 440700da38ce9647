"""Generation requests -> token ids that fit the window, as lm-eval 0.4's ``generate_until`` encodes them.

lm-eval 0.4 (``HFLM.generate_until`` with ``tok_batch_encode``) encodes each context on its own with the tokenizer's
default special tokens, so a Llama-style tokenizer's BOS comes first and GPT-NeoX's gets none: here that prefix is
``prefix_ids`` (:func:`evalkit.scoring.tokenization.context_prefix`, the same ids the log-likelihood path puts before
every context). The context is then cut to its last ``window - max_new_tokens`` tokens (the prefix is the first
dropped), so the context and every generated token fit the model's window. A context that already starts with the
prefix's text (a chat template writing the BOS itself) gets no prefix: its own text encodes to it (lm-eval 0.4.13
``HFLM.tok_batch_encode`` adds no special tokens to a batch whose first string starts with the BOS text; evalkit
checks each context, which is the same for a chat template's prompts, all starting alike). v0.2.0's
``greedy_until`` cuts the same way (``max_length - max_gen_toks``), with no prefix.

An empty context (or one that encodes to no tokens) becomes ``prefix_ids``, or, without a prefix, the end-of-text
token: a greedy step needs a position to predict from.
"""

from __future__ import annotations

from typing import Sequence

from evalkit.scoring.tokenization import EncodeBatch
from evalkit.types import EvalkitError, GenerationRequest, TokenizedGeneration


def tokenize_generations(
    requests: Sequence[GenerationRequest],
    encode_batch: EncodeBatch,
    window: int,
    prefix_ids: Sequence[int] = (),
    eot_id: int | None = None,
    prefix_text: str = "",
) -> list[TokenizedGeneration]:
    """Tokenize and left-truncate generation requests, in order.

    Args:
        requests: the generation requests.
        encode_batch: tokenizer call without special tokens, ``list[str] -> list[list[int]]``.
        window: the model's window in tokens (context + generated tokens).
        prefix_ids: ids put before every context (a BOS; see :func:`evalkit.scoring.tokenization.context_prefix`).
        eot_id: end-of-text id, the context of a request whose context is empty and gets no prefix.
        prefix_text: the text of ``prefix_ids``; a context starting with it gets no ``prefix_ids``.

    Returns:
        one :class:`TokenizedGeneration` per request, context at most ``window - max_new_tokens`` tokens, with the
        number of tokens dropped on the left in ``truncated_tokens``.

    Raises:
        EvalkitError: ``max_new_tokens`` < 1 or >= ``window`` (no room for a context), or an empty context with
            neither a prefix nor ``eot_id`` (each names the task and document).
    """
    for request in requests:
        where = f"task {request.task} doc {request.doc_id}"
        if isinstance(request.max_new_tokens, bool) or not isinstance(request.max_new_tokens, int):
            raise EvalkitError(f"{where}: max_new_tokens must be an integer, got {request.max_new_tokens!r}")
        if request.max_new_tokens < 1:
            raise EvalkitError(f"{where}: max_new_tokens must be at least 1, got {request.max_new_tokens}")
        if request.max_new_tokens >= window:
            raise EvalkitError(f"{where}: max_new_tokens {request.max_new_tokens} leaves no room for a context in "
                               f"the model window of {window} tokens (lm-eval 0.4 refuses this too)")
    unique = sorted({r.context for r in requests if r.context})
    encoded = dict(zip(unique, encode_batch(unique))) if unique else {}
    out = []
    for request in requests:
        own = prefix_text and request.context.startswith(prefix_text)
        ids = ([] if own else list(prefix_ids)) + list(encoded.get(request.context, []))
        if not ids:
            if eot_id is None:
                raise EvalkitError(f"task {request.task} doc {request.doc_id}: empty context and no end-of-text id "
                                   f"to start from")
            ids = [int(eot_id)]
        room = window - request.max_new_tokens
        dropped = max(0, len(ids) - room)
        out.append(TokenizedGeneration(tuple(int(i) for i in ids[dropped:]), tuple(request.until),
                                       request.max_new_tokens, dropped))
    return out
