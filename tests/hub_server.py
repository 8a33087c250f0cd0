"""A small Hugging Face Hub-protocol server for tests, on 127.0.0.1.

One module (over 500 lines): the Hub protocol's routes depend on one in-memory store of repos, refs and LFS objects.

The real clients (`huggingface_hub`, `datasets`, `transformers`) talk to it through
`HF_ENDPOINT=http://127.0.0.1:PORT` with `HF_HUB_DISABLE_XET=1` (plain LFS uploads). It implements
what they use to publish and to read back:

- auth: `whoami-v2` (and an empty `agent-harnesses` registry); tokens map to a user, its orgs and a role
  (`read` / `write`)
- repos: create (with the Hub's initial `.gitattributes` commit), info (+ `/revision/REV`), visibility
- writes: preupload (upload mode + the existing file's `oid`, so unchanged files are skipped),
  LFS batch + PUT (per repo, by sha256: what a repo already holds is not asked again),
  NDJSON commit (atomic, `parentCommit` checked),
  tag create (never moved: 409) / delete, `validate-yaml`
- reads: resolve (GET/HEAD, `Range`), tree (recursive, paths), paths-info, refs, commits
- the web pages cards link to: a repo, a commit, a folder or a file at a revision (200 when it exists, else 404)

Repos live in `root`: `objects/<sha256>` holds every blob, `state.json` the repos (commits with
git-like shas: sha1 of tree + parent + date + message; branches; tags). Faults for tests:
`server.fail("lfs_put" | "commit", times=1, status=507)` makes the next such requests fail
(`status=None` drops the connection without an answer).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (
    ".parquet",
    ".arrow",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".pdf",
    ".zip",
    ".gz",
    ".tar",
    ".zst",
    ".npy",
    ".npz",
    ".pkl",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES)
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
SEGMENT = r"[^/]+"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Token:
    user: str
    role: str = "write"
    orgs: tuple[str, ...] = ()

    def can_write(self, namespace: str) -> bool:
        return self.role == "write" and namespace in (self.user, *self.orgs)


@dataclass
class Fault:
    remaining: int
    status: int | None


@dataclass
class HubServer:
    """`with HubServer(root, {"hf_abc": Token("alice")}) as hub:` then `HF_ENDPOINT=hub.url`."""

    root: Path
    tokens: dict[str, Token] = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list, repr=False)  # (method, path, status): no headers
    counters: dict[str, int] = field(default_factory=dict)
    _faults: dict[str, Fault] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        state = self.root / "state.json"
        self.repos: dict[str, dict[str, Any]] = json.loads(state.read_text()) if state.is_file() else {}
        self.lock = threading.RLock()
        self._secret = secrets.token_hex(16)
        self._http: ThreadingHTTPServer | None = None

    # -- lifetime ---------------------------------------------------------------------------------
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._http = ThreadingHTTPServer((self.host, self.port), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="hub-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test helpers -----------------------------------------------------------------------------
    def fail(self, what: str, times: int = 1, status: int | None = 507) -> None:
        """Make the next `times` requests of kind `what` ("lfs_put", "commit") fail."""
        self._faults[what] = Fault(times, status)

    def repo(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        return self.repos.get(f"{repo_type}/{repo_id}")

    def history(self, repo_type: str, repo_id: str, revision: str = "main") -> list[str]:
        """Commit shas reachable from `revision`, newest first."""
        repo = self.repos[f"{repo_type}/{repo_id}"]
        sha, shas = self._resolve(repo, revision), []
        while sha:
            shas.append(sha)
            sha = repo["commits"][sha]["parent"]
        return shas

    def tags(self, repo_type: str, repo_id: str) -> dict[str, str]:
        return {name: tag["commit"] for name, tag in self.repos[f"{repo_type}/{repo_id}"]["tags"].items()}

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[f"{repo_type}/{repo_id}"]
        tree = repo["commits"][self._resolve(repo, revision)]["tree"]
        return {path: self._blob(entry) for path, entry in tree.items()}

    def _take_fault(self, what: str) -> Fault | None:
        fault = self._faults.get(what)
        if fault is None or fault.remaining <= 0:
            return None
        fault.remaining -= 1
        return fault

    def _signature(self, repo_type: str, repo_id: str, oid: str) -> str:
        return hashlib.sha256(f"{self._secret}/{repo_type}/{repo_id}/{oid}".encode()).hexdigest()[:32]

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- storage ----------------------------------------------------------------------------------
    def _save(self) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self.repos, indent=1))
        tmp.replace(self.root / "state.json")

    def _store(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / sha256
        if not path.exists():
            path.write_bytes(data)
        return sha256

    def _blob(self, entry: dict[str, Any]) -> bytes:
        return (self.root / "objects" / entry["sha256"]).read_bytes()

    def _entry(self, data: bytes, lfs: bool) -> dict[str, Any]:
        sha256 = self._store(data)
        oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return {"oid": oid, "sha256": sha256, "size": len(data), "lfs": lfs}

    @staticmethod
    def _commit_sha(tree: dict[str, Any], parent: str | None, date: str, title: str, message: str) -> str:
        listing = "".join(f"{path} {entry['oid']}\n" for path, entry in sorted(tree.items()))
        text = (
            f"tree {hashlib.sha1(listing.encode()).hexdigest()}\n"
            f"parent {parent or ''}\n"
            f"date {date}\n\n"
            f"{title}\n\n"
            f"{message}"
        )
        return hashlib.sha1(text.encode()).hexdigest()

    def _add_commit(
        self, repo: dict[str, Any], branch: str, tree: dict[str, Any], title: str, message: str, author: str
    ) -> str:
        parent = repo["branches"].get(branch)
        date = _now()
        sha = self._commit_sha(tree, parent, date, title, message)
        repo["commits"][sha] = {
            "parent": parent,
            "tree": tree,
            "title": title,
            "message": message,
            "date": date,
            "author": author,
        }
        repo["branches"][branch] = sha
        repo["lastModified"] = date
        return sha

    @staticmethod
    def _resolve(repo: dict[str, Any], revision: str) -> str:
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["tags"]:
            return repo["tags"][revision]["commit"]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in repo["commits"] if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _git_ls(self, tree: dict[str, Any], folder: str, recursive: bool) -> list[dict[str, Any]]:
        """Tree entries under `folder` ("" = root), as the Hub's tree API lists them (folders first)."""
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        dirs: dict[str, list[str]] = {}
        files = []
        for path, entry in tree.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            if len(parts) == 1:
                files.append(self._file_info(path, entry))
            else:
                for depth in range(1, len(parts) if recursive else 2):
                    dirs.setdefault(prefix + "/".join(parts[:depth]), []).append(path)
                if recursive:
                    files.append(self._file_info(path, entry))
        if prefix and not files and not dirs:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        folders = [self._dir_info(tree, path) for path in sorted(dirs)]
        return folders + sorted(files, key=lambda f: f["path"])

    @staticmethod
    def _file_info(path: str, entry: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            pointer = lfs_pointer(entry["sha256"], entry["size"])
            info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": len(pointer)}
        return info

    @staticmethod
    def _dir_info(tree: dict[str, Any], path: str) -> dict[str, Any]:
        listing = "".join(f"{p} {e['oid']}\n" for p, e in sorted(tree.items()) if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}

    def _path_info(self, tree: dict[str, Any], path: str) -> dict[str, Any] | None:
        path = path.strip("/")
        if path in tree:
            return self._file_info(path, tree[path])
        if any(p.startswith(path + "/") for p in tree):
            return self._dir_info(tree, path)
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet; requests are kept in hub.requests
        pass

    # -- plumbing ---------------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self._raw

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        body = self._body()
        if "application/x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            return {key: values if key == "paths" else values[0] for key, values in parse_qs(body.decode()).items()}
        return json.loads(body or b"{}")

    def _send(
        self,
        status: int,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        head: bool = False,
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        content_type = "application/octet-stream" if raw is not None else "application/json"
        for key, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not (head or self.command == "HEAD"):
            self.wfile.write(body)
        self.hub.requests.append((self.command, self.path.split("?")[0], status))

    def _error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, {"error": error.message}, headers)

    def _token(self) -> Token | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        value = auth.removeprefix("Bearer ").strip()
        token = self.hub.tokens.get(value)
        if token is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return token

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> dict[str, Any]:
        token = self._token()
        repo = self.hub.repo(repo_type, repo_id)
        namespace = repo_id.split("/")[0]
        member = token is not None and namespace in (token.user, *token.orgs)
        if repo is None or (repo["private"] and not member):
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write and (token is None or not token.can_write(namespace)):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        head = method == "HEAD"
        self._raw = self._read_body()
        try:
            with self.hub.lock:
                for pattern, verb, handler in ROUTES:
                    if verb == method or (verb == "GET" and head):
                        match = re.fullmatch(pattern, path)
                        if match:
                            groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                            return handler(self, query=query, head=head, **groups)
            raise HubError(404, f"no route for {method} {path}")
        except HubError as error:
            self._error(error)
        except _Dropped:
            self.close_connection = True
            self.hub.requests.append((method, path, 0))

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    # -- auth and repos ---------------------------------------------------------------------------
    def whoami(self, **_: Any) -> None:
        token = self._token()
        if token is None:
            raise HubError(401, "You must be authenticated")
        self._send(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(token.user.encode()).hexdigest()[:24],
                "name": token.user,
                "fullname": token.user,
                "orgs": [{"type": "org", "name": org} for org in token.orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": token.role}},
            },
        )

    def agent_harnesses(self, **_: Any) -> None:  # the client's best-effort telemetry registry: empty
        self._send(200, {"standardEnvVars": [], "harnesses": {}})

    def create_repo(self, **_: Any) -> None:
        token = self._token()
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or (token.user if token else None)
        if token is None or namespace is None or not token.can_write(namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_id = f"{namespace}/{body['name']}"
        url = f"{self.hub.url}/{PREFIX[repo_type]}{repo_id}"
        if self.hub.repo(repo_type, repo_id) is not None:
            message = f"You already created this {repo_type} repo"
            return self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
        private = body.get("visibility") == "private" or body.get("private") is True
        repo: dict[str, Any] = {
            "type": repo_type,
            "id": repo_id,
            "private": private,
            "createdAt": _now(),
            "commits": {},
            "branches": {},
            "tags": {},
            "lfs": {},
        }
        self.hub._add_commit(
            repo,
            "main",
            {".gitattributes": self.hub._entry(GITATTRIBUTES.encode(), False)},
            "initial commit",
            "",
            "system",
        )
        self.hub.repos[f"{repo_type}/{repo_id}"] = repo
        self.hub._save()
        self._send(200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def validate_yaml(self, **_: Any) -> None:
        content = self._json_body().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []})
        if data is not None and not isinstance(data, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def repo_info(self, type: str, repo: str, rev: str | None = None, head: bool = False, **_: Any) -> None:
        repo_type = TYPES[type]
        data = self._repo(repo_type, repo)
        sha = self.hub._resolve(data, rev or "main")
        commit = data["commits"][sha]
        card: dict[str, Any] = {}
        if "README.md" in commit["tree"]:
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", self.hub._blob(commit["tree"]["README.md"]).decode(), re.S)
            card = (yaml.safe_load(match.group(1)) or {}) if match else {}
        siblings = []
        for path, entry in sorted(commit["tree"].items()):
            sibling: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry["lfs"]:
                pointer = lfs_pointer(entry["sha256"], entry["size"])
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": len(pointer)}
            siblings.append(sibling)
        self._send(
            200,
            {
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "id": repo,
                "author": repo.split("/")[0],
                "sha": sha,
                "private": data["private"],
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "createdAt": data["createdAt"],
                "lastModified": commit["date"],
                "cardData": card,
                "siblings": siblings,
            },
            head=head,
        )

    # -- writes -----------------------------------------------------------------------------------
    def preupload(self, type: str, repo: str, rev: str, **_: Any) -> None:
        repo_type = TYPES[type]
        data = self._repo(repo_type, repo, write=True)
        tree = data["commits"][self.hub._resolve(data, rev)]["tree"]
        files = []
        for item in self._json_body()["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].lower().endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_SIZE or b"\0" in sample
            existing = tree.get(item["path"])
            oid = None if existing is None else (existing["sha256"] if existing["lfs"] else existing["oid"])
            files.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._send(200, {"files": files, "commitOid": data["branches"].get(rev)})

    def lfs_batch(self, prefix: str | None, repo: str, **_: Any) -> None:
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(prefix or "", "model")
        data = self._repo(repo_type, repo, write=True)
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for item in body["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in data["lfs"]:  # LFS storage is per repo, as on the Hub
                href = (
                    f"{self.hub.url}/_lfs/{repo_type}/{repo}/{item['oid']}?size={item['size']}"
                    f"&sig={self.hub._signature(repo_type, repo, item['oid'])}"
                )  # a pre-signed URL, like S3's
                answer["actions"] = {"upload": {"href": href, "expires_in": 3600}}
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, repo_type: str, repo: str, oid: str, query: dict[str, list[str]], **_: Any) -> None:
        data = self._body()
        fault = self.hub._take_fault("lfs_put")
        if fault is not None:
            if fault.status is None:
                raise _Dropped()
            raise HubError(fault.status, "simulated storage failure during LFS upload")
        if hashlib.sha256(data).hexdigest() != oid or len(data) != int(query.get("size", [len(data)])[0]):
            raise HubError(400, "uploaded content does not match its oid/size")
        if query.get("sig", [""])[0] != self.hub._signature(repo_type, repo, oid):
            raise HubError(403, "invalid signature")
        self.hub._store(data)
        self.hub.repos[f"{repo_type}/{repo}"]["lfs"][oid] = len(data)
        self.hub._save()
        self.hub._count("lfs_put")
        self._send(200, {})

    def commit(self, type: str, repo: str, rev: str, **_: Any) -> None:
        repo_type = TYPES[type]
        data = self._repo(repo_type, repo, write=True)
        lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
        fault = self.hub._take_fault("commit")
        if fault is not None:
            if fault.status is None:
                raise _Dropped()
            raise HubError(fault.status, "simulated server failure during commit")
        if rev not in data["branches"]:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not data["branches"][rev].startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(data["commits"][data["branches"][rev]]["tree"])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = str(PurePosixPath(value["path"]))
            if key == "file":
                tree[path] = self.hub._entry(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in data["lfs"]:
                    raise HubError(
                        422,
                        f"Your push was rejected because an LFS pointer pointed to a file that does not exist: {path}",
                    )
                size = data["lfs"][value["oid"]]
                pointer = lfs_pointer(value["oid"], size)
                tree[path] = {"oid": git_blob_oid(pointer), "sha256": value["oid"], "size": size, "lfs": True}
            elif key == "deletedFile":
                if tree.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                for name in [p for p in tree if p.startswith(path.rstrip("/") + "/")]:
                    del tree[name]
            else:
                raise HubError(400, f"unsupported commit operation {key}")
        token = self._token()
        assert token is not None  # _repo(write=True) refused anonymous writes
        sha = self.hub._add_commit(
            data, rev, tree, header.get("summary", ""), header.get("description", ""), token.user
        )
        self.hub._save()
        self.hub._count("commit")
        self._send(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self.hub.url}/{PREFIX[repo_type]}{repo}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            },
        )

    def create_tag(self, type: str, repo: str, rev: str, **_: Any) -> None:
        data = self._repo(TYPES[type], repo, write=True)
        body = self._json_body()
        sha = self.hub._resolve(data, rev)
        name = body["tag"]
        if name in data["tags"] or name in data["branches"]:
            raise HubError(409, f"Tag {name} already exists")
        data["tags"][name] = {"commit": sha, "message": body.get("message", "")}
        self.hub._save()
        self._send(200, {})

    def delete_tag(self, type: str, repo: str, rev: str, **_: Any) -> None:
        data = self._repo(TYPES[type], repo, write=True)
        if data["tags"].pop(rev, None) is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        self.hub._save()
        self._send(200, {})

    # -- reads ------------------------------------------------------------------------------------
    def refs(self, type: str, repo: str, **_: Any) -> None:
        data = self._repo(TYPES[type], repo)
        self._send(
            200,
            {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                    for n, s in sorted(data["branches"].items())
                ],
                "tags": [
                    {"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["commit"]}
                    for n, t in sorted(data["tags"].items())
                ],
                "converts": [],
                "pullRequests": [],
            },
        )

    def commits(self, type: str, repo: str, rev: str, **_: Any) -> None:
        data = self._repo(TYPES[type], repo)
        items, sha = [], self.hub._resolve(data, rev)
        while sha:
            commit = data["commits"][sha]
            items.append(
                {
                    "id": sha,
                    "title": commit["title"],
                    "message": commit["message"],
                    "date": commit["date"],
                    "authors": [{"user": commit["author"]}],
                }
            )
            sha = commit["parent"]
        self._send(200, items)

    def tree(self, type: str, repo: str, rev: str, path: str | None, query: dict[str, list[str]], **_: Any) -> None:
        data = self._repo(TYPES[type], repo)
        sha = self.hub._resolve(data, rev)
        commit = data["commits"][sha]
        recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
        entries = self.hub._git_ls(commit["tree"], path or "", recursive)
        if query.get("expand", ["False"])[0].lower() in ("true", "1"):
            for entry in entries:
                entry["lastCommit"] = {"id": sha, "title": commit["title"], "date": commit["date"]}
        self._send(200, entries)

    def paths_info(self, type: str, repo: str, rev: str, **_: Any) -> None:
        data = self._repo(TYPES[type], repo)
        body = self._json_body()
        sha = self.hub._resolve(data, rev)
        commit = data["commits"][sha]
        paths = body.get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths
        infos = [info for p in paths if (info := self.hub._path_info(commit["tree"], p))]
        if str(body.get("expand", "")).lower() in ("true", "1"):
            for info in infos:
                info["lastCommit"] = {"id": sha, "title": commit["title"], "date": commit["date"]}
        self._send(200, infos)

    def resolve(self, prefix: str | None, repo: str, rev: str, path: str, head: bool, **_: Any) -> None:
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(prefix or "", "model")
        data = self._repo(repo_type, repo)
        sha = self.hub._resolve(data, rev)
        entry = data["commits"][sha]["tree"].get(path)
        if entry is None:
            message = "Entry not found"
            return self._send(
                404,
                {"error": message},
                {"X-Error-Code": "EntryNotFound", "X-Error-Message": message, "X-Repo-Commit": sha},
                head=head,
            )
        blob = self.hub._blob(entry)
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])})
        status, body = 200, blob
        wanted = self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            size = len(blob)
            if not match or (not match.group(1) and not match.group(2)):
                raise HubError(416, "invalid range")
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(0, size - int(match.group(2))), size - 1
            if start >= size or start > end:
                return self._send(
                    416, {"error": "range not satisfiable"}, {"Content-Range": f"bytes */{size}"}, head=head
                )
            status, body = 206, blob[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, headers=headers, raw=body, head=head)

    # -- the pages a card links to ----------------------------------------------------------------
    def page(
        self, prefix: str | None, repo: str, kind: str | None, rev: str | None, path: str | None, **_: Any
    ) -> None:
        """The Hub's web pages that cards link to (`ORG/NAME`, `/tree/REV[/DIR]`, `/blob/REV/FILE`,
        `/commit/REV`; datasets under `/datasets/`): 200 with a stub page when what it shows exists, else 404."""
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(prefix or "", "model")
        data = self._repo(repo_type, repo)
        if kind is not None:
            tree = data["commits"][self.hub._resolve(data, rev or "main")]["tree"]
            found = {
                "commit": path is None,
                "tree": path is None or any(p.startswith(path.strip("/") + "/") for p in tree),
                "blob": path in tree,
            }[kind]
            if not found:
                raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound")
        html = f"<html><body>{repo_type} {repo} {kind or ''} {rev or ''} {path or ''}</body></html>".encode()
        self._send(200, headers={"Content-Type": "text/html"}, raw=html)


