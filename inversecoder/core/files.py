"""File I/O shared by every package: atomic writes under unique scratch names, JSON, checksums.

A crash (or a second process) must never leave a half-written file under its final name, and two
writers must never share a scratch name: every write goes to a unique sibling and is renamed over
the target in one step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (weights and corpora can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scratch_path(target: str | Path) -> Path:
    """A unique, not yet existing sibling of `target` to write into before renaming it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    os.unlink(name)
    return Path(name)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a scratch path (file or folder) that replaces `target` when the block succeeds; on an
    error the scratch is removed and `target` is untouched. A folder target is swapped in whole."""
    target = Path(target)
    scratch = scratch_path(target)
    try:
        yield scratch
        if scratch.is_dir() and target.is_dir():
            old = scratch_path(target)
            target.rename(old)
            scratch.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(scratch, target)
    finally:
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.unlink(missing_ok=True)


def write_atomic(target: str | Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `target` atomically."""
    with atomic_path(target) as scratch:
        if isinstance(content, bytes):
            scratch.write_bytes(content)
        else:
            scratch.write_text(content, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, data: Any) -> Path:
    """Indented JSON, atomically."""
    return write_atomic(target, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The parsed file, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
