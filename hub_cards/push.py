"""Publish a dataset or model folder to the Hugging Face Hub: one commit per push, one tag per version.

    inversecoder push dataset OUTPUT/dataset --repo-id ORG/NAME [--tag v1.0] [--private]
    inversecoder push model OUTPUT/model --repo-id ORG/NAME [--tag v1.0] [--private]
    python -m inversecoder.hub_cards.push dataset|model DIR --repo-id ORG/NAME ...   (the same, standalone)

How a push goes:

1. The folder is checked locally (card metadata parses, a dataset has its version and fingerprint, a
   model has weights and a chat template) and the token is checked with `whoami` before anything is sent.
2. The repo is created if missing. If the tag already exists it is never moved: the same build (a
   dataset with the same content and config fingerprints, a model with the same files) is a no-op,
   anything else is an error.
3. One `create_commit` with every file (and the deletion of remote files the folder no longer has);
   files the Hub already holds are skipped through the preupload oids, so identical content makes no
   commit at all. `parent_commit` guards against a concurrent push.
4. Only after the commit exists is the tag created, on that commit: an upload that fails midway
   leaves no tag, and rerunning the same command finishes the job.
5. `hub.json` (repo id, commit sha, tag) is written into the folder, never uploaded: the model card
   reads it to name its dataset by repo id and commit.

The `<org>/NAME` placeholder the cards carry before a repo id is known is replaced by the real repo
id in the uploaded README. The token is passed to `huggingface_hub` only: never printed, never written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core.errors import UserError
from inversecoder.core.files import file_sha256

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from inversecoder.core.config import RunConfig

HUB_RECORD = "hub.json"
README = "README.md"
PLACEHOLDER = re.compile(r"<org>/[A-Za-z0-9][\w.-]*")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
_SKIPPED_DIRS = {"__pycache__", ".git", ".cache", ".huggingface"}


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What a push left on the Hub."""

    repo_id: str
    repo_type: str  # "dataset" or "model"
    commit_sha: str
    commit_url: str
    tag: str | None
    created_commit: bool  # False: the Hub already had exactly this content
    created_tag: bool

    def record(self, **extra: Any) -> dict[str, Any]:
        """The `hub.json` written next to the pushed files (the model card's lineage comes from it)."""
        return {
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "commit": self.commit_sha,
            "commit_url": self.commit_url,
            "tag": self.tag,
            **extra,
        }


# -- token ----------------------------------------------------------------------------------------


