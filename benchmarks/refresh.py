"""Refresh benchmark: what `openverse-dataset build` costs again after a realistic day of catalog changes.

    .venv/bin/python benchmarks/refresh.py                   # 2,000,000 rows
    .venv/bin/python benchmarks/refresh.py --rows 8000000    # the 4x check (long on a shared 2-core machine)
    .venv/bin/python benchmarks/refresh.py --rows 200000     # a quick smoke run
    # another checkout's code against this one, builds interleaved, outputs compared byte for byte:
    git archive main openverse_dataset | tar -x -C /tmp/base
    .venv/bin/python benchmarks/refresh.py --baseline-src /tmp/base

Creates two scratch databases on 127.0.0.1:5432 from Openverse's own DDL (the catalog, and the API database
with the takedown tables; both dropped at the end), fills the catalog server-side with the synthetic `image`
rows (`synth.py`, ~70% flickr), adds only the change-detection indexes `prepare-catalog` creates
(`(provider, updated_on)` on the media table, `(provider, deleted_on)` on `deleted_image`), then, each in its
own process with a persistent Dagster instance and data directory:
1. full build: `openverse-dataset build --media image`;
2. the change set: 0.1% of flickr's rows updated (title, popularity, updated_on = now()), 0.1% new flickr rows,
   0.05% of flickr moved to `deleted_image`, 10 rows of a small provider edited, one takedown in
   `api_deletedimage`;
3. refresh: the same command again.
Prints and writes `benchmarks/results/refresh-<rows>.json`: refresh wall / full-build wall; rows read from the
catalog by the refresh / rows changed; new-chunk bytes / total bytes of flickr's release files (FastCDC
16/64/256 KiB, the order of Xet's chunks: bytes of chunks of the new files not present in the previous ones; also
by file, and for the `--baseline-src` build);
peak RSS of each run process (the whole CLI process: Dagster runs in process, so it is included). The CLI runs in
`.venv-runtime/`, the project's runtime dependencies only, as the production image installs them (`--dev-env`:
in this interpreter's environment instead; see `runtime_python`).
`--verify` also builds the changed catalog from scratch into a fresh data directory and compares flickr's
files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402  (benchmarks/synth.py: scratch databases)

# Suffix of the new rows' keys: unique per run, so a change set applied again to a kept catalog (`--catalog-url`)
# does not collide with the rows an earlier run added (the catalog's unique (provider, md5(foreign_identifier))).
RUN = uuid.uuid4().hex[:8]
ADMIN_URL = os.environ.get("OPENVERSE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# The interpreter every CLI process runs with: a runtime-only environment (`runtime_python`), set in main().
PYTHON = sys.executable
SMALL = "stocksnap"  # the small provider the change set edits (0.5% of the rows)
MiB = 1024 * 1024


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _host_cpu() -> dict[str, float]:
    """The machine's CPU seconds so far (all cores) from /proc/stat: busy, iowait and steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, iowait, irq, softirq, steal = (int(v) / os.sysconf("SC_CLK_TCK") for v in fields[:8])
    return {"busy": user + nice + system + irq + softirq, "iowait": iowait, "steal": steal}


