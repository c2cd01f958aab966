"""A stand-in for the Hugging Face Hub on 127.0.0.1: the part of its HTTP API that huggingface_hub 2.x uses
to create a repo, commit files, describe a repo and download files.

What huggingface_hub 2.4 sends (read from its source: hf_api.py, _commit_api.py, _snapshot_download.py,
file_download.py, utils/_http.py) and what is answered here:

- ``POST /api/repos/create`` {name, organization, visibility}: 200 {"url"}, or 409 if it exists
  (``create_repo(exist_ok=True)`` accepts the 409).
- ``POST /api/models/{repo}/branch/{branch}``: a branch from main; 409 if it exists.
- ``POST /api/validate-yaml`` {content, repoType}: ``create_commit`` checks README.md's metadata first.
- ``POST /api/models/{repo}/preupload/{rev}`` {files: [{path, sample, size}]}: every file gets
  ``uploadMode: "regular"``, so the client sends contents inside the commit itself and needs neither
  LFS nor Xet (it chooses those only for files the server marks "lfs").
- ``POST /api/models/{repo}/commit/{rev}``: NDJSON, a ``header`` line then one ``file`` line per file
  with base64 content (``lfsFile`` lines are refused: nothing was offered as LFS). 200 {commitUrl, commitOid}.
- ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha`` and ``siblings``.
- ``GET /api/models/{repo}/tree/{rev}``: the file list ``snapshot_download`` filters (type, path, size, oid).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag`` (the git blob id, which the
  client uses as the cache blob name), ``Content-Length``; errors carry ``X-Error-Code``
  (RepoNotFound, RevisionNotFound, EntryNotFound) which the client maps to its exception types.

Every request is recorded (method, path, headers, body) for tests to inspect. With ``token`` set,
writes need ``Authorization: Bearer <token>`` and private repos are visible only with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def blob_oid(data: bytes) -> str:
    """Git's blob id: what the Hub sends as the ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None

    def commit(self, parent: str | None, files: dict[str, bytes], message: str) -> str:
        digest = hashlib.sha1(f"{parent}:{message}:{time.time_ns()}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{blob_oid(files[path])}".encode())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        return sha


