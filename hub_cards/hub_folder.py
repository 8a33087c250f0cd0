"""What a push checks before and while it publishes: the folder against its own manifest, the files
against what an existing tag already holds, and a deadline on every request to the Hub.

- A dataset folder must carry the `manifest.json` its build wrote (every file with its sha256) and
  match it; a model folder is checked against its manifest when it has one (`inversecoder train`
  writes it; a folder assembled by hand has none and is pushed with a warning). A folder that does
  not match is refused in one line: it was changed or damaged after it was written.
- Under an existing tag, the push compares the local files with the tag's (LFS files by sha256, the
  others by git blob oid): the same files are a no-op, anything else is refused (a tag is never moved).
  A dataset's card (README.md) is left out of that comparison: it carries the build time.
- huggingface_hub's HTTP client waits forever by default; `install_deadline` gives every request a
  timeout (`INVERSECODER_HUB_TIMEOUT` seconds, default 60: per connect, read or write, so a large
  upload or download that keeps moving is not cut). huggingface_hub retries uploads that time out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core.errors import UserError
from inversecoder.core.files import file_sha256
from inversecoder.core.layout import MANIFEST
from inversecoder.core.manifest import differences, read_manifest, summary

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

HUB_RECORD = "hub.json"
README = "README.md"
_SKIPPED_DIRS = {"__pycache__", ".git", ".cache", ".huggingface"}
TIMEOUT_ENV = "INVERSECODER_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0


# -- deadline --------------------------------------------------------------------------------------


def hub_timeout() -> float:
    """Seconds any one request to the Hub may wait (connect, read, write): INVERSECODER_HUB_TIMEOUT or 60."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {value!r}")
    return seconds


def install_deadline() -> float:
    """Make huggingface_hub's shared HTTP client time out after `hub_timeout()` seconds; returns them."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    seconds = hub_timeout()

    def factory() -> httpx2.Client:
        client = _http.default_client_factory()
        client.timeout = httpx2.Timeout(seconds)
        return client

    set_client_factory(factory)
    return seconds


def is_timeout(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a request that ran past its deadline."""
    import httpx2

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, httpx2.TimeoutException | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# -- the local folder ------------------------------------------------------------------------------


def local_files(folder: Path) -> list[str]:
    """Paths (posix, relative) of what gets published: everything but hidden files, caches and `hub.json`."""
    paths = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.as_posix() == HUB_RECORD:
            continue
        if any(part.startswith(".") or part in _SKIPPED_DIRS or part.endswith(".partial") for part in rel.parts):
            continue
        paths.append(rel.as_posix())
    return paths


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def verify_manifest(folder: Path, kind: str, required: bool) -> None:
    """Refuse (one line) a folder that does not hold exactly what its manifest lists."""
    files = read_manifest(folder)
    if files is None:
        if required:
            raise UserError(
                f"{folder} has no {MANIFEST} (written by `inversecoder build-dataset` since it checks what "
                "it publishes): rebuild it, or run `inversecoder run CONFIG` on its output folder, which adds it "
                "(cached model calls are not repeated)"
            )
        logger.warning(f"{folder} has no {MANIFEST}: its files cannot be checked, pushing them as they are")
        return
    found = differences(folder, files)
    if found:
        command = "build-dataset" if kind == "dataset" else "train"
        raise UserError(
            f"{folder} does not match its {MANIFEST} ({summary(found)}): it was changed or damaged after it "
            f"was written; refusing to publish it (rerun `inversecoder {command}` to rewrite it)"
        )


def check_dataset_folder(folder: Path) -> dict[str, Any]:
    from huggingface_hub import DatasetCard

    if not (folder / README).is_file() or not (folder / "build_info.json").is_file():
        raise UserError(
            f"{folder} is not a dataset folder (no README.md / build_info.json): run `inversecoder build-dataset` first"
        )
    info = read_json_file(folder / "build_info.json")
    if not info.get("version") or not info.get("fingerprint"):
        raise UserError(f"{folder / 'build_info.json'} has no version or content fingerprint: rebuild the dataset")
    verify_manifest(folder, "dataset", required=True)
    try:
        card = DatasetCard((folder / README).read_text(encoding="utf-8"))
    except Exception as error:
        raise UserError(f"the dataset card {folder / README} has invalid metadata: {error}") from None
    if not card.data.get("configs"):
        raise UserError(f"the dataset card {folder / README} lists no `configs`: rebuild the dataset")
    return info


def check_model_folder(folder: Path, names_dataset: bool = True) -> None:
    """Refuse a folder that is not a loadable, described model; warn when its card should name its Hub
    dataset (`names_dataset`: InverseCoder's does, the generator M's names its source corpus) and does not."""
    from huggingface_hub import ModelCard

    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no config.json): run `inversecoder train` first")
    if not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin")):
        raise UserError(f"{folder} has no weights (*.safetensors)")
    tokenizer_config = (
        read_json_file(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    )
    if not (folder / "chat_template.jinja").is_file() and not tokenizer_config.get("chat_template"):
        raise UserError(
            f"{folder} has no chat template (chat_template.jinja or tokenizer_config.json): "
            "a model pushed without it cannot be prompted correctly"
        )
    if not (folder / README).is_file():
        raise UserError(f"{folder} has no model card (README.md): run `inversecoder train` or `evaluate` to write it")
    verify_manifest(folder, "model", required=False)
    try:
        card = ModelCard((folder / README).read_text(encoding="utf-8"))
    except Exception as error:
        raise UserError(f"the model card {folder / README} has invalid metadata: {error}") from None
    if names_dataset and not card.data.get("datasets"):  # ModelCard.data is typed as the base CardData
        logger.warning(
            f"the model card in {folder} names no Hub dataset: push the dataset first, then rewrite the "
            "card (`inversecoder evaluate` or `train`) so that it names the dataset by repo id and commit"
        )


# -- comparing with what the Hub holds -------------------------------------------------------------


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type=repo_type)
        if isinstance(entry, RepoFile) and entry.path != ".gitattributes"
    }


def same_files(
    api: HfApi,
    repo_id: str,
    repo_type: str,
    revision: str,
    contents: dict[str, bytes | Path],
    ignore: frozenset[str] = frozenset(),
) -> bool:
    """Whether the repo at `revision` holds exactly `contents` (LFS files by sha256, others by git oid),
    paths in `ignore` aside."""
    remote = {path: entry for path, entry in remote_files(api, repo_id, repo_type, revision).items()}
    local = {path: content for path, content in contents.items() if path not in ignore}
    remote = {path: entry for path, entry in remote.items() if path not in ignore}
    if set(remote) != set(local):
        return False
    for path, entry in remote.items():
        content = local[path]
        if entry.lfs is not None:
            digest = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else file_sha256(content)
            if digest != entry.lfs.sha256:
                return False
        elif _git_blob_oid(content if isinstance(content, bytes) else content.read_bytes()) != entry.blob_id:
            return False
    return True
