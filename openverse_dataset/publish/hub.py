"""The Hugging Face Hub target: incremental, atomic, resumable releases of one dataset repository.

How a release goes (one commit per release, whatever its size):

1. create the dataset repository if missing, read `main`'s head commit and its tree (path, size, sha256);
2. plan against that tree: only the release's own paths (`data/`, the card and its companions, the removals
   file) are managed,
   anything else in the repository is left alone;
3. upload the new and changed files' bytes to the Hub's storage *before* committing (`preupload_lfs_files`):
   uploaded but uncommitted bytes are invisible, and the storage answers "already have it" for what an
   interrupted run uploaded, so a re-run never sends a finished file twice;
4. one commit with `parent_commit=<head read in 1>` adds, replaces and deletes everything at once: `main` shows
   the previous release or the new one, never a mix, and a `main` moved by someone else meanwhile answers
   HTTP 412, reported as `ConcurrentChangeError` (nothing is overwritten);
5. tag the commit with the release date (`2026.11.27`; `2026.11.27-2` for a second release that day).

Every call is retried on 429/5xx and transport errors with exponential backoff (honouring `Retry-After`), by
`HubPublisher._call` alone: huggingface_hub's own `http_backoff` retries are switched off (`single_retry_layer`),
since nested they multiplied (persistent 500s on a tree listing took 42 requests and 210 s of sleeping, not 7).
The token comes from
`HF_TOKEN` only (never the token file) and is scrubbed from every message this module logs or raises.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from openverse_dataset import progress
from openverse_dataset.publish.plan import Plan, git_blob_id, make_plan
from openverse_dataset.release.tree import CARD, COMPANIONS, REMOVALS, TreeFile

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
DEFAULT_ENDPOINT = "https://huggingface.co"
MANAGED_PREFIXES = ("data/",)
MANAGED_FILES = (CARD, REMOVALS, *COMPANIONS)  # the card's companions: CITATION.cff, croissant.json, manifest.json
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_LFS_FILES_PER_COMMIT = 25_000
MAX_REGULAR_BYTES_PER_COMMIT = 1_000_000_000
UPLOAD_BATCH_FILES = 64  # files per pre-upload call: progress is logged per batch

T = TypeVar("T")


class HubConfigError(ValueError):
    """Publishing to the Hub is misconfigured (no token, bad namespace)."""


class ConcurrentChangeError(RuntimeError):
    """`main` moved while the release was being prepared: someone else committed; nothing was overwritten."""


class ReleaseTooLargeError(RuntimeError):
    """The release's changes exceed what one Hub commit accepts."""


def hub_token() -> str:
    """The token, from `HF_TOKEN` only: a publish never picks up a developer's stored login by accident."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise HubConfigError("HF_TOKEN is not set: publishing to the Hub needs a write token in HF_TOKEN")
    return token


def hub_timeout() -> httpx2.Timeout:
    """Per-request limits: huggingface_hub's own client has none, so a stalled connection hung a release forever.

    `OPENVERSE_HUB_TIMEOUT` (seconds, default 120) bounds each read/write; connecting gets at most 15 s.
    """
    seconds = float(os.environ.get("OPENVERSE_HUB_TIMEOUT") or 120)
    return httpx2.Timeout(seconds, connect=min(seconds, 15.0))


class _TimeoutTransport(httpx2.HTTPTransport):
    """Applies `hub_timeout()` to every request: huggingface_hub passes `timeout=None` explicitly on most calls,
    which overrides a client's default."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        limits = hub_timeout().as_dict()
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: given.get(k) or v for k, v in limits.items()}
        return super().handle_request(request)


def _client_with_timeouts() -> httpx2.Client:
    from huggingface_hub.utils import _http

    return httpx2.Client(
        event_hooks={"request": [_http.hf_request_event_hook]},
        follow_redirects=True,
        timeout=hub_timeout(),
        transport=_TimeoutTransport(),
    )


def install_timeouts() -> None:
    """Make huggingface_hub's shared client time out (unless someone installed their own client factory)."""
    from huggingface_hub.utils import _http

    if _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory:  # private: there is no public getter
        _http.set_client_factory(_client_with_timeouts)