def resolve_token() -> str:
    """The Hub token from the standard places (`HF_TOKEN`, then `hf auth login`), checked with `whoami`.

    Raises `UserError` (with what to do, never the token) when it is missing, invalid or read-only, or
    when the Hub cannot be reached: callers run this before any other work.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        raise UserError("HF_HUB_OFFLINE is set: unset it to push to the Hugging Face Hub")
    token = get_token()
    if not token:
        raise UserError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access, "
            "https://huggingface.co/settings/tokens)"
        )
    source = (
        "HF_TOKEN"
        if token in (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"))
        else "the token saved by `hf auth login`"
    )
    try:
        me = HfApi(endpoint=constants.ENDPOINT).whoami(token=token)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise UserError(
                f"{source} was rejected by {constants.ENDPOINT} (invalid or expired): set a valid token "
                "in HF_TOKEN or run `hf auth login --force`"
            ) from None
        raise UserError(f"could not check {source} with {constants.ENDPOINT} (HTTP {status})") from None
    except Exception as error:  # connection refused, DNS, timeout: httpx errors
        raise UserError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(error).__name__})") from None
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise UserError(f"{source} (user {me.get('name')}) is read-only: pushing needs a token with write access")
    return token


# -- local folder ---------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise UserError(f"invalid repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")


def _local_files(folder: Path) -> list[str]:
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


def _publishable_readme(folder: Path, repo_id: str) -> bytes:
    return PLACEHOLDER.sub(repo_id, (folder / README).read_text(encoding="utf-8")).encode("utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def _check_dataset_folder(folder: Path) -> dict[str, Any]:
    from huggingface_hub import DatasetCard

    if not (folder / README).is_file() or not (folder / "build_info.json").is_file():
        raise UserError(
            f"{folder} is not a dataset folder (no README.md / build_info.json): run `inversecoder build-dataset` first"
        )
    info = _read_json(folder / "build_info.json")
    if not info.get("version") or not info.get("fingerprint"):
        raise UserError(f"{folder / 'build_info.json'} has no version or content fingerprint: rebuild the dataset")
    try:
        card = DatasetCard((folder / README).read_text(encoding="utf-8"))
    except Exception as error:
        raise UserError(f"the dataset card {folder / README} has invalid metadata: {error}") from None
    if not card.data.get("configs"):
        raise UserError(f"the dataset card {folder / README} lists no `configs`: rebuild the dataset")
    return info


def _check_model_folder(folder: Path) -> None:
    from huggingface_hub import ModelCard

    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder (no config.json): run `inversecoder train` first")
    if not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin")):
        raise UserError(f"{folder} has no weights (*.safetensors)")
    tokenizer_config = (
        _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    )
    if not (folder / "chat_template.jinja").is_file() and not tokenizer_config.get("chat_template"):
        raise UserError(
            f"{folder} has no chat template (chat_template.jinja or tokenizer_config.json): "
            "a model pushed without it cannot be prompted correctly"
        )
    if not (folder / README).is_file():
        raise UserError(f"{folder} has no model card (README.md): run `inversecoder train` or `evaluate` to write it")
    try:
        card = ModelCard((folder / README).read_text(encoding="utf-8"))
    except Exception as error:
        raise UserError(f"the model card {folder / README} has invalid metadata: {error}") from None
    if not card.data.get("datasets"):  # ModelCard.data is typed as the base CardData
        logger.warning(
            f"the model card in {folder} names no Hub dataset: push the dataset first, then rewrite the "
            "card (`inversecoder evaluate` or `train`) so that it names the dataset by repo id and commit"
        )


def read_hub_record(folder: str | Path) -> dict[str, Any] | None:
    """The `hub.json` a push left in `folder` (repo id, commit sha, tag, ...), or None.

    For a dataset folder the record only counts if it describes the build now in the folder (same
    content fingerprint): a rebuilt folder is not what was published.
    """
    folder = Path(folder)
    path = folder / HUB_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if (
        (folder / "build_info.json").is_file()
        and "fingerprint" in record
        and json.loads((folder / "build_info.json").read_text(encoding="utf-8")).get("fingerprint")
        != record["fingerprint"]
    ):
        return None
    return record


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    tmp = folder / (HUB_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(folder / HUB_RECORD)


# -- comparing with what the Hub holds -------------------------------------------------------------


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type=repo_type)
        if isinstance(entry, RepoFile) and entry.path != ".gitattributes"
    }


def _same_files(api: HfApi, repo_id: str, repo_type: str, revision: str, contents: dict[str, bytes | Path]) -> bool:
    """Whether the repo at `revision` holds exactly `contents` (LFS files by sha256, others by git oid)."""
    remote = _remote_files(api, repo_id, repo_type, revision)
    if set(remote) != set(contents):
        return False
    for path, entry in remote.items():
        content = contents[path]
        if entry.lfs is not None:
            local = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else file_sha256(content)
            if local != entry.lfs.sha256:
                return False
        elif _git_blob_oid(content if isinstance(content, bytes) else content.read_bytes()) != entry.blob_id:
            return False
    return True


def _same_dataset_build(api: HfApi, repo_id: str, revision: str, info: dict[str, Any]) -> bool:
    """Whether the dataset at `revision` is this build: same content and config fingerprints (the card's
    build time may differ, the data may not)."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = api.hf_hub_download(repo_id, "build_info.json", repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return False
    remote = json.loads(Path(path).read_text(encoding="utf-8"))
    return all(remote.get(key) == info.get(key) for key in ("fingerprint", "config_fingerprint"))


