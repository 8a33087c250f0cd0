"""`OUTPUT/steps.json`: what each finished step wrote, so that a step is skipped only when its output is
still what it wrote.

    {"dataset": {"fingerprint": "a6fdcaad98f7fea3", "files": {"dataset/data/train-00000-of-00001.parquet":
                 {"sha256": "...", "bytes": 8036}, ...}}, ...}

Paths are relative to OUTPUT. Older versions wrote `{"dataset": "a6fdcaad98f7fea3"}` (no manifest):
such a dataset step is verified by re-reading its rows and comparing them with the content fingerprint
its own `build_info.json` holds (then the manifest is recorded); any other step recorded without a
manifest is not verified, so it reruns (cheaply: model calls are cached, finished training stages are
kept). A `steps.json` that cannot be read (truncated, not JSON, wrong types) counts as nothing
recorded, with a warning: every step then reruns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inversecoder.core.files import write_json
from inversecoder.core.layout import BUILD_INFO
from inversecoder.core.manifest import Files, differences, manifest_of, read_manifest, summary, valid_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    fingerprint: str
    files: Files | None  # None: recorded by an older inversecoder, without a manifest


def read_records(path: Path) -> dict[str, Record]:
    """The steps recorded in `path`; a file that cannot be read is reported and counts as empty."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        records = {}
        for name, entry in data.items():
            if isinstance(entry, str):
                records[name] = Record(entry, None)
            elif isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str) and valid_files(entry["files"]):
                records[name] = Record(entry["fingerprint"], entry["files"])
            else:
                raise ValueError(f"step {name!r} has an unreadable record")
        return records
    except (OSError, ValueError, KeyError) as error:
        logger.warning(f"{path} cannot be read ({error}): counting no step as done, every step reruns")
        return {}


def record(path: Path, records: dict[str, Record], name: str, fingerprint: str, folder: Path) -> None:
    """Record step `name` as done with `fingerprint` and the manifest of `folder` (its output): into
    `records` (what `path` holds) and `path`."""
    files = read_manifest(folder) or manifest_of(folder)  # the folder's own was written with it, atomically
    records[name] = Record(fingerprint, _rooted(folder, path.parent, files))
    write_json(path, {key: {"fingerprint": r.fingerprint, "files": r.files} for key, r in records.items()})


def _rooted(folder: Path, root: Path, files: Files) -> Files:
    prefix = folder.relative_to(root).as_posix()
    return {f"{prefix}/{rel}": entry for rel, entry in files.items()}


def check(root: Path, folder: Path, entry: Record, dataset: bool) -> str | None:
    """None when `folder` holds what the step wrote; else why the step must rerun (a few words)."""
    if entry.files is None:
        if dataset and _old_dataset_intact(folder):
            return None
        return "recorded by an older inversecoder without a list of its files, so it cannot be verified"
    prefix = folder.relative_to(root).as_posix() + "/"
    files = {path.removeprefix(prefix): item for path, item in entry.files.items() if path.startswith(prefix)}
    found = differences(folder, files)
    return f"{folder} differs from what the step wrote: {summary(found)}" if found else None


def _old_dataset_intact(folder: Path) -> bool:
    """A dataset folder written by an older inversecoder: its rows still hash to its build_info fingerprint."""
    from inversecoder.builders.dataset import content_fingerprint
    from inversecoder.core.dataset_files import DATA_DIRS

    try:
        info: dict[str, Any] = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
        tables = {
            name: {"files": [p.relative_to(folder).as_posix() for p in sorted((folder / sub).glob("*.parquet"))]}
            for name, sub in DATA_DIRS.items()
            if list((folder / sub).glob("*.parquet"))
        }
        return bool(tables) and content_fingerprint(folder, tables) == info.get("fingerprint")
    except Exception:  # missing or unreadable files: not intact
        return False