def run_cli(args: list[str], env: dict, log: Path) -> dict:
    """One CLI process: wall seconds, its own peak RSS (wait4's ru_maxrss) and RSS samples every 0.1 s.

    The samples (epoch seconds, MiB) are matched to Dagster's step times afterwards: which step holds the peak.
    `host` says what else the machine did meanwhile (CPU seconds of other processes, i.e. mostly PostgreSQL;
    iowait; steal by the hypervisor): a wall time is only comparable with another taken on an equally quiet host.
    """
    import threading

    t = time.perf_counter()
    cpu0 = _host_cpu()
    samples: list[tuple[float, float]] = []
    with open(log, "a") as out:
        # Run from outside the checkout: `python -m` puts the working directory first on sys.path, so a CLI started
        # in the repository would import this checkout's package even for the baseline build.
        proc = subprocess.Popen(
            [PYTHON, "-m", "openverse_dataset.cli", *args],
            env=env,
            stdout=out,
            stderr=out,
            cwd=Path(env["DAGSTER_HOME"]).parent,
        )
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                if (rss := _rss_mib(proc.pid)) is not None:
                    samples.append((time.time(), rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    cpu1 = _host_cpu()
    own = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    if code:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"{tail}\nopenverse-dataset {' '.join(args)} exited {code}")
    return {
        "wall_s": round(time.perf_counter() - t, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "host": {
            "cli_cpu_s": round(own, 1),
            "other_cpu_s": round(max(0.0, cpu1["busy"] - cpu0["busy"] - own), 1),
            "iowait_s": round(cpu1["iowait"] - cpu0["iowait"], 1),
            "steal_s": round(cpu1["steal"] - cpu0["steal"], 1),
        },
        "_samples": samples,
    }


def _wall_rss(run: dict) -> str:
    h = run["host"]
    return (
        f"{run['wall_s']:.1f}s, peak RSS {run['peak_rss_mib']} MiB; CPU {h['cli_cpu_s']:.0f} s, other processes "
        f"{h['other_cpu_s']:.0f} s, iowait {h['iowait_s']:.0f} s, steal {h['steal_s']:.0f} s"
    )


def peak_by_step(samples: list[tuple[float, float]], windows: dict) -> dict:
    """Peak sampled RSS (MiB) of the process during each step (`windows`: run -> step -> (start, end))."""
    out: dict = {}
    for run, steps in windows.items():
        for step, (start, end) in steps.items():
            seen = [rss for ts, rss in samples if start <= ts <= end]
            if seen:
                out.setdefault(run, {})[step] = round(max(seen))
    return out


def release_files(data: Path, provider: str) -> list[Path]:
    """The provider's data files as published (the local Hub target), else its cleaned files (the same bytes)."""
    published = sorted(data.glob(f"hub/*/data/*/{provider}/*.parquet"))
    return published or sorted(data.glob(f"clean/image/{provider}/*/part-*.parquet"))


def chunk_index(files: list[Path]) -> tuple[set[bytes], int]:
    """Content-defined chunks (FastCDC, 16/64/256 KiB) of the files: hashes, and the total bytes."""
    import pyfastcdc

    cdc = pyfastcdc.FastCDC(avg_size=64 * 1024)
    hashes: set[bytes] = set()
    total = 0
    for f in files:
        data = f.read_bytes()
        total += len(data)
        hashes |= {hashlib.sha256(c.data).digest() for c in cdc.cut_buf(data)}
    return hashes, total


def new_chunk_bytes(before: set[bytes], files: list[Path]) -> tuple[int, int, dict[str, list[int]]]:
    """Bytes of the files' content-defined chunks not in `before`, their total bytes, and both by file (which
    files a change costs: a rewritten file's footer, a folder's tail, the groups the change reached)."""
    import pyfastcdc

    cdc = pyfastcdc.FastCDC(avg_size=64 * 1024)
    by_file: dict[str, list[int]] = {}
    for f in files:
        data = f.read_bytes()
        fresh = sum(c.length for c in cdc.cut_buf(data) if hashlib.sha256(c.data).digest() not in before)
        by_file[f"{f.parent.parent.name}/{f.parent.name}/{f.name}"] = [fresh, len(data)]
    return sum(n for n, _ in by_file.values()), sum(t for _, t in by_file.values()), by_file


COLS = (
    "identifier, created_on, updated_on, ingestion_type, provider, source, foreign_identifier, "
    "foreign_landing_url, url, thumbnail, width, height, filesize, license, license_version, creator, "
    "creator_url, title, meta_data, tags, watermarked, last_synced_with_source, removed_from_source, "
    "filetype, category, standardized_popularity"
)  # the media table's columns a change set copies (into deleted_image, or as new rows)


def volumes(flickr_rows: int) -> tuple[int, int, int]:
    """The issue's change set: 0.1% of flickr updated, 0.1% new, 0.05% moved to deleted_image."""
    return max(1, flickr_rows // 1000), max(1, flickr_rows // 1000), max(1, flickr_rows // 2000)


def _new_rows(conn, cols: str, suffix: str, order: str, k: int) -> None:
    """k new flickr rows created now: copies of existing ones under new identifiers, keys and URLs."""
    import sqlalchemy as sa

    new_cols = cols.replace("identifier, created_on, updated_on, ", "")
    conn.execute(
        sa.text(
            f"INSERT INTO image ({cols}) SELECT gen_random_uuid(), now(), now(), "
            + new_cols.replace("foreign_identifier", f"foreign_identifier || '-{suffix}'").replace(
                "foreign_landing_url, url,", f"foreign_landing_url, url || '?{suffix}',"
            )
            + f" FROM image WHERE provider = 'flickr' ORDER BY {order} LIMIT :k"
        ),
        {"k": k},
    )


def _edit_small(conn, note: str, order: str) -> int:
    """Edit 10 rows of the small provider (its title); returns how many."""
    import sqlalchemy as sa

    return conn.execute(
        sa.text(
            f"UPDATE image SET updated_on = now(), title = coalesce(title, '') || ' {note}' WHERE identifier IN "
            f"(SELECT identifier FROM image WHERE provider = :p ORDER BY {order} LIMIT 10)"
        ),
        {"p": SMALL},
    ).rowcount


def _take_down(api_url: str, identifier: str) -> None:
    """One takedown, as the API records it (a row in its `api_deletedimage`)."""
    import sqlalchemy as sa

    api = sa.create_engine(api_url)
    with api.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO api_deletedimage (identifier, created_on, updated_on) VALUES (:i, now(), now())"),
            {"i": identifier},
        )
    api.dispose()


def change_set(url: str, api_url: str, flickr_rows: int) -> dict:
    """Apply the day's changes the way Openverse's ingestion stamps them (updated_on = now())."""
    import sqlalchemy as sa

    n_upd, n_new, n_del = volumes(flickr_rows)
    cols = COLS
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # A sample spread over the whole partition (random positions, as re-ingestion and dead links are).
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE pick AS SELECT identifier, row_number() OVER () AS n FROM "
                "(SELECT identifier FROM image WHERE provider = 'flickr' ORDER BY md5(identifier::text) "
                "LIMIT :k) s"
            ),
            {"k": n_upd + n_del + 1},
        )
        conn.execute(
            sa.text(
                "UPDATE image SET updated_on = now(), title = coalesce(title, '') || ' (edited)', "
                "standardized_popularity = standardized_popularity / 2 "
                "WHERE identifier IN (SELECT identifier FROM pick WHERE n <= :u)"
            ),
            {"u": n_upd},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO deleted_image ({cols}, deleted_on, deleted_reason) SELECT {cols}, now(), 'dead link' "
                "FROM image WHERE identifier IN (SELECT identifier FROM pick WHERE n > :u AND n <= :d)"
            ),
            {"u": n_upd, "d": n_upd + n_del},
        )
        conn.execute(
            sa.text("DELETE FROM image WHERE identifier IN (SELECT identifier FROM pick WHERE n > :u AND n <= :d)"),
            {"u": n_upd, "d": n_upd + n_del},
        )
        taken = conn.scalar(sa.text("SELECT identifier::text FROM pick WHERE n = :t"), {"t": n_upd + n_del + 1})
        _new_rows(conn, cols, f"new-{RUN}", "md5(identifier::text) DESC", n_new)
        small = _edit_small(conn, "(fixed)", "identifier")
    engine.dispose()
    _take_down(api_url, taken)
    return {
        "flickr_updated": n_upd,
        "flickr_new": n_new,
        "flickr_deleted": n_del,
        "small_edited": small,
        "takedowns": 1,
    }


