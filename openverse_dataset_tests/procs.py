"""Helpers for tests that start Dagster's own processes: a free loopback port, GraphQL, waiting for the code
location to load, and stopping a process group so that nothing it started survives the test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port in a thread; yields the base URL; stopped and joined on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    """One GraphQL call to a Dagster webserver at `url`; the `data` part (errors fail the test)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.load(resp)
    assert "errors" not in out, out
    return out["data"]


LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def wait_loaded(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> list[dict]:
    """Wait until every code location of the webserver at `url` is LOADED; returns the location entries.

    `/server_info` answers before the code location has loaded; the workspace status is the real signal.
    """
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}): {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no code location loaded in {timeout:.0f} s: {log.read_text()[-3000:]}"
        try:
            entries = gql(url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return entries
        except OSError:
            pass
        time.sleep(0.5)


def group_members(pgid: int) -> list[int]:
    """Processes still alive in a process group (read from /proc, so it also sees orphaned children)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def stop_group(proc: subprocess.Popen) -> list[int]:
    """SIGTERM the process's own group, then SIGKILL what is left; returns pids that needed SIGKILL.

    The process must have been started with `start_new_session=True`: it leads its own group, nothing else is in it.
    """
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    deadline = time.monotonic() + 5  # code servers shut down on their own once the webserver is gone
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = group_members(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15  # a killed orphan lingers until the kernel and init have reaped it
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def assert_stopped(proc: subprocess.Popen) -> list[int]:
    """Stop the group and fail the test if anything of it is still alive."""
    left = stop_group(proc)
    assert not group_members(proc.pid), f"processes of {proc.args!r} survived SIGKILL"
    return left


def dagster_dev(
    stack: ExitStack, env: dict[str, str], log_path: Path, port: int, *, workspace: bool = True
) -> subprocess.Popen:
    """`dagster dev` on loopback, in the repository, logging to `log_path`; stopped when `stack` closes.

    It leads its own process group, so it, its daemon, code server and runs stop together, and the test fails if
    anything of that group outlives the stop.
    """
    args = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)]
    log = stack.enter_context(open(log_path, "w"))  # noqa: SIM115 (closed by the stack, after the stop)
    proc = subprocess.Popen(
        [*args, "-w", "workspace.yaml"] if workspace else args,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.callback(lambda: print(f"dagster dev needed SIGKILL for {left}") if (left := assert_stopped(proc)) else None)
    return proc
