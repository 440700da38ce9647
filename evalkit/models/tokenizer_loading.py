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
        prefix_text: the text of ``prefix_ids`` (``"<bos>"``; ``""`` when none): a context already starting with
            it is not given them again.
    """

    encode_batch: Any
    eot_id: int
    vocab_size: int
    identity: dict[str, str]
    prefix_ids: tuple[int, ...] = ()
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

        identity = {"name": str(path), "sha256": sha256_text(tok.to_str())}
        prefix = added_prefix(tok.encode(PREFIX_PROBE).ids, tok.encode(PREFIX_PROBE, add_special_tokens=False).ids)
        text = tok.decode(list(prefix), skip_special_tokens=False) if prefix else ""
        return LoadedTokenizer(encode_batch, eot, tok.get_vocab_size(with_added_tokens=True), identity, prefix, text)
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

    serial = hf_tok.backend_tokenizer.to_str() if getattr(hf_tok, "is_fast", False) else json.dumps(hf_tok.get_vocab())
    identity = {"name": source, "sha256": sha256_text(serial)}
    prefix = added_prefix(hf_tok(PREFIX_PROBE)["input_ids"], hf_tok(PREFIX_PROBE, add_special_tokens=False)["input_ids"])
    text = hf_tok.decode(list(prefix), skip_special_tokens=False) if prefix else ""
    return LoadedTokenizer(hf_encode_batch, int(eot), len(hf_tok), identity, prefix, text)


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
