"""Content identity of model files: weight files, local model folders and single checkpoint files (the request
cache's key for a local checkpoint).

A folder's path, file sizes and modification times do not identify its weights: a checkpoint rewritten in place
with its old mtime restored would be answered from the cache with the old model's numbers. Instead:

* a **safetensors** file is keyed by its whole header (8-byte length + JSON: every tensor's name, dtype, shape
  and byte offsets; https://github.com/huggingface/safetensors#format) plus :data:`SAMPLES` chunks of
  :data:`CHUNK` bytes spread evenly over its tensor data, first and last bytes included; any other weight file
  (``.bin``, ``.pt``, ``.gguf`` …) by its size and the same samples over the whole file. A fine-tune changes
  every tensor, so the samples catch it; a change confined to a few bytes between two samples is only caught by
* the **full** hash (sha256 of every byte; ``--full-weight-hash``), which reads the whole checkpoint.
* every other file of the folder (``config.json``, tokenizer files, …; at most :data:`SMALL_FILE` bytes each) is
  hashed whole; larger non-weight files by their size and samples.

Digests are remembered in ``weight_hashes.json`` in the cache folder, per (absolute path, size, mtime, ctime,
inode, mode), so a 40 GB checkpoint is read once, not every run. The ctime is part of that memo key because the
system sets it on every write and no user call can restore it: a file rewritten in place with its old mtime
put back is hashed again.

A single checkpoint file's identity is the sha256 of all its bytes (:func:`file_sha256`), computed once per version
of the file on disk. A GGUF checkpoint is one large file, and its name says nothing about its weights (a re-
quantized file keeps its name), so the model identity, and with it the request cache's model key, is the file's
content hash. Hashing a 7B checkpoint takes tens of seconds, so the digest is remembered in ``file_hashes.json`` in
a folder (the request cache's) under the file's (absolute path, size, modification time in ns, inode, status-change
time in ns): a file rewritten in place (even with its old mtime put back), replaced or touched is hashed again; an
unchanged one is not. Other facts read from a file's
content (a GGUF file's quantization, which takes seconds to parse) are remembered the same way (:func:`remembered`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

from evalkit.types import EvalkitError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".npz")
"""Files treated as weights (sampled unless the full hash is asked for)."""

SAMPLES = 64
CHUNK = 64 * 1024
"""Sampled weight files read ``SAMPLES`` x ``CHUNK`` bytes (4 MiB) each, whatever their size."""

SMALL_FILE = 16 * 1024 * 1024
"""Non-weight files up to this size (bytes) are hashed whole."""

MEMO_NAME = "weight_hashes.json"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
"""The safetensors format caps its JSON header at 100 MB."""


def _sha_file(handle: Any, start: int, end: int, digest: Any) -> None:
    handle.seek(start)
    left = end - start
    while left > 0:
        block = handle.read(min(left, 8 * 1024 * 1024))
        if not block:
            break
        digest.update(block)
        left -= len(block)


def _sampled(handle: Any, start: int, end: int, digest: Any) -> None:
    """Feed ``SAMPLES`` chunks of ``CHUNK`` bytes spread evenly over [start, end) (the whole range when small)."""
    size = end - start
    if size <= SAMPLES * CHUNK:
        _sha_file(handle, start, end, digest)
        return
    step = (size - CHUNK) / (SAMPLES - 1)
    for k in range(SAMPLES):
        offset = start + int(round(k * step))
        handle.seek(offset)
        digest.update(struct.pack("<q", offset - start))
        digest.update(handle.read(CHUNK))


def _safetensors_data_start(handle: Any, size: int, path: Path) -> int:
    """Byte offset where a safetensors file's tensor data begins; after hashing nothing, seeks to 0.

    Raises:
        EvalkitError: a file too short or with a header length beyond the file or the format's limit.
    """
    head = handle.read(8)
    if len(head) < 8:
        raise EvalkitError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", head)
    if length > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise EvalkitError(f"{path}: not a safetensors file (header length {length} for a file of {size} bytes)")
    return 8 + length


def weight_file_digest(path: str | Path, full: bool = False) -> str:
    """Content digest of one weight file (any format), without the memo.

    Args:
        path: the file.
        full: sha256 of every byte (``"full:<hex>"``) instead of the sampled digest (``"sampled:<hex>"``: for a
            ``.safetensors`` file its whole header and samples of its tensor data; for others samples of the file).

    Returns:
        ``"<full|sampled>:<64 hex digits>"``; the size is part of every digest.

    Raises:
        EvalkitError: the file cannot be read, or a ``.safetensors`` file with a broken header.
    """
    p = Path(path)
    digest = hashlib.sha256()
    try:
        size = p.stat().st_size
        digest.update(struct.pack("<q", size))
        with open(p, "rb") as handle:
            if full:
                _sha_file(handle, 0, size, digest)
                return f"full:{digest.hexdigest()}"
            start = 0
            if p.suffix == ".safetensors":
                start = _safetensors_data_start(handle, size, p)
                _sha_file(handle, 0, start, digest)
            _sampled(handle, start, size, digest)
    except OSError as exc:
        raise EvalkitError(f"cannot read weight file {p}: {exc.strerror or exc}") from None
    return f"sampled:{digest.hexdigest()}"


def _memo_key(path: Path, full: bool) -> str:
    st = path.stat()
    return (f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|"
            f"{'full' if full else 'sampled'}")


def _read_memo(memo_path: Path | None) -> dict[str, str]:
    if memo_path is None or not memo_path.is_file():
        return {}
    try:
        data = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged memo only costs a re-read of the weights
    return data if isinstance(data, dict) else {}


def _write_memo(memo_path: Path, memo: dict[str, str]) -> None:
    """Write the memo atomically; a failure only costs a re-read next time."""
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.tmp")
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo, sort_keys=True, indent=0) + "\n", encoding="utf-8")
        os.replace(tmp, memo_path)
    except OSError:
        if tmp.exists():
            tmp.unlink()


def cached_file_digest(path: str | Path, full: bool = False, memo_dir: str | Path | None = None) -> str:
    """:func:`weight_file_digest`, remembered in ``memo_dir/weight_hashes.json`` per (path, size, mtime, ctime,
    inode, mode); ``memo_dir`` None reads the file every time.

    Raises:
        EvalkitError: the file cannot be read.
    """
    p = Path(path)
    memo_path = Path(memo_dir) / MEMO_NAME if memo_dir is not None else None
    memo = _read_memo(memo_path)
    key = _memo_key(p, full)
    if key in memo:
        return memo[key]
    value = weight_file_digest(p, full)
    if memo_path is not None:
        memo = _read_memo(memo_path)  # another run may have added entries meanwhile
        memo[key] = value
        _write_memo(memo_path, memo)
    return value


def folder_digest(folder: str | Path, full: bool = False, memo_dir: str | Path | None = None) -> str:
    """``local:<sha256>`` identifying a model folder by its contents (see the module docstring for what it covers).

    Every file below ``folder`` except hidden ones (a path part starting with ``.``) enters, by its relative path and digest: weight files (:data:`WEIGHT_SUFFIXES`) and
    non-weight files over :data:`SMALL_FILE` bytes through :func:`cached_file_digest` (sampled, or full with
    ``full``), other files by the sha256 of their bytes. ``local`` when ``folder`` is not a folder.

    Raises:
        EvalkitError: a file cannot be read.
    """
    root = Path(folder)
    if not root.is_dir():
        return "local"
    digest = hashlib.sha256()
    digest.update(b"full\n" if full else b"sampled\n")
    for item in sorted(f for f in root.rglob("*") if f.is_file()):
        relative = item.relative_to(root).as_posix()
        if any(part.startswith(".") for part in item.relative_to(root).parts):
            continue  # hidden: the hub client's .cache/ locks, editors' swap files
        if item.suffix in WEIGHT_SUFFIXES or item.stat().st_size > SMALL_FILE:
            value = cached_file_digest(item, full, memo_dir)
        else:
            try:
                value = "sha256:" + hashlib.sha256(item.read_bytes()).hexdigest()
            except OSError as exc:
                raise EvalkitError(f"cannot read {item}: {exc.strerror or exc}") from None
        digest.update(f"{relative}\0{value}\n".encode())
    return f"local:{digest.hexdigest()}"


FILE_MEMO_NAME = "file_hashes.json"
READ_CHUNK = 1 << 22
"""Bytes read per step while hashing (4 MiB)."""


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of the file's bytes, read in chunks of :data:`READ_CHUNK`.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def stat_key(path: Path) -> str:
    """This version of the file ``path``: its absolute path, size, mtime, inode and ctime (nanoseconds), joined by
    NULs; a file written again in any way gets another key.

    Raises:
        OSError: the file cannot be stat'ed.
    """
    stat = path.stat()
    return f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}"


def remembered(path: str | Path, memo_dir: str | Path | None, kind: str, compute: Callable[[Path], Any]) -> Any:
    """``compute(path)``, remembered in ``memo_dir/file_hashes.json`` for this version of the file.

    The memo is a JSON object ``{"<absolute path>\\0<size>\\0<mtime ns>\\0<inode>\\0<ctime ns>": {kind: value}}``
    (the ctime because the system sets it on every write and no user call restores it); without
    ``memo_dir`` nothing is remembered. An unreadable or malformed memo is ignored and rewritten, and a memo that
    cannot be written costs only the recomputation next time. Written atomically (temporary file, then rename).

    Args:
        path: the file.
        memo_dir: folder of the memo (the request cache's), or None.
        kind: name of the fact, e.g. ``"sha256"``.
        compute: ``Path -> JSON-serialisable value``.

    Raises:
        OSError: the file itself cannot be read (from ``compute``).
    """
    path = Path(path)
    if memo_dir is None:
        return compute(path)
    memo_path = Path(memo_dir) / FILE_MEMO_NAME
    key = stat_key(path)
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(key) if isinstance(memo.get(key), dict) else {}
    if kind in entry:
        return entry[kind]
    value = compute(path)
    if stat_key(path) != key:  # changed while it was read: do not remember a fact about a moving target
        return value
    memo[key] = dict(entry, **{kind: value})
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f"{FILE_MEMO_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(tmp, memo_path)
    except OSError:
        pass
    return value


def file_sha256(path: str | Path, memo_dir: str | Path | None = None) -> str:
    """Hex sha256 of a file's content, remembered in ``memo_dir`` (see :func:`remembered`) when it is given.

    Raises:
        OSError: the file cannot be read.
    """
    return remembered(path, memo_dir, "sha256", sha256_of_file)
