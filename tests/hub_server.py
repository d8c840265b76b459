"""A loopback Hugging Face Hub: the part of the HTTP API that huggingface_hub 2.x talks to.

It lets tests publish for real (the client does every request) without reaching huggingface.co.
Implemented: whoami, repo create/info, validate-yaml, preupload, the LFS batch + basic upload +
verify path, the Xet token endpoints (storage is hf_xet's ``local://`` CAS folder), commit (ndjson,
with ``parentCommit`` and a check that every LFS pointer names uploaded content), refs, commits,
tree, paths-info, file resolve (HEAD/GET with the headers the client requires) and collections.

Faults are injected through Python hooks on :class:`HubServer` (tests run the client in a
subprocess and the server in a thread of the test process):
``fail_commits`` (with ``echo_authorization``), ``drop_uploads``, ``push_before_next_commit``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# Files the real Hub stores as LFS whatever their size (the client only asks; the Hub decides).
LFS_THRESHOLD_BYTES = 10 * 1024 * 1024
GITATTRIBUTES = (
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n*.h5ad filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_sha1(content: bytes) -> str:
    """The id git (and the Hub tree API) gives a file: sha1 of ``blob <size>\\0<content>``."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass
class RepoFile:
    """One file at one commit: small files keep their bytes, LFS files their sha256 (+ Xet hash)."""

    size: int
    content: bytes | None = None
    sha256: str | None = None
    xet_hash: str | None = None

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None

    @property
    def blob_id(self) -> str:
        if self.is_lfs:
            return git_blob_sha1(lfs_pointer(self.sha256, self.size))
        return git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, RepoFile]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "refs/heads/main"):
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


def _xet_hash_hex(raw: bytes) -> str:
    # Xet prints a 32-byte hash as four little-endian u64 words.
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def read_xet_shard(data: bytes) -> dict[str, tuple[str, int]]:
    """Map sha256 -> (xet file hash, size) from the file-info section of a Xet MDB shard.

    Layout: 48-byte header, then per file a 48-byte record (hash, flags, entry count), its
    48-byte segment entries (xorb hash, flags, unpacked size, chunk range), optional
    verification entries (flag bit 31) and an optional metadata extension holding the sha256
    (flag bit 30); a record whose hash is all 0xff ends the section.
    """
    found: dict[str, tuple[str, int]] = {}
    offset = 48
    while offset + 48 <= len(data):
        file_hash = data[offset : offset + 32]
        if file_hash == b"\xff" * 32:
            break
        flags, n_entries = struct.unpack("<II", data[offset + 32 : offset + 40])
        offset += 48
        size = sum(
            struct.unpack("<I", data[offset + 48 * i + 36 : offset + 48 * i + 40])[0]
            for i in range(n_entries)
        )
        offset += 48 * n_entries
        if flags & (1 << 31):
            offset += 48 * n_entries
        if flags & (1 << 30):
            found[_xet_hash_hex(data[offset : offset + 32])] = (_xet_hash_hex(file_hash), size)
            offset += 48
    return found


class HubState:
    """Everything the server knows; one lock guards it (the server is multi-threaded)."""

    def __init__(self, storage: Path, users: dict[str, str]):
        self.lock = threading.RLock()
        self.storage = storage
        self.xet_dir = storage / "xet-cas"
        self.xet_dir.mkdir(parents=True, exist_ok=True)
        self.users = users  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.collections: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._commit_counter = 0

    def new_commit_oid(self, repo_id: str) -> str:
        self._commit_counter += 1
        return hashlib.sha1(f"{repo_id}:{self._commit_counter}:{time.time()}".encode()).hexdigest()

    def xet_files(self) -> dict[str, tuple[str, int]]:
        """sha256 -> (xet hash, size) for every file whose shard reached the local CAS."""
        found: dict[str, tuple[str, int]] = {}
        for shard in self.xet_dir.rglob("shards/*.mdb"):
            found.update(read_xet_shard(shard.read_bytes()))
        return found