class _Dropped(Exception):
    """Close the connection without an answer (a server dying mid-request)."""


API = r"/api/(?P<type>models|datasets|spaces)/" + REPO
ROUTES: list[tuple[str, str, Any]] = [
    (r"/api/whoami-v2", "GET", _Handler.whoami),
    (r"/api/agent-harnesses", "GET", _Handler.agent_harnesses),
    (r"/api/repos/create", "POST", _Handler.create_repo),
    (r"/api/validate-yaml", "POST", _Handler.validate_yaml),
    (API + rf"/preupload/(?P<rev>{SEGMENT})", "POST", _Handler.preupload),
    (API + rf"/commit/(?P<rev>{SEGMENT})", "POST", _Handler.commit),
    (API + rf"/tag/(?P<rev>{SEGMENT})", "POST", _Handler.create_tag),
    (API + rf"/tag/(?P<rev>{SEGMENT})", "DELETE", _Handler.delete_tag),
    (API + r"/refs", "GET", _Handler.refs),
    (API + rf"/commits/(?P<rev>{SEGMENT})", "GET", _Handler.commits),
    (API + rf"/tree/(?P<rev>{SEGMENT})(?:/(?P<path>.+))?", "GET", _Handler.tree),
    (API + rf"/paths-info/(?P<rev>{SEGMENT})", "POST", _Handler.paths_info),
    (API + rf"(?:/revision/(?P<rev>{SEGMENT}))?", "GET", _Handler.repo_info),
    (r"/(?:(?P<prefix>datasets|spaces)/)?" + REPO + r"\.git/info/lfs/objects/batch", "POST", _Handler.lfs_batch),
    (r"/_lfs/(?P<repo_type>model|dataset|space)/" + REPO + r"/(?P<oid>[0-9a-f]{64})", "PUT", _Handler.lfs_put),
    (r"/(?P<prefix>datasets|spaces)/" + REPO + rf"/resolve/(?P<rev>{SEGMENT})/(?P<path>.+)", "GET", _Handler.resolve),
    (r"/(?P<prefix>)" + REPO + rf"/resolve/(?P<rev>{SEGMENT})/(?P<path>.+)", "GET", _Handler.resolve),
    (
        r"/(?:(?P<prefix>datasets|spaces)/)?(?!api/)" + REPO + rf"(?:/(?P<kind>tree|blob|commit)/(?P<rev>{SEGMENT})"
        r"(?:/(?P<path>.+))?)?/?",
        "GET",
        _Handler.page,
    ),
]


def client_environment(url: str, token: str, hf_home: str | os.PathLike[str]) -> dict[str, str]:
    """The environment of a client process talking to the server at `url` as `token`: this process's, without
    its Hub settings and proxies, online, with its own HF_HOME."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGING_FACE_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    return env | {
        "HF_ENDPOINT": url,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "TOKENIZERS_PARALLELISM": "false",
    }
