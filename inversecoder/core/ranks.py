"""Which process of a launched training job this is (`accelerate launch` / `torchrun` set the variables).

Only the main process (rank 0) writes step records, cards, run state and logs progress; the others train
and wait at a barrier. A plain process is the main one of a job of one.
"""

from __future__ import annotations

import os

from inversecoder.core.errors import ConfigError


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


def rank() -> int:
    return _int_env("RANK", 0)


def world_size() -> int:
    """Processes in the job: `accelerate launch` / `torchrun` export WORLD_SIZE; a plain run is 1."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {value!r}") from None
    return max(size, 1)


def is_main_rank() -> bool:
    """Rank 0 of a launched job, or a plain process (a RANK of its own environment alone does not count)."""
    return not in_launched_job() or rank() == 0


def in_launched_job() -> bool:
    """Whether this process is one of several started by a launcher."""
    return world_size() > 1


def barrier() -> None:
    """Wait for every process of the job (nothing to wait for in a plain process)."""
    if in_launched_job():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