class HubServer:
    """Run the loopback Hub on 127.0.0.1 in a daemon thread; use as a context manager."""

    def __init__(self, storage: Path, token: str, user: str = "alice"):
        self.state = HubState(Path(storage), {token: user})
        self.user = user
        self.fail_commits: list[int] = []  # status codes for the next commits, one each
        # failed commits echo the request's Authorization header in their body (a leaky proxy)
        self.echo_authorization = False
        self.drop_uploads = 0  # drop this many upload connections halfway through
        self.push_before_next_commit: dict[str, bytes] | None = None  # another writer's files
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- helpers for tests -------------------------------------------------------------
    def add_collection(self, slug: str, owner: str, title: str = "models") -> None:
        with self.state.lock:
            self.state.collections[slug] = {
                "slug": slug,
                "owner": owner,
                "title": title,
                "items": [],
            }

    def repo(self, repo_id: str) -> Repo | None:
        return self.state.repos.get(repo_id)

    def commit_count(self, repo_id: str) -> int:
        repo = self.repo(repo_id)
        return 0 if repo is None else len(repo.commits)

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """The content of a file as the Hub holds it (LFS store or the Xet CAS)."""
        entry = self.repo(repo_id).at(revision).files[path]
        return self._content(entry)

    def _content(self, entry: RepoFile) -> bytes:
        if not entry.is_lfs:
            return entry.content
        if entry.sha256 in self.state.lfs_objects:
            return self.state.lfs_objects[entry.sha256]
        return _download_from_xet(self.state.xet_dir, entry.xet_hash, entry.size)

    def count(self, method: str, path_pattern: str) -> int:
        return sum(
            1 for m, p, _ in self.state.requests if m == method and re.search(path_pattern, p)
        )


