"""An in-memory stand-in for the Hugging Face Hub's HTTP API, standard library only (tests).

It answers the endpoints `huggingface_hub` 2.4 calls for `create_repo`, `upload_folder`
(validate-yaml, tree listing, preupload, LFS batch and verify, NDJSON commit), `create_tag`,
`model_info` / revision resolution and file download (`snapshot_download`, `hf_hub_download`).
Repos live in memory: every commit gets its own 40-hex id, branches and tags point at commits,
files carry git blob ids as ETags.

Large files go as on the real Hub: `*.safetensors` (the pattern of a new repo's .gitattributes)
are stored by Git LFS. Preupload answers "lfs" for them, the client asks the LFS batch endpoint
where to put each object, PUTs it to a second server standing in for the Hub's storage (another
origin, as a CDN is), has it verified, and commits an `lfsFile` pointer; a commit that carries a
large file's bytes itself is refused. Downloads of large files are redirected (302) to the
storage server, the Hub's answer carrying the object's SHA-256 as `X-Linked-Etag`. The Hub's
other large-file storage, Xet, is not stood in for: clients run with HF_HUB_DISABLE_XET=1, and
then use LFS as they do against the real Hub.

    with StandInHub(token="secret") as hub:
        env = {"HF_ENDPOINT": hub.endpoint, ...}   # for a fresh process that imports huggingface_hub

Requests the stand-in does not know are answered 404 and recorded in `hub.unhandled`, so a
test can insist the client used nothing else.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

COMMIT_ID = re.compile(r"[0-9a-f]{40}")
INITIAL_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
LARGE_FILE_SUFFIX = ".safetensors"  # what INITIAL_GITATTRIBUTES sends to LFS
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"


def is_large_file(path: str) -> bool:
    return path.endswith(LARGE_FILE_SUFFIX)


def lfs_pointer(data: bytes) -> bytes:
    """The small text file git keeps in place of a large file."""
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


def git_blob_id(data: bytes) -> str:
    """What git (and the Hub, for non-LFS files) uses as a file's id: sha1("blob <size>\\0" + data)."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch, a tag or a full commit id -> the commit, or None."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and COMMIT_ID.fullmatch(revision):
            oid = revision
        return self.commits.get(oid) if oid else None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, repo_commit: str | None = None,
                 body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.repo_commit = status, message, code, repo_commit
        self.body = body or {}


class HubState:
    """Repos, commits, branches and tags; whatever changes them holds the lock."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.large_objects: dict[str, bytes] = {}  # LFS storage: SHA-256 hex -> bytes
        self.lock = threading.Lock()
        self._sequence = 0

    def _new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes]) -> Commit:
        self._sequence += 1
        tree = hashlib.sha1("".join(f"{path}\0{git_blob_id(data)}\n" for path, data in sorted(files.items()))
                            .encode()).hexdigest()
        oid = hashlib.sha1(f"tree {tree}\nparent {parent}\nsequence {self._sequence}\n\n{message}".encode())
        date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # the Hub's format
        commit = Commit(oid.hexdigest(), parent, message, dict(files), date)
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, f"You already created this model repo: {repo_id}")
            repo = Repo(repo_id, private)
            # Like the Hub: a new repo has one commit holding .gitattributes on branch main.
            repo.branches["main"] = self._new_commit(repo, None, "initial commit",
                                                     {".gitattributes": INITIAL_GITATTRIBUTES}).oid
            self.repos[repo_id] = repo
            return repo

    def commit(self, repo: Repo, branch: str, summary: str, parent_commit: str | None,
               operations: list[tuple[str, str, bytes | None]]) -> Commit:
        """Apply ("file", path, data) / ("lfsFile", path, sha256) / ("deletedFile", path, None) /
        ("deletedFolder", path, None)."""
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if parent_commit is not None and not head.oid.startswith(parent_commit):
                raise HubError(412, f"A commit has happened since. Please refresh and try again "
                                    f"(parent {parent_commit}, head {head.oid}).")
            files = dict(head.files)
            for kind, path, data in operations:
                if kind == "file" and is_large_file(path):  # a test seeding a repo directly: stored as by LFS
                    self.large_objects[hashlib.sha256(data).hexdigest()] = data
                if kind == "lfsFile":
                    if data not in self.large_objects:
                        raise HubError(400, f"LFS object {data} for {path} was never uploaded")
                    files[path] = self.large_objects[data]
                elif kind == "file":
                    files[path] = data
                elif kind == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                else:  # deletedFolder
                    prefix = path.rstrip("/") + "/"
                    files = {name: value for name, value in files.items() if not name.startswith(prefix)}
            commit = self._new_commit(repo, head.oid, summary, files)
            repo.branches[branch] = commit.oid
            return commit


class StandInHub:
    """The stand-in's HTTP server on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token  # when set, writes and private reads need "Authorization: Bearer <token>"
        self.state = HubState()
        self.requests: list[tuple[str, str]] = []
        self.storage_requests: list[tuple[str, str]] = []  # those the storage server answered
        self.unhandled: list[tuple[str, str]] = []
        hub = self

        class Handler(_Handler):
            pass

        class StorageHandler(_StorageHandler):
            pass

        Handler.hub = StorageHandler.hub = hub
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), StorageHandler)
        self.threads = []
        for name, server in (("stand-in-hub", self.server), ("stand-in-hub-storage", self.storage)):
            server.daemon_threads = True
            self.threads.append(threading.Thread(target=server.serve_forever, name=name, daemon=True))

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage_url(self) -> str:
        host, port = self.storage.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandInHub:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in (self.server, self.storage):
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def repo(self, repo_id: str) -> Repo:
        return self.state.repos[repo_id]


