"""A crash-safe store of computed results (model calls, embeddings), keyed by everything that determines them.

SQLite in WAL mode: each batch of results is one transaction, so a SIGKILL at any moment loses at
most the batch in flight, never corrupts what is stored, and a rerun picks up every finished call.
Values are JSON (`get_many`/`put_many`) or raw bytes (`get_blob`/`put_blob`, e.g. float32 arrays).

A cache is only ever a shortcut: a damaged file (truncated, overwritten, not a database) is set aside
under a `.damaged-<time>` name with a warning and a new one started; a stored value that cannot be
read back is a miss (computed again). A full or read-only disk is a `UserError` (one line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from inversecoder.core.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's primary result codes for a file that is not (or no longer) a readable database."""


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of `parts` (model, revision, prompt, parameters, seed, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _code(error: sqlite3.Error) -> int:
    return (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF  # the primary code of an extended one


class ResultCache:
    """key -> JSON value, persisted in `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.unreadable = 0  # stored values that could not be decoded (treated as misses)
        self.set_aside: list[Path] = []  # damaged files kept under another name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the cache folder {self.path.parent}: {error.strerror}") from None
        self._db = self._guarded(self._connect, reconnect=False)

    # -- the connection, and what happens when the file is damaged or the disk is full --------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process (only a power cut can lose the last commits).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self._adopt_old_embeddings(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _adopt_old_embeddings(db: sqlite3.Connection) -> None:
        """Embedding caches written before the result cache held blobs (table `batches`: key, rows, data)
        move into `blobs` under the same keys, once, so their embeddings are not computed again."""
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "batches" in tables:
            with db:
                db.execute("BEGIN")
                db.execute("INSERT OR IGNORE INTO blobs (key, value) SELECT key, data FROM batches")
                db.execute("DROP TABLE batches")

    def _guarded(self, operation: Callable[[], T], reconnect: bool = True) -> T:
        """Run `operation`; if the file turns out to be damaged, set it aside, start a new cache and run it
        again there (once). A full or read-only disk becomes a one-line `UserError`."""
        try:
            return operation()
        except sqlite3.DatabaseError as error:
            if _code(error) not in DAMAGED:
                raise self._storage_error(error) from None
            self._set_aside(error, close=reconnect)
        if reconnect:
            self._db = self._connect()
        try:
            return operation()
        except sqlite3.DatabaseError as error:
            raise self._storage_error(error) from None

    def _set_aside(self, error: sqlite3.Error, close: bool) -> None:
        if close:
            self._db.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while kept.exists():
            n += 1
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):  # SQLite's companion files go with it (it reads them together)
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{kept}{suffix}")
        self.set_aside.append(kept)
        logger.warning(
            "the result cache %s is damaged (%s): kept it as %s and started a new one; its results are computed again",
            self.path,
            error,
            kept,
        )

    def _storage_error(self, error: sqlite3.DatabaseError) -> Exception:
        """A full or read-only disk as a `UserError`; any other error as it is."""
        code = _code(error)
        if code == sqlite3.SQLITE_READONLY:
            return UserError(f"cannot write the result cache {self.path}: the file or its folder is read-only")
        full = code == sqlite3.SQLITE_FULL
        if not full and code == sqlite3.SQLITE_IOERR:  # e.g. no room to map the -shm file
            try:
                full = shutil.disk_usage(self.path.parent).free == 0
            except OSError:
                full = False
        if full:
            return UserError(
                f"no space left on the device of {self.path}: free some space and rerun (finished work is kept)"
            )
        return error

    # -- values -------------------------------------------------------------------------------------------
    def get_many(
        self, keys: Iterable[str], decode: Callable[[Any], Any] | None = None, unreadable: set[str] | None = None
    ) -> dict[str, Any]:
        """The stored values of `keys` (absent keys are missing). `decode` turns a stored JSON value into the
        caller's object, raising ValueError or TypeError for one it cannot use: such a value, like one that
        is not JSON, counts as missing (so it is computed and stored again), is counted in a warning and
        its key added to `unreadable`."""
        keys = list(dict.fromkeys(keys))

        def read() -> tuple[dict[str, Any], list[str]]:
            found: dict[str, Any] = {}
            bad: list[str] = []
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", chunk):
                    try:
                        parsed = json.loads(value)
                        found[key] = decode(parsed) if decode is not None else parsed
                    except (ValueError, TypeError):  # JSONDecodeError is a ValueError
                        bad.append(key)
            return found, bad

        found, bad = self._guarded(read)
        if bad:
            self.unreadable += len(bad)
            if unreadable is not None:
                unreadable.update(bad)
            logger.warning(
                "%d stored result%s in %s could not be read back (not JSON, or not the expected shape): "
                "computing them again",
                len(bad),
                "" if len(bad) == 1 else "s",
                self.path,
            )
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store all `items` in one transaction: either all of them survive a crash or none does."""
        rows = [(key, json.dumps(value, ensure_ascii=False)) for key, value in items.items()]

        def write() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", rows)

        self._guarded(write)

    def get_blob(self, key: str) -> bytes | None:
        found = self._guarded(lambda: self._db.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone())
        return None if found is None else bytes(found[0])

    def put_blob(self, key: str, value: bytes) -> None:
        """Store one value in its own transaction."""

        def write() -> None:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT OR REPLACE INTO blobs (key, value) VALUES (?, ?)", (key, value))

        self._guarded(write)

    def __len__(self) -> int:
        return self._guarded(lambda: self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
