"""Hardening: kill -9 at each stage, concurrent swaps, dead runs, hostile provider names and values.

The crash tests run the real CLI in a subprocess that kills itself with SIGKILL at a named point
(`OPENVERSE_CRASH_AT`, see `layout.crash_point`), exactly as `kill -9` would, then run it again and require
the same bytes as a build that was never interrupted, no staging left, and no hang (a timeout bounds it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from openverse_dataset.layout import (
    SEGMENT_MAX_BYTES,
    DataLayout,
    MissingInputError,
    is_shortened,
    replace_dir,
    segment,
    unsegment,
)

ROOT = Path(__file__).parents[1]
BUILD_TIMEOUT = 240  # seconds: a re-run that waits on a dead run's pool slot fails here instead of hanging


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".staging" not in p.relative_to(root).parts
    }


def leftovers(root: Path) -> list[str]:
    """Files or folders a finished process should not have left in any staging area under `root`."""
    out = []
    for area in root.rglob(".staging"):
        for p in area.rglob("*"):
            if p.name == ".swap.lock" or (p.is_dir() and p.parent == area):
                continue  # the area's lock and its (empty) per-kind folders
            out.append(str(p.relative_to(root)))
    return sorted(out)


def run_cli(args: list[str], env: dict, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "openverse_dataset.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(base: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVERSE_") and k != "DAGSTER_HOME"}
    home = base / "dagster-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env.update(
        DAGSTER_HOME=str(home),
        OPENVERSE_DATA_DIR=str(base / "data"),
        OPENVERSE_RELEASE_DATE="2026-11-27",
        HF_HUB_OFFLINE="1",
        **extra,
    )
    return env


# -- swaps ------------------------------------------------------------------------------------------------------
def _staged(layout: DataLayout, kind: str, version: str) -> Path:
    p = layout.staging_dir(kind)
    p.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (p / name).write_text(version)
    return p


def test_concurrent_swaps_never_show_a_missing_or_mixed_folder(tmp_path):
    layout = DataLayout(tmp_path)
    final = tmp_path / "clean" / "image" / "flickr"
    replace_dir(_staged(layout, "clean-image", "v0"), final)
    seen: list[str] = []
    stop = threading.Event()

    def read(fd: int, name: str) -> str:
        f = os.open(name, os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(f, 100).decode()
        finally:
            os.close(f)

    def reader() -> None:
        while not stop.is_set():
            try:
                fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)  # a reader holding the folder it opened
            except FileNotFoundError:
                seen.append("missing")  # the folder was absent for a moment
                continue
            try:
                versions = {read(fd, n) for n in ("a", "b", "c")}
            except FileNotFoundError:
                versions = {"(emptied)"}  # the old folder was removed under the reader: a mix of nothing
            finally:
                os.close(fd)
            seen.append("ok" if len(versions) == 1 and "(emptied)" not in versions else f"mixed {sorted(versions)}")

    def writer(w: int) -> None:
        for i in range(60):
            replace_dir(_staged(layout, "clean-image", f"w{w}-{i}"), final)

    threads = [threading.Thread(target=reader)] + [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert "missing" not in seen
    assert seen.count("ok") > 10
    mixed = [s for s in seen if s != "ok"]
    assert mixed == [] or all("(emptied)" in m for m in mixed), mixed[:3]
    assert (final / "a").read_text() in {f"w{w}-59" for w in range(2)}
    assert leftovers(tmp_path) == []


CRASH_SWAP = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from openverse_dataset.layout import DataLayout, replace_dirs
    layout = DataLayout(Path(sys.argv[1]))
    pairs = []
    for name in ("clean", "rejects"):
        s = layout.staging_dir(name)
        s.mkdir(parents=True)
        (s / "version").write_text("new")
        pairs.append((s, layout.root / name / "image" / "p"))
    replace_dirs(pairs)
    """
)