def change_set_reingest(url: str, api_url: str, flickr_rows: int) -> dict:
    """The same volumes as `change_set`, clustered the way Openverse's catalog writes them.

    Flickr's reingestion (`flickr_ingestion_workflow`: `get_reingestion_day_list_list((1, 7), (7, 12), ...)`)
    re-fetches whole upload days, and a day's uploads were first ingested together, so its updates are runs of
    consecutive rows in created_on order; here its daily tier: the 7 upload days 1..7 days back, 1/7 of the updates
    each. New rows are today's uploads (created_on = now()). Removals come from `delete_records`-style batches
    (rows matching a condition; here one contiguous created_on window, as when one bad ingestion run is
    withdrawn), 180 days back (mid-partition when the synthetic rows span less). The small provider's edit and
    the takedown are as in `change_set`.
    """
    import sqlalchemy as sa

    n_upd, n_new, n_del = volumes(flickr_rows)
    per_day = max(1, n_upd // 7)
    cols = COLS
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        newest = conn.scalar(
            sa.text(
                "SELECT max(created_on) FROM image WHERE provider = 'flickr' AND created_on < now() - interval '1 hour'"
            )
        )
        oldest = conn.scalar(sa.text("SELECT min(created_on) FROM image WHERE provider = 'flickr'"))
        updated = 0
        for days in range(1, 8):
            updated += conn.execute(
                sa.text(
                    "UPDATE image SET updated_on = now(), title = coalesce(title, '') || ' (edited)', "
                    "standardized_popularity = standardized_popularity / 2 WHERE identifier IN ("
                    "SELECT identifier FROM image WHERE provider = 'flickr' AND created_on <= :at "
                    "ORDER BY created_on DESC, identifier DESC LIMIT :k)"
                ),
                {"at": newest - timedelta(days=days), "k": per_day},
            ).rowcount
        conn.execute(
            sa.text(
                "CREATE TEMP TABLE gone AS SELECT identifier FROM image WHERE provider = 'flickr' "
                "AND created_on <= :at "
                "ORDER BY created_on DESC, identifier DESC LIMIT :k"
            ),
            {"at": max(newest - timedelta(days=180), oldest + (newest - oldest) / 2), "k": n_del},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO deleted_image ({cols}, deleted_on, deleted_reason) SELECT {cols}, now(), 'withdrawn "
                "ingestion run' FROM image WHERE identifier IN (SELECT identifier FROM gone)"
            )
        )
        deleted = conn.execute(sa.text("DELETE FROM image WHERE identifier IN (SELECT identifier FROM gone)")).rowcount
        taken = conn.scalar(
            sa.text(
                "SELECT identifier::text FROM image WHERE provider = 'flickr' ORDER BY md5(identifier::text || :r) "
                "LIMIT 1"
            ),
            {"r": f"r{RUN}"},  # per run: the change set applied again to a kept catalog takes down another row
        )
        _new_rows(conn, cols, f"new2-{RUN}", "md5(identifier::text || 'n')", n_new)
        small = _edit_small(conn, "(again)", "identifier DESC")
    engine.dispose()
    _take_down(api_url, taken)
    return {
        "flickr_updated": updated,
        "flickr_new": n_new,
        "flickr_deleted": deleted,
        "small_edited": small,
        "takedowns": 1,
    }


