"""File I/O shared by every package: atomic writes under unique scratch names, JSON, checksums.

A crash (or a second process) must never leave a half-written file under its final name, and two
writers must never share a scratch name: every write goes to a unique sibling and is renamed over
the target in one step.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inversecoder.core.errors import UserError


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


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def storage_problem(error: OSError) -> str | None:
    """A one-line description of an error the user fixes on the disk (full, over quota, read-only), or None."""
    if error.errno in NO_SPACE or "No space left on device" in str(error):
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the device{where}: free some space and rerun the same command (finished work is kept)"
    if error.errno == errno.EROFS:
        return f"read-only file system: cannot write {error.filename or 'the output'}; choose another --output-dir"
    return None


def check_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Fail early, in one line (`UserError`), when `path` cannot be the folder everything is written to: the
    root of the filesystem, a file (or under one), read-only, not writable or on a full disk. A missing
    folder is not created here; its nearest existing parent is checked instead."""
    path = Path(path).expanduser()
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise UserError(f"{what} {path} is the root of the filesystem: choose a folder of its own")
    existing = resolved
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == resolved:
            raise UserError(f"{what} {path} is a file, not a folder")
        raise UserError(f"{what} {path} cannot be created: {existing} is a file, not a folder")
    try:
        if shutil.disk_usage(existing).free == 0:
            raise UserError(f"no space left on the device of {what} {path}: free some space first")
        if existing == resolved:  # a real write: permissions, a read-only mount, a full disk, all at once
            handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=existing)
            try:
                os.write(handle, b"0")
                os.fsync(handle)
            finally:
                os.close(handle)
                os.unlink(probe)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise OSError(errno.EROFS if _read_only(existing) else errno.EACCES, "not writable", str(existing))
    except OSError as error:
        if error.errno in NO_SPACE:
            raise UserError(f"no space left on the device of {what} {path}: free some space first") from None
        if error.errno == errno.EROFS:
            raise UserError(f"{what} {path} is on a read-only file system") from None
        raise UserError(f"{what} {path} is not writable: {error.strerror or error}") from None
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
