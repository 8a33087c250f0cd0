"""Which checkpoint a stage resumes from: the newest COMPLETE one.

The Trainer writes `checkpoint-N` in place: the weights, then the optimizer, scheduler and RNG states,
and `trainer_state.json` last. A run killed meanwhile (`kill -9`, a preempted node, a full disk) leaves a
folder that `transformers.trainer_utils.get_last_checkpoint` still picks, and every later resume fails
("Can't find a valid checkpoint", or a load error). So before resuming, each `checkpoint-N` is checked from
the newest down; a broken one is set aside as `broken-checkpoint-N` (renamed, never deleted, outside the
Trainer's `checkpoint-*` rotation) with a warning naming it, and the newest complete one is resumed. With
none complete, the stage starts from scratch.

Complete means: `trainer_state.json` parses and names its step; every safetensors weight file (single or
sharded, as the index lists them) has a whole header and exactly the bytes its header describes; the
optimizer state is there (unless the stage saves the model only) with its scheduler; every torch file
it loads (`*.pt`, `*.pth`, `*.bin` weights) is a whole zip archive, as `torch.save` writes them.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
BROKEN_PREFIX = "broken-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SHARDED_STATE = ("pytorch_model_fsdp", "global_step")
"""FSDP and DeepSpeed write their own folders of model/optimizer shards (checked by their own loaders)."""


def checkpoints(folder: Path) -> list[Path]:
    """The `checkpoint-N` folders of a stage, newest (highest N) first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir() if (m := _CHECKPOINT.match(path.name))]
    return [path for _, path in sorted(found, reverse=True) if path.is_dir()]


def _safetensors_problem(path: Path) -> str | None:
    """None when the file holds a parseable header and exactly the bytes its tensors' offsets cover."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8:
                return f"{path.name} is truncated (header of {length} bytes in a {size}-byte file)"
            header = json.loads(handle.read(length))
    except (struct.error, ValueError):
        return f"{path.name} has no readable safetensors header"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"{path.name} holds {size} bytes, its header describes {expected}"
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as error:  # safetensors raises its own error types for a malformed file
        return f"{path.name} does not load: {error}"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """`torch.save` writes a zip archive whose directory is at its end: a truncated file has none."""
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"{path.name} is not a whole torch file"


def _weights_problem(checkpoint: Path) -> str | None:
    names = {path.name for path in checkpoint.iterdir()}
    files = [checkpoint / name for name in _WEIGHTS if name in names]
    for index in (checkpoint / name for name in _INDEXES if name in names):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError):
            return f"{index.name} does not parse"
        missing = sorted(shard for shard in shards if shard not in names)
        if missing:
            return f"{index.name} lists missing shard(s): {', '.join(missing)}"
        files += [checkpoint / shard for shard in sorted(shards)]
    if not files and not any(name.startswith(_SHARDED_STATE) for name in names):
        return "no model weights"
    for path in files:
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else _torch_file_problem(path)
        if problem:
            return problem
    return None


def problem(checkpoint: Path, save_only_model: bool = False) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it is complete (see the module docstring)."""
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE} (the save was interrupted)"
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} does not parse"
    if not isinstance(step, int):
        return f"{TRAINER_STATE} names no step"
    weights = _weights_problem(checkpoint)
    if weights:
        return weights
    names = {path.name for path in checkpoint.iterdir()}
    if not save_only_model:
        if not any(name.startswith(("optimizer", *_SHARDED_STATE)) for name in names):
            return "no optimizer state"
        if "optimizer.pt" in names and "scheduler.pt" not in names:
            return "no scheduler.pt"
    for path in sorted(checkpoint.iterdir()):
        if path.is_file() and path.suffix in (".pt", ".pth"):
            torch_problem = _torch_file_problem(path)
            if torch_problem:
                return torch_problem
    return None


def set_aside(checkpoint: Path, reason: str, prefix: str = BROKEN_PREFIX, why: str = "is incomplete") -> Path:
    """Rename a checkpoint out of the Trainer's sight (`broken-checkpoint-N`, `-2` if taken): never deleted."""
    target = checkpoint.with_name(prefix + checkpoint.name)
    number = 1
    while target.exists():
        number += 1
        target = checkpoint.with_name(f"{prefix}{checkpoint.name}-{number}")
    checkpoint.rename(target)
    logger.warning(f"{checkpoint} {why} ({reason}): set aside as {target.name}, not resumed from")
    return target


def last_complete(folder: Path, stage: str, save_only_model: bool = False) -> Path | None:
    """The newest complete checkpoint of a stage folder, broken newer ones set aside; None (with a warning
    when some were broken) when the stage must start from scratch. Call it on the main process only."""
    broken = False
    for checkpoint in checkpoints(folder):
        reason = problem(checkpoint, save_only_model)
        if reason is None:
            return checkpoint
        set_aside(checkpoint, reason)
        broken = True
    if broken:
        logger.warning(f"{stage}: no complete checkpoint in {folder}: training starts from scratch")
    return None