PATTERNS = {"random": change_set, "reingest": change_set_reingest}


def prepare(url: str, log) -> None:
    """`prepare-catalog`: the indexes change detection needs (the real DDL has none it can use)."""
    import sqlalchemy as sa

    from openverse_dataset.catalog.prepare import prepare_catalog

    prepare_catalog(url, ["image"], echo=lambda sql: log(f"  {sql}"))
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE) image"))
    engine.dispose()


_STEPS = """
import json, sys
import dagster as dg
since = float(sys.argv[1])
inst = dg.DagsterInstance.get()
out = {}
for rec in inst.get_run_records():
    if rec.create_timestamp.timestamp() < since:
        continue
    run = rec.dagster_run
    name = run.job_name + ("/" + run.tags["dagster/partition"] if "dagster/partition" in run.tags else "")
    out[name] = {s.step_key: [s.start_time, s.end_time] for s in inst.get_run_step_stats(run.run_id)
                 if s.start_time and s.end_time}
book = {}
ev = inst.get_latest_materialization_event(dg.AssetKey(["image", "card"]))
if ev is not None and ev.timestamp >= since:
    meta = ev.asset_materialization.metadata
    keys = ("index_segments_built", "index_segments_reused", "providers_diffed", "shards_hashed")
    book = {k: v.value for k, v in meta.items() if k.startswith("seconds_") or k in keys}
print(json.dumps({"steps": out, "bookkeeping": book}))
"""


