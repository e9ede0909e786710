"""An in-process fake of the Hugging Face Hub's HTTP API, for the real `huggingface_hub` client.

Installed with `huggingface_hub.utils._http.set_client_factory` and an `httpx2.MockTransport`, so no byte
leaves the process. It implements what a dataset release needs: repo creation, repo info, recursive tree,
YAML validation, preupload, the LFS batch/upload/verify protocol (content-addressed storage that survives a
failed commit, like the real one), the NDJSON commit endpoint with `parentCommit` (HTTP 412 when the branch
moved), refs and tags. It records every request (to check tokens and count uploads) and lets a test inject
faults (rate limits, server errors, a crash mid-upload, a concurrent commit). Reads are anonymous, as on a
public repository, so `datasets.load_dataset("<repo_id>", config)` in another process can read a release through
`serve` (tree listings, `resolve` by branch, tag or commit).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import httpx2
import yaml

from openverse_dataset_tests.procs import http_server

ENDPOINT = "https://hub.test"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


class Crash(Exception):
    """Raised from the transport to simulate a process dying mid-request."""


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Blob:
    size: int
    sha256: str | None  # LFS files
    oid: str  # git blob id (of the pointer for LFS files)
    content: bytes | None = None  # regular files

    def entry(self, path: str) -> dict:
        out = {"type": "file", "path": path, "size": self.size, "oid": self.oid}
        if self.sha256:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return out


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # sha -> path -> blob
    parents: dict[str, str | None] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes (storage, outside any commit)

    def tree(self, rev: str) -> dict[str, Blob]:
        sha = self.resolve(rev)
        return self.commits[sha]

    def resolve(self, rev: str) -> str:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        if rev in self.commits:
            return rev
        raise KeyError(rev)

    def commit(self, files: dict[str, Blob], branch: str = "main") -> str:
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.commits[sha] = files
        self.parents[sha] = self.branches.get(branch)
        self.branches[branch] = sha
        return sha

    def read(self, path: str, rev: str = "main") -> bytes:
        blob = self.tree(rev)[path]
        return blob.content if blob.content is not None else self.lfs[blob.sha256]


Fault = Callable[[httpx2.Request], "httpx2.Response | None"]


@dataclass
class FakeHub:
    token: str | None = None  # when set, every API call must carry `Bearer <token>`
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    uploads: list[tuple[str, int]] = field(default_factory=list)  # (sha256, bytes) per LFS PUT
    commits_made: int = 0
    # whoami: the token's owner, their organisations (name -> role) and the token's role (read/write/fineGrained)
    user: str = "user"
    orgs: dict[str, str] = field(default_factory=dict)
    token_role: str = "write"

    # -- wiring ------------------------------------------------------------------------------------------------
    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handle), follow_redirects=True)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(
            {
                "method": request.method,
                "url": str(request.url),
                "authorization": request.headers.get("authorization"),
                "headers": dict(request.headers),
            }
        )
        if request.url.host != "hub.test":
            raise AssertionError(f"request to a host other than the fake hub: {request.url}")
        for fault in list(self.faults):
            resp = fault(request)
            if resp is not None:
                return resp
        path = request.url.path
        if path.startswith("/lfs-upload/") or path.startswith("/lfs-verify/"):
            return self._lfs_transfer(request)
        auth = request.headers.get("authorization")
        if self.token and auth != f"Bearer {self.token}" and request.method not in ("GET", "HEAD"):
            return _err(401, "Invalid credentials", code="Unauthorized")
        routes: list[tuple[str, str, Callable]] = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", self._info),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)", self._info),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", self._tree),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/refs", self._refs),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._batch),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tag/(?P<rev>[^/]+)", self._tag),
            ("HEAD", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
            ("GET", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]
        for method, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if m and request.method == method:
                kw = {k: v for k, v in m.groupdict().items() if v is not None}
                if "repo" in kw and kw["repo"] not in self.repos:
                    return _err(404, "Repository not found", code="RepoNotFound")
                return fn(request, **kw)
        return _err(404, f"no route for {request.method} {path}")

    # -- helpers for tests -------------------------------------------------------------------------------------
    def fail(self, method: str, path_part: str, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer `status` to the next `times` matching requests."""
        left = [times]

        def fault(req: httpx2.Request) -> httpx2.Response | None:
            if left[0] > 0 and req.method == method and path_part in req.url.path:
                left[0] -= 1
                headers = {"Retry-After": retry_after} if retry_after else {}
                return _err(status, f"injected {status}", headers=headers)
            return None

        self.faults.append(fault)

    def crash_after_uploads(self, n: int) -> None:
        """Let `n` LFS uploads through, then crash on the next one (the process 'dies')."""
        seen = [0]

        def fault(req: httpx2.Request) -> httpx2.Response | None:
            if req.method == "PUT" and req.url.path.startswith("/lfs-upload/"):
                seen[0] += 1
                if seen[0] > n:
                    raise Crash("simulated crash during upload")
            return None

        self.faults.append(fault)

    def on_first(self, method: str, path_part: str, action: Callable[[], None]) -> None:
        """Run `action` (e.g. a concurrent commit) when the first matching request arrives."""
        done = [False]

        def fault(req: httpx2.Request) -> httpx2.Response | None:
            if not done[0] and req.method == method and path_part in req.url.path:
                done[0] = True
                action()
            return None

        self.faults.append(fault)

    def external_commit(self, repo_id: str, path: str, content: bytes) -> str:
        """Someone else commits to main (as a maintainer would in the web UI)."""
        repo = self.repos[repo_id]
        files = dict(repo.tree("main"))
        files[path] = Blob(len(content), None, git_oid(content), content)
        return repo.commit(files)

    # -- endpoints ---------------------------------------------------------------------------------------------
    def _whoami(self, request: httpx2.Request) -> httpx2.Response:
        auth = request.headers.get("authorization")
        if not auth or (self.token and auth != f"Bearer {self.token}"):
            return _err(401, "Invalid credentials in Authorization header", code="Unauthorized")
        return _json(
            {
                "type": "user",
                "name": self.user,
                "orgs": [{"name": n, "roleInOrg": r} for n, r in sorted(self.orgs.items())],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": self.token_role}},
            }
        )

    def _create(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("type") != "dataset":
            return _err(400, "only dataset repos in this fake")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if "/" not in repo_id:
            repo_id = f"user/{repo_id}"
        if repo_id in self.repos:
            return _err(409, "You already created this dataset repo")
        repo = Repo(repo_id)
        repo.commit({".gitattributes": Blob(len(GITATTRIBUTES), None, git_oid(GITATTRIBUTES), GITATTRIBUTES)})
        self.repos[repo_id] = repo
        return _json({"url": f"{ENDPOINT}/datasets/{repo_id}", "name": repo_id, "id": uuid.uuid4().hex})

    def _info(self, request: httpx2.Request, repo: str, rev: str = "main") -> httpx2.Response:
        r = self.repos[repo]
        try:
            sha = r.resolve(rev)
        except KeyError:
            return _err(404, "Revision not found", code="RevisionNotFound")
        return _json(
            {"id": repo, "sha": sha, "private": False, "siblings": [{"rfilename": p} for p in sorted(r.commits[sha])]}
        )

    def _tree(self, request: httpx2.Request, repo: str, rev: str, sub: str = "") -> httpx2.Response:
        r = self.repos[repo]
        try:
            files = r.tree(rev)
        except KeyError:
            return _err(404, "Revision not found", code="RevisionNotFound")
        prefix = sub.strip("/")
        recursive = request.url.params.get("recursive") in ("True", "true", "1")
        out, dirs = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "oid": git_oid(d.encode()), "size": 0})
            if recursive or len(parts) == 1:
                out.append(files[path].entry(path))
        return _json(out)

    def _resolve(self, request: httpx2.Request, repo: str, rev: str, path: str) -> httpx2.Response:
        """File download (HEAD for metadata, GET for bytes), as `hf_hub_download`/`snapshot_download` use it."""
        r = self.repos[repo]
        try:
            sha = r.resolve(rev)
            blob = r.commits[sha][path]
        except KeyError:
            return _err(404, "Entry not found", code="EntryNotFound")
        data = r.read(path, sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.oid}"', "Content-Length": str(len(data))}
        if blob.sha256:
            headers |= {"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)}
        return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)

    def _refs(self, request: httpx2.Request, repo: str) -> httpx2.Response:
        r = self.repos[repo]

        def refs(kind: str, items: dict[str, str]) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(items.items())]

        return _json({"branches": refs("heads", r.branches), "converts": [], "tags": refs("tags", r.tags)})

    def _validate(self, request: httpx2.Request) -> httpx2.Response:
        errors = validate_card(json.loads(request.content)["content"])
        return _json({"errors": [{"message": e} for e in errors], "warnings": []}, status=400 if errors else 200)

    def _preupload(self, request: httpx2.Request, repo: str, rev: str) -> httpx2.Response:
        files = self.repos[repo].tree(rev)
        out = []
        for f in json.loads(request.content)["files"]:
            lfs = f["path"].endswith(".parquet") or f["size"] > 10_000_000
            have = files.get(f["path"])
            oid = (have.sha256 if lfs else have.oid) if have else None
            out.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return _json({"files": out, "commitOid": self.repos[repo].resolve(rev)})

    def _batch(self, request: httpx2.Request, repo: str) -> httpx2.Response:
        body = json.loads(request.content)
        objects = []
        for o in body["objects"]:
            item = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.repos[repo].lfs:  # already stored: no action, the client skips the upload
                item["actions"] = {
                    "upload": {"href": f"{ENDPOINT}/lfs-upload/{repo}/{o['oid']}"},
                    "verify": {"href": f"{ENDPOINT}/lfs-verify/{repo}/{o['oid']}"},
                }
            objects.append(item)
        return _json({"transfer": "basic", "objects": objects})

    def _lfs_transfer(self, request: httpx2.Request) -> httpx2.Response:
        kind, ns, name, oid = request.url.path.strip("/").split("/")
        repo = self.repos[f"{ns}/{name}"]
        if kind == "lfs-upload":
            data = request.read()
            if hashlib.sha256(data).hexdigest() != oid:
                return _err(400, "sha256 mismatch")
            repo.lfs[oid] = data
            self.uploads.append((oid, len(data)))
            return httpx2.Response(200)
        return httpx2.Response(200) if oid in repo.lfs else _err(404, "object not uploaded")

    def _commit(self, request: httpx2.Request, repo: str, rev: str) -> httpx2.Response:
        r = self.repos[repo]
        if request.url.params.get("create_pr"):
            return _err(400, "pull requests are not supported by this fake")
        lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        head = r.branches.get(rev)
        if header.get("parentCommit") and header["parentCommit"] != head:
            return _err(412, "A commit has happened since. Please refresh and try again.")
        files = dict(r.commits[head]) if head else {}
        for item in lines[1:]:
            v = item["value"]
            if item["key"] == "file":
                data = base64.b64decode(v["content"])
                if v["path"] == "README.md" and (errs := validate_card(data.decode())):
                    return _err(400, "Invalid README.md: " + "; ".join(errs))
                files[v["path"]] = Blob(len(data), None, git_oid(data), data)
            elif item["key"] == "lfsFile":
                if v["oid"] not in r.lfs:
                    return _err(422, f"LFS object {v['oid']} was never uploaded")
                files[v["path"]] = Blob(len(r.lfs[v["oid"]]), v["oid"], git_oid(b"pointer:" + v["oid"].encode()))
            elif item["key"] == "deletedFile":
                if v["path"] not in files:
                    return _err(404, "A file with this name doesn't exist", code="EntryNotFound")
                del files[v["path"]]
            elif item["key"] == "deletedFolder":
                files = {p: b for p, b in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
            else:
                return _err(400, f"unknown key {item['key']}")
        sha = r.commit(files, rev)
        self.commits_made += 1
        return _json({"commitUrl": f"{ENDPOINT}/datasets/{repo}/commit/{sha}", "commitOid": sha, "success": True})

    def _tag(self, request: httpx2.Request, repo: str, rev: str) -> httpx2.Response:
        r = self.repos[repo]
        tag = json.loads(request.content)["tag"]
        if tag in r.tags:
            return _err(409, "Tag already exists")
        r.tags[tag] = r.resolve(rev)
        return _json({})


def validate_card(text: str) -> list[str]:
    """The Hub's checks on a dataset card's YAML that this project relies on."""
    if not text.startswith("---\n"):
        return ["no YAML front matter"]
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError as exc:
        return [f"YAML does not parse: {exc}"]
    errors = []
    if not isinstance(meta, dict):
        return ["front matter is not a mapping"]
    lic = meta.get("license")
    if not (isinstance(lic, str) or (isinstance(lic, list) and all(isinstance(x, str) for x in lic))):
        errors.append('"license" must be a string or a list of strings')
    needs_name = lic == "other" or (isinstance(lic, list) and "other" in lic)
    if needs_name and (not meta.get("license_name") or not meta.get("license_link")):
        errors.append('"license: other" needs license_name and license_link')
    for key in ("task_categories", "size_categories", "tags", "language"):
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])):
            errors.append(f'"{key}" must be a list of strings')
    allowed_sizes = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B"}
    if not set(meta.get("size_categories", [])) <= allowed_sizes:
        errors.append('"size_categories" has an unknown value')
    configs = meta.get("configs", [])
    names = [c.get("config_name") for c in configs if isinstance(c, dict)]
    if len(names) != len(configs) or len(set(names)) != len(names) or not all(names):
        errors.append('"configs" need unique config_name values')
    if sum(1 for c in configs if isinstance(c, dict) and c.get("default")) > 1:
        errors.append("at most one config can be the default")
    for c in configs:
        for df in c.get("data_files", []) if isinstance(c, dict) else []:
            paths = df.get("path") if isinstance(df, dict) else None
            if not df.get("split") or not (isinstance(paths, str) or (isinstance(paths, list) and paths)):
                errors.append(f"config {c.get('config_name')}: data_files need a split and path(s)")
    return errors


def _json(data, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, json=data)


def _err(status: int, message: str, *, code: str | None = None, headers: dict | None = None) -> httpx2.Response:
    h = {"X-Error-Message": message, **(headers or {})}
    if code:
        h["X-Error-Code"] = code
    return httpx2.Response(status, json={"error": message}, headers=h)


@contextmanager
def serve(hub: FakeHub) -> Iterator[str]:
    """Serve `hub` over HTTP on a free loopback port (for a CLI in a subprocess); yields its endpoint URL.

    Requests are handed to `FakeHub.handle` as if sent to https://hub.test, so faults and records work as in
    process; the server thread is stopped on exit.
    """

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            req = httpx2.Request(self.command, f"{ENDPOINT}{self.path}", headers=headers, content=body)
            resp = hub.handle(req)
            data = resp.read()
            self.send_response(resp.status_code)
            for k, v in resp.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            # a HEAD answer carries the length of the body a GET would send (huggingface_hub sizes downloads by it)
            length = resp.headers.get("content-length") if self.command == "HEAD" else None
            self.send_header("content-length", length or str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        def log_message(self, *args) -> None:  # quiet
            pass

    with http_server(Handler) as url:
        yield url
