"""Installed package versions: recorded in cards, build records and evaluation results."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

#: The packages whose versions decide a build's or a model's numbers.
PACKAGES = ("inversecoder", "torch", "transformers", "datasets", "huggingface_hub", "trl", "evalplus")


def version(name: str) -> str | None:
    """The installed version of `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """name -> version ("not installed" when absent) for `names`."""
    return {name: version(name) or "not installed" for name in names}


def running_code() -> dict[str, Any]:
    """Where the running inversecoder code comes from: `{"commit", "dirty", "url", "how"}`, from the git
    checkout it runs from (HEAD, and whether the package's files have uncommitted changes), else from
    what pip recorded when it installed it from git (`direct_url.json`); `{}` when neither says."""
    root = Path(__file__).resolve().parents[2]  # inversecoder/core/versions.py -> the checkout
    if (root / "pyproject.toml").is_file():
        try:
            top = _git(root, "rev-parse", "--show-toplevel")
            if Path(top).resolve() == root:
                commit = _git(root, "rev-parse", "HEAD")
                dirty = bool(_git(root, "status", "--porcelain", "--", *_package_paths(root)))
                return {"commit": commit, "dirty": dirty, "url": None, "how": "the git checkout it ran from"}
        except (OSError, ValueError, subprocess.SubprocessError):
            pass  # no git, or not a checkout: what pip recorded, if anything
    try:
        direct = json.loads(importlib.metadata.distribution("inversecoder").read_text("direct_url.json") or "{}")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return {}
    vcs = direct.get("vcs_info") or {}
    if vcs.get("vcs") != "git" or not vcs.get("commit_id"):
        return {}
    return {"commit": vcs["commit_id"], "dirty": False, "url": direct.get("url"), "how": "pip's install from git"}


def _package_paths(root: Path) -> list[str]:
    """What the installed package is made of in the checkout: pyproject.toml, inversecoder/ and the top-level
    folders its links point to (builders/, trainers/, eval/, hub_cards/; see pyproject's package-dir), data/."""
    package = root / "inversecoder"
    linked = [path.resolve().relative_to(root).as_posix() for path in package.iterdir() if path.is_symlink()]
    return ["pyproject.toml", "inversecoder", *linked, *(["data"] if (root / "data").is_dir() else [])]


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def code_reference(url: str | None, revision: str | None) -> dict[str, Any]:
    """The code that runs, for a dataset card's reproduce block: its version, git URL and commit. `url` and
    `revision` (push.code_url / push.code_revision) override what `running_code` finds."""
    found = running_code()
    return {
        "version": version("inversecoder"),
        "url": url or found.get("url"),
        "commit": revision or found.get("commit"),
        "dirty": False if revision else found.get("dirty", False),
        "how": "push.code_revision" if revision else found.get("how"),
    }