_API_ROUTE = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>revision|tree|preupload|commit|tag)"
                        r"/(?P<revision>[^/]+)(?P<rest>/.*)?)?")
_RESOLVE_ROUTE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)")
_LFS_ROUTE = re.compile(r"/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/(?P<operation>batch|verify)")
_OBJECT_ROUTE = re.compile(r"/objects/(?P<oid>[0-9a-f]{64})")


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read hub.requests instead
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self._record(method, url.path)
        try:
            self._route(method, url.path)
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.repo_commit:
                headers["X-Repo-Commit"] = error.repo_commit
            self._send_json({"error": error.message, **error.body}, error.status, headers)

    def _record(self, method: str, path: str) -> None:
        self.hub.requests.append((method, path))

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, value: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    @property
    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _authorized(self) -> bool:
        token = self.hub.token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _json_body(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"invalid JSON body: {error}") from error

    # -- routes ------------------------------------------------------------------------------
    def _route(self, method: str, path: str) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        if match := _API_ROUTE.fullmatch(path):
            repo = self._repo(match["repo"])
            action, revision = match["action"], unquote(match["revision"] or "")
            if method == "GET" and action is None:
                return self._model_info(repo, "main")
            if method == "GET" and action == "revision" and not match["rest"]:
                return self._model_info(repo, revision)
            if method == "GET" and action == "tree":
                return self._tree(repo, revision, unquote((match["rest"] or "").lstrip("/")))
            if method == "POST" and action == "preupload":
                return self._preupload(repo, revision)
            if method == "POST" and action == "commit":
                return self._commit_files(repo, revision)
            if method == "POST" and action == "tag":
                return self._create_tag(repo, revision)
        if method in ("GET", "HEAD") and (match := _RESOLVE_ROUTE.fullmatch(path)):
            return self._resolve(self._repo(match["repo"]), unquote(match["revision"]), unquote(match["path"]))
        if method == "POST" and (match := _LFS_ROUTE.fullmatch(path)):
            self._require_write()
            repo = self._repo(match["repo"])
            return self._lfs_batch(repo) if match["operation"] == "batch" else self._lfs_verify()
        self.hub.unhandled.append((method, path))
        raise HubError(404, f"{method} {path} is not implemented by the stand-in Hub")

    def _create_repo(self) -> None:
        self._require_write()
        payload = self._json_body()
        if payload.get("type", "model") != "model":
            raise HubError(400, f"the stand-in only hosts model repos, not {payload['type']!r}")
        name, organization = payload["name"], payload.get("organization")
        if organization is None:
            raise HubError(400, "the stand-in needs repo ids of the form namespace/name")
        repo_id = f"{organization}/{name}"
        url = f"{self._base_url}/{repo_id}"
        try:
            self.hub.state.create_repo(repo_id, payload.get("visibility") == "private")
        except HubError as error:
            error.body["url"] = url  # the Hub's 409 names the existing repo; create_repo(exist_ok=True) reads it
            raise
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        content = self._json_body().get("content", "")
        errors = []
        if content.startswith("---"):
            front_matter = content.split("---", 2)[1] if content.count("---") >= 2 else None
            try:
                metadata = yaml.safe_load(front_matter) if front_matter is not None else None
                if front_matter is None or not isinstance(metadata, dict):
                    errors.append({"message": "the YAML front matter must be a mapping between two '---' lines"})
            except yaml.YAMLError as error:
                errors.append({"message": f"invalid YAML: {error}"})
        if errors:
            self._send_json({"errors": errors, "warnings": []}, 400)
        else:
            self._send_json({"errors": [], "warnings": []})

    def _model_info(self, repo: Repo, revision: str) -> None:
        commit = self._commit(repo, revision)
        self._send_json({
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.oid, "private": repo.private, "lastModified": commit.date, "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def _tree(self, repo: Repo, revision: str, folder: str) -> None:
        commit = self._commit(repo, revision)
        prefix = folder.rstrip("/") + "/" if folder else ""
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for path, data in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if not recursive and "/" in rest:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if is_large_file(path):
                pointer = lfs_pointer(data)
                entry |= {"oid": git_blob_id(pointer), "lfs": {"oid": hashlib.sha256(data).hexdigest(),
                                                                "size": len(data), "pointerSize": len(pointer)}}
            entries.append(entry)
        if folder and not entries and not folders:
            raise HubError(404, f"{folder} does not exist at {revision}", "EntryNotFound", commit.oid)
        entries += [{"type": "directory", "path": name, "oid": hashlib.sha1(name.encode()).hexdigest()}
                    for name in sorted(folders)]
        self._send_json(entries)

    def _preupload(self, repo: Repo, revision: str) -> None:
        if "create_pr" in self.query:
            raise HubError(400, "the stand-in does not do pull requests")
        commit = self._commit(repo, revision)
        files = []
        for entry in self._json_body().get("files", []):
            existing, large = commit.files.get(entry["path"]), is_large_file(entry["path"])
            oid = None if existing is None else hashlib.sha256(existing).hexdigest() if large else git_blob_id(existing)
            files.append({"path": entry["path"], "uploadMode": "lfs" if large else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._send_json({"files": files, "commitOid": commit.oid})

    def _commit_files(self, repo: Repo, branch: str) -> None:
        self._require_write()
        if "create_pr" in self.query:
            raise HubError(400, "the stand-in does not do pull requests")
        header, operations = None, []
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                if is_large_file(value["path"]):
                    raise HubError(400, f"{value['path']} is a large file (see .gitattributes): upload it with LFS")
                operations.append(("file", value["path"], base64.b64decode(value["content"])))
            elif key == "lfsFile":
                if value.get("algo") != "sha256":
                    raise HubError(400, f"unsupported LFS hash {value.get('algo')!r}")
                operations.append(("lfsFile", value["path"], value["oid"]))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, value["path"], None))
            else:
                raise HubError(400, f"the stand-in does not accept {key!r} operations")
        if header is None or not header.get("summary"):
            raise HubError(400, "a commit needs a header line with a summary")
        commit = self.hub.state.commit(repo, branch, header["summary"], header.get("parentCommit"), operations)
        self._send_json({"commitUrl": f"{self._base_url}/{repo.repo_id}/commit/{commit.oid}",
                         "commitOid": commit.oid, "success": True})

    def _create_tag(self, repo: Repo, revision: str) -> None:
        self._require_write()
        tag = self._json_body().get("tag")
        if not tag:
            raise HubError(400, "missing tag name")
        with self.hub.state.lock:
            commit = self._commit(repo, revision)
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.oid
        self._send_json({})

    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        commit = self._commit(repo, revision)
        if path not in commit.files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit.oid)
        data = commit.files[path]
        if is_large_file(path):  # as the Hub does: a redirect to the storage, the object's hash and size linked
            oid = hashlib.sha256(data).hexdigest()
            self._send(302, b"", {"Location": f"{self.hub.storage_url}/objects/{oid}", "X-Repo-Commit": commit.oid,
                                  "ETag": f'"{git_blob_id(lfs_pointer(data))}"', "X-Linked-Etag": f'"{oid}"',
                                  "X-Linked-Size": str(len(data))})
            return
        self._send(200, data, {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.oid,
                               "ETag": f'"{git_blob_id(data)}"'})

    # -- large files (Git LFS batch API: https://github.com/git-lfs/git-lfs/blob/main/docs/api/batch.md) --
    def _lfs_batch(self, repo: Repo) -> None:
        request = self._json_body()
        if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
            raise HubError(400, "the stand-in takes LFS uploads by the basic transfer only")
        objects = []
        for item in request.get("objects", []):
            oid, size = item["oid"], item["size"]
            answer = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.state.large_objects:  # an object already stored needs no upload
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.storage_url}/objects/{oid}", "header": {}},
                    "verify": {"href": f"{self._base_url}/{repo.repo_id}.git/info/lfs/objects/verify",
                               "header": {}}}
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   {"Content-Type": LFS_CONTENT_TYPE})

    def _lfs_verify(self) -> None:
        item = self._json_body()
        stored = self.hub.state.large_objects.get(item.get("oid"))
        if stored is None or len(stored) != item.get("size"):
            raise HubError(404, f"LFS object {item.get('oid')} of {item.get('size')} bytes is not stored")
        self._send(200, b"{}", {"Content-Type": LFS_CONTENT_TYPE})


class _StorageHandler(_Handler):
    """The Hub's large-file storage (S3 and its CDN on the real Hub): PUT an object at the address the
    batch API gave, GET it where a download was redirected. No authorization: the address is the key."""

    def _record(self, method: str, path: str) -> None:
        self.hub.storage_requests.append((method, path))

    def _route(self, method: str, path: str) -> None:
        match = _OBJECT_ROUTE.fullmatch(path)
        if match is None:
            self.hub.unhandled.append((method, path))
            raise HubError(404, f"{method} {path} is not implemented by the stand-in storage")
        oid = match["oid"]
        if method == "PUT":
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, f"the uploaded bytes do not hash to {oid}")
            with self.hub.state.lock:
                self.hub.state.large_objects[oid] = self.body
            self._send(200, b"", {"ETag": f'"{oid}"'})
        elif method in ("GET", "HEAD") and oid in self.hub.state.large_objects:
            self._send(200, self.hub.state.large_objects[oid], {"Content-Type": "application/octet-stream"})
        else:
            raise HubError(404, f"no object {oid}")
