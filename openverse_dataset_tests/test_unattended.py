"""The unattended path, proven with the real daemon: `dagster dev` on a PostgreSQL instance, nobody calling a job.

A production-shaped catalog (Openverse's own DDL) and a separate API database start with three image providers.
Only the catalog is touched afterwards; the sensors and the automation must turn each change into a release:
(a) a provider's rows edited, (b) a new provider, (c) one provider's extract failing (a fault injected through
`OPENVERSE_FAULT_FILE`) while another changes, (d) a takedown, (e) a provider removed from the catalog. The test
prints the seconds from each catalog commit to the release that reflects it (the README quotes them), and stops
every process it started, pass or fail.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from openverse_dataset.catalog.seed import demo_rows
from openverse_dataset.media import IMAGE
from openverse_dataset_tests.procs import dagster_dev, free_port, group_members

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "dagster.yaml"
EDITED, HELD, TAKEN, REMOVED = "mccordmuseum", "deviantart", "500px", "500px"  # small, none all-rejected
NEW = "digitaltmuseum"
INITIAL = [EDITED, HELD, TAKEN]
STEP_TIMEOUT = 240  # seconds one scenario may take on a loaded 2-core machine
FIRST_TIMEOUT = 300  # the first release: every provider's first refresh, then the publish run
SECRET_PATH = "/hooks/T000-secret-token"  # stands in for a Slack webhook URL: must never be logged


class Receiver:
    """A loopback HTTP server standing in for Slack's incoming webhook: records every JSON body posted."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "body": json.loads(body), "at": time.time()})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _instance_yaml(storage_url: str) -> dict:
    """Production's instance config (PostgreSQL storage, run retries, pools) without ECS and S3 logs."""
    cfg = yaml.safe_load(DEPLOY.read_text())
    cfg.pop("run_launcher")  # ECS cannot be reached from here: the default launcher stands in
    cfg.pop("compute_logs")
    cfg["storage"]["postgres"]["postgres_url"] = storage_url
    cfg["concurrency"]["runs"]["max_concurrent_runs"] = 3  # a 2-core machine
    return cfg


class Release:
    """Reads what the local publish target holds (the release folder is swapped atomically)."""

    def __init__(self, hub: Path) -> None:
        self.repo = hub / IMAGE.repo_name

    def rows(self) -> pl.DataFrame | None:
        try:
            return pl.read_parquet(self.repo / "data" / "*" / "*" / "*.parquet")
        except Exception:  # absent, or swapped out between listing and reading
            return None

    def card(self) -> str:
        try:
            return (self.repo / "README.md").read_text()
        except OSError:
            return ""

    def removals(self) -> pl.DataFrame | None:
        try:
            return pl.read_parquet(self.repo / "removals.parquet")
        except Exception:
            return None


def _wait(what: str, ok: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = STEP_TIMEOUT):
    """Poll `ok` every second; the seconds it took. Fails with the server log's tail if it never holds."""
    start = time.monotonic()
    while True:
        try:
            if ok():
                return time.monotonic() - start
        except Exception:  # a file mid-swap: poll again
            pass
        assert proc.poll() is None, f"dagster dev exited while waiting for {what}:\n{log.read_text()[-4000:]}"
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s. dagster dev log tail:\n{log.read_text()[-6000:]}")
        time.sleep(1)


def _titles(rel: Release, provider: str) -> set[str]:
    rows = rel.rows()
    return set() if rows is None else set(rows.filter(pl.col("provider") == provider)["title"].to_list())


def _identifiers(rel: Release) -> set[str]:
    rows = rel.rows()
    return set() if rows is None else set(rows["identifier"].to_list())