@pytest.mark.parametrize("point", ["swap-journaled", "swap-between"])
def test_a_switch_killed_midway_is_finished_by_the_next_run(tmp_path, point):
    layout = DataLayout(tmp_path)
    for name in ("clean", "rejects"):
        replace_dir(_staged(layout, name, "old"), tmp_path / name / "image" / "p")
    env = {**os.environ, "OPENVERSE_CRASH_AT": point}
    r = subprocess.run([sys.executable, "-c", CRASH_SWAP, str(tmp_path)], env=env, cwd=ROOT, timeout=60)
    assert r.returncode == -9
    assert list((tmp_path / ".staging").glob("journal-*.json"))  # committed, not finished
    layout.recover()
    assert (tmp_path / "clean/image/p/version").read_text() == "new"
    assert (tmp_path / "rejects/image/p/version").read_text() == "new"  # both switched, never one
    assert leftovers(tmp_path) == []


def test_staging_of_a_dead_process_is_removed_and_a_live_one_kept(tmp_path):
    layout = DataLayout(tmp_path)
    code = (
        "import os, sys; from pathlib import Path; from openverse_dataset.layout import DataLayout;"
        "p = DataLayout(Path(sys.argv[1])).staging_dir('raw-image'); p.mkdir(parents=True);"
        "(p / 'part-00000.parquet').write_bytes(b'x' * 1000); os.kill(os.getpid(), 9)"
    )
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, timeout=60).returncode == -9
    assert len(leftovers(tmp_path)) == 3  # the dead process's folder, shard and lock file
    mine = layout.staging_dir("raw-image")  # the next run: recovers first
    mine.mkdir()
    (mine / "part-00000.parquet").write_bytes(b"y")
    layout.recover()
    assert (mine / "part-00000.parquet").exists()  # its owner is alive
    assert leftovers(tmp_path) == sorted(
        str(p.relative_to(tmp_path)) for p in [mine, mine / "part-00000.parquet", Path(f"{mine}.lock")]
    )


def test_clean_refuses_a_missing_raw_extract(tmp_path):
    from openverse_dataset.media import IMAGE
    from openverse_dataset.transform.partition import clean_partition

    layout = DataLayout(tmp_path)
    published = layout.clean_dir("image", "flickr")
    published.mkdir(parents=True)
    (published / "keep").write_text("previous release")
    with pytest.raises(MissingInputError, match="raw extract"):
        clean_partition(layout, IMAGE, "flickr")
    assert (published / "keep").read_text() == "previous release"  # never replaced by an empty output
    assert leftovers(tmp_path) == []


# -- provider names ---------------------------------------------------------------------------------------------
HOSTILE_NAMES = [
    "é" * 80,  # 480 bytes percent-encoded
    "x" * 73 + "é" * 7,  # 115 bytes encoded: kept whole
    "€" * 73 + "ab",  # 221 raw bytes
    "a" * 40 + "é" * 40,
    "100%",
    "%%",
    "a/b",
    "..",
    ".",
    "a+b",
]


def test_every_provider_name_becomes_one_bounded_distinct_segment():
    segs = [segment(n) for n in HOSTILE_NAMES]
    assert len(set(segs)) == len(segs)
    for name, seg in zip(HOSTILE_NAMES, segs, strict=True):
        assert len(seg.encode()) <= SEGMENT_MAX_BYTES
        assert "/" not in seg and seg not in {".", ".."} and not seg.startswith(".")
        if is_shortened(seg):
            assert seg.startswith(segment(name[:10])[:10])  # a readable prefix
        else:
            assert unsegment(seg) == name
    assert is_shortened(segment("é" * 80)) and not is_shortened(segment("a+b"))


