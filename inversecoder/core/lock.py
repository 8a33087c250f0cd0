"""One writer per output folder: an OS-level lock (`flock`) on `OUTPUT/.lock`, held for a whole command.

A second `run` / `build-dataset` / `train` / `evaluate` on the same folder (same config or not) stops
at once with one line naming the holder (pid, host, command line, start time: the holder writes them
into the lock file). The kernel releases the lock when the holder's process ends, however it ends
(`kill -9` included), so a killed run never leaves a stale lock: the file may stay, the lock does not.

The processes of one run share its lock: the holder puts its identity in `INVERSECODER_OUTPUT_LOCK`,
so a child process it starts (which inherits the variable) proceeds under the parent's lock, and the
non-zero ranks of a distributed launch (`accelerate launch`, torchrun: `RANK` > 0) leave the lock to
rank 0 (a second launch's rank 0 fails, and the launcher stops its other ranks).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inversecoder.core.errors import UserError
from inversecoder.core.ranks import is_main_rank

logger = logging.getLogger(__name__)

LOCK_ENV = "INVERSECODER_OUTPUT_LOCK"
LOCK_FILE = ".lock"


def _holder(path: Path) -> dict[str, Any]:
    """What the holder wrote into the lock file (it writes right after taking the lock: wait a moment)."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        time.sleep(0.05)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"


@contextlib.contextmanager
def output_lock(root: str | Path, command: str | None = None) -> Iterator[None]:
    """Hold `root/.lock` for the block; raises `UserError` naming the holder when another run holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    if not is_main_rank():  # the job's main process holds it for every rank
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        if not held:
            holder = _holder(path)
            inherited = os.environ.get(LOCK_ENV)
            if not (inherited and holder.get("token") == inherited):
                raise UserError(
                    f"{root} is in use by another inversecoder run ({_describe(holder)}); wait for it to end "
                    "or use another --output-dir"
                )
            yield  # started by the holding run (or the holder itself again): it works under that lock
            return
        token = secrets.token_hex(16)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or shlex.join(["inversecoder", *sys.argv[1:]]),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "token": token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        previous = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