def step_windows(env: dict, since: float) -> tuple[dict, dict]:
    """(start, end) epoch seconds of each step of the runs started after `since`, and the card step's release
    bookkeeping metadata (seconds of versions, index, diff; segments built and reused), read in a child so that
    this process stays small."""
    out = subprocess.run(
        [sys.executable, "-c", _STEPS, str(since)], env=env, capture_output=True, text=True, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return got["steps"], got["bookkeeping"]


def watermark_query_seconds(url: str, repeats: int = 5) -> float:
    """Median wall of the stale-provider sensor's watermark query (every provider, one round trip) on the
    catalog as the refresh left it; `sensor_tick.py` times the whole tick."""
    import statistics

    from openverse_dataset.catalog.watermarks import catalog_watermarks
    from openverse_dataset.media import IMAGE

    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        catalog_watermarks(url, IMAGE)
        walls.append(time.perf_counter() - t0)
    return round(statistics.median(walls), 4)


def seconds_of(windows: dict) -> dict:
    return {run: {k: round(e - b, 2) for k, (b, e) in steps.items()} for run, steps in windows.items()}


def rows_read(data: Path) -> dict:
    """What each provider's last raw refresh read, from its change record."""
    out = {}
    for f in sorted(data.glob("changes/image/*/changes.json")):
        meta = json.loads(f.read_text())
        keys = (
            "mode", "read", "changed", "deleted", "moved", "files_kept", "files_rewritten", "groups_copied",
            "rows_copied", "rows_rewritten",
        )  # fmt: skip
        out[f.parent.name] = {k: meta.get(k) for k in keys}
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def runtime_python(root: Path = HERE.parent) -> str:
    """An interpreter with the project's runtime dependencies only, as the production image installs them.

    The dev environment also holds the test tools' dependencies, and they change what a run process holds: with
    pandas installed (a `datasets` dependency, not a runtime one), `import pyarrow.dataset` (the ADBC driver and
    `pq.read_table(filters=...)` import it) imports pandas too, +54 MiB in every run process; a flickr refresh
    run measured 553 MiB in the dev environment and 510 MiB in this one. So the builds run in
    `.venv-runtime/` (`pip install -e .` without extras, reused while pyproject.toml is unchanged).
    """
    venv = root / ".venv-runtime"
    want = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    marker = venv / "pyproject.sha256"
    python = venv / "bin" / "python"
    if not (python.exists() and marker.exists() and marker.read_text() == want):
        print("creating .venv-runtime (the project's runtime dependencies only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-qq", "-e", str(root)], check=True)
        marker.write_text(want)
    return str(python)


