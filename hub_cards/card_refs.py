"""How the cards name what a build came from: a Hub repo at a commit as a link (`repo@sha` to the commit's
file tree on the endpoint used), anything else as it was recorded (a local path with its content hash).

The inputs are the `generator` and `source` records of a build (`build_info.json` / `build_report.json`):
the generator's `hub` reference is there when M is a Hub model (its resolved sha) or once the M this
run trained was pushed (see `lineage.py`); a Hub source corpus carries its resolved commit sha and URL.
"""

from __future__ import annotations

from typing import Any

from inversecoder.core.hub_refs import NOT_RESOLVED_OFFLINE


def linked(ref: dict[str, Any]) -> str:
    """`[`ORG/NAME@sha`](url)` for a Hub reference (`core.hub_refs.hub_ref`)."""
    return f"[`{ref['repo_id']}@{ref['commit']}`]({ref['url']})"


def describe_generator(generator: dict[str, Any]) -> str:
    """The generator M in one line of markdown: linked `repo@sha` when it is on the Hub, else `path` @ `revision`."""
    local = f"`{generator.get('model')}` @ `{generator.get('revision')}`"
    hub = generator.get("hub")
    if not hub:
        return local
    if hub.get("repo_id") == generator.get("model"):
        return linked(hub)
    return f"{linked(hub)} (trained by this run; local copy {local})"


def describe_source(source: dict[str, Any] | str | None) -> str:
    """The source corpus in one line of markdown: linked `repo@sha` for a Hub dataset read at a resolved
    commit; the commit left unresolved (offline) said so; a local file or folder with its sha256."""
    if not isinstance(source, dict):
        return f"`{source}`"
    path, revision = source.get("path"), source.get("revision")
    requested = source.get("requested_revision")
    if source.get("url"):
        text = linked({"repo_id": path, "commit": revision, "url": source["url"]})
        return text + (f" (revision `{requested}`)" if requested and requested != revision else "")
    if revision == NOT_RESOLVED_OFFLINE:
        return f"`{path}` @ `{requested or 'main'}` (commit not resolved: read offline from the local cache)"
    text = f"`{path}`" + (f" @ `{revision}`" if revision else "")
    if source.get("sha256"):
        what = f"sha256 of its {source['files']} files" if source.get("files") else "file sha256"
        text += f" ({what} `{source['sha256'][:16]}…`)"
    return text