@pytest.fixture
def daemon_env(upstream_catalog, pg_url, tmp_path) -> Iterator[dict]:
    """The catalog with three providers, the instance home, the environment `dagster dev` runs with."""
    rows = [r for r in demo_rows(IMAGE) if r["provider"] in [*INITIAL, NEW]]
    upstream_catalog.insert_media("image", [r for r in rows if r["provider"] in INITIAL])
    upstream_catalog.prepare()  # prepare-catalog's indexes: the sensors skip without them
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    storage = sa.engine.make_url(pg_url).set(drivername="postgresql+psycopg2").render_as_string(False)
    (home / "dagster.yaml").write_text(yaml.safe_dump(_instance_yaml(storage)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENVERSE_", "DAGSTER_"))}
    env.update(
        upstream_catalog.env(),
        DAGSTER_HOME=str(home),
        OPENVERSE_DATA_DIR=str(data),
        OPENVERSE_PUBLISH_TARGET=f"local:{data / 'hub'}",
        OPENVERSE_RELEASE_DATE="2026-11-27",
        OPENVERSE_FAULT_FILE=str(tmp_path / "faults.json"),
        OPENVERSE_STALE_SENSOR_INTERVAL_SECONDS="3",
        OPENVERSE_TAKEDOWN_SENSOR_INTERVAL_SECONDS="3",
        OPENVERSE_AUTOMATION_INTERVAL_SECONDS="3",
        OPENVERSE_ALERT_SENSOR_INTERVAL_SECONDS="3",
        OPENVERSE_RUN_MAX_RETRIES="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    yield {"env": env, "home": home, "data": data, "rows": rows, "faults": tmp_path / "faults.json"}


def test_releases_follow_the_catalog_with_nobody_clicking(upstream_catalog, daemon_env):
    env, data = daemon_env["env"], daemon_env["data"]
    receiver = Receiver()
    env["OPENVERSE_ALERT_WEBHOOK_URL"] = receiver.url
    rel = Release(data / "hub")
    latencies: dict[str, float] = {}
    log_path = REPO / "artifacts" / "unattended-dagster-dev.log"  # kept for inspection after a failure
    log_path.parent.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.callback(receiver.close)
        proc = dagster_dev(stack, env, log_path, free_port())

        # Baseline: the first release holds every provider, with nobody having called a job.
        latencies["first release (from server start)"] = _wait(
            "first release",
            lambda: set(rel.rows()["provider"].unique().to_list()) == set(INITIAL),
            proc,
            log_path,
            FIRST_TIMEOUT,
        )

        # (a) one provider's rows edited -> a release containing the edit
        victim = upstream_catalog.scalar(
            "select identifier::text from image where provider = :p order by identifier limit 1", p=EDITED
        )
        upstream_catalog.execute(
            "update image set title = 'Edited unattended', updated_on = now() where identifier = cast(:i as uuid)",
            i=victim,
        )
        latencies["(a) edit"] = _wait(
            "(a) the edit released", lambda: "Edited unattended" in _titles(rel, EDITED), proc, log_path
        )

        # (b) a new provider -> released
        upstream_catalog.insert_media("image", [r for r in daemon_env["rows"] if r["provider"] == NEW])
        latencies["(b) new provider"] = _wait(
            "(b) the new provider released", lambda: bool(_titles(rel, NEW)) and NEW in rel.card(), proc, log_path
        )

        # (c) one provider's extract fails while another changes -> the change is released, the failing
        # provider keeps its previous rows, the alert arrives, the card names it
        held_before = _titles(rel, HELD)
        daemon_env["faults"].write_text(json.dumps({"extract": [HELD]}))
        committed = time.time()
        upstream_catalog.execute(
            "update image set title = 'Edited while another fails', updated_on = now() "
            "where identifier = cast(:i as uuid)",
            i=victim,
        )
        upstream_catalog.execute(
            "update image set title = title || ' (never extracted)', updated_on = now() where provider = :p", p=HELD
        )
        latencies["(c) release despite a failing provider"] = _wait(
            "(c) the other provider's change released with the failing one held back",
            lambda: "Edited while another fails" in _titles(rel, EDITED) and "Providers held back" in rel.card(),
            proc,
            log_path,
        )
        assert _titles(rel, HELD) == held_before  # its previous rows, unchanged
        card = rel.card()
        held_line = next(line for line in card.splitlines() if line.startswith(f"| {HELD} |"))
        assert "previous release" in held_line and "injected extract fault" in held_line
        title = f"image_refresh_provider for provider {HELD} failed"
        _wait("(c) the alert", lambda: any(title in a["body"]["text"] for a in receiver.received), proc, log_path)
        alert = next(a for a in receiver.received if title in a["body"]["text"])
        assert alert["path"] == SECRET_PATH and "InjectedFault" in alert["body"]["text"]
        assert "attempt 2 of 2" in alert["body"]["text"]  # alerted after the retry, not before
        latencies["(c) alert after retries"] = alert["at"] - committed

        # (d) a takedown -> the next release lacks the work
        taken = upstream_catalog.scalar(
            "select identifier::text from image where provider = :p and not removed_from_source "
            "order by identifier limit 1",
            p=TAKEN,
        )
        assert taken in _identifiers(rel)
        upstream_catalog.take_down("image", [taken])
        latencies["(d) takedown"] = _wait(
            "(d) the taken-down work gone", lambda: taken not in _identifiers(rel), proc, log_path
        )

        # (e) a provider removed from the catalog -> its rows leave, the removals file lists them
        gone = _published(rel, REMOVED)
        upstream_catalog.execute("delete from image where provider = :p", p=REMOVED)
        latencies["(e) provider removed"] = _wait(
            "(e) the removed provider's rows gone",
            lambda: not _titles(rel, REMOVED) and _removed(rel, REMOVED) >= gone,
            proc,
            log_path,
        )
        assert REMOVED not in _partitions(daemon_env["home"])

        text = log_path.read_text()
        assert receiver.url not in text and SECRET_PATH not in text  # the webhook URL is a secret

    print("\nseconds from the catalog commit to the release that reflects it:")
    for k, v in latencies.items():
        print(f"  {k}: {v:.1f}s")
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "unattended-latencies.json").write_text(json.dumps(latencies, indent=2))
    assert not group_members(proc.pid)


def _published(rel: Release, provider: str) -> set[str]:
    rows = rel.rows()
    return set(rows.filter(pl.col("provider") == provider)["identifier"].to_list())


def _removed(rel: Release, provider: str) -> set[str]:
    rm = rel.removals()
    return set() if rm is None else set(rm.filter(pl.col("provider") == provider)["identifier"].to_list())


def _partitions(home: Path) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_dynamic_partitions("image_providers")


BIG = "flickr"  # 1,001 demo rows: above a bound of 300, so split into slices


def test_a_big_provider_refreshes_as_one_run_per_slice(upstream_catalog, daemon_env):
    """With only the daemon running: a change to a provider split into slices is extracted and cleaned by one run
    per slice (each on its own snapshot), then the provider's run assembles them without reading the catalog
    again, and the release carries the change."""
    import dagster as dg

    from openverse_dataset.defs.tags import CATALOG_CHANGE_TAG

    env, data, home = daemon_env["env"], daemon_env["data"], daemon_env["home"]
    env["OPENVERSE_PARTITION_MAX_ROWS"] = "300"
    cfg = yaml.safe_load((home / "dagster.yaml").read_text())
    cfg["concurrency"]["pools"]["default_limit"] = 2  # `dagster instance concurrency set catalog_db 2`
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    upstream_catalog.insert_media("image", [r for r in demo_rows(IMAGE) if r["provider"] == BIG])
    rel = Release(data / "hub")
    log_path = REPO / "artifacts" / "unattended-slices-dagster-dev.log"
    log_path.parent.mkdir(exist_ok=True)
    with ExitStack() as stack:
        proc = dagster_dev(stack, env, log_path, free_port())
        first = _wait(
            "first release with the big provider",
            lambda: set(rel.rows()["provider"].unique().to_list()) == {*INITIAL, BIG},
            proc,
            log_path,
            FIRST_TIMEOUT,
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            keys = sorted(instance.get_dynamic_partitions("image_slices"))
        assert len(keys) >= 4 and all(k.startswith(f"{BIG}/") for k in keys), keys  # registered from the plan

        daemon_env["faults"].write_text(json.dumps({"slow_extract": {BIG: 4}}))  # each slice run takes 4 s more
        edited = upstream_catalog.execute(
            "update image set title = 'Edited in a slice run', updated_on = now() where identifier in "
            "(select identifier from image where provider = :p order by identifier desc limit 3)",
            p=BIG,
        )
        assert edited == 3
        took = _wait(
            "the sliced provider's edit released",
            lambda: "Edited in a slice run" in _titles(rel, BIG) and len(_titles(rel, BIG)) > 3,
            proc,
            log_path,
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            slice_runs = instance.get_runs(dg.RunsFilter(job_name="image_refresh_slice"))
            tokens = {r.tags.get(CATALOG_CHANGE_TAG) for r in slice_runs}
            assert len(tokens) == 1 and None not in tokens  # one round, for the one change
            assert sorted(r.tags["dagster/partition"] for r in slice_runs) == keys  # one run per slice
            assert {r.status for r in slice_runs} == {dg.DagsterRunStatus.SUCCESS}
            provider_runs = instance.get_runs(
                dg.RunsFilter(job_name="image_refresh_provider", tags={CATALOG_CHANGE_TAG: tokens.pop()})
            )
            assert [r.tags["dagster/partition"] for r in provider_runs] == [BIG]
            spans = [(st.start_time, st.end_time) for st in (instance.get_run_stats(r.run_id) for r in slice_runs)]
            assert instance.get_run_stats(provider_runs[0].run_id).start_time >= max(e for _, e in spans)
            overlapping = any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2))
            assert overlapping, spans  # side by side, as the pool allows: separate runs, not one after another
            mats = {
                e.asset_materialization.partition: e.asset_materialization.metadata
                for e in instance.fetch_materializations(dg.AssetKey(["image", "slice"]), limit=100).records
            }
            read = sum(m["rows_changed"].value for m in mats.values())
            assert 3 <= read < 100  # the change (and the rows of the watermark's overlap window), not the provider
            raw = instance.fetch_materializations(dg.AssetKey(["image", "raw"]), limit=1).records[0]
            meta = raw.asset_materialization.metadata
            assert raw.asset_materialization.partition == BIG and raw.run_id == provider_runs[0].run_id
            assert meta["slices_refreshed_by_own_runs"].value == len(keys)
            assert meta["rows_read_from_catalog"].value == 0  # the provider run read no row again
    print(f"\nbig provider: first release {first:.1f}s; edit released through {len(keys)} slice runs in {took:.1f}s")
    assert not group_members(proc.pid)