def _builds(tmp: Path, base_env: dict, baseline_src: Path | None) -> dict[str, dict]:
    """The build environments: this checkout's code, and with `--baseline-src` another checkout's as well.

    Each has its own data directory and Dagster instance; the baseline runs the other checkout's
    `openverse_dataset` package first on PYTHONPATH (the editable install's finder comes after sys.path).
    """
    out = {}
    for name, src in (("baseline", baseline_src), ("this", None)):
        if name == "baseline" and src is None:
            continue
        (tmp / name / "dagster").mkdir(parents=True)
        env = base_env | {"OPENVERSE_DATA_DIR": str(tmp / name / "data"), "DAGSTER_HOME": str(tmp / name / "dagster")}
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src.resolve()), base_env.get("PYTHONPATH")]))
        # Which package the builds really import (a baseline that silently ran this code compares nothing).
        where = subprocess.run(
            [PYTHON, "-c", "import openverse_dataset; print(openverse_dataset.__file__)"],
            env=env,
            cwd=tmp / name,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        want = (src.resolve() if src is not None else HERE.parent) / "openverse_dataset"
        if not Path(where).is_relative_to(want):
            raise SystemExit(f"the {name} build would import {where}, not the package under {want}")
        out[name] = env
    return out


def _same_outputs(a: Path, b: Path) -> bool:
    """Whether two data directories hold byte-identical raw, clean and rejects Parquet files."""
    return all(tree_digest(a / s / "image") == tree_digest(b / s / "image") for s in ("raw", "clean", "rejects"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--verify", action="store_true", help="also build the changed catalog from scratch and compare")
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases and folders (debugging)")
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="a folder holding another checkout's openverse_dataset package (e.g. `git archive main "
        "openverse_dataset | tar -x -C DIR`): each build runs with it and with this checkout, interleaved, and "
        "the outputs are compared byte for byte",
    )
    ap.add_argument(
        "--catalog-url",
        help="use this already filled catalog (synth.populate + prepare-catalog) instead of a scratch one; the "
        "change set is applied to it, and it is not dropped",
    )
    ap.add_argument(
        "--patterns",
        default="random,reingest",
        help="change sets applied one after another, each followed by a refresh (random: spread over the "
        "partition, the worst case; reingest: clustered as Openverse's reingestion and delete batches write them)",
    )
    ap.add_argument(
        "--dev-env",
        action="store_true",
        help="run the builds with this interpreter (the dev environment) instead of .venv-runtime",
    )
    args = ap.parse_args()
    global PYTHON
    PYTHON = sys.executable if args.dev_env else runtime_python()
    args.patterns = [p for p in args.patterns.split(",") if p]
    if unknown := [p for p in args.patterns if p not in PATTERNS]:
        raise SystemExit(f"unknown --patterns {unknown}; choose from {sorted(PATTERNS)}")
    tag = uuid.uuid4().hex[:8]
    cat_name, api_name = f"openverse_refresh_{tag}", f"openverse_refresh_api_{tag}"
    cat_url = args.catalog_url or synth.create_database(ADMIN_URL, cat_name)
    api_url = synth.create_database(ADMIN_URL, api_name)
    tmp = Path(tempfile.mkdtemp(prefix="openverse-refresh-"))
    log_file = tmp / "cli.log"

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        import sqlalchemy as sa

        from openverse_dataset_tests.upstream import API_DDL, apply_ddl

        apply_ddl(api_url, API_DDL)
        if not args.catalog_url:
            log(f"creating {cat_name} and {api_name} from Openverse's DDL, filling {args.rows:,} rows ...")
            synth.populate(cat_url, 1, args.rows, log=log)
            prepare(cat_url, log)
        eng = sa.create_engine(cat_url)
        with eng.connect() as conn:
            flickr_rows = conn.scalar(sa.text("SELECT count(*) FROM image WHERE provider = 'flickr'"))
            rows = conn.scalar(sa.text("SELECT count(*) FROM image"))
        eng.dispose()

        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVERSE_")}
        env |= {
            "OPENVERSE_CATALOG_URL": cat_url,
            "OPENVERSE_API_DB_URL": api_url,
            "OPENVERSE_RELEASE_DATE": "2026-12-01",
            "HF_HUB_OFFLINE": "1",
        }
        builds = _builds(tmp, env, args.baseline_src)
        full: dict[str, dict] = {}
        since_full = time.time()
        for name, benv in builds.items():  # interleaved: baseline, this; then the same for the refresh
            log(f"full build ({name}) ...")
            full[name] = run_cli(["build", "--media", "image"], benv, log_file)
            log(f"  full build ({name}): {_wall_rss(full[name])}")
        data = tmp / "this" / "data"
        full_windows, full_book = step_windows(builds["this"], since_full)
        report: dict = {"rows": rows, "flickr_rows": flickr_rows}
        report["environment"] = "dev (--dev-env)" if args.dev_env else "runtime (.venv-runtime: no extras)"
        report["full_build"] = {k: v for k, v in full["this"].items() if not k.startswith("_")}
        report["full_build_peak_rss_by_step"] = peak_by_step(full["this"]["_samples"], full_windows)
        report["full_build_step_seconds"] = seconds_of(full_windows)
        report["full_build_bookkeeping"] = full_book
        refreshes: dict[str, dict] = {}
        refresh: dict[str, dict] = {}
        for pattern in args.patterns:
            before, _ = chunk_index(release_files(data, "flickr"))
            before_of = {n: chunk_index(release_files(tmp / n / "data", "flickr"))[0] for n in builds if n != "this"}
            before_files = {_sha(f) for f in release_files(data, "flickr")}
            before_total = sum(f.stat().st_size for f in release_files(data, "flickr"))
            changes = PATTERNS[pattern](cat_url, api_url, flickr_rows)
            changed = sum(changes.values())
            log(f"change set ({pattern}): {changes}")
            refresh = {}
            for name, benv in builds.items():
                log(f"refresh after the {pattern} change set ({name}) ...")
                since = time.time()
                refresh[name] = run_cli(["build", "--media", "image"], benv, log_file)
                log(f"  refresh ({name}): {_wall_rss(refresh[name])}")
            windows, book = step_windows(builds["this"], since)
            book_s = round(sum(v for k, v in book.items() if k.startswith("seconds_") and k != "seconds_facts"), 3)
            tick_s = watermark_query_seconds(cat_url)
            read = rows_read(data)
            refreshed = {p: r for p, r in read.items() if r.get("mode") == "incremental" and r.get("read")}
            catalog_rows_read = sum(r["read"] or 0 for r in refreshed.values())
            new, total, new_by_file = new_chunk_bytes(before, release_files(data, "flickr"))
            after_files = [_sha(f) for f in release_files(data, "flickr")]
            this = refresh["this"]
            refreshes[pattern] = {
                "change_set": changes,
                "rows_changed": changed,
                "refresh": {k: v for k, v in this.items() if not k.startswith("_")},
                "refresh_vs_full": round(this["wall_s"] / full["this"]["wall_s"], 4),
                "refresh_by_provider": read,
                "refresh_step_seconds": seconds_of(windows),
                "bookkeeping": book,
                "bookkeeping_s": book_s,
                "watermark_query_s": tick_s,
                "refresh_peak_rss_by_step": peak_by_step(this["_samples"], windows),
                "catalog_rows_read_by_refresh": catalog_rows_read,
                "rows_read_vs_changed": round(catalog_rows_read / changed, 3),
                "flickr_release_bytes_before": before_total,
                "flickr_release_bytes": total,
                "flickr_new_chunk_bytes": new,
                "new_chunk_share": round(new / total, 4) if total else None,
                "flickr_new_chunk_bytes_by_file": new_by_file,
                # files of the release that are byte for byte a previous release's (kept, not written again)
                "flickr_release_files": len(after_files),
                "flickr_release_files_unchanged": sum(h in before_files for h in after_files),
                "targets": {
                    "refresh<=10%_of_full": this["wall_s"] <= 0.10 * full["this"]["wall_s"],
                    "new_chunks<=2%": bool(total) and new / total <= 0.02,
                    "watermark_query<=0.25s": tick_s <= 0.25,
                },
            }
            if "baseline" in builds:
                b_refresh = refresh["baseline"]
                refreshes[pattern]["baseline_refresh"] = {k: v for k, v in b_refresh.items() if not k.startswith("_")}
                b_new, b_total, _ = new_chunk_bytes(
                    before_of["baseline"], release_files(tmp / "baseline" / "data", "flickr")
                )
                refreshes[pattern]["baseline_new_chunk_share"] = round(b_new / b_total, 4) if b_total else None
                refreshes[pattern]["baseline_flickr_release_bytes"] = b_total
        peak = max([full["this"]["peak_rss_mib"]] + [r["refresh"]["peak_rss_mib"] for r in refreshes.values()])
        report["refreshes"] = refreshes
        report["peak_rss_mib_by_process"] = {"full build CLI": full["this"]["peak_rss_mib"]} | {
            f"refresh CLI ({k})": r["refresh"]["peak_rss_mib"] for k, r in refreshes.items()
        }
        report["peak_rss<=512MiB"] = peak <= 512
        if "baseline" in builds:
            b_full = full["baseline"]
            report["baseline"] = {
                "src": str(args.baseline_src),
                "full_build": {k: v for k, v in b_full.items() if not k.startswith("_")},
                "full_wall_this_vs_baseline": round(full["this"]["wall_s"] / b_full["wall_s"], 4),
                "outputs_identical": _same_outputs(tmp / "baseline" / "data", data),
            }
        if args.verify:
            log("from-scratch build of the changed catalog ...")
            env2 = builds["this"] | {"OPENVERSE_DATA_DIR": str(tmp / "fresh"), "DAGSTER_HOME": str(tmp / "dagster2")}
            (tmp / "dagster2").mkdir()
            report["scratch_build"] = run_cli(["build", "--media", "image"], env2, log_file)
            same = all(
                tree_digest(data / s / "image" / p) == tree_digest(tmp / "fresh" / s / "image" / p)
                for s in ("raw", "clean", "rejects")
                for p in ("flickr", SMALL)
            )
            report["incremental_equals_scratch"] = same
        out = HERE / "results" / f"refresh-{rows}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print()
        f = full["this"]
        print(
            f"rows {rows:,} (flickr {flickr_rows:,}); full build {f['wall_s']:.1f} s, peak RSS {f['peak_rss_mib']} MiB"
        )
        for pattern, r in refreshes.items():
            print(
                f"refresh after the {pattern} change set ({r['rows_changed']:,} rows): {r['refresh']['wall_s']:.1f} s"
                f" = {r['refresh_vs_full']:.1%} of the full build (target <= 10%), peak RSS "
                f"{r['refresh']['peak_rss_mib']} MiB; rows read {r['rows_read_vs_changed']:.2f}x the changed rows;"
                f" new chunk bytes {r['new_chunk_share']:.1%} of flickr's {r['flickr_release_bytes']:,} (target <= 2%);"
                f" flickr release files unchanged {r['flickr_release_files_unchanged']}/{r['flickr_release_files']};"
                f" release bookkeeping {r['bookkeeping_s']:.2f} s; watermark query {r['watermark_query_s']:.3f} s"
                " (target <= 0.25)"
            )
        if "baseline" in builds:
            b = report["baseline"]
            print(
                f"this / baseline wall: full build {b['full_wall_this_vs_baseline']:.3f}; outputs byte-identical: "
                f"{b['outputs_identical']}"
            )
            for pattern, r in refreshes.items():
                print(
                    f"  {pattern}: refresh {r['baseline_refresh']['wall_s']:.1f} s (baseline) vs "
                    f"{r['refresh']['wall_s']:.1f} s; new chunk bytes {r['baseline_new_chunk_share']:.1%} of "
                    f"{r['baseline_flickr_release_bytes']:,} (baseline) vs {r['new_chunk_share']:.1%} of "
                    f"{r['flickr_release_bytes']:,}"
                )
        print(f"peak RSS of any run process {peak} MiB (target <= 512)")
        if args.verify:
            print(f"incremental == from scratch: {report['incremental_equals_scratch']}")
        print(f"written to {out}")
    finally:
        if not args.keep:
            if not args.catalog_url:
                synth.drop_database(ADMIN_URL, cat_name)
            synth.drop_database(ADMIN_URL, api_name)
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {cat_name}, {api_name} and {tmp}")


if __name__ == "__main__":
    main()
