"""A file's identity by content: the sha256 of its bytes, computed once per version of the file on disk.

A GGUF checkpoint is one large file, and its name says nothing about its weights (a re-quantized file keeps
its name), so the model identity, and with it the request cache's model key, is the file's content hash.
Hashing a 7B checkpoint takes tens of seconds, so the digest is remembered in ``file_hashes.json`` in a folder
(the request cache's) under the file's (absolute path, size, modification time in ns, inode): a file rewritten
in place, replaced or touched is hashed again; an unchanged one is not. Other facts read from a file's content
(a GGUF file's quantization, which takes seconds to parse) are remembered the same way (:func:`remembered`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

MEMO_NAME = "file_hashes.json"
CHUNK = 1 << 22
"""Bytes read per step while hashing (4 MiB)."""


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of the file's bytes, read in chunks of :data:`CHUNK`.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"


def remembered(path: str | Path, memo_dir: str | Path | None, kind: str, compute: Callable[[Path], Any]) -> Any:
    """``compute(path)``, remembered in ``memo_dir/file_hashes.json`` for this version of the file.

    The memo is a JSON object ``{"<absolute path>\\0<size>\\0<mtime ns>\\0<inode>": {kind: value}}``; without
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
    memo_path = Path(memo_dir) / MEMO_NAME
    key = _stat_key(path)
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
    if _stat_key(path) != key:  # changed while it was read: do not remember a fact about a moving target
        return value
    memo[key] = dict(entry, **{kind: value})
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f"{MEMO_NAME}.{os.getpid()}.tmp")
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