# -- pushing --------------------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    """One line about a failed request (status and URL; huggingface_hub never puts the token in these)."""
    from huggingface_hub.errors import HfHubHTTPError

    cause = error
    while not isinstance(cause, HfHubHTTPError) and cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    text = re.sub(r"(https?://[^\s'\"?]*)\?[^\s'\"]*", r"\1", text)  # a pre-signed upload URL is a credential
    return text if isinstance(cause, HfHubHTTPError) else f"{type(cause).__name__}: {text}"


def _push(
    folder: Path,
    repo_id: str,
    repo_type: str,
    tag: str | None,
    private: bool,
    token: str,
    message: str,
    same_build: Callable[[HfApi, str], bool],
) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=constants.ENDPOINT, token=token)
    contents: dict[str, bytes | Path] = {path: folder / path for path in _local_files(folder)}
    contents[README] = _publishable_readme(folder, repo_id)
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    where = f"{repo_type} {repo_id}"

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type=repo_type).private:
            raise UserError(
                f"{where} exists and is public: refusing to push with --private (make the repo private "
                "on the Hub first, or push without --private)"
            )
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)
        head = next((branch.target_commit for branch in refs.branches if branch.name == "main"), None)
        tags = {ref.name: ref.target_commit for ref in refs.tags}
        if tag is not None and tag in tags:
            if not same_build(api, tags[tag]):
                raise UserError(
                    f"tag {tag} of {where} already points to commit {tags[tag][:12]} with other content; "
                    f"a published version is never moved: pick a new tag (for a dataset, rebuild with "
                    f"dataset.version set to it)"
                )
            url = f"{api.endpoint}/{prefix}{repo_id}/commit/{tags[tag]}"
            logger.info(f"{where}: tag {tag} already holds this build, nothing to push: {url}")
            return PushResult(repo_id, repo_type, tags[tag], url, tag, created_commit=False, created_tag=False)
        remote = _remote_files(api, repo_id, repo_type, "main") if head else {}
    except UserError:
        raise
    except Exception as error:  # HTTP errors (no write access, ...), connection errors
        raise UserError(f"cannot prepare the push to {where}: {_describe(error)}") from None

    operations: list[Any] = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for path, content in contents.items()
    ]
    operations += [CommitOperationDelete(path_in_repo=path) for path in sorted(set(remote) - set(contents))]
    try:
        commit = api.create_commit(
            repo_id, operations, commit_message=message, repo_type=repo_type, revision="main", parent_commit=head
        )
    except Exception as error:  # HTTP errors, a dropped connection, an LFS upload that failed
        raise UserError(
            f"the push to {where} failed during the upload ({_describe(error)}); no tag was created. "
            "Rerun the same command: files the Hub already holds are not sent again"
        ) from None
    created_commit = commit.oid != head
    url = commit.commit_url
    if created_commit:
        logger.info(f"{where}: committed {commit.oid[:12]}: {url}")
    else:
        logger.info(f"{where}: no change since commit {commit.oid[:12]}, no new commit: {url}")
    created_tag = False
    if tag is not None:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type=repo_type, tag_message=message)
        except Exception as error:  # HTTP errors, a dropped connection
            response = error.response if isinstance(error, HfHubHTTPError) else None
            status = response.status_code if response is not None else None
            if status == 409:
                raise UserError(
                    f"tag {tag} of {where} was created by someone else during this push: check it before pushing again"
                ) from None
            raise UserError(
                f"commit {commit.oid[:12]} is on {where} but tagging it {tag} failed ({_describe(error)}): "
                "rerun the same command to tag it"
            ) from None
        created_tag = True
        logger.info(f"{where}: tagged {tag}")
    return PushResult(repo_id, repo_type, commit.oid, url, tag, created_commit, created_tag)


