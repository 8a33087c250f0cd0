"""Naming something on the Hugging Face Hub by repo id and commit sha, for the lineage that builds and
cards record (dataset -> generator M -> source corpus; InverseCoder -> dataset, M).

A reference is `{"repo_id": ..., "repo_type": "model" | "dataset", "commit": <40-hex sha>, "url": ...}`:
the URL is the commit's file tree on the endpoint huggingface_hub uses (`HF_ENDPOINT`, default
https://huggingface.co), without any `user:password@` part the endpoint may carry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
NOT_RESOLVED_OFFLINE = "not resolved (offline)"


def is_commit_sha(revision: object) -> bool:
    return isinstance(revision, str) and COMMIT_SHA.fullmatch(revision) is not None


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repo id (ORG/NAME) rather than a local path."""
    if not name or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return False
    return not Path(name).expanduser().exists()


def hub_endpoint() -> str:
    """The endpoint huggingface_hub talks to, credentials (if the URL has any) left out."""
    from huggingface_hub import constants

    parts = urlsplit(constants.ENDPOINT.rstrip("/"))
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def tree_url(repo_id: str, repo_type: str, commit: str) -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{hub_endpoint()}/{prefix}{repo_id}/tree/{commit}"


def blob_url(repo_id: str, repo_type: str, revision: str, path: str) -> str:
    """A file of `repo_id` at `revision` as the Hub shows it (`.../blob/REV/PATH`)."""
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{hub_endpoint()}/{prefix}{repo_id}/blob/{revision}/{path}"


def hub_ref(repo_id: str, repo_type: str, commit: str) -> dict[str, Any]:
    """The reference to `repo_id` at `commit` (see the module docstring)."""
    return {"repo_id": repo_id, "repo_type": repo_type, "commit": commit, "url": tree_url(repo_id, repo_type, commit)}
