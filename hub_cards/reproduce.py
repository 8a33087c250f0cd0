"""What a dataset card's "Reproduce" block needs so that someone with only the Hub page can run it.

    pip install "git+CODE_URL@SHA"                  the code (inversecoder is on no package index)
    hf download ORG/NAME reproduce.yaml --repo-type dataset --revision VERSION --local-dir .
    inversecoder build-dataset reproduce.yaml --output-dir rebuilt      -> the same content fingerprint

`reproduce.yaml` is the build's `build_config.yaml` (the sections that built the dataset, secrets redacted)
with every input named on the Hub at a commit: the source corpus at the sha its revision resolved to, the
generator M by its repo id and sha (a Hub model, or M once `run --push` published it: `lineage.py`). What
cannot be named on the Hub (a local corpus file, an unpublished M, a local judge or benchmarks folder) stays as
it was and the card lists it: that block then needs those files too.

The code is recorded when the dataset is built (`core.versions.code_reference`: push.code_url /
push.code_revision, else the git checkout or pip's record); `link_code` updates the URL and a configured sha
when `run --push` finds them changed since (push settings are in no step's fingerprint).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from inversecoder.core.files import read_json, write_atomic
from inversecoder.core.hub_refs import is_commit_sha, is_hub_id
from inversecoder.core.layout import BUILD_CONFIG, BUILD_INFO, BUILD_REPORT

if TYPE_CHECKING:
    from inversecoder.core.config import RunConfig

logger = logging.getLogger(__name__)

REPRODUCE_CONFIG = "reproduce.yaml"
HEADER = (
    "# The config that rebuilds this dataset from the Hub (see the card's Reproduce section):\n"
    "#   inversecoder build-dataset reproduce.yaml --output-dir rebuilt\n"
    "# It is build_config.yaml with the source corpus and the generator M named by Hub repo id and commit sha.\n"
)


def reproduce_config(folder: Path, report: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The folder's `build_config.yaml` with its inputs named on the Hub at commits, and what stays local
    (one line each, for the card)."""
    if not (folder / BUILD_CONFIG).is_file():  # a folder built before the build saved its config
        return {}, [f"no `{BUILD_CONFIG}`: this build did not record its config; rebuild it to publish one"]
    config = yaml.safe_load((folder / BUILD_CONFIG).read_text(encoding="utf-8")) or {}
    local: list[str] = []
    source, source_config = report.get("source") or {}, config.setdefault("source", {})
    if source.get("kind") == "hub" and is_commit_sha(source.get("revision")):
        source_config["revision"] = source["revision"]
    elif source.get("kind") == "hub":
        local.append("`source.revision`: the corpus's commit was not resolved (read offline)")
    else:
        local.append(f"`source.path`: `{source_config.get('path')}` is a local {source.get('kind', 'path')}")
    hub = (report.get("generator") or {}).get("hub")
    generator = config.setdefault("generator", {})
    if hub:
        generator["model"], generator["revision"] = hub["repo_id"], hub["commit"]
    else:
        local.append(f"`generator.model`: `{generator.get('model')}` is a local folder, not on the Hub")
    if generator.get("endpoints"):
        local.append(
            f"`generator.endpoints`: backend `{generator.get('backend')}` needs servers of that model at that commit"
        )
    judge = (config.get("decontaminate") or {}).get("judge_model")
    if judge and not is_hub_id(judge):
        local.append(f"`decontaminate.judge_model`: `{judge}` is a local folder")
    if config.get("benchmarks_dir") not in (None, "download"):
        local.append(f"`benchmarks_dir`: `{config['benchmarks_dir']}` is a local folder")
    return config, local


def write_reproduce_config(folder: Path, report: dict[str, Any]) -> list[str]:
    """Write `folder/reproduce.yaml`; returns what stays local (see `reproduce_config`)."""
    config, local = reproduce_config(folder, report)
    write_atomic(folder / REPRODUCE_CONFIG, HEADER + yaml.safe_dump(config, sort_keys=False))
    return local


def link_code(config: RunConfig) -> bool:
    """Record `push.code_url` / `push.code_revision` in OUTPUT/dataset (build_info.json, build_report.json,
    card, manifest.json) when they differ from what the build recorded. Returns whether the folder changed
    (then its step record must be rewritten, as after `lineage.link_generator`)."""
    from inversecoder.hub_cards.dataset_card import rewrite_dataset_records

    folder = config.layout.dataset
    info, report = read_json(folder / BUILD_INFO), read_json(folder / BUILD_REPORT)
    if not isinstance(info, dict) or not isinstance(report, dict) or not (folder / "README.md").is_file():
        return False
    recorded = report.get("code") or {}
    wanted = dict(recorded)
    if config.push.code_url:
        wanted["url"] = config.push.code_url
    if config.push.code_revision:
        wanted |= {"commit": config.push.code_revision, "dirty": False, "how": "push.code_revision"}
    if wanted == recorded:
        return False
    for data in (info, report):
        data["code"] = wanted
    rewrite_dataset_records(folder, info, report)
    logger.info(f"{folder} names its code {wanted.get('url')}@{wanted.get('commit')}")
    return True