def push_dataset(
    folder: str | Path,
    repo_id: str,
    tag: str | None = None,
    private: bool = False,
    *,
    token: str | None = None,
) -> PushResult:
    """Publish a dataset folder (from `build-dataset`) as one commit tagged with its build version.

    `tag` defaults to the build's `version` (build_info.json) and must equal it: `load_dataset(repo,
    revision=version)` then returns exactly this build. Writes `FOLDER/hub.json`.
    """
    folder = Path(folder)
    _check_repo_id(repo_id)
    info = _check_dataset_folder(folder)
    version = info["version"]
    if tag is not None and tag != version:
        raise UserError(
            f"{folder} is version {version} of the dataset, not {tag}: its card and `load_dataset(..., "
            f"revision=...)` snippet name {version}; rebuild with dataset.version={tag} to publish it as {tag}"
        )
    token = token or resolve_token()
    message = f"Publish {info.get('name', folder.name)} {version} (content fingerprint {info['fingerprint']})"
    result = _push(
        folder,
        repo_id,
        "dataset",
        version,
        private,
        token,
        message,
        lambda api, revision: _same_dataset_build(api, repo_id, revision, info),
    )
    _write_record(
        folder,
        result.record(
            version=version, fingerprint=info["fingerprint"], config_fingerprint=info.get("config_fingerprint")
        ),
    )
    return result


def push_model(
    folder: str | Path,
    repo_id: str,
    tag: str | None = None,
    private: bool = False,
    *,
    token: str | None = None,
) -> PushResult:
    """Publish a model folder (weights, tokenizer with its chat template, card) as one commit, tagged when
    `tag` is given. Writes `FOLDER/hub.json`."""
    folder = Path(folder)
    _check_repo_id(repo_id)
    _check_model_folder(folder)
    token = token or resolve_token()
    contents = {path: folder / path for path in _local_files(folder)}
    readme = _publishable_readme(folder, repo_id)

    def same_build(api: HfApi, revision: str) -> bool:
        return _same_files(api, repo_id, "model", revision, {**contents, README: readme})

    result = _push(folder, repo_id, "model", tag, private, token, f"Publish {folder.name} (inversecoder)", same_build)
    _write_record(folder, result.record())
    return result


# -- `inversecoder run CONFIG --push` --------------------------------------------------------------


def check_push_config(config: RunConfig) -> str:
    """For `run --push`, before any work: the repo ids make sense and the token works. Returns the token."""
    push = config.push
    if not push.dataset_repo_id and not push.model_repo_id:
        raise UserError("--push needs push.dataset_repo_id and/or push.model_repo_id in the config")
    for repo_id in (push.dataset_repo_id, push.model_repo_id):
        if repo_id:
            _check_repo_id(repo_id)
    if push.model_repo_id and not config.train.enabled:
        raise UserError("push.model_repo_id is set but train.enabled is false: there is no model to push")
    return resolve_token()


def push_run_dataset(config: RunConfig, token: str) -> PushResult | None:
    """Push OUTPUT/dataset to `push.dataset_repo_id` (tag: `dataset.version`); None when no repo is set."""
    if not config.push.dataset_repo_id:
        return None
    return push_dataset(config.layout.dataset, config.push.dataset_repo_id, None, config.push.private, token=token)


def push_run_model(config: RunConfig, token: str) -> PushResult | None:
    """Push OUTPUT/model to `push.model_repo_id` (tag: `push.model_tag`); None when no repo is set."""
    if not config.push.model_repo_id:
        return None
    return push_model(
        config.layout.model, config.push.model_repo_id, config.push.model_tag, config.push.private, token=token
    )


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `inversecoder push`: KIND DIR --repo-id ORG/NAME [--tag TAG] [--private]."""
    parser.add_argument("kind", choices=["dataset", "model"], help="what DIR holds")
    parser.add_argument("dir", help="the folder to publish (OUTPUT/dataset or OUTPUT/model)")
    parser.add_argument("--repo-id", required=True, help="Hub repo ORG/NAME (created if missing)")
    parser.add_argument(
        "--tag",
        help="version tag of the commit; a dataset's defaults to (and must equal) its build "
        "version; an existing tag is never moved",
    )
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    return parser


def run_command(args: argparse.Namespace) -> PushResult:
    """`inversecoder push ...`: the token is checked first, then the folder is published."""
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UserError(f"no such folder: {folder}")
    _check_repo_id(args.repo_id)
    token = resolve_token()
    push = push_dataset if args.kind == "dataset" else push_model
    return push(folder, args.repo_id, args.tag, args.private, token=token)
