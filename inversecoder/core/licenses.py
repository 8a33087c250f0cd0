"""Licenses carried over from the cards of what a build is made of.

A dataset built by Inverse-Instruct holds the corpus's code and instructions the generator M wrote; a model
fine-tuned from a base model stays under the base model's license (CodeLlama's `llama2`, DeepSeek-Coder's
`other` + `license_name: deepseek`). So the cards take `license` (and `license_name` / `license_link`, the
Hub's fields for `license: other`) from those inputs' own cards, read with `huggingface_hub.RepoCard`,
unless the config states one. A license that cannot be read (offline and not in the cache, a local file
without a card, a card without a license) is `unknown`, and the card says why: never a default that may be
wrong.

A record (`card_license`): `{"of": name, "license": id or list or None, "license_name", "license_link",
"card": where the card was read (a URL on the Hub, else a local path), "why": why there is no license}`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from inversecoder.core.hub_refs import blob_url, is_commit_sha, is_hub_id

#: The Hub's license id for "not known".
UNKNOWN = "unknown"
README = "README.md"


def card_license(name: str | None, repo_type: str, revision: str | None = None) -> dict[str, Any]:
    """The license the card of `name` (a Hub repo id at `revision`, or a local folder) declares."""
    record: dict[str, Any] = {"of": name, "license": None, "license_name": None, "license_link": None}
    if not name:
        return record | {"why": "not named"}
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / README).is_file():
            return record | {"why": f"the local folder has no card ({README})"}
        return _read(path / README, record | {"card": str(path / README)}, None)
    if path.exists():
        return record | {"why": "a local file: it has no card"}
    if not is_hub_id(name):
        return record | {"why": "neither a local folder nor a Hub repo id"}
    return _read_hub(name, repo_type, revision, record)


def _read_hub(name: str, repo_type: str, revision: str | None, record: dict[str, Any]) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        downloaded = Path(hf_hub_download(name, README, repo_type=repo_type, revision=revision))
    except LocalEntryNotFoundError:  # offline (HF_HUB_OFFLINE, no connection) and not cached
        return record | {"why": "its card is not in the local cache and the Hub was not reachable (offline?)"}
    except RemoteEntryNotFoundError:
        return record | {"why": f"its repo has no card ({README})"}
    except GatedRepoError:
        return record | {"why": "its repo is gated: reading its card needs a token with access"}
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return record | {"why": f"its repo (revision {revision or 'main'}) was not found"}
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        return record | {"why": f"its card could not be read (HTTP {status})"}
    except Exception as error:  # connection errors, timeouts: httpx errors
        return record | {"why": f"its card could not be read ({type(error).__name__})"}
    # The Hub cache keeps a download under snapshots/<commit sha>/: the card is linked at that commit.
    commit = downloaded.parent.name if is_commit_sha(downloaded.parent.name) else revision or "main"
    record["card"] = blob_url(name, repo_type, commit, README)
    return _read(downloaded, record, (name, repo_type, commit))


def _read(path: Path, record: dict[str, Any], hub: tuple[str, str, str] | None) -> dict[str, Any]:
    from huggingface_hub import RepoCard

    try:
        data = RepoCard.load(path, ignore_metadata_errors=True).data
    except Exception as error:  # unreadable file, metadata that is not YAML
        return record | {"why": f"its card could not be parsed ({type(error).__name__})"}
    license = data.get("license")
    if not license or (isinstance(license, list) and not all(isinstance(item, str) for item in license)):
        return record | {"why": "its card declares no license"}
    link = data.get("license_link")
    if isinstance(link, str) and link and not re.match(r"[a-z][a-z0-9+.-]*://", link):
        # Relative to the card's repo (DeepSeek-Coder's `license_link: LICENSE`): made absolute, or the link
        # would point into the repo whose card carries it over.
        link = blob_url(hub[0], hub[1], hub[2], link.removeprefix("./").lstrip("/")) if hub else None
    return record | {
        "license": license if isinstance(license, str) else list(license),
        "license_name": data.get("license_name"),
        "license_link": link or None,
    }


def licenses_of(record: dict[str, Any]) -> list[str]:
    """The license ids of a record (a card may list several)."""
    value = record.get("license")
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def combined_license(inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The license of something made of all `inputs` (label -> `card_license` record): each input's license
    applies, so every distinct id is listed (`unknown` too when an input's is not known); `license_name` and
    `license_link` come from the first input under `other`."""
    ids: list[str] = []
    for record in inputs.values():
        for value in licenses_of(record) or [UNKNOWN]:
            if value not in ids:
                ids.append(value)
    other = next((r for r in inputs.values() if "other" in licenses_of(r)), {})
    return {
        "license": ids[0] if len(ids) == 1 else ids,
        "license_name": other.get("license_name"),
        "license_link": other.get("license_link"),
        "set_by": None,
        "inputs": inputs,
    }


def resolved_license(
    setting: str, license: str | None, name: str | None, link: str | None, inputs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The license the config states (`setting` names the field), with what the inputs' cards say beside it;
    unset: the inputs' combined (`combined_license`)."""
    if license:
        return {"license": license, "license_name": name, "license_link": link, "set_by": setting, "inputs": inputs}
    return combined_license(inputs)