def _download_from_xet(cas_dir: Path, xet_hash: str, size: int) -> bytes:
    import tempfile

    import hf_xet

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "blob"
        session = hf_xet.XetSession()
        with session.new_file_download_group(
            endpoint=f"local://{cas_dir}",
            token="local",
            token_expiry_unix_secs=int(time.time()) + 3600,
        ) as group:
            group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), str(out))
        return out.read_bytes()


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: Any = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
REV = r"(?P<rev>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), name)
    for m, p, name in [
        ("GET", r"^/api/whoami-v2$", "whoami"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", rf"^/api/models/{REPO}(?:/revision/{REV})?$", "repo_info"),
        ("POST", rf"^/api/models/{REPO}/preupload/{REV}$", "preupload"),
        ("POST", rf"^/api/models/{REPO}/commit/{REV}$", "commit"),
        ("GET", rf"^/api/models/{REPO}/refs$", "refs"),
        ("GET", rf"^/api/models/{REPO}/commits/{REV}$", "commits"),
        ("GET", rf"^/api/models/{REPO}/tree/{REV}(?:/(?P<path>.+))?$", "tree"),
        ("POST", rf"^/api/models/{REPO}/paths-info/{REV}$", "paths_info"),
        ("GET", rf"^/api/models/{REPO}/xet-(?P<kind>read|write)-token(?:/{REV})?$", "xet_token"),
        ("POST", rf"^/{REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("PUT", r"^/_lfs/(?P<oid>[0-9a-f]{64})$", "lfs_put"),
        ("POST", r"^/_lfs/(?P<oid>[0-9a-f]{64})/verify$", "lfs_verify"),
        ("GET", rf"^/{REPO}/resolve/{REV}/(?P<path>.+)$", "resolve"),
        ("HEAD", rf"^/{REPO}/resolve/{REV}/(?P<path>.+)$", "resolve"),
        ("GET", r"^/api/collections/(?P<slug>[^/]+/[^/]+)$", "get_collection"),
        ("POST", r"^/api/collections/(?P<slug>[^/]+/[^/]+)/items$", "add_collection_item"),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def state(self) -> HubState:
        return self.hub.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # --- plumbing ----------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.query = parse_qs(split.query)
        status = 404
        try:
            for route_method, pattern, name in ROUTES:
                match = pattern.match(path)
                if match and route_method == method:
                    status = getattr(self, f"_{name}")(**match.groupdict()) or 200
                    break
            else:
                self._read_body()
                raise HttpError(404, f"no route for {method} {path}")
        except HttpError as err:
            status = err.status
            body = err.body if err.body is not None else {"error": err.message}
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send_json(body, status=err.status, headers=headers)
        except ConnectionError:
            status = 0  # the connection was dropped on purpose (or by the client)
        with self.state.lock:
            self.state.requests.append((method, path, status))

    def _read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length if limit is None else min(limit, length))

    def _json_body(self) -> Any:
        body = self._read_body()
        return json.loads(body) if body else {}

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _send_json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> int:
        headers = {"Content-Type": "application/json", **(headers or {})}
        return self._send(status, json.dumps(data).encode(), headers)

    def _user(self, required: bool = True) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        user = self.state.users.get(token) if token else None
        if token and user is None:
            raise HttpError(401, "Invalid credentials in Authorization header", "Unauthorized")
        if required and user is None:
            raise HttpError(401, "You must be authenticated to do this", "Unauthorized")
        return user

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.state.repos.get(repo_id)
        hidden = repo is not None and repo.private and repo_id.split("/")[0] != user
        if repo is None or hidden:
            raise HttpError(404, "Repository not found", "RepoNotFound")
        if write and repo_id.split("/")[0] != user:
            raise HttpError(403, "You don't have the rights to write to this repo", "Forbidden")
        return repo

    def _commit_at(self, repo: Repo, rev: str | None) -> Commit:
        commit = repo.at(unquote(rev or "main"))
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _file_info(self, path: str, entry: RepoFile) -> dict[str, Any]:
        info: dict[str, Any] = {
            "type": "file",
            "oid": entry.blob_id,
            "size": entry.size,
            "path": path,
        }
        if entry.is_lfs:
            pointer_size = len(lfs_pointer(entry.sha256, entry.size))
            info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": pointer_size}
            if entry.xet_hash:
                info["xetHash"] = entry.xet_hash
        return info

    # --- endpoints -----------------------------------------------------------------------
    def _whoami(self) -> int:
        user = self._user()
        return self._send_json(
            {
                "type": "user",
                "name": user,
                "fullname": user.title(),
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "t", "role": "write"},
                },
            }
        )

    def _create_repo(self) -> int:
        user = self._user()
        payload = self._json_body()
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HttpError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_id = f"{namespace}/{payload['name']}"
        with self.state.lock:
            if repo_id in self.state.repos:
                raise HttpError(
                    409,
                    "You already created this model repo",
                    body={
                        "error": "You already created this model repo",
                        "url": f"{self.hub.url}/{repo_id}",
                    },
                )
            repo = Repo(repo_id, private=payload.get("visibility") == "private")
            files = {".gitattributes": RepoFile(len(GITATTRIBUTES), content=GITATTRIBUTES)}
            repo.commits.append(
                Commit(self.state.new_commit_oid(repo_id), None, "initial commit", files)
            )
            self.state.repos[repo_id] = repo
        return self._send_json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _validate_yaml(self) -> int:
        self._user(required=False)
        content = self._json_body().get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
        if match:
            try:
                meta = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                raise HttpError(
                    400, "invalid yaml", body={"errors": [{"message": str(err)}]}
                ) from err
            if meta is not None and not isinstance(meta, dict):
                raise HttpError(
                    400, "invalid yaml", body={"errors": [{"message": "metadata is not a mapping"}]}
                )
        return self._send_json({"errors": [], "warnings": []})

    def _repo_info(self, repo: str, rev: str | None = None) -> int:
        the_repo = self._repo(repo)
        commit = self._commit_at(the_repo, rev)
        return self._send_json(
            {
                "id": repo,
                "modelId": repo,
                "author": repo.split("/")[0],
                "sha": commit.oid,
                "private": the_repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "library_name": "scvi-tools",
                "lastModified": _iso(commit.date),
                "createdAt": _iso(the_repo.created_at),
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }
        )

    def _preupload(self, repo: str, rev: str) -> int:
        the_repo = self._repo(repo, write=True)
        files = self._json_body()["files"]
        head = self._commit_at(the_repo, rev)
        answer = []
        for item in files:
            sample = base64.b64decode(item["sample"])
            lfs = item["size"] >= LFS_THRESHOLD_BYTES or b"\0" in sample
            remote = head.files.get(item["path"])
            oid = None
            if remote is not None:
                oid = remote.sha256 if remote.is_lfs else git_blob_sha1(remote.content)
            answer.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return self._send_json({"files": answer})

    def _xet_token(self, repo: str, kind: str, rev: str | None = None) -> int:
        self._read_body()
        self._repo(repo, write=kind == "write")
        if kind == "write" and self.hub.drop_uploads > 0:
            self.hub.drop_uploads -= 1
            self._drop()
        expires = int(time.time()) + 3600
        endpoint = f"local://{self.state.xet_dir}"
        headers = {
            "X-Xet-Cas-Url": endpoint,
            "X-Xet-Access-Token": "xet-local-access",
            "X-Xet-Token-Expiration": str(expires),
        }
        body = {"accessToken": "xet-local-access", "exp": expires, "casUrl": endpoint}
        return self._send_json(body, headers=headers)

    def _lfs_batch(self, repo: str) -> int:
        self._repo(repo, write=True)
        payload = self._json_body()
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            entry: dict[str, Any] = {"oid": oid, "size": size}
            if oid not in self.state.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/_lfs/{oid}"},
                    "verify": {"href": f"{self.hub.url}/_lfs/{oid}/verify"},
                }
            objects.append(entry)
        return self._send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _drop(self) -> None:
        # Close the socket without a response: the client sees a connection reset mid-request.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)
        raise ConnectionError("dropped on purpose")

    def _lfs_put(self, oid: str) -> int:
        if self.hub.drop_uploads > 0:
            self.hub.drop_uploads -= 1
            self._read_body(limit=int(self.headers.get("Content-Length") or 0) // 2)
            self._drop()
        body = self._read_body()
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "uploaded content does not match its oid")
        with self.state.lock:
            self.state.lfs_objects[oid] = body
        return self._send(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, oid: str) -> int:
        payload = self._json_body()
        stored = self.state.lfs_objects.get(oid)
        if stored is None or len(stored) != payload.get("size"):
            raise HttpError(404, "object not uploaded")
        return self._send_json({"ok": True})

    def _commit(self, repo: str, rev: str) -> int:
        the_repo = self._repo(repo, write=True)
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if self.hub.fail_commits:
            status = self.hub.fail_commits.pop(0)
            message = "Internal Error - We're working hard to fix this as soon as possible!"
            if self.hub.echo_authorization:
                message += f" (request header Authorization: {self.headers.get('Authorization')})"
            raise HttpError(status, message)
        with self.state.lock:
            if self.hub.push_before_next_commit is not None:
                self._apply(the_repo, "someone else's push", self.hub.push_before_next_commit)
                self.hub.push_before_next_commit = None
            head = self._commit_at(the_repo, rev)
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            xet_files = None
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = base64.b64decode(value["content"])
                    files[value["path"]] = RepoFile(len(content), content=content)
                elif key == "lfsFile":
                    oid, size = value["oid"], value["size"]
                    xet_hash = None
                    if oid not in self.state.lfs_objects:
                        xet_files = self.state.xet_files() if xet_files is None else xet_files
                        if oid not in xet_files or xet_files[oid][1] != size:
                            raise HttpError(
                                422,
                                f"Your push was rejected because an LFS pointer ({value['path']})"
                                " points to a file that has not been uploaded",
                            )
                        xet_hash = xet_files[oid][0]
                    files[value["path"]] = RepoFile(size, sha256=oid, xet_hash=xet_hash)
                elif key in ("deletedFile", "deletedFolder"):
                    prefix = value["path"].rstrip("/")
                    for path in [p for p in files if p == prefix or p.startswith(prefix + "/")]:
                        del files[path]
            commit = Commit(self.state.new_commit_oid(repo), head.oid, header["summary"], files)
            the_repo.commits.append(commit)
        return self._send_json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.url}/{repo}/commit/{commit.oid}",
                "pullRequestUrl": None,
            }
        )

    def _apply(self, repo: Repo, title: str, contents: dict[str, bytes]) -> None:
        files = dict(repo.head.files)
        for path, content in contents.items():
            files[path] = RepoFile(len(content), content=content)
        repo.commits.append(
            Commit(self.state.new_commit_oid(repo.repo_id), repo.head.oid, title, files)
        )

    def _refs(self, repo: str) -> int:
        the_repo = self._repo(repo)
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": the_repo.head.oid}
        return self._send_json({"branches": [branch], "tags": [], "converts": []})

    def _commits(self, repo: str, rev: str) -> int:
        the_repo = self._repo(repo)
        commit = self._commit_at(the_repo, rev)
        history = the_repo.commits[: the_repo.commits.index(commit) + 1][::-1]
        return self._send_json(
            [
                {"id": c.oid, "title": c.title, "message": "", "authors": [], "date": _iso(c.date)}
                for c in history
            ]
        )

    def _tree(self, repo: str, rev: str, path: str | None = None) -> int:
        commit = self._commit_at(self._repo(repo), rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        prefix = (path.rstrip("/") + "/") if path else ""
        entries, folders = [], set()
        for file_path, entry in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append(self._file_info(file_path, entry))
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in folders]
        if path and not entries:
            raise HttpError(404, f"{path} does not exist", "EntryNotFound")
        return self._send_json(entries)

    def _paths_info(self, repo: str, rev: str) -> int:
        commit = self._commit_at(self._repo(repo), rev)
        body = self._read_body().decode()
        fields = parse_qs(body) if "=" in body else {}
        paths = fields.get("paths", [])
        infos = [self._file_info(p, commit.files[p]) for p in paths if p in commit.files]
        return self._send_json(infos)

    def _resolve(self, repo: str, rev: str, path: str) -> int:
        the_repo = self._repo(repo)
        commit = self._commit_at(the_repo, rev)
        entry = commit.files.get(path)
        if entry is None:
            raise HttpError(
                404, "Entry not found", "EntryNotFound", body={"error": "Entry not found"}
            )
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.is_lfs:
            headers.update(
                {
                    "ETag": f'"{entry.sha256}"',
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                }
            )
            if entry.xet_hash:
                token_url = f"{self.hub.url}/api/models/{repo}/xet-read-token/{commit.oid}"
                headers["X-Xet-Hash"] = entry.xet_hash
                headers["Link"] = f'<{token_url}>; rel="xet-auth"'
        else:
            headers["ETag"] = f'"{entry.blob_id}"'
        if self.command == "HEAD":
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(entry.size))
            self.end_headers()
            return 200
        return self._send(200, self.hub._content(entry), headers)

    def _get_collection(self, slug: str) -> int:
        self._user(required=False)
        collection = self.state.collections.get(slug)
        if collection is None:
            raise HttpError(404, "Collection not found")
        return self._send_json(_collection_json(collection))

    def _add_collection_item(self, slug: str) -> int:
        user = self._user()
        payload = self._json_body()
        with self.state.lock:
            collection = self.state.collections.get(slug)
            if collection is None:
                raise HttpError(404, "Collection not found")
            if collection["owner"] != user:
                raise HttpError(403, "You don't have the rights to edit this collection")
            item_id = payload["item"]["id"]
            if any(item["id"] == item_id for item in collection["items"]):
                raise HttpError(409, "Item already in collection")
            collection["items"].append({"id": item_id, "type": payload["item"]["type"]})
        return self._send_json(_collection_json(collection))


def _collection_json(collection: dict[str, Any]) -> dict[str, Any]:
    items = [
        {"_id": f"item{i}", "id": item["id"], "type": item["type"], "position": i}
        for i, item in enumerate(collection["items"])
    ]
    return {
        "slug": collection["slug"],
        "title": collection["title"],
        "owner": {"name": collection["owner"], "type": "user"},
        "items": items,
        "lastUpdated": _iso(time.time()),
        "position": 0,
        "private": False,
        "theme": "green",
        "upvotes": 0,
    }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))
