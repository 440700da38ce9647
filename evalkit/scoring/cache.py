"""A request cache on disk, so that a crashed, killed or interrupted run never scores a request twice.

Storage is one SQLite database in WAL mode (``<cache dir>/loglikelihood.sqlite3``). A cached answer is keyed by

* the *model key*: sha256 of the model's identity (name, kind, revision or random seed, dtype, config sha256),
  the tokenizer's sha256, the backend name and the versions of evalkit, torch and transformers; two models
  never share answers (lm-evaluation-harness issue 2715 is what happens when the key ignores the model), and
* the *request key*: sha256 of the exact token ids of the request (context ids, then continuation ids), so a
  prompt edit, a different tokenization mode or a different truncation is a different request.

Log-likelihoods are stored as the 8 bytes of their IEEE-754 binary64 value (not as SQLite REAL, which turns -0.0
into 0 and NaN into NULL), so a cached float is bit-identical to the one the model produced. A non-finite answer (NaN
or infinite: a broken model, not a score) is never stored, and one found in a cache written by an older evalkit is
treated as missing, so it is scored again rather than served as a number.
The wrappers that put a backend or a generator in front of this store, :class:`CachingBackend` (which commits each
batch as soon as the model has scored it: ``kill -9`` loses at most the batch in flight) and
:class:`CachingGenerator`, live in :mod:`evalkit.scoring.cache_wrappers` and are importable from here too.

Greedy generations (lm-eval's ``generate_until``) are cached in the same file, in a table of their own, under the
same model key and a request key over the context ids, the stop strings and the token budget
(:func:`generation_request_key`); a :class:`CachingGenerator` commits each answer as soon as its row finishes.

Several processes may share one cache on a local disk (WAL allows one writer at a time; the others wait); the
ranks of a multi-machine job should each use a cache on their own machine's disk, as SQLite's locking is not
safe on network file systems.

With ``synchronous=NORMAL`` in WAL mode a committed batch survives the process being killed; a power cut may
lose the last few commits but never corrupts the database (https://www.sqlite.org/wal.html).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import struct
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from evalkit.types import EvalkitError, TokenizedGeneration, TokenizedRequest

CACHE_DIR_ENV = "EVALKIT_CACHE_DIR"
"""Environment variable naming the cache folder when ``--cache-dir`` is not given."""

DB_NAME = "loglikelihood.sqlite3"
_DOUBLE = struct.Struct("<d")
SCHEMA_VERSION = 1

MODEL_KEY_FIELDS = ("name", "kind", "revision", "dtype", "config_sha256")
"""Fields of the model identity (see :func:`evalkit.models.hf_loading.load_model`) that enter the model key."""

WINDOWED_SCORING_VERSION = 2
"""Scoring version in the key of a model with sliding-window or chunked layers (identity ``attention_window``).
Version 1 (no such field) packed such models with one mask for every layer, so their windowed layers saw the whole
context and long packed requests were scored wrongly: those answers are never served again. Models without
windowed layers carry no version field, and keep their keys and cached answers."""

OPTIONAL_KEY_FIELDS = {"trust_remote_code": False, "model_args": {}, "revision_requested": None}
"""Identity fields that enter the model key when they differ from these defaults (``--trust-remote-code``,
``--model-args``, ``--revision``; the resolved hub commit is ``revision`` itself)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_key TEXT PRIMARY KEY,
    identity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS responses (
    model_key TEXT NOT NULL,
    request_key BLOB NOT NULL,
    loglikelihood BLOB NOT NULL,
    greedy INTEGER NOT NULL,
    PRIMARY KEY (model_key, request_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generations (
    model_key TEXT NOT NULL,
    request_key BLOB NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    stop_reason TEXT NOT NULL,
    PRIMARY KEY (model_key, request_key)
) WITHOUT ROWID;
"""


COLUMNS = {"models": ("model_key", "identity"),
           "responses": ("model_key", "request_key", "loglikelihood", "greedy"),
           "generations": ("model_key", "request_key", "text", "tokens", "stop_reason")}
"""The tables of an evalkit request cache and their columns; a database with other tables or columns is not one."""

LOGLIKELIHOOD_ROUNDING = 1e-4
"""A log-likelihood is at most 0; a stored answer above this (nats) cannot come from a model: a damaged row."""

BUSY_WAIT_S = 60.0
"""How long opening the cache waits for another process that holds its lock (creating it, switching it to WAL)."""


def plausible_loglikelihood(value: float) -> bool:
    """True for a log-likelihood a model can produce: finite and at most 0 (up to :data:`LOGLIKELIHOOD_ROUNDING`)."""
    return math.isfinite(value) and value <= LOGLIKELIHOOD_ROUNDING


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True for SQLite's report that another connection holds the lock ("database is locked", "... busy")."""
    return "locked" in str(exc) or "busy" in str(exc)


def resolve_cache_dir(cache_dir: str | None) -> Path:
    """``--cache-dir`` if given, else ``$EVALKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/evalkit``
    (``~/.cache/evalkit``)."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "evalkit"


def model_key(identity: Mapping[str, Any], tokenizer_sha256: str, backend: str,
              versions: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The cache key of a (model, tokenizer, backend, software) combination.

    Args:
        identity: the model identity dict; the fields in :data:`MODEL_KEY_FIELDS` are used, and those in
            :data:`OPTIONAL_KEY_FIELDS` when set. The device is not:
            a run resumed on another device reuses its answers (devices differ only by float rounding). Nor is a
            GGUF file's name: its revision, ``sha256:<content hash>``, names it. An ``attention_window`` (a model
            with windowed layers) adds it and :data:`WINDOWED_SCORING_VERSION`.
        tokenizer_sha256: sha256 of the tokenizer's serialized form.
        backend: backend name, e.g. ``"hf"``.
        versions: library versions; ``evalkit``, ``torch`` and ``transformers`` enter the key.

    Returns:
        (hex sha256 of the canonical JSON of the keyed fields, those fields as a dict).

    Raises:
        EvalkitError: a keyed identity field is missing (the key would not tell models apart).
    """
    missing = [f for f in MODEL_KEY_FIELDS if identity.get(f) in (None, "")]
    if missing:
        raise EvalkitError(
            f"model identity lacks {', '.join(missing)}: cannot key the request cache (use --no-cache)"
        )
    fields: dict[str, Any] = {f: identity[f] for f in MODEL_KEY_FIELDS}
    if identity["kind"] == "gguf":  # the revision is the file's content hash: a renamed or moved file keeps its answers
        fields["name"] = "gguf"
    # loading options enter the key only when set, so the keys of plain runs (and their cached answers) stay
    for option, default in OPTIONAL_KEY_FIELDS.items():
        if identity.get(option, default) != default:
            fields[option] = identity[option]
    if identity.get("attention_window") is not None:
        fields.update(attention_window=identity["attention_window"], windowed_scoring=WINDOWED_SCORING_VERSION)
    fields.update(tokenizer_sha256=tokenizer_sha256, backend=backend,
                  **{f"{lib}_version": versions.get(lib, "") for lib in ("evalkit", "torch", "transformers")})
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), fields


def request_key(request: TokenizedRequest) -> bytes:
    """sha256 (32 bytes) of the request's token ids: both lengths, then every id as a little-endian int64."""
    ids = (len(request.context_ids), len(request.continuation_ids), *request.context_ids, *request.continuation_ids)
    return hashlib.sha256(struct.pack(f"<{len(ids)}q", *ids)).digest()


GENERATION_TAG = b"evalkit generate_until v1\0"
"""Bytes that start every generation key's hashed input, so it never hashes the input of a log-likelihood key."""


def generation_request_key(request: TokenizedGeneration, setup: bytes = b"") -> bytes:
    """sha256 (32 bytes) of a generation request: :data:`GENERATION_TAG`, ``setup`` (the generator's own stop
    settings, see :meth:`CachingGenerator.setup_bytes`), the context ids, ``max_new_tokens`` and every stop string,
    each length-prefixed so that no two requests hash the same input.

    The truncation count is not keyed: it follows from the context ids the model reads.
    """
    digest = hashlib.sha256(GENERATION_TAG)
    digest.update(struct.pack("<q", len(setup)) + setup)
    ids = (len(request.context_ids), *request.context_ids, int(request.max_new_tokens), len(request.until))
    digest.update(struct.pack(f"<{len(ids)}q", *ids))
    for stop in request.until:
        raw = stop.encode("utf-8", "surrogatepass")
        digest.update(struct.pack("<q", len(raw)) + raw)
    return digest.digest()


class RequestCache:
    """The SQLite store. Use as a context manager, or call :meth:`close`.

    Args:
        cache_dir: folder of the database (created if missing, atomically: see :meth:`_create`).

    Attributes:
        damaged_rows: rows of the last :meth:`get_many` left out for values of the wrong type.

    Raises:
        EvalkitError: the folder cannot be created, is read-only, the disk is full, another process holds the
            lock for over :data:`BUSY_WAIT_S` seconds, or the file is not an evalkit cache of this schema (another
            schema version, other tables or columns: nothing is written to it).
    """

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / DB_NAME
        self.damaged_rows = 0
        self._refuse_read_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalkitError(
                f"cannot open the request cache {self.path}: {exc} (use --cache-dir or --no-cache)"
            ) from None
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:  # another run creating the file or switching it to WAL holds a lock SQLite does not wait for
            try:
                self._open()
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise EvalkitError(self._open_error(exc)) from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                if "readonly" in str(exc) or "read-only" in str(exc):
                    raise EvalkitError(self._read_only_message()) from None
                raise EvalkitError(
                    f"request cache {self.path} is unreadable ({exc}): remove it, or use --no-cache"
                ) from None

    def _open(self) -> None:
        """Create the file if missing (atomically: built under a temporary name, then linked into place, so a run
        opening it at the same moment sees no file or a whole cache), then connect and check its schema."""
        if not self.path.exists():
            self._create()
        self.conn = sqlite3.connect(self.path, timeout=BUSY_WAIT_S, isolation_level=None)
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise EvalkitError(f"request cache {self.path} has schema version {version}, this evalkit uses "
                                   f"{SCHEMA_VERSION}: remove it or pick another --cache-dir")
            self._check_tables()
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            if version != SCHEMA_VERSION:
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self.conn.close()
            raise

    def _create(self) -> None:
        """Write an empty cache under a temporary name and link it to :attr:`path` unless another run did first."""
        tmp = self.path.with_name(f".{DB_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)  # never replaces: a cache another run created (and may fill) is kept
            except OSError:  # created meanwhile by another run: theirs is used; no hard links here: SQLite
                pass  # creates the file in place when it connects, and the busy wait covers the race
        finally:
            for leftover in (tmp, *(tmp.with_name(tmp.name + end) for end in ("-wal", "-shm", "-journal"))):
                if leftover.exists():
                    leftover.unlink()

    def _check_tables(self) -> None:
        """Refuse a database with tables or columns an evalkit cache does not have, before anything is written.

        Raises:
            EvalkitError: naming the table and its columns.
        """
        tables = [row[0] for row in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for table in tables:
            have = tuple(row[0] for row in self.conn.execute("SELECT name FROM pragma_table_info(?)", (table,)))
            want = COLUMNS.get(table)
            if have != want:
                what = (f"an evalkit cache has {', '.join(want)}" if want
                        else f"an evalkit cache has only the tables {', '.join(COLUMNS)}")
                raise EvalkitError(
                    f"request cache {self.path} is an SQLite database of another schema (table {table} has columns "
                    f"{', '.join(have)}; {what}): it is not an evalkit request cache; use another --cache-dir, or "
                    f"--no-cache")

    def _open_error(self, exc: sqlite3.OperationalError) -> str:
        """The message for an operational failure at open: a full disk, a lock held too long, another error."""
        if "full" in str(exc):
            return (f"request cache {self.path}: the disk is full ({exc}) while creating it; free some space, or use "
                    f"--cache-dir on another disk, or --no-cache")
        if "readonly" in str(exc) or "read-only" in str(exc):
            return self._read_only_message()
        if _busy(exc):
            return (f"request cache {self.path} stayed locked by another process for {BUSY_WAIT_S:.0f} s ({exc}); "
                    f"wait for it, or use another --cache-dir, or --no-cache")
        return f"cannot open the request cache {self.path}: {exc} (use --cache-dir or --no-cache)"

    def _read_only_message(self) -> str:
        return (f"request cache {self.path} is read-only (a read-only mount or no write permission): the cache "
                f"stores every scored batch, so it must be writable; use --cache-dir with a writable folder, or "
                f"--no-cache")

    def _refuse_read_only(self) -> None:
        """Raise when the database file, or the folder it would be created in, cannot be written."""
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if existing is None:
            return
        if existing == self.path:  # SQLite also writes the -wal and -shm files beside it
            writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        else:
            writable = existing.is_dir() and os.access(existing, os.W_OK)
        if not writable:
            raise EvalkitError(self._read_only_message())

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (committed batches stay on disk)."""
        self.conn.close()

    @contextmanager
    def _intact(self, doing: str) -> Iterator[None]:
        """Turn SQLite's errors into one clear message: a damaged file (pages that the header check at open does
        not read), a full disk, a lock held too long; ``doing`` says what the cache was doing."""
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, full disk, ...: not damage
            if "full" in str(exc):
                raise EvalkitError(f"request cache {self.path}: the disk is full ({exc}) while {doing}; the answers "
                                   f"committed before are kept; free some space, or use --cache-dir on another "
                                   f"disk, or --no-cache") from None
            raise EvalkitError(f"request cache {self.path}: {exc} while {doing}; the answers committed before are "
                               f"kept; use another --cache-dir, or --no-cache") from None
        except sqlite3.DatabaseError as exc:
            raise EvalkitError(f"request cache {self.path} is damaged ({exc}): remove it, or use --no-cache") from None

    def register_model(self, key: str, fields: Mapping[str, Any]) -> None:
        """Record what a model key stands for (for people inspecting the file).

        Raises:
            EvalkitError: the file is damaged.
        """
        identity = json.dumps(dict(fields), sort_keys=True)
        with self._intact("recording the model"):
            self.conn.execute("INSERT OR IGNORE INTO models VALUES (?, ?)", (key, identity))

    def get_many(self, key: str, request_keys: Sequence[bytes]) -> dict[bytes, tuple[float, bool]]:
        """Cached (log-likelihood in nats, greedy flag) for those of ``request_keys`` that are stored.

        A row whose values have the wrong type (a log-likelihood that is not 8 bytes, a greedy flag other than 0
        or 1: a file edited by hand) is left out, as missing, and counted in :attr:`damaged_rows`.

        Raises:
            EvalkitError: the file is damaged.
        """
        self.damaged_rows = 0
        with self._intact("reading cached answers"):
            return self._get_many(key, request_keys)

    def _get_many(self, key: str, request_keys: Sequence[bytes]) -> dict[bytes, tuple[float, bool]]:
        found: dict[bytes, tuple[float, bool]] = {}
        unique = list(dict.fromkeys(request_keys))
        for start in range(0, len(unique), 500):  # stay under SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            rows = self.conn.execute(
                f"SELECT request_key, loglikelihood, greedy FROM responses WHERE model_key = ? "
                f"AND request_key IN ({','.join('?' * len(chunk))})", (key, *chunk),
            )
            for rkey, ll, greedy in rows:
                if not isinstance(ll, bytes) or len(ll) != _DOUBLE.size or greedy not in (0, 1) \
                        or isinstance(greedy, float):
                    self.damaged_rows += 1
                    continue
                found[bytes(rkey)] = (_DOUBLE.unpack(ll)[0], bool(greedy))
        return found

    def put_many(self, key: str, items: Sequence[tuple[bytes, float, bool]]) -> None:
        """Store (request key, log-likelihood, greedy) triples in one committed transaction.

        Raises:
            EvalkitError: the file is damaged.
        """
        with self._intact("storing scored answers"), self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                [(key, rkey, _DOUBLE.pack(ll), int(greedy)) for rkey, ll, greedy in items],
            )

    def get_generations(self, key: str, request_keys: Sequence[bytes]) -> dict[bytes, tuple[str, int, str]]:
        """Cached (text, tokens, stop reason) for those of ``request_keys`` that are stored
        (:func:`generation_request_key`).

        Raises:
            EvalkitError: the file is damaged.
        """
        found: dict[bytes, tuple[str, int, str]] = {}
        unique = list(dict.fromkeys(request_keys))
        with self._intact("reading cached generations"):
            for start in range(0, len(unique), 500):  # stay under SQLite's limit on bound parameters
                chunk = unique[start : start + 500]
                rows = self.conn.execute(
                    f"SELECT request_key, text, tokens, stop_reason FROM generations WHERE model_key = ? "
                    f"AND request_key IN ({','.join('?' * len(chunk))})", (key, *chunk),
                )
                for rkey, text, tokens, reason in rows:
                    if isinstance(text, str) and isinstance(tokens, int) and isinstance(reason, str):
                        found[bytes(rkey)] = (text, tokens, reason)  # a row of other types is generated again
        return found

    def put_generations(self, key: str, items: Sequence[tuple[bytes, str, int, str]]) -> None:
        """Store (request key, text, tokens, stop reason) rows in one committed transaction.

        Raises:
            EvalkitError: the file is damaged.
        """
        with self._intact("storing generations"), self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
                                  [(key, rkey, text, int(tokens), reason) for rkey, text, tokens, reason in items])

    def count_generations(self, key: str | None = None) -> int:
        """Stored generation answers, for one model key or for all."""
        if key is None:
            return self.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM generations WHERE model_key = ?", (key,)).fetchone()[0]

    def count(self, key: str | None = None) -> int:
        """Stored answers, for one model key or for all."""
        if key is None:
            return self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM responses WHERE model_key = ?", (key,)).fetchone()[0]


_WRAPPERS = ("CachingBackend", "CachingGenerator")


def __getattr__(name: str) -> Any:
    """``evalkit.scoring.cache.CachingBackend`` and the other wrappers, from :mod:`evalkit.scoring.cache_wrappers`
    (imported on first use: that module imports this one)."""
    if name in _WRAPPERS:
        from evalkit.scoring import cache_wrappers

        return getattr(cache_wrappers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
