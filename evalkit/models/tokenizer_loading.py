"""Load a tokenizer (a ``tokenizer.json`` file, a GGUF file, a folder or a hub id) and describe its identity.

Needs no torch: a ``tokenizer.json`` file loads through the ``tokenizers`` library, everything else through
transformers' ``AutoTokenizer``, imported when needed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.models.gguf_file import is_gguf_path, require_gguf
from evalkit.types import EvalkitError


@dataclass
class LoadedTokenizer:
    """A tokenizer reduced to what scoring needs.

    Attributes:
        encode_batch: ``list[str] -> list[list[int]]``, no special tokens added.
        eot_id: end-of-text token id (int).
        vocab_size: ids the tokenizer can emit, added tokens included (int).
        identity: name and sha256 of the tokenizer's serialized form.
        prefix_ids: the special tokens the tokenizer's own configuration puts before every text (its BOS token
            for Llama-style tokenizers; empty for GPT-NeoX's), found by encoding a probe text with and without
            special tokens. lm-eval 0.4 encodes contexts with them; see :func:`evalkit.scoring.tokenization.context_prefix`.
        decode: ``(ids, skip_special_tokens=True) -> str``, token ids back to text; by default special tokens (the
            end-of-text token, a BOS) are left out, as lm-eval 0.4 decodes generations (``HFLM.tok_decode``).
            None only for a tokenizer built by hand without one.
        prefix_text: the text of ``prefix_ids`` (``"<bos>"``; ``""`` when none): a context already starting with
            it is not given them again.
    """

    encode_batch: Any
    eot_id: int
    vocab_size: int
    identity: dict[str, str]
    prefix_ids: tuple[int, ...] = ()
    decode: Any = None
    prefix_text: str = ""


PREFIX_PROBE = "a"
"""Text encoded with and without special tokens to find what a tokenizer adds in front of every text."""


def added_prefix(with_special: list[int], without: list[int]) -> tuple[int, ...]:
    """The ids a tokenizer put before ``without`` when it added its special tokens (empty when none; tokens
    appended after the text are not a prefix and are ignored)."""
    n = len(without)
    for start in range(len(with_special) - n + 1):
        if list(with_special[start : start + n]) == list(without):
            return tuple(with_special[:start])
    return ()


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_tokenizer(spec: str | None, model_path: str | None, revision: str | None = None,
                   trust_remote_code: bool = False, hub_kwargs: dict[str, Any] | None = None) -> LoadedTokenizer:
    """Load ``spec`` (a ``tokenizer.json`` file, a GGUF file, a folder or a hub id), else the model's own tokenizer
    (for a GGUF model, the tokenizer stored in the GGUF file).

    The model's own tokenizer is read at the model's ``revision``, with ``trust_remote_code`` and the hub-location
    keywords of ``--model-args`` (``hub_kwargs``); a ``--tokenizer`` given apart is read as named.

    Raises:
        EvalkitError: nothing to load from, a missing file, or a tokenizer without an end-of-text token.
    """
    source = spec or model_path
    if source is None:
        raise EvalkitError("a random model needs --tokenizer (e.g. shared/data/tokenizers/20B_tokenizer.json)")
    if source.endswith(".json"):
        from tokenizers import Tokenizer

        path = Path(source)
        if not path.is_file():
            raise EvalkitError(f"tokenizer file not found: {path}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a plain Exception for bad files
            raise EvalkitError(f"could not load tokenizer {path}: {exc}") from None
        eot = tok.token_to_id("<|endoftext|>")
        if eot is None:
            raise EvalkitError(f"tokenizer {path} has no <|endoftext|> token")

        def encode_batch(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

        def decode(ids: list[int], skip_special_tokens: bool = True) -> str:
            return tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

        identity = {"name": str(path), "sha256": sha256_text(tok.to_str())}
        prefix = added_prefix(tok.encode(PREFIX_PROBE).ids, tok.encode(PREFIX_PROBE, add_special_tokens=False).ids)
        text = tok.decode(list(prefix), skip_special_tokens=False) if prefix else ""
        return LoadedTokenizer(encode_batch, eot, tok.get_vocab_size(with_added_tokens=True), identity, prefix, decode,
                               text)
    from transformers import AutoTokenizer

    own = {"revision": revision, "trust_remote_code": trust_remote_code, **(hub_kwargs or {})} if not spec else {}
    where = source
    if is_gguf_path(source):
        require_gguf()
        where, own = str(Path(source).parent), {"gguf_file": Path(source).name}
    try:
        hf_tok = AutoTokenizer.from_pretrained(where, **own)
    except Exception as exc:  # noqa: BLE001 - hub and file errors come in many types
        raise EvalkitError(f"could not load tokenizer '{source}': {exc}") from None
    eot = hf_tok.eos_token_id
    if eot is None:
        raise EvalkitError(f"tokenizer '{source}' has no end-of-text (eos) token")

    def hf_encode_batch(texts: list[str]) -> list[list[int]]:
        return hf_tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    def hf_decode(ids: list[int], skip_special_tokens: bool = True) -> str:
        return hf_tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    serial = hf_tok.backend_tokenizer.to_str() if getattr(hf_tok, "is_fast", False) else json.dumps(hf_tok.get_vocab())
    identity = {"name": source, "sha256": sha256_text(serial)}
    prefix = added_prefix(hf_tok(PREFIX_PROBE)["input_ids"], hf_tok(PREFIX_PROBE, add_special_tokens=False)["input_ids"])
    text = hf_tok.decode(list(prefix), skip_special_tokens=False) if prefix else ""
    return LoadedTokenizer(hf_encode_batch, int(eot), len(hf_tok), identity, prefix, hf_decode, text)


def own_tokenizer(model_path: str | None, spec: str | None) -> LoadedTokenizer | None:
    """The tokenizer a local model folder ships, loaded the way ``spec`` would be (a ``tokenizer.json`` file
    directly, else through transformers) so the two hashes compare like with like; None when ``model_path`` is
    not a local folder with tokenizer files, or they cannot be loaded."""
    if model_path is None or not Path(model_path).is_dir():
        return None
    folder = Path(model_path)
    own_json = folder / "tokenizer.json"
    if spec is not None and spec.endswith(".json") and own_json.is_file():
        source: str | None = str(own_json)
    elif any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        source = None
    else:
        return None
    try:
        return load_tokenizer(source, str(folder))
    except EvalkitError:
        return None


def _vocabulary(spec: str) -> list[str | None] | None:
    """The token of each id of tokenizer ``spec`` (None for an id it does not use), or None when it cannot be read."""
    from evalkit.models.gguf_file import gguf_tokens

    if is_gguf_path(spec):
        return gguf_tokens(spec)
    try:
        if spec.endswith(".json"):
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(spec).get_vocab(with_added_tokens=True)
        else:
            from transformers import AutoTokenizer

            vocab = AutoTokenizer.from_pretrained(spec).get_vocab()
    except Exception:  # noqa: BLE001 - load_tokenizer has already reported a tokenizer that cannot load
        return None
    by_id: list[str | None] = [None] * (max(vocab.values(), default=-1) + 1)
    for token, index in vocab.items():
        by_id[index] = token
    return by_id


def foreign_gguf_tokenizer(model_path: str | None, spec: str) -> str | None:
    """A warning when ``--tokenizer spec`` is not the tokenizer stored in the GGUF model file ``model_path``
    (compared id by id with the file's ``tokenizer.ggml.tokens``; ids the file has beyond the tokenizer's are
    padding and ignored); None when they agree, when ``model_path`` is not a GGUF file, or when either vocabulary
    cannot be read (an unreadable ``--tokenizer`` is reported when it loads).

    The GGUF counterpart of comparing :func:`own_tokenizer`'s hash for a model folder: a GGUF file has no
    ``tokenizer.json`` to load the same way as ``spec``, so the vocabularies are compared instead.

    Raises:
        EvalkitError: the GGUF file cannot be read or its header is malformed.
    """
    from evalkit.models.gguf_file import gguf_tokens

    if model_path is None or not is_gguf_path(model_path) or not Path(model_path).is_file():
        return None
    if Path(spec).resolve() == Path(model_path).resolve():
        return None
    stored = gguf_tokens(model_path)
    given = _vocabulary(spec)
    if not stored or not given:
        return None
    differ = [i for i, token in enumerate(given) if token is not None and (i >= len(stored) or stored[i] != token)]
    if not differ:
        return None
    first = differ[0]
    in_file = repr(stored[first]) if first < len(stored) else "no token"
    used = sum(token is not None for token in given)
    return (f"--tokenizer {spec} is not the tokenizer stored in the GGUF file {model_path}: {len(differ)} of {used} "
            f"token ids map to other tokens (id {first}: {given[first]!r} here, {in_file} in the file); a tokenizer "
            f"whose vocabulary fits but that does not belong to the model scores garbage")