def single_retry_layer() -> None:
    """Switch off huggingface_hub's inner retries, so `HubPublisher._call` is the one retry layer.

    `http_backoff`/`http_stream_backoff` (tree listings, LFS batch/upload/verify, preupload, paginated calls)
    retry 5xx and transport errors 5 times with up to 8 s sleeps, and are called without `max_retries` by every
    caller in huggingface_hub: under our 7 attempts a call that never succeeds made 6 x 7 = 42 requests. Other
    calls (repo info, commit, tags) have no inner retries at all, so the outer layer is the one that covers every
    call; its attempts and deadline are the bound. The library offers no setting for this (there is no constant
    or env var), so the keyword default of the shared function objects is set, which every importer sees.
    """
    import inspect

    from huggingface_hub.utils import _http

    for fn in (_http.http_backoff, _http.http_stream_backoff, _http._http_backoff_base):
        defaults = inspect.unwrap(fn).__kwdefaults__ or {}  # http_stream_backoff is a contextmanager wrapper
        if "max_retries" in defaults:
            defaults["max_retries"] = 0


def make_api(token: str | None = None, endpoint: str | None = None) -> HfApi:
    """An `HfApi` bound to an explicit token (or anonymous with `token=None` for a read-only dry run)."""
    install_timeouts()
    single_retry_layer()
    return HfApi(
        endpoint=(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        token=token if token else False,
        library_name="openverse-dataset",
    )


def redact(text: str, token: str | None) -> str:
    """`text` with the token masked (errors can echo request details; the token must never leave)."""
    return text.replace(token, "hf_***") if token else text


@dataclass
class HubResult:
    """What a publish did: the plan, the commit and tag it made, and what it sent."""

    repo_id: str
    url: str
    plan: Plan
    dry_run: bool
    head_before: str | None = None
    commit: str | None = None
    tag: str | None = None
    commits: int = 0
    upload_calls: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class HubPublisher:
    """Publishes release trees to one Hub repository, with retries; `sleep` is injectable for tests."""

    api: HfApi
    repo_id: str
    retries: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    deadline: float = 1800.0  # seconds for all attempts of one call: retries never add up to an unbounded wait
    sleep: Callable[[float], None] = time.sleep
    _token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        tok = self.api.token
        self._token = tok if isinstance(tok, str) else None

    # -- plumbing -------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Call the Hub, retrying 429/5xx and transport errors with exponential backoff and jitter."""
        give_up = time.monotonic() + self.deadline
        for attempt in range(self.retries + 1):
            if attempt and time.monotonic() >= give_up:
                raise TimeoutError(f"{what}: no answer from the Hub within {self.deadline:.0f}s ({attempt} attempts)")
            try:
                return fn(*args, **kwargs)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in RETRY_STATUS or attempt == self.retries:
                    raise
                after = exc.response.headers.get("Retry-After") if exc.response is not None else None
                wait = self._wait(attempt, after)
                log.warning("%s: HTTP %s, retry %d/%d in %.2fs", what, status, attempt + 1, self.retries, wait)
            except (httpx2.TransportError, httpx2.TimeoutException) as exc:
                if attempt == self.retries:
                    raise
                wait = self._wait(attempt, None)
                log.warning(
                    "%s: %s, retry %d/%d in %.2fs", what, redact(str(exc), self._token), attempt + 1, self.retries, wait
                )
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    @property
    def url(self) -> str:
        return f"{self.api.endpoint}/datasets/{self.repo_id}"

    # -- reading the remote ---------------------------------------------------------------------------------
    def head(self) -> str | None:
        """`main`'s commit, or None when the repository does not exist (yet)."""
        try:
            info = self._call("repo info", self.api.repo_info, self.repo_id, repo_type=REPO_TYPE, revision="main")
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return None
        return info.sha

    def remote_tree(self, revision: str, files: list[TreeFile]) -> dict[str, tuple[int, str]]:
        """path -> (size, sha256) of the managed paths at `revision`.

        LFS files carry their sha256; a regular file (the card) carries only its git blob id, so it is
        compared with the local file's blob id and reported with the local sha256 when they match.
        """
        local = {f.path: f for f in files}
        out: dict[str, tuple[int, str]] = {}
        entries = self._call(
            "list tree",
            lambda: list(self.api.list_repo_tree(self.repo_id, revision=revision, recursive=True, repo_type=REPO_TYPE)),
        )
        for e in entries:
            if not hasattr(e, "blob_id") or not is_managed(e.path):
                continue  # folders, and files this project does not own (.gitattributes, notes by maintainers)
            if e.lfs is not None:
                out[e.path] = (e.size, e.lfs.sha256)
            else:
                mine = local.get(e.path)
                same = (
                    mine is not None
                    and mine.size == e.size
                    and git_blob_id(Path(mine.source).read_bytes()) == e.blob_id
                )
                out[e.path] = (e.size, mine.sha256 if same else f"git:{e.blob_id}")
        return out

    def plan(self, files: list[TreeFile]) -> tuple[Plan, str | None]:
        """The release plan against `main` now, and the head commit it was made against."""
        head = self.head()
        remote = self.remote_tree(head, files) if head else {}
        return make_plan(files, remote), head

    # -- writing --------------------------------------------------------------------------------------------
    def publish(
        self, files: list[TreeFile], *, tag: str, dry_run: bool = False, message: str | None = None
    ) -> HubResult:
        """Plan, upload what changed, switch `main` in one commit, tag it. Dry run: plan only."""
        plan, head = self.plan(files)
        result = HubResult(self.repo_id, self.url, plan, dry_run, head_before=head)
        if dry_run:
            return result
        if head is None:
            self._call(
                "create repo", self.api.create_repo, self.repo_id, repo_type=REPO_TYPE, exist_ok=True, private=False
            )
            plan, head = self.plan(files)
            result.plan, result.head_before = plan, head
        if not plan.changes:
            result.commit = head
            result.notes.append("nothing changed: no commit")
            result.tag = self._tag(head, tag) if head else None
            return result
        by_path = {f.path: f for f in files}
        adds = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=by_path[p].source) for p in plan.upload_files]
        check_commit_size(plan, by_path)
        card = by_path.get(CARD)
        if card is not None and CARD in plan.upload_files and hasattr(self.api, "_validate_yaml"):
            # fail on a bad card before sending any byte (create_commit would only check it after uploads)
            self._call("validate card", self.api._validate_yaml, Path(card.source).read_text(), repo_type=REPO_TYPE)
        progress.report(progress.UPLOADING, total_files=len(adds), total_bytes=plan.upload_bytes)
        for i in range(0, len(adds), UPLOAD_BATCH_FILES):
            batch = adds[i : i + UPLOAD_BATCH_FILES]
            self._call(
                "pre-upload",
                self.api.preupload_lfs_files,
                self.repo_id,
                additions=batch,
                repo_type=REPO_TYPE,
                revision="main",
            )
            result.upload_calls += 1
            sent = sum(by_path[a.path_in_repo].size for a in batch)
            progress.report(progress.UPLOADING, files=len(batch), nbytes=sent)
            done = min(i + UPLOAD_BATCH_FILES, len(adds))
            log.info("uploaded %d/%d changed files of %s", done, len(adds), self.repo_id)
        ops = [*adds, *(CommitOperationDelete(path_in_repo=p) for p in plan.delete)]
        result.commit = self._commit(ops, head, files, message or f"Release {tag}", plan)
        result.commits = 1
        result.tag = self._tag(result.commit, tag)
        return result

    def _commit(self, ops: list, head: str | None, files: list[TreeFile], message: str, plan: Plan) -> str:
        summary = ", ".join(f"{k} {v}" for k, v in plan.summary().items())
        try:
            info = self._call(
                "commit",
                self.api.create_commit,
                self.repo_id,
                operations=ops,
                commit_message=message,
                commit_description=f"openverse-dataset release: {summary} files.",
                repo_type=REPO_TYPE,
                revision="main",
                parent_commit=head,
            )
        except HfHubHTTPError as exc:
            if exc.response is None or exc.response.status_code != 412:
                raise
            # A retried commit whose first answer was lost lands here too: then main already holds this release.
            now = self.head()
            if now and not make_plan(files, self.remote_tree(now, files)).changes:
                log.info("main already holds this release at %s (a retried commit had landed)", now)
                return now
            raise ConcurrentChangeError(
                f"main of {self.repo_id} moved from {head} to {now} while this release was prepared; nothing was "
                "overwritten. Check who changed it, then re-run: the plan is made again against the new head and "
                "uploaded files are not sent twice."
            ) from None
        return info.oid

    def _tag(self, commit: str, tag: str) -> str:
        """Tag `commit`; a second release the same day gets `-2`, `-3`, ... A re-run that tagged already is a no-op."""
        refs = self._call("list refs", self.api.list_repo_refs, self.repo_id, repo_type=REPO_TYPE)
        existing = {t.name: t.target_commit for t in refs.tags}
        for t, target in existing.items():
            if target == commit and (t == tag or t.startswith(f"{tag}-")):
                return t
        name, n = tag, 1
        while name in existing:
            n += 1
            name = f"{tag}-{n}"
        self._call(
            "tag", self.api.create_tag, self.repo_id, tag=name, revision=commit, repo_type=REPO_TYPE, exist_ok=True
        )
        return name