# -- kill -9 at each stage, then a re-run -------------------------------------------------------------------------
BUILD = ["build", "--media", "audio"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An uninterrupted build: its base folder and the release's files (path -> sha256)."""
    base = tmp_path_factory.mktemp("reference")
    r = run_cli(BUILD, cli_env(base))
    assert r.returncode == 0, r.stdout + r.stderr
    return base, tree(base / "data" / "hub")


def _instance(base: Path):
    import dagster as dg

    return dg.DagsterInstance.from_config(str(base / "dagster-home"))


@pytest.mark.parametrize("point", ["extract", "swap-journaled", "clean", "swap-between", "release"])
def test_kill_9_at_each_stage_then_a_rerun_converges(tmp_path, reference, point, monkeypatch):
    import dagster as dg

    env = cli_env(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # the instance's storage path refers to it
    r = run_cli(BUILD, {**env, "OPENVERSE_CRASH_AT": point})
    assert r.returncode == -9, r.stdout + r.stderr
    with _instance(tmp_path) as instance:
        dead = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert len(dead) == 1  # the killed run never reported its end
        if point == "extract":
            assert dead[0].run_id in instance.event_log_storage.get_concurrency_run_ids()  # it holds catalog_db
    r = run_cli(BUILD, env)  # bounded: a run waiting on the dead run's slot would time out here
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(tmp_path / "data" / "hub") == reference[1]  # byte-identical to a build never interrupted
    assert leftovers(tmp_path / "data") == []
    with _instance(tmp_path) as instance:
        assert instance.get_run_by_id(dead[0].run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert instance.event_log_storage.get_concurrency_run_ids() == set()


def test_dry_runs_after_a_build_change_nothing_published(reference):
    base, published = reference
    env = cli_env(base)
    repo = base / "data" / "hub" / "openverse-audio"
    card = base / "data" / "cards" / "audio" / "README.md"
    assert os.stat(repo / "README.md").st_ino != os.stat(card).st_ino  # the live card is its own file
    for args in (["publish", "--media", "audio", "--dry-run"], [*BUILD, "--dry-run"]):
        r = run_cli(args, {**env, "OPENVERSE_RELEASE_DATE": "2026-12-24"})  # a card that would differ
        assert r.returncode == 0, r.stdout + r.stderr
        assert tree(base / "data" / "hub") == published
    assert "2026-12-24" in card.read_text() or "2026.12.24" in card.read_text()  # the working card did change


def _insert_hostile_providers(upstream_catalog) -> dict[str, int]:
    """Rows under every hostile name (varchar(80) holds them all); returns rows per provider."""
    from openverse_dataset.catalog.seed import demo_rows
    from openverse_dataset.media import AUDIO

    names = [n for n in HOSTILE_NAMES if n not in {".", ".."}] + ["..", "a%%b", "50%_off"]
    rows = [r for r in demo_rows(AUDIO) if r["license"] == "by-nc-sa"][: 2 * len(names)]
    want: dict[str, int] = {}
    for i, r in enumerate(rows):
        r["provider"] = r["source"] = names[i % len(names)]
        r["foreign_identifier"] = f"hostile-{i}"
        want[r["provider"]] = want.get(r["provider"], 0) + 1
    assert upstream_catalog.insert_media("audio", rows) == len(rows)
    return want


@pytest.mark.postgres
def test_hostile_provider_names_extract_and_load_back_every_row(env, upstream_catalog, monkeypatch):
    """Names the catalog can hold (varchar(80)): each provider's rows are published and load with `datasets`."""
    from datasets import load_dataset

    from openverse_dataset.cli import main

    want = _insert_hostile_providers(upstream_catalog)
    upstream_catalog.configure(monkeypatch)
    code = main(["build", "--media", "audio"])
    assert json.loads((env / "providers" / "audio.json").read_text())["providers"] == sorted(want)
    assert code == 0
    repo = env / "hub" / "openverse-audio"
    for p in (env / "raw" / "audio").iterdir():
        assert len(p.name.encode()) <= SEGMENT_MAX_BYTES
    got = pl.from_arrow(load_dataset(str(repo), "all", split="train").data.table)
    assert dict(got.group_by("provider").len().iter_rows()) == want  # every row of every name, none lost


# A consumer: a fresh process with its own caches, nothing but HF_ENDPOINT pointing at the Hub. Every config the
# card declares, at `main` and (for `all`) at the release tag; rows per provider of each.
LOAD_FROM_HUB = textwrap.dedent(
    """
    import collections, json, sys
    import datasets
    repo, tag = sys.argv[1], sys.argv[2]
    out = {}
    for config in datasets.get_dataset_config_names(repo):
        ds = datasets.load_dataset(repo, config, split="train")
        out[config] = dict(collections.Counter(ds["provider"]))
    ds = datasets.load_dataset(repo, "all", split="train", revision=tag)
    out["@" + tag] = dict(collections.Counter(ds["provider"]))
    print(json.dumps(out))
    """
)


@pytest.mark.postgres
def test_hostile_provider_names_load_back_through_the_hub_api(env, upstream_catalog, monkeypatch, tmp_path):
    """The same names released to the (fake) Hub with the real client, then every config loaded back with
    `datasets.load_dataset("<repo_id>", config)` through the Hub's HTTP API (tree listing, resolve by revision)."""
    import fnmatch

    import yaml
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from openverse_dataset.cli import main
    from openverse_dataset_tests.fakehub import ENDPOINT, FakeHub, serve

    want = _insert_hostile_providers(upstream_catalog)
    upstream_catalog.configure(monkeypatch)
    token, repo_id = "hf_hostile_names_token", "testorg/openverse-audio"
    hub = FakeHub(token=token, orgs={"testorg": "write"})
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("OPENVERSE_PUBLISH_TARGET", "hf:testorg")
    _http.set_client_factory(hub.client)
    try:
        assert main(["build", "--media", "audio"]) == 0
    finally:
        _http.set_client_factory(_http.default_client_factory)
    repo = hub.repos[repo_id]
    (tag,) = repo.tags
    files = repo.tree("main")
    segments = {p.split("/")[2] for p in files if p.startswith("data/")}
    assert len(segments) == len(want) and all(len(s.encode()) <= SEGMENT_MAX_BYTES for s in segments)

    # what each config holds, read from the repository's own bytes (the card's globs over its files)
    card = yaml.safe_load(repo.read("README.md").decode().split("---", 2)[1])
    expected: dict[str, dict[str, int]] = {}
    for c in card["configs"]:
        globs = [g for df in c["data_files"] for g in ([df["path"]] if isinstance(df["path"], str) else df["path"])]
        counts: dict[str, int] = {}
        for path in sorted(files):
            if path.endswith(".parquet") and any(fnmatch.fnmatch(path, g) for g in globs):
                for provider, n in pl.read_parquet(repo.read(path)).group_by("provider").len().iter_rows():
                    counts[provider] = counts.get(provider, 0) + n
        expected[c["config_name"]] = counts
    assert expected["all"] == want

    consumer = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OPENVERSE_"))}
    consumer.update(
        HF_HOME=str(tmp_path / "consumer-hf-home"),
        HF_DATASETS_CACHE=str(tmp_path / "consumer-datasets-cache"),  # datasets caches by name: its own
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1",
    )
    with serve(hub) as url:
        r = subprocess.run(
            [sys.executable, "-c", LOAD_FROM_HUB, repo_id, tag],
            env={**consumer, "HF_ENDPOINT": url},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got.pop(f"@{tag}") == want  # the tagged release too
    assert got == {name: counts for name, counts in expected.items()}  # every config, every row per provider
    assert got["all"] == want  # every inserted row came back through the Hub API, per provider
    assert any(q["method"] == "GET" and "/resolve/" in q["url"] for q in hub.requests)  # downloaded from it


# -- stalled connections (Hub, S3, catalog) --------------------------------------------------------------------
class Stalled:
    """A loopback server that accepts connections and reads nothing back: it never answers."""

    def __init__(self) -> None:
        import socket

        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except TimeoutError:
                continue
            self.accepted.append(c)  # held open, never answered

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.accepted:
            c.close()
        self.srv.close()


@pytest.fixture
def stalled():
    s = Stalled()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def stalled_endpoint(stalled):
    from huggingface_hub.utils import _http

    try:
        yield stalled.url
    finally:
        _http.set_client_factory(_http.default_client_factory)


def test_a_stalled_hub_fails_within_a_bounded_time(stalled_endpoint, monkeypatch, tmp_path):
    import time

    from openverse_dataset.publish.hub import make_api, publish_hub
    from openverse_dataset.release.tree import TreeFile

    monkeypatch.setenv("OPENVERSE_HUB_TIMEOUT", "1")
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: cc-by-4.0\n---\n")
    files = [TreeFile("README.md", str(card), card.stat().st_size, "0" * 64)]
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        publish_hub(files, "ns", "repo", tag="2026.11.27", api=make_api("hf_x", stalled_endpoint), backoff=0.01)
    elapsed = time.monotonic() - start
    assert info.value is not None  # the release failed (a timeout, or an error from whichever layer saw it first)
    assert elapsed < 30, elapsed  # 7 attempts x 1 s, not forever


def test_a_stalled_s3_endpoint_fails_within_a_bounded_time_with_one_line(stalled, monkeypatch, tmp_path):
    """botocore's defaults (60 s reads, 5 attempts) held a dump ~5 minutes per call; here attempts x timeout."""
    import time

    from openverse_dataset.publish.s3 import DumpFile, S3DumpError, make_client, upload_dump

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("OPENVERSE_S3_TIMEOUT", "1")
    monkeypatch.setenv("OPENVERSE_S3_MAX_ATTEMPTS", "2")
    shard = tmp_path / "part-00000.parquet"
    pl.DataFrame({"identifier": ["a"]}).write_parquet(shard)
    client = make_client(region_name="us-east-1", endpoint_url=stalled.url)
    start = time.monotonic()
    with pytest.raises(S3DumpError) as info:
        upload_dump(client, "bucket", "p", "audio", [DumpFile("raw/x/part-00000.parquet", shard, "raw", "x")])
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message and "OPENVERSE_S3_TIMEOUT" in message and "Read timeout" in message, message
    assert len(stalled.accepted) == 2  # OPENVERSE_S3_MAX_ATTEMPTS: each attempt a fresh connection, then it stops
    assert elapsed < 20, elapsed  # 2 x 1 s plus backoff


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["adbc", "sqlalchemy"])
def test_a_stalled_catalog_fails_to_connect_within_a_bounded_time(stalled, monkeypatch, tmp_path, method):
    """A catalog host that accepts TCP and never speaks: libpq's connect_timeout ends the wait (both drivers)."""
    import time

    from openverse_dataset.catalog.connect import CatalogError
    from openverse_dataset.catalog.extract import extract_partition
    from openverse_dataset.media import AUDIO

    monkeypatch.setenv("OPENVERSE_CATALOG_CONNECT_TIMEOUT", "1")
    url = f"postgresql://postgres:s3cret@127.0.0.1:{stalled.port}/openledger"
    layout = DataLayout(tmp_path)
    start = time.monotonic()
    with pytest.raises(CatalogError) as info:
        extract_partition(url, AUDIO, "jamendo", layout, method=method)
    elapsed = time.monotonic() - start
    assert "s3cret" not in str(info.value) and "timeout" in str(info.value).lower(), str(info.value)
    assert stalled.accepted  # it did reach the stalled host
    assert elapsed < 12, elapsed  # the default wait is 15 s per attempt; libpq's own, unbounded without it
    assert leftovers(tmp_path) == []


# -- values PostgreSQL can hold --------------------------------------------------------------------------------
ODD_TIMESTAMPS = ["infinity", "-infinity", "10000-01-01 00:00:00+00", "0044-03-15 00:00:00+00 BC", "294276-12-31"]


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["adbc", "sqlalchemy"])
def test_out_of_range_timestamps_are_extracted_as_null_and_counted(tmp_path, upstream_catalog, method):
    from datetime import UTC, datetime

    from openverse_dataset.catalog.extract import extract_partition
    from openverse_dataset.catalog.seed import demo_rows
    from openverse_dataset.catalog.watermarks import catalog_watermarks
    from openverse_dataset.media import AUDIO

    rows = list(demo_rows(AUDIO))[:8]
    for i, r in enumerate(rows):
        r["provider"], r["foreign_identifier"] = "odd", f"odd-{i}"
    upstream_catalog.insert_media("audio", rows)
    for i, value in enumerate(ODD_TIMESTAMPS):
        column = "created_on" if i % 2 else "updated_on"
        upstream_catalog.execute(
            f"UPDATE audio SET {column} = CAST(:v AS timestamptz) WHERE foreign_identifier = :f",
            v=value,
            f=f"odd-{i}",
        )
    upstream_catalog.execute("UPDATE audio SET updated_on = '2999-01-01' WHERE foreign_identifier = 'odd-7'")
    upstream_catalog.prepare()  # change detection needs prepare-catalog's indexes
    before = catalog_watermarks(upstream_catalog.catalog_url, AUDIO)["odd"]  # reading them does not raise
    upstream_catalog.execute("UPDATE audio SET updated_on = now() WHERE foreign_identifier = 'odd-6'")
    after = catalog_watermarks(upstream_catalog.catalog_url, AUDIO)["odd"]
    assert after.token != before.token  # a row stamped 2999 does not freeze the provider's watermark
    assert after.max_updated_on <= datetime.now(UTC)

    layout = DataLayout(tmp_path)
    result = extract_partition(upstream_catalog.catalog_url, AUDIO, "odd", layout, method=method)
    assert result.rows == 8 and result.timestamps_out_of_range == len(ODD_TIMESTAMPS)
    raw = pl.read_parquet(layout.raw_dir("audio", "odd") / "*.parquet")
    nulls = raw.select(pl.col("created_on").is_null().sum() + pl.col("updated_on").is_null().sum()).item()
    assert nulls == len(ODD_TIMESTAMPS)
    for c in ("created_on", "updated_on"):  # nothing wrapped, nothing past what a reader can hold
        values = raw[c].drop_nulls()
        assert values.min() >= datetime(1, 1, 1, tzinfo=UTC) and values.max().year <= 9999


@pytest.mark.postgres
def test_a_takedown_committed_during_a_build_never_reaches_the_target(env, upstream_catalog, monkeypatch, capsys):
    from openverse_dataset.cli import main

    upstream_catalog.seed_demo(["audio"])
    upstream_catalog.configure(monkeypatch)
    assert main(["build", "--media", "audio", "--dry-run"]) == 0  # extracted and cleaned; nothing published
    cleaned = pl.read_parquet(env / "clean" / "audio" / "*" / "*" / "*.parquet")
    victim = cleaned["identifier"].sort()[0]
    upstream_catalog.take_down("audio", [victim])  # after the clean step took its snapshot
    capsys.readouterr()
    assert main(["publish", "--media", "audio"]) == 1
    said = capsys.readouterr()
    assert "taken down since they were cleaned" in said.out + said.err  # failures go to stderr
    assert not (env / "hub" / "openverse-audio").exists()  # not one byte reached the target
    assert main(["build", "--media", "audio"]) == 0  # the next build re-cleans and releases without it
    released = pl.read_parquet(env / "hub" / "openverse-audio" / "data" / "*" / "*" / "*.parquet")
    assert victim not in released["identifier"].to_list() and released.height == cleaned.height - 1


# -- the bad-row corpus ------------------------------------------------------------------------------------------
def _deep_json(levels: int, tail: str = "") -> str:
    return '{"a":' * levels + "{}" + "}" * levels if not tail else '{"a":' * levels + "{}" + "}" * (levels - 1) + tail


@pytest.mark.postgres
def test_bad_row_corpus_every_row_published_rejected_or_refused(env, upstream_catalog, monkeypatch):
    """Single hostile rows stay inside themselves: published + rejected + refused = inserted, none lost."""
    from datetime import UTC, datetime

    from openverse_dataset.catalog.seed import demo_rows
    from openverse_dataset.cli import main
    from openverse_dataset.media import AUDIO

    base = [r for r in demo_rows(AUDIO) if r["license"] == "by-nc-sa"][:44]
    layout = ["control"] * 10 + ["odd"] * 10 + ["100%"] * 5 + ["a/b"] * 5 + ["bad\nname"] * 2 + [None] * 2
    layout += ["urls"] * 10
    for i, (r, p) in enumerate(zip(base, layout, strict=True)):
        r["provider"], r["source"], r["foreign_identifier"] = p, p or "none", f"corpus-{i}"
    base[17]["title"] = "t" * 1_000_000
    base[18]["url"] = "https://example.org/a b\x01c.mp3"
    base[19]["license"] = "nonsense"
    # URLs PostgreSQL can hold: spaces (encoded), control characters (media URL: rejected; others: removed),
    # schemes that are not http(s)
    base[34]["url"] = "https://example.org/my song.mp3"
    base[35]["url"] = "https://example.org/a\tb.mp3"
    base[36]["url"] = "javascript:alert(1)"
    base[37]["creator_url"] = "https://example.org/\x1b[0m"
    base[38]["foreign_landing_url"] = "data:text/html,<script>alert(1)</script>"
    base[42]["url"] = "https://example.org/a\x7f.mp3"
    base[43]["thumbnail"] = "https://example.org/cover art.jpg"
    # JSON of any size: ~5 MB of tags (150,000 of them), ~5 MB of meta_data, ~5 MB of tags that are not objects
    base[39]["tags"] = [{"name": f"tag-{k}", "provider": "urls"} for k in range(150_000)]
    base[40]["meta_data"] = {"lyrics": "la " * 1_700_000, "mature": False}
    base[41]["tags"] = list(range(1_000_000))
    assert upstream_catalog.insert_media("audio", base) == len(base)
    odd = {
        10: "created_on = '-infinity'",
        11: "updated_on = 'infinity'",
        12: "created_on = '294276-12-31'",
        13: "updated_on = '10000-01-01'",
        14: "created_on = '0044-03-15 BC'",
        15: "tags = CAST(:deep_tags AS jsonb)",
        16: "meta_data = CAST(:deep_meta AS jsonb)",
    }
    for i, assignment in odd.items():
        upstream_catalog.execute(
            f"UPDATE audio SET {assignment} WHERE foreign_identifier = :f",
            f=f"corpus-{i}",
            deep_tags="[" * 3000 + "]" * 3000,
            deep_meta=_deep_json(300, ', "mature": true}'),
        )
    upstream_catalog.configure(monkeypatch)
    main(["build", "--media", "audio"])  # the refused provider is reported; every other provider is released

    published = pl.read_parquet(env / "hub" / "openverse-audio" / "data" / "*" / "*" / "*.parquet")
    rejected = pl.read_parquet(env / "rejects" / "audio" / "*" / "*.parquet")
    refused_names = json.loads((env / "providers" / "audio.json").read_text())["refused"]
    assert list(refused_names) == ["bad\nname"]
    refused = upstream_catalog.scalar(
        "select count(*) from audio where provider is null or provider = :p", p="bad\nname"
    )
    assert published.height + rejected.height + refused == len(base)  # nothing lost, silently or not
    assert refused == 4
    by_provider = dict(published.group_by("provider").len().iter_rows())
    assert by_provider["control"] == 10 and by_provider["100%"] == 5 and by_provider["a/b"] == 5
    reasons = dict(zip(rejected["identifier"], rejected["reason"], strict=True))
    with upstream_catalog.catalog.connect() as conn:
        ids = dict(conn.execute(sa.text("select foreign_identifier, identifier::text from audio")).all())
    assert reasons[ids["corpus-16"]] == "mature_by_provider"  # "mature": true behind 300 levels of nesting
    assert ids["corpus-19"] in reasons  # unknown license: rejected with its reason
    for c in ("created_on", "updated_on"):  # no wrapped or out-of-range timestamp published
        values = published[c].drop_nulls()
        assert values.min() >= datetime(1, 1, 1, tzinfo=UTC) and values.max().year <= 9999
    row = published.filter(pl.col("identifier") == ids["corpus-17"])
    assert row.height == 1 and len(row["title"][0]) == 1_000_000  # long text published whole
    deep_tags = published.filter(pl.col("identifier") == ids["corpus-15"])
    assert deep_tags.height == 1 and deep_tags["tags"][0] is None  # unparseable tags dropped, row kept

    def one(i: int) -> dict:
        rows = published.filter(pl.col("identifier") == ids[f"corpus-{i}"]).to_dicts()
        assert len(rows) == 1, (i, reasons.get(ids[f"corpus-{i}"]))
        return rows[0]

    assert reasons[ids["corpus-18"]] == "url_control_characters"
    assert (
        reasons[ids["corpus-35"]] == "url_control_characters" and reasons[ids["corpus-42"]] == "url_control_characters"
    )
    assert reasons[ids["corpus-36"]] == "invalid_url"
    assert one(34)["url"] == "https://example.org/my%20song.mp3"
    assert one(43)["thumbnail"] == "https://example.org/cover%20art.jpg"
    assert one(37)["creator_url"] is None and one(38)["foreign_landing_url"] is None
    assert len(one(39)["tags"]) == 150_000  # 5 MB of tags published whole
    assert len(one(40)["meta_data"]) > 5_000_000 and one(41)["tags"] is None
    assert by_provider["urls"] == 7
