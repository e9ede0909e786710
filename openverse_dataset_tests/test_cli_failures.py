"""Every expected failure, driven through the real CLI in a subprocess, as an operator meets it.

Each must exit non-zero with at most three lines on stderr (without -v), name the fix, show no traceback and no
secret, and leave nothing published or rewritten. Read-only and full disks are real: a tmpfs mounted read-only
or 256 KiB small in the CLI's own mount namespace (`unshare -m`), where the machine allows it; otherwise a
read-only folder (chmod, or `chattr +i` as root) and a free-space requirement larger than the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from openverse_dataset_tests.fakehub import FakeHub, serve
from openverse_dataset_tests.procs import free_port

PASSWORD = "s3cret-pw-42"
TOKEN = "hf_secret_token_abc123"
CLI = Path(sys.executable).parent / "openverse-dataset"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENVERSE_", "DAGSTER_", "HF_", "AWS_"))}
    env.update(
        OPENVERSE_DATA_DIR=str(tmp_path / "data"),
        OPENVERSE_RELEASE_DATE="2026-11-27",
        HF_HOME=str(tmp_path / "hf-home"),
        COLUMNS="200",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], prefix: list[str] | None = None, timeout: float = 300) -> Result:
    """The installed `openverse-dataset` in a subprocess, from the data dir's parent folder."""
    cwd = Path(env["OPENVERSE_DATA_DIR"]).parent
    proc = subprocess.run(
        [*(prefix or []), str(CLI), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_failure(r: Result, *fixes: str) -> None:
    """Non-zero, ≤ 3 lines on stderr naming the fix, no traceback, no secret anywhere in the output."""
    assert r.code != 0, (r.stdout, r.stderr)
    assert len(r.err_lines) <= 3, r.stderr
    for fix in fixes:
        assert fix in r.stderr, f"{fix!r} not in: {r.stderr}"
    both = r.stdout + r.stderr
    assert "Traceback" not in both and 'File "' not in both, both
    assert PASSWORD not in both and TOKEN not in both, both


def tree_digest(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under root (what a failed command must leave exactly as it was)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(root).parts
    }


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


MOUNT = _can_mount()


def _mounted(folder: Path, options: str) -> list[str]:
    """A prefix that runs the command with a fresh tmpfs (`options`) mounted on `folder`, in its own namespace."""
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", options, str(folder)]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[list[str]]:
    """A command prefix under which `folder` is read-only (and the folder's state is restored afterwards)."""
    folder.mkdir(parents=True, exist_ok=True)
    if MOUNT:
        yield _mounted(folder, "ro,size=64k")
    elif os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield []
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield []
        finally:
            folder.chmod(0o755)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return _base_env(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with audio built once (demo catalog, local target): for the publish failures."""
    root = tmp_path_factory.mktemp("built")
    env = _base_env(root)
    r = run_cli(["build", "--media", "audio", "--provider", "jamendo"], env)
    assert r.code == 0, r.stderr
    return root / "data"


# -- the data directory ----------------------------------------------------------------------------------------
def test_read_only_data_dir(cli_env):
    data = Path(cli_env["OPENVERSE_DATA_DIR"])
    with read_only(data) as prefix:
        r = run_cli(["build", "--media", "audio"], cli_env, prefix)
    assert_one_line_failure(r, "not writable", "OPENVERSE_DATA_DIR")
    assert not list(data.iterdir())


def test_disk_full(cli_env):
    data = Path(cli_env["OPENVERSE_DATA_DIR"])
    data.mkdir(parents=True)
    if MOUNT:
        prefix = _mounted(data, "size=256k")
    else:
        prefix, cli_env["OPENVERSE_MIN_FREE_MB"] = [], str(10**12)  # more than any disk holds
    r = run_cli(["build", "--media", "audio"], cli_env, prefix)
    assert_one_line_failure(r, "free space", "OPENVERSE_DATA_DIR")
    assert "free under" in r.stderr and "the next build needs" in r.stderr


@pytest.mark.skipif(not MOUNT, reason="needs a tmpfs (unshare -m) to fill a disk during a run")
def test_disk_full_during_a_run(cli_env):
    """The free-space check waived: the extract then hits ENOSPC mid-run; still one line with the fix."""
    data = Path(cli_env["OPENVERSE_DATA_DIR"])
    data.mkdir(parents=True)
    catalog = data.parent / "catalog.sqlite"  # outside the small disk
    assert run_cli(["seed-catalog", "--url", f"sqlite:///{catalog}"], cli_env).code == 0
    cli_env.update(OPENVERSE_MIN_FREE_MB="0", OPENVERSE_CATALOG_URL=f"sqlite:///{catalog}")
    r = run_cli(["build", "--media", "audio"], cli_env, _mounted(data, "size=128k"))
    assert_one_line_failure(r, "No space left on device", "free space")


# -- the catalog -----------------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_catalog_without_tables(cli_env, pg_url):
    cli_env["OPENVERSE_CATALOG_URL"] = pg_url  # an empty database
    r = run_cli(["build", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "missing table(s)", "openverse-dataset seed-catalog --url")
    assert not (Path(cli_env["OPENVERSE_DATA_DIR"]) / "raw").exists()


@pytest.mark.parametrize(
    "url",
    [f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/openledger", f"postgres:/{PASSWORD}@nowhere"],
    ids=["unreachable", "not-a-url"],
)
def test_bad_catalog_url(cli_env, url):
    cli_env["OPENVERSE_CATALOG_URL"] = url
    r = run_cli(["build", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "check OPENVERSE_CATALOG_URL")
    assert not (Path(cli_env["OPENVERSE_DATA_DIR"]) / "raw").exists()  # stopped before any job


def test_unknown_provider_publishes_nothing(cli_env):
    r = run_cli(["build", "--media", "audio", "--provider", "jamendoo"], cli_env)
    assert_one_line_failure(r, "unknown provider(s) 'jamendoo'", "jamendo")
    data = Path(cli_env["OPENVERSE_DATA_DIR"])
    assert not (data / "hub").exists() and not (data / "releases").exists() and not (data / "raw").exists()


def test_bad_media(cli_env):
    r = run_cli(["build", "--media", "video"], cli_env)
    assert_one_line_failure(r, "invalid choice: 'video'", "audio")
    assert not Path(cli_env["OPENVERSE_DATA_DIR"]).exists()


# -- the Hub ---------------------------------------------------------------------------------------------------
def test_unreachable_hub(cli_env):
    cli_env.update(
        OPENVERSE_PUBLISH_TARGET="hf:openverse", HF_TOKEN=TOKEN, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )
    r = run_cli(["build", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "unreachable", "HF_ENDPOINT")
    assert not (Path(cli_env["OPENVERSE_DATA_DIR"]) / "raw").exists()  # stopped before any job


def test_bad_token(cli_env):
    hub = FakeHub(token="hf_the_right_one", orgs={"openverse": "write"})
    with serve(hub) as endpoint:
        cli_env.update(OPENVERSE_PUBLISH_TARGET="hf:openverse", HF_TOKEN=TOKEN, HF_ENDPOINT=endpoint)
        r = run_cli(["build", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "HTTP 401", "set HF_TOKEN")
    assert hub.commits_made == 0 and not hub.repos
    assert not (Path(cli_env["OPENVERSE_DATA_DIR"]) / "raw").exists()


def test_publish_to_hub_without_token_rewrites_nothing(cli_env, built):
    data = Path(cli_env["OPENVERSE_DATA_DIR"])
    shutil.copytree(built, data)
    before = tree_digest(data)
    hub = FakeHub()
    with serve(hub) as endpoint:
        cli_env.update(OPENVERSE_PUBLISH_TARGET="hf:openverse", HF_ENDPOINT=endpoint)
        r = run_cli(["publish", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "HF_TOKEN is not set", "write token")
    assert not hub.requests  # not even a read
    assert tree_digest(data) == before  # subsets, card, release bookkeeping untouched


def test_publish_before_build(cli_env):
    r = run_cli(["publish", "--media", "audio"], cli_env)
    assert_one_line_failure(r, "openverse-dataset build --media audio")


# -- verbose ---------------------------------------------------------------------------------------------------
def test_verbose_shows_the_details(cli_env):
    """With -v an unexpected error keeps its traceback (here: an unknown publish target scheme is expected, so
    it stays one line even then) and Dagster's logs are not silenced."""
    cli_env["OPENVERSE_PUBLISH_TARGET"] = "ftp:somewhere"
    r = run_cli(["build", "--media", "audio", "-v"], cli_env)
    assert_one_line_failure(r, "OPENVERSE_PUBLISH_TARGET")


# -- the header ------------------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_header_shows_the_catalog_url_without_its_password(cli_env, upstream_catalog):
    import sqlalchemy as sa

    upstream_catalog.seed_demo(["audio"])
    with_password = sa.engine.make_url(upstream_catalog.catalog_url).set(password=PASSWORD)  # trust auth ignores it
    cli_env["OPENVERSE_CATALOG_URL"] = with_password.render_as_string(hide_password=False)
    cli_env["OPENVERSE_API_DB_URL"] = upstream_catalog.api_url
    r = run_cli(["build", "--media", "audio", "--provider", "jamendo"], cli_env)
    assert r.code == 0, r.stdout + r.stderr
    assert f"catalog: {with_password.render_as_string(hide_password=True)}" in r.stdout
    assert "unparseable" not in r.stdout and PASSWORD not in r.stdout + r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) <= 3, r.stderr


# -- a job that fails after the checks passed -------------------------------------------------------------------
def test_failing_step_is_one_line_and_its_traceback_goes_to_the_log(cli_env):
    cli_env["OPENVERSE_RELEASE_DATE"] = "2026-13-45"  # only the card/release steps read it
    r = run_cli(["build", "--media", "audio", "--provider", "jamendo"], cli_env)
    assert_one_line_failure(r, "audio publish", "OPENVERSE_RELEASE_DATE must be a date (YYYY-MM-DD)", "details: ")
    log = Path(r.err_lines[-1].split("details: ", 1)[1].split(" (or re-run", 1)[0])
    assert log.parent == Path(cli_env["OPENVERSE_DATA_DIR"]).resolve() / "logs"
    assert 'File "' in log.read_text() and "'2026-13-45'" in log.read_text()  # the stack, for a developer
    verbose = run_cli(["build", "--media", "audio", "--provider", "jamendo", "-v"], cli_env)
    assert verbose.code != 0
    assert "STEP_FAILURE" in verbose.stderr  # Dagster's own event log, only with -v
