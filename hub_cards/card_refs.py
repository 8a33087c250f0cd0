"""How the cards name what a build came from: a Hub repo at a commit as a link (`repo@sha` to the commit's
file tree on the endpoint used), anything else as it was recorded (a local path with its content hash); and
the license it carries over from those inputs' cards (`core.licenses`), with where each was read.

The inputs are the `generator` and `source` records of a build (`build_info.json` / `build_report.json`):
the generator's `hub` reference is there when M is a Hub model (its resolved sha) or once the M this
run trained was pushed (see `lineage.py`); a Hub source corpus carries its resolved commit sha and URL.
"""

from __future__ import annotations

from typing import Any

from inversecoder.core.hub_refs import NOT_RESOLVED_OFFLINE
from inversecoder.core.licenses import UNKNOWN, licenses_of


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


def license_record(value: dict[str, Any] | str | None, setting: str = "dataset.license") -> dict[str, Any]:
    """A license record (`core.licenses`); a bare license id (a report written before licenses followed the
    inputs holds the `dataset.license` string) is one `setting` stated."""
    if isinstance(value, dict):
        return value
    return {"license": value or UNKNOWN, "set_by": setting if value else None, "inputs": {}}


def license_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """The card metadata fields of a license record: `license`, and `license_name` / `license_link` when set."""
    fields = {"license": record.get("license") or UNKNOWN}
    for key in ("license_name", "license_link"):
        if record.get(key):
            fields[key] = record[key]
    return fields


def license_summary(record: dict[str, Any], link: bool = False) -> str:
    """The license in a few words: its ids, and its name under `other` (and its link, with `link`)."""
    text = ", ".join(f"`{value}`" for value in licenses_of(record) or [UNKNOWN])
    extra = [f"`{record['license_name']}`"] if record.get("license_name") else []
    extra += [f"[license text]({record['license_link']})"] if link and record.get("license_link") else []
    return text + (f" ({', '.join(extra)})" if extra else "")


#: How a card's license follows its inputs, by kind of card.
FOLLOWS = {
    "dataset": "the licenses of what it is made of apply (the corpus's code, the instructions M wrote), as their "
    "cards declare",
    "corpus": "the source corpus's pairs, under its license, as its card declares",
    "model": "a fine-tune of its base model, it stays under the base model's license, as its card declares",
}


def stated_by(setting: str) -> str:
    """How a card's License section says the config stated the license (what a push reads back)."""
    return f"as `{setting}` states"


def unread_licenses(record: dict[str, Any]) -> str:
    """Why the inputs' licenses of a record are unknown, in one line."""
    return "; ".join(
        f"{label} `{entry.get('of')}`: {entry.get('why', 'no license found')}"
        for label, entry in (record.get("inputs") or {}).items()
        if not licenses_of(entry)
    )


def describe_license(record: dict[str, Any], setting: str | None, kind: str = "dataset") -> str:
    """A card's License section: the license, who set it, and what each input's card says (and where it was
    read, or why it could not be); `setting` names the config field that overrides it, if one does."""
    text = license_summary(record, link=True)
    inputs = record.get("inputs") or {}
    if record.get("set_by"):
        lines = [f"{text}, {stated_by(record['set_by'])}."]
        if inputs:
            lines += ["", "What the cards it would otherwise follow say:", ""]
    else:
        lines = [f"{text}: {FOLLOWS[kind]}:", ""]
    lines += [
        f"- **{label}** (`{entry.get('of')}`{', ' + entry['via'] if entry.get('via') else ''}): {_entry(entry)}"
        for label, entry in inputs.items()
    ]
    if UNKNOWN in licenses_of(record) and not record.get("set_by"):
        lines += ["", "**A license is unknown**: check the terms of the inputs above before using this."]
        if setting:
            lines[-1] += f" `{setting}` states the license when you know it."
    return "\n".join(lines)


def _entry(entry: dict[str, Any]) -> str:
    """One input's license as its card declares it, with where it was read; or why it is unknown."""
    if not licenses_of(entry):
        return f"unknown: {entry.get('why', 'no license found')}"
    card = entry.get("card") or ""
    where = f"[its card]({card})" if card.startswith(("http://", "https://")) else f"`{card}`"
    return f"{license_summary(entry, link=True)}, from {where}"


def deviations_table(rows: list[dict[str, str]], column: str) -> str:
    """`core.fidelity.deviation_rows` as a card's markdown table: what the paper did, what `column` (this build,
    this model) does, with the field that controls it, and why."""
    lines = [f"| what | the paper (and its code) | {column} | why |", "|---|---|---|---|"]
    for row in rows:
        cells = [row["topic"], row["paper"], row["this_build"], row["reason"]]
        if row.get("field"):
            cells[2] += f" (`{row['field']}`)"
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