def is_managed(path: str) -> bool:
    """Paths a release owns (and so may replace or delete) in the repository."""
    return path in MANAGED_FILES or path.startswith(MANAGED_PREFIXES)


def check_commit_size(plan: Plan, by_path: dict[str, TreeFile]) -> None:
    """One commit must hold the whole switch: refuse up front rather than half-publish."""
    if len(plan.upload_files) > MAX_LFS_FILES_PER_COMMIT:
        raise ReleaseTooLargeError(
            f"{len(plan.upload_files)} changed files exceed the Hub's {MAX_LFS_FILES_PER_COMMIT} per commit"
        )
    regular = sum(by_path[p].size for p in plan.upload_files if not p.endswith(".parquet"))
    if regular > MAX_REGULAR_BYTES_PER_COMMIT:
        raise ReleaseTooLargeError(f"{regular:,} bytes of regular files exceed the Hub's 1 GB per commit")


def publish_hub(
    files: list[TreeFile],
    namespace: str,
    repo_name: str,
    *,
    tag: str,
    dry_run: bool = False,
    api: HfApi | None = None,
    **publisher_options,
) -> HubResult:
    """Publish `files` as `namespace/repo_name` (token from HF_TOKEN; a dry run may go without one)."""
    if not namespace or "/" in namespace:
        raise HubConfigError(f"hf:NAMESPACE must name a user or organisation, got {namespace!r}")
    if api is None:
        token = (os.environ.get("HF_TOKEN", "").strip() or None) if dry_run else hub_token()
        api = make_api(token)
    publisher = HubPublisher(api, f"{namespace}/{repo_name}", **publisher_options)
    try:
        return publisher.publish(files, tag=tag, dry_run=dry_run)
    except Exception as exc:
        tok = publisher._token
        if tok and tok in str(exc):  # never seen from huggingface_hub, but a token must not reach a log
            raise RuntimeError(redact(str(exc), tok)) from None
        raise


