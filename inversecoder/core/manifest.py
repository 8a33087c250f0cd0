"""What a step wrote, file by file: paths with their sha256 and size, checked before the output is trusted.

A finished step records the manifest of its output folder in `OUTPUT/steps.json`; the dataset and model
folders also carry their own `manifest.json` (written inside the folder's atomic swap), so a folder
handed to `inversecoder push` alone can be checked too. Left out of a manifest: the card (`README.md`
at the folder's top: later steps rewrite it, e.g. the model card gets the evaluation results, and it is
checked by parsing its metadata), `hub.json` (written by a push), the manifest itself, and hidden or
scratch (`.partial`) entries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inversecoder.core.files import file_sha256, read_json, write_json
from inversecoder.core.layout import MANIFEST

NOT_LISTED = {"README.md", "hub.json", MANIFEST}

Files = dict[str, dict[str, Any]]  # relative posix path -> {"sha256": ..., "bytes": ...}


def listed_paths(folder: Path) -> list[str]:
    """The files of `folder` a manifest covers, as sorted relative posix paths."""
    paths = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".partial") and d != "__pycache__")
        for name in names:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if name.startswith(".") or name.endswith(".partial") or rel in NOT_LISTED:
                continue
            paths.append(rel)
    return sorted(paths)


def manifest_of(folder: str | Path) -> Files:
    folder = Path(folder)
    return {
        rel: {"sha256": file_sha256(folder / rel), "bytes": (folder / rel).stat().st_size}
        for rel in listed_paths(folder)
    }


def write_manifest(folder: str | Path) -> Files:
    """Write `folder/manifest.json` for the files now in `folder`; returns them."""
    files = manifest_of(folder)
    write_json(Path(folder) / MANIFEST, {"format": 1, "files": files})
    return files


def read_manifest(folder: str | Path) -> Files | None:
    """`folder/manifest.json`'s files, or None when there is none or it cannot be read."""
    try:
        data = read_json(Path(folder) / MANIFEST)
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return files if valid_files(files) else None


def valid_files(files: Any) -> bool:
    return isinstance(files, dict) and all(
        isinstance(path, str) and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        for path, entry in files.items()
    )


def differences(folder: str | Path, files: Files) -> list[str]:
    """What differs between `folder` and `files` (empty when it holds exactly those files), e.g.
    `data/train-00000-of-00001.parquet missing`, `build_info.json changed`, `extra.txt not written by the step`."""
    folder = Path(folder)
    found = []
    present = set(listed_paths(folder)) if folder.is_dir() else set()
    for path, entry in sorted(files.items()):
        if path not in present:
            found.append(f"{path} missing")
        elif (folder / path).stat().st_size != entry.get("bytes", (folder / path).stat().st_size) or file_sha256(
            folder / path
        ) != entry["sha256"]:
            found.append(f"{path} changed")
    found += [f"{path} not written by the step" for path in sorted(present - set(files))]
    return found


def summary(found: list[str], limit: int = 3) -> str:
    """The differences in a few words: the first `limit`, then how many more."""
    shown = ", ".join(found[:limit])
    return shown + (f" and {len(found) - limit} more" if len(found) > limit else "")