class FakeHub:
    """``with FakeHub(token="hf_x") as hub: ...`` serves on ``hub.url`` until the block ends."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[Recorded] = []
        self.commit_payloads: list[list[dict]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- for tests ---------------------------------------------------------------

    def create(self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False) -> Repo:
        """A repo made directly (not through the client), e.g. one holding only pickled weights."""
        repo = Repo(repo_id, private)
        repo.branches["main"] = repo.commit(None, {".gitattributes": GITATTRIBUTES, **(files or {})}, "initial")
        self.repos[repo_id] = repo
        return repo

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    # -- HTTP --------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(req.rfile.readline().strip(), 16)
                chunk = req.rfile.read(size + 2)[:size]
                if size == 0:
                    break
                body += chunk
        else:
            body = req.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in req.headers.items()}
        with self.lock:  # one request at a time: simple, and the client's parallel downloads are tiny
            self.requests.append(Recorded(method, unquote(url.path), parse_qs(url.query), headers, body))
            try:
                status, extra, payload = self._route(method, unquote(url.path), parse_qs(url.query), headers, body)
            except Exception as err:  # a bug here should show as a 500 the test can see, not a hang
                status, extra, payload = 500, {}, json.dumps({"error": repr(err)}).encode()
        req.send_response(status)
        content_type = "application/octet-stream" if "/resolve/" in url.path else "application/json"
        req.send_header("Content-Type", content_type)
        for key, value in extra.items():
            req.send_header(key, value)
        if "Content-Length" not in extra:
            req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if method != "HEAD":
            req.wfile.write(payload)

    def _authorised(self, headers: dict[str, str]) -> bool:
        return self.token is None or headers.get("authorization") == f"Bearer {self.token}"

    @staticmethod
    def _json(status: int, data: object, **headers: str) -> tuple[int, dict, bytes]:
        return status, headers, json.dumps(data).encode()

    def _error(self, status: int, code: str | None, message: str, **headers: str) -> tuple[int, dict, bytes]:
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        return self._json(status, {"error": message}, **headers)

    def _repo(self, repo_id: str, headers: dict[str, str]) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised(headers)):
            return None
        return repo

    def _route(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(headers, json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            if content.startswith("---"):
                yaml.safe_load(content.split("---")[1])  # raises (500) on bad YAML
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            return self._api(method, "/".join(parts[2:4]), parts[4:], query, headers, body)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), headers)
        return self._error(404, None, f"no route for {method} {path}")

    def _create_repo(self, headers: dict, payload: dict) -> tuple[int, dict, bytes]:
        if not self._authorised(headers):
            return self._error(401, None, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if repo_id in self.repos:  # the Hub's 409 still carries the url, which create_repo(exist_ok=True) returns
            message = "You already created this model repo"
            return self._json(409, {"error": message, "url": f"{self.url}/{repo_id}"}, **{"X-Error-Message": message})
        self.create(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return self._json(200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _api(self, method: str, repo_id: str, rest: list[str], query: dict, headers: dict, body: bytes):
        repo = self._repo(repo_id, headers)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        action = rest[0] if rest else "info"
        revision = unquote(rest[1]) if len(rest) > 1 else "main"
        if method == "POST" and action in ("preupload", "commit", "branch") and not self._authorised(headers):
            return self._error(401, None, "Invalid credentials in Authorization header")
        if method == "POST" and action == "branch":
            if revision in repo.branches:
                return self._error(409, None, "Branch already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[revision] = repo.resolve(start)
            return self._json(200, {})
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[sha]
        if method == "GET" and action in ("info", "revision"):
            siblings = [{"rfilename": p} for p in sorted(files)]
            return self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "siblings": siblings,
                    "tags": [],
                    "library_name": "mimsdk",
                },
            )
        if method == "GET" and action == "tree":
            entries = [
                {"type": "file", "path": p, "size": len(d), "oid": blob_oid(d)} for p, d in sorted(files.items())
            ]
            return self._json(200, entries)
        if method == "POST" and action == "preupload":
            wanted = json.loads(body)["files"]
            answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in wanted]
            return self._json(200, {"files": answer, "commitOid": sha})
        if method == "POST" and action == "commit":
            return self._commit(repo, revision, sha, body)
        return self._error(404, None, f"no route for {method} {action}")

    def _commit(self, repo: Repo, revision: str, parent: str, body: bytes) -> tuple[int, dict, bytes]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        self.commit_payloads.append(lines)
        if not lines or lines[0]["key"] != "header":
            return self._error(400, None, "commit payload must start with a header line")
        files = dict(repo.commits[parent])
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                return self._error(400, None, f"unsupported commit operation {key!r} (only regular files here)")
        sha = repo.commit(parent, files, lines[0]["value"]["summary"])
        if revision in repo.branches or revision == "main":
            repo.branches[revision] = sha
        return self._json(
            200,
            {
                "commitUrl": f"{self.url}/{repo.repo_id}/commit/{sha}",
                "commitOid": sha,
                "pullRequestUrl": None,
                "success": True,
            },
        )

    def _resolve(self, repo_id: str, revision: str, filename: str, headers: dict) -> tuple[int, dict, bytes]:
        repo = self._repo(repo_id, headers)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        data = repo.commits[sha].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", **{"X-Repo-Commit": sha})
        extra = {"X-Repo-Commit": sha, "ETag": f'"{blob_oid(data)}"', "Content-Length": str(len(data))}
        start = headers.get("range", "").removeprefix("bytes=").split("-")[0]
        if start.isdigit() and int(start) > 0:
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            extra["Content-Length"] = str(len(data) - int(start))
            return 206, extra, data[int(start) :]
        return 200, extra, data


def point_client_at(monkeypatch, url: str, home) -> None:
    """Make huggingface_hub (and mimsdk) talk to ``url``, with a fresh cache and no stored token.

    huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, ... once, when first imported, into
    ``huggingface_hub.constants``; by the time a test runs, mimsdk and timm have imported it. So:
    - the variables are set, for mimsdk (which reads HF_ENDPOINT at each call and passes ``endpoint=``
      to every client call) and for any subprocess a test starts (which reads them at import);
    - the constants they were copied into are patched too, for the client's own defaults (URL
      templates, cache folder, token file, offline and telemetry switches). Telemetry off also stops
      the client's user-agent code from fetching an "agent harnesses" list from the endpoint.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    home = str(home)
    values = {
        "HF_ENDPOINT": url,
        "HF_HOME": home,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(key, raising=False)
    patched = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": home,
        "HF_HUB_CACHE": f"{home}/hub",
        "HF_TOKEN_PATH": f"{home}/token",
        "HF_STORED_TOKENS_PATH": f"{home}/stored_tokens",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for key, value in patched.items():
        monkeypatch.setattr(constants, key, value)
    _http.close_session()  # no pooled connection from an earlier test's server