WRITE_ROLES = frozenset({"write", "admin", "contributor"})


def hub_access_problems(namespace: str, api: HfApi | None = None) -> list[str]:
    """Whether the Hub answers, HF_TOKEN is valid, and it may write to `namespace` (one `whoami` call).

    One line per problem, `<what>; <fix>`, the token never in it. For `doctor` and for failing before a publish.
    """
    try:
        token = hub_token()
    except HubConfigError as exc:
        return [f"{exc}; set HF_TOKEN"]
    api = api or make_api(token)
    try:
        me = api.whoami()
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return ["the Hub rejected HF_TOKEN (HTTP 401: invalid or expired); set HF_TOKEN to a valid write token"]
        return [f"the Hub at {api.endpoint} answered HTTP {status}; check HF_ENDPOINT or retry later"]
    except Exception as exc:  # transport errors: DNS, refused, timeout, offline mode
        cause = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, token)[:200]
        return [f"the Hub at {api.endpoint} is unreachable ({cause}); check HF_ENDPOINT and the network"]
    return _write_problems(me, namespace)


def _write_problems(me: dict, namespace: str) -> list[str]:
    """Problems with writing to `namespace` as the `whoami` answer `me` (classic or fine-grained token)."""
    name = me.get("name", "?")
    access = (me.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or []}
    if namespace != name and namespace not in orgs:
        return [
            f"HF_TOKEN belongs to {name!r}, who is not a member of {namespace!r}; use hf:{name} or join {namespace}"
        ]
    if namespace in orgs and orgs[namespace] not in WRITE_ROLES:
        return [f"{name!r} has role {orgs[namespace]!r} in {namespace!r}; ask an admin of {namespace} for write access"]
    if role == "read":
        return ["HF_TOKEN is a read-only token; set HF_TOKEN to a token with write access"]
    if role == "fineGrained":
        fine = access.get("fineGrained") or {}
        scoped = [
            s
            for s in fine.get("scoped") or []
            if (s.get("entity") or {}).get("name") == namespace and "repo.write" in (s.get("permissions") or [])
        ]
        if not scoped:
            return [f"HF_TOKEN (fine-grained) may not write repositories of {namespace!r}; grant it repo.write there"]
    return []
