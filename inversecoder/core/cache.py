"""A crash-safe store of computed results (model calls, embeddings), keyed by everything that determines them.

SQLite in WAL mode: each batch of results is one transaction, so a SIGKILL at any moment loses at
most the batch in flight, never corrupts what is stored, and a rerun picks up every finished call.
Values are JSON (`get_many`/`put_many`) or raw bytes (`get_blob`/`put_blob`, e.g. float32 arrays).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of `parts` (model, revision, prompt, parameters, seed, ...)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResultCache:
    """key -> JSON value, persisted in `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (only a power cut can lose the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._adopt_old_embeddings()

    def _adopt_old_embeddings(self) -> None:
        """Embedding caches written before the result cache held blobs (table `batches`: key, rows, data)
        move into `blobs` under the same keys, once, so their embeddings are not computed again."""
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "batches" in tables:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT OR IGNORE INTO blobs (key, value) SELECT key, data FROM batches")
                self._db.execute("DROP TABLE batches")

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        """Store all `items` in one transaction: either all of them survive a crash or none does."""
        rows = [(key, json.dumps(value, ensure_ascii=False)) for key, value in items.items()]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", rows)

    def get_blob(self, key: str) -> bytes | None:
        found = self._db.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone()
        return None if found is None else bytes(found[0])

    def put_blob(self, key: str, value: bytes) -> None:
        """Store one value in its own transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO blobs (key, value) VALUES (?, ?)", (key, value))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
