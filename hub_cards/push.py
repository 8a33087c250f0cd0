"""Publish a dataset or model folder to the Hugging Face Hub: one commit per push, one tag per version.

    inversecoder push dataset OUTPUT/dataset --repo-id ORG/NAME [--tag v1.0] [--private]
    inversecoder push model OUTPUT/model --repo-id ORG/NAME [--tag v1.0] [--private]
    python -m inversecoder.hub_cards.push dataset|model DIR --repo-id ORG/NAME ...   (the same, standalone)

How a push goes:

1. The folder is checked locally (its files match its manifest.json, card metadata parses, a dataset has
   its version and fingerprint, a model has weights and a chat template) and the token is checked with
   `whoami` before anything is sent (see `hub_folder.py`; every Hub request has a deadline).
2. The repo is created if missing. If the tag already exists it is never moved: the same build (a
   same files, a dataset's card aside) is a no-op,
   anything else is an error.
3. One `create_commit` with every file (and the deletion of remote files the folder no longer has);
   files the Hub already holds are skipped through the preupload oids, so identical content makes no
   commit at all. `parent_commit` guards against a concurrent push.
4. Only after the commit exists is the tag created, on that commit: an upload that fails midway
   leaves no tag, and rerunning the same command finishes the job.
5. `hub.json` (repo id, commit sha, tag) is written into the folder, never uploaded: the model card
   reads it to name its dataset by repo id and commit. (`run --push` also pushes the generator M first
   and writes M's commit into the dataset: see `lineage.py`.)

The `<org>/NAME` placeholder the cards carry before a repo id is known is replaced by the real repo
id in the uploaded README. The token is passed to `huggingface_hub` only: never printed, never written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core.errors import UserError
from inversecoder.core.files import read_json, write_json
from inversecoder.core.layout import BUILD_INFO
from inversecoder.core.lock import LOCK_FILE, output_lock
from inversecoder.hub_cards.hub_folder import (
    HUB_RECORD,
    README,
    TIMEOUT_ENV,
    check_dataset_folder,
    check_model_folder,
    hub_timeout,
    install_deadline,
    is_timeout,
    local_files,
    remote_files,
    same_files,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from inversecoder.core.config import RunConfig

PLACEHOLDER = re.compile(r"<org>/[A-Za-z0-9][\w.-]*")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


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
    seconds = install_deadline()
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
        if is_timeout(error):
            raise UserError(
                f"the Hugging Face Hub at {constants.ENDPOINT} did not answer within {seconds:g} s "
                f"({TIMEOUT_ENV} sets the limit)"
            ) from None
        raise UserError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(error).__name__})") from None
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise UserError(f"{source} (user {me.get('name')}) is read-only: pushing needs a token with write access")
    return token


# -- local folder ---------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise UserError(f"invalid repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")


def _publishable_readme(folder: Path, repo_id: str) -> bytes:
    return PLACEHOLDER.sub(repo_id, (folder / README).read_text(encoding="utf-8")).encode("utf-8")


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
    write_json(folder / HUB_RECORD, record)


# -- pushing --------------------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    """One line about a failed request (status and URL; huggingface_hub never puts the token in these)."""
    from huggingface_hub.errors import HfHubHTTPError

    if is_timeout(error):
        return f"no answer within {hub_timeout():g} s ({TIMEOUT_ENV} sets the limit)"
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

    install_deadline()
    api = HfApi(endpoint=constants.ENDPOINT, token=token)
    contents: dict[str, bytes | Path] = {path: folder / path for path in local_files(folder)}
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
        remote = remote_files(api, repo_id, repo_type, "main") if head else {}
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


def check_license(folder: Path, kind: str) -> None:
    """Refuse to publish a dataset or model under license `unknown` (its inputs' cards could not be read when
    it was built or its card written, e.g. offline) unless the config stated it (`dataset.license` /
    `push.model_license`): a Hub user could not tell on what terms to use it."""
    from huggingface_hub import ModelCard

    from inversecoder.core.licenses import UNKNOWN, licenses_of
    from inversecoder.hub_cards.card_refs import license_record, stated_by, unread_licenses

    if kind == "dataset":
        record = license_record((read_json(folder / BUILD_INFO) or {}).get("license"))
        if UNKNOWN not in (licenses_of(record) or [UNKNOWN]) or record.get("set_by"):
            return
        why = unread_licenses(record)
        raise UserError(
            f"refusing to publish {folder}: its license is `{UNKNOWN}` ({why or 'not read'}); set dataset.license "
            "(with dataset.license_name/license_link for `other`) in the config and rerun `inversecoder run CONFIG "
            "--push` (the dataset is rebuilt from the cache), or rebuild where the corpus's and M's cards can be read"
        )
    card = ModelCard((folder / README).read_text(encoding="utf-8"))
    metadata = card.data.get("license") or UNKNOWN
    if UNKNOWN not in ([metadata] if isinstance(metadata, str) else metadata):
        return
    if stated_by("push.model_license") in card.text:
        return
    raise UserError(
        f"refusing to publish {folder}: its card's license is `{UNKNOWN}` (the base model's card could not be read "
        "when it was written); set push.model_license (with push.model_license_name/link for `other`) in the "
        "config and rerun `inversecoder run CONFIG --push` (its report step rewrites the card)"
    )


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
    info = check_dataset_folder(folder)
    check_license(folder, "dataset")
    version = info["version"]
    if tag is not None and tag != version:
        raise UserError(
            f"{folder} is version {version} of the dataset, not {tag}: its card and `load_dataset(..., "
            f"revision=...)` snippet name {version}; rebuild with dataset.version={tag} to publish it as {tag}"
        )
    token = token or resolve_token()
    contents: dict[str, bytes | Path] = {path: folder / path for path in local_files(folder)}
    message = f"Publish {info.get('name', folder.name)} {version} (content fingerprint {info['fingerprint']})"
    result = _push(
        folder,
        repo_id,
        "dataset",
        version,
        private,
        token,
        message,
        lambda api, revision: same_files(api, repo_id, "dataset", revision, contents, ignore=frozenset({README})),
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
    names_dataset: bool = True,
) -> PushResult:
    """Publish a model folder (weights, tokenizer with its chat template, card) as one commit, tagged when
    `tag` is given. Writes `FOLDER/hub.json`. `names_dataset`: warn when the card names no Hub dataset
    (InverseCoder's should; the generator M's need not)."""
    folder = Path(folder)
    _check_repo_id(repo_id)
    check_model_folder(folder, names_dataset)
    check_license(folder, "model")
    token = token or resolve_token()
    contents = {path: folder / path for path in local_files(folder)}
    readme = _publishable_readme(folder, repo_id)

    def same_build(api: HfApi, revision: str) -> bool:
        return same_files(api, repo_id, "model", revision, {**contents, README: readme})

    result = _push(folder, repo_id, "model", tag, private, token, f"Publish {folder.name} (inversecoder)", same_build)
    _write_record(folder, result.record())
    return result


# -- `inversecoder run CONFIG --push` --------------------------------------------------------------


def check_push_config(config: RunConfig) -> str:
    """For `run --push`, before any work: the repo ids make sense and the token works. Returns the token."""
    push = config.push
    if not push.dataset_repo_id and not push.model_repo_id and not push.generator_repo_id:
        raise UserError(
            "--push needs push.dataset_repo_id, push.model_repo_id and/or push.generator_repo_id in the config"
        )
    for repo_id in (push.generator_repo_id, push.dataset_repo_id, push.model_repo_id):
        if repo_id:
            _check_repo_id(repo_id)
    if push.model_repo_id and not config.train.enabled:
        raise UserError("push.model_repo_id is set but train.enabled is false: there is no model to push")
    if push.generator_repo_id and config.generator.model:
        raise UserError(
            "generator.model is set: M is not trained by this run, so there is nothing to publish to "
            "push.generator_repo_id (the dataset names that model and its commit sha by itself)"
        )
    if push.generator_repo_id and push.generator_repo_id == push.model_repo_id:
        raise UserError("push.generator_repo_id and push.model_repo_id name the same repo: M and InverseCoder need two")
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
    if (folder.resolve().parent / LOCK_FILE).exists():  # OUTPUT/dataset or OUTPUT/model: no run may write it now
        with output_lock(folder.resolve().parent):
            return _run_push(args, folder, token)
    return _run_push(args, folder, token)


def _run_push(args: argparse.Namespace, folder: Path, token: str) -> PushResult:
    push = push_dataset if args.kind == "dataset" else push_model
    return push(folder, args.repo_id, args.tag, args.private, token=token)
