"""GGUF checkpoints (llama.cpp's single-file format): validation before the model loads, and what the file says
about its quantization.

transformers reads GGUF files with the ``gguf`` package (``from_pretrained(folder, gguf_file=NAME)``) and
dequantizes every tensor to the requested dtype; this module only checks the file and describes it. The
``gguf`` package is the optional extra ``evalkit[gguf]``. Format reference:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (magic ``GGUF``, then the version, tensor and
key/value counts; ``general.file_type`` is a ``LlamaFileType``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from evalkit.models.weights_hash import stat_key
from evalkit.types import EvalkitError

MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'evalkit[gguf]' (the gguf package)"

_last_parsed: tuple[str, Any] | None = None
"""(:func:`evalkit.models.weights_hash.stat_key` of the file, its ``gguf.GGUFReader``) of the file parsed last."""


def is_gguf_path(spec: str) -> bool:
    """True when a ``--model`` value names a GGUF file (it ends in ``.gguf``, any case)."""
    return spec.lower().endswith(".gguf")


def check_gguf_file(path: str | Path) -> Path:
    """The path of an existing GGUF file, checked by its first four bytes.

    Raises:
        EvalkitError: the file is missing, is a folder, cannot be read, or does not start with ``GGUF``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise EvalkitError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise EvalkitError(f"GGUF model {path} is not a file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise EvalkitError(f"cannot read GGUF file {path}: {exc}") from None
    if head != MAGIC:
        raise EvalkitError(f"{path} is not a GGUF file (it starts with {head!r}, not {MAGIC!r})")
    return path


def require_gguf() -> Any:
    """The ``gguf`` module.

    Raises:
        EvalkitError: it is not installed, with the command that installs it.
    """
    try:
        import gguf
    except ImportError:
        raise EvalkitError(f"loading a GGUF checkpoint needs the gguf package: {INSTALL_HINT}") from None
    return gguf


def parse_gguf(path: str | Path) -> Any:
    """The ``gguf`` package's ``GGUFReader`` of ``path``, parsed once per version of the file: the reader of the file
    parsed last is kept until :func:`forget_parsed_gguf` (its tensors stay memory-mapped, unread), so describing the
    file before the model loads and transformers' reads while it loads (config, tokenizer, weights: see
    :func:`evalkit.models.gguf_loading.parsed_once`) share one parse. The parse walks every metadata value in Python:
    about 5 s on this project's 2-core machine for SmolLM2-135M's 49,152-token vocabulary and 48,900 merges.

    Raises:
        EvalkitError: the gguf package is missing.
        OSError, ValueError, struct or numpy errors: the file cannot be read or parsed (the reader's own errors).
    """
    global _last_parsed
    gguf = require_gguf()
    key = stat_key(Path(path))
    if _last_parsed is None or _last_parsed[0] != key:
        _last_parsed = None  # a failed parse leaves nothing behind
        _last_parsed = (key, gguf.gguf_reader.GGUFReader(str(path)))  # the class itself, even while it is shared
    return _last_parsed[1]


def forget_parsed_gguf() -> None:
    """Drop the reader :func:`parse_gguf` keeps (its metadata and the file's memory map)."""
    global _last_parsed
    _last_parsed = None


def describe_gguf(path: str | Path) -> dict[str, Any]:
    """What a GGUF file declares about itself.

    Returns:
        ``{"architecture": str, "file_type": str, "tensor_types": {type name: tensor count},
        "add_bos_token": bool | None}``: ``file_type`` is the ``LlamaFileType`` name without ``MOSTLY_``
        (e.g. ``"Q4_1"``; ``"unknown (N)"`` for a number the gguf package does not know, ``None`` when absent);
        ``tensor_types`` counts the storage type of every tensor (e.g. ``{"Q4_1": 210, "Q8_0": 1, "F32": 61}``).

    Raises:
        EvalkitError: the gguf package is missing or the file cannot be parsed.
    """
    gguf = require_gguf()
    try:
        reader = parse_gguf(path)
    except Exception as exc:  # noqa: BLE001 - the reader raises ValueError, struct errors, numpy errors
        raise EvalkitError(f"cannot parse GGUF file {path}: {type(exc).__name__}: {exc}") from None

    def scalar(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    code = scalar("general.file_type")
    if code is None:
        file_type = None
    else:
        try:
            file_type = gguf.LlamaFileType(int(code)).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type = f"unknown ({code})"
    counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    add_bos = scalar("tokenizer.ggml.add_bos_token")
    return {
        "architecture": scalar("general.architecture"),
        "file_type": file_type,
        "tensor_types": dict(sorted(counts.items())),
        "add_bos_token": None if add_bos is None else bool(add_bos),
    }


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
"""GGUF metadata value types of fixed size (type code -> struct format); 8 is a string, 9 an array."""
_STRING, _ARRAY = 8, 9


def gguf_tokens(path: str | Path) -> list[str] | None:
    """The vocabulary a GGUF file stores (``tokenizer.ggml.tokens``: the token of each id, in id order), read from
    the metadata header alone (no tensor is read; no gguf package needed), or None when the file has no token list
    or is of format version 1 (32-bit lengths, no longer written).

    Raises:
        EvalkitError: the file cannot be read or its header is cut short or malformed.
    """
    import struct

    path = Path(path)

    def read(handle: Any, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        raw = handle.read(size)
        if len(raw) < size:
            raise EvalkitError(f"{path}: the GGUF header is cut short")
        return struct.unpack(fmt, raw)[0]

    def string(handle: Any) -> bytes:
        n = read(handle, "<Q")
        raw = handle.read(n)
        if len(raw) < n:
            raise EvalkitError(f"{path}: the GGUF header is cut short")
        return raw

    def skip(handle: Any, kind: int) -> None:
        if kind == _STRING:
            handle.seek(read(handle, "<Q"), 1)
        elif kind == _ARRAY:
            inner, count = read(handle, "<I"), read(handle, "<Q")
            if inner in _SCALARS:
                handle.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
            else:
                for _ in range(count):
                    skip(handle, inner)
        elif kind in _SCALARS:
            handle.seek(struct.calcsize(_SCALARS[kind]), 1)
        else:
            raise EvalkitError(f"{path}: unknown GGUF metadata type {kind}")

    try:
        with open(path, "rb") as handle:
            if handle.read(4) != MAGIC:
                raise EvalkitError(f"{path} is not a GGUF file")
            if read(handle, "<I") < 2:
                return None
            read(handle, "<Q")  # tensor count
            for _ in range(read(handle, "<Q")):
                key, kind = string(handle), read(handle, "<I")
                if key != b"tokenizer.ggml.tokens":
                    skip(handle, kind)
                    continue
                if kind != _ARRAY or read(handle, "<I") != _STRING:
                    raise EvalkitError(f"{path}: tokenizer.ggml.tokens is not a list of strings")
                return [string(handle).decode("utf-8", errors="replace") for _ in range(read(handle, "<Q"))]
    except OSError as exc:
        raise EvalkitError(f"cannot read GGUF file {path}: {exc}") from None
    return None
