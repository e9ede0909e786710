"""The stale-provider sensor's tick on Openverse's real catalog DDL, with and without `prepare-catalog`'s indexes.

    .venv/bin/python benchmarks/sensor_tick.py [--rows 2000000 8000000] [--ticks 5]

For each size: a scratch catalog database from Openverse's own DDL (openverse_dataset_tests/upstream) filled by
synth.py (~70% flickr) plus a long tail of small providers (24 in all), 0.5% of the rows moved to
`deleted_image`, and a scratch API database with Django's takedown tables. Then, in one run:

1. without the prepared indexes (Openverse's three only): the watermark query forced to run anyway (what a
   tick would cost if the sensor scanned), and the sensor's tick (it skips, naming the missing indexes);
2. `prepare-catalog` (timed), then the watermark query, the newest-deletion probe of the takedown sensor, and
   the stale-provider tick after one provider changed (it must request exactly that provider).

Prints the figures with the ratios (scan / prepared, tick / 0.25 s target) and writes them to
benchmarks/results/sensor_tick.json. Drops the scratch databases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import synth  # benchmarks/synth.py: scratch databases and the synthetic catalog

ADMIN = os.environ.get("OPENVERSE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).parent / "results" / "sensor_tick.json"
TARGET_S = 0.25
TAIL = [f"tail{i:02d}" for i in range(14)]  # 10 synth providers + 14 small ones = 24
CHANGED = "met"  # the provider whose one row changes between ticks


def timed(fn, n: int) -> tuple[float, object]:
    """Median seconds of `n` calls and the last result."""
    times, out = [], None
    for _ in range(n):
        s = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - s)
    return statistics.median(times), out


def build(catalog_url: str, api_url: str, rows: int) -> dict:
    from openverse_dataset_tests.upstream import API_DDL, apply_ddl

    t0 = time.perf_counter()
    synth.populate(catalog_url, 1, rows, log=lambda m: print(m, flush=True))
    engine = sa.create_engine(catalog_url)
    with engine.begin() as c:
        # the long tail: relabel the smallest synth provider's rows over 14 more providers
        c.execute(
            sa.text(
                "UPDATE image SET provider = (CAST(:tail AS text[]))[1 + abs(hashtext(identifier::text)) % :n] "
                "WHERE provider = 'stocksnap'"
            ),
            {"tail": TAIL, "n": len(TAIL)},
        )
        # what the catalog does to dead links: 0.5% of the rows move to deleted_image
        cols = ", ".join(c.name for c in sa.Table("image", sa.MetaData(), autoload_with=c).c)
        c.execute(
            sa.text(f"""
            CREATE TEMP TABLE gone ON COMMIT DROP AS
                SELECT identifier FROM image WHERE abs(hashtext(identifier::text)) % 200 = 0;
            INSERT INTO deleted_image ({cols}, deleted_on, deleted_reason)
                SELECT {cols}, updated_on + interval '1 day', 'deadlink' FROM image JOIN gone USING (identifier);
            DELETE FROM image WHERE identifier IN (SELECT identifier FROM gone);
        """)
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE image"))
        c.execute(sa.text("VACUUM ANALYZE deleted_image"))
        n_deleted = c.scalar(sa.text("SELECT count(*) FROM deleted_image"))
        n_providers = c.scalar(sa.text("SELECT count(DISTINCT provider) FROM image"))
        flickr = c.scalar(sa.text("SELECT count(*) FROM image WHERE provider = 'flickr'"))
    engine.dispose()
    apply_ddl(api_url, API_DDL)
    return {
        "rows": rows,
        "deleted_rows": n_deleted,
        "providers": n_providers,
        "flickr_share": round(flickr / (rows - n_deleted), 3),
        "build_seconds": round(time.perf_counter() - t0, 1),
    }


def measure(catalog_url: str, api_url: str, ticks: int) -> dict:
    from openverse_dataset.catalog.prepare import INDEXES, missing_indexes, prepare_catalog
    from openverse_dataset.catalog.watermarks import catalog_watermarks, takedown_mark
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key
    from openverse_dataset.defs.resources import build_resources
    from openverse_dataset.defs.tags import WATERMARK_TAG
    from openverse_dataset.media import IMAGE

    os.environ["OPENVERSE_CATALOG_URL"] = catalog_url
    os.environ["OPENVERSE_API_DB_URL"] = api_url
    os.environ.setdefault("OPENVERSE_DATA_DIR", tempfile.mkdtemp(prefix="openverse-bench-"))
    sensor = load_defs().resolve_sensor_def("image_stale_providers")
    engine = sa.create_engine(catalog_url)
    out: dict = {}
    with dg.instance_for_test() as instance:

        def tick():
            return sensor(dg.build_sensor_context(instance=instance, resources=build_resources()))

        # 1. Openverse's indexes only
        out["missing_before"] = [i.name for i in missing_indexes(engine, IMAGE)]
        scan_s, marks = timed(
            lambda: catalog_watermarks(catalog_url, IMAGE, require_prepared=False), max(1, ticks // 2)
        )
        out["watermark_seconds_without_indexes"] = round(scan_s, 3)
        instance.add_dynamic_partitions(PROVIDER_PARTITIONS["image"].name, list(marks))
        for p, wm in marks.items():  # every provider extracted at its current watermark
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key("image", "raw"), partition=p, tags={WATERMARK_TAG: wm.token})
            )
        skip_s, skipped = timed(tick, ticks)
        out["tick_seconds_without_indexes"] = round(skip_s, 3)
        out["tick_without_indexes"] = skipped.skip_reason.skip_message if skipped.skip_reason else None
        out["tick_without_indexes_requested"] = [r.partition_key for r in skipped.run_requests]

        # 2. prepare-catalog, then the same questions
        s = time.perf_counter()
        prepare_catalog(catalog_url, ["image"], echo=lambda stmt: print(f"  {stmt}", flush=True))
        out["prepare_seconds"] = round(time.perf_counter() - s, 1)
        out["missing_after"] = [i.name for i in missing_indexes(engine, IMAGE)]
        with engine.connect() as c:  # what the DBA pays in disk, per row of each table
            for i in INDEXES["image"]:
                size = c.scalar(sa.text("SELECT pg_relation_size(CAST(:n AS regclass))"), {"n": i.name})
                rows = c.scalar(sa.text(f"SELECT count(*) FROM {i.table}"))
                out[f"{i.name}_bytes_per_row"] = round(size / max(rows, 1), 1)
        wm_s, _ = timed(lambda: catalog_watermarks(catalog_url, IMAGE), ticks)
        out["watermark_seconds_with_indexes"] = round(wm_s, 4)
        td_s, _ = timed(lambda: takedown_mark(catalog_url, api_url, IMAGE), ticks)
        out["takedown_mark_seconds_with_indexes"] = round(td_s, 4)
        quiet_s, quiet = timed(tick, ticks)
        out["tick_seconds_nothing_changed"] = round(quiet_s, 4)
        assert quiet.run_requests == [], "nothing changed, yet the sensor asked for refreshes"
        with engine.begin() as c:
            c.execute(
                sa.text(
                    "UPDATE image SET updated_on = now() WHERE identifier = "
                    "(SELECT identifier FROM image WHERE provider = :p ORDER BY identifier LIMIT 1)"
                ),
                {"p": CHANGED},
            )
        times, requested = [], None
        for _ in range(ticks):  # every tick sees the change (no cursor carried): the full cost each time
            s = time.perf_counter()
            result = tick()
            times.append(time.perf_counter() - s)
            requested = [r.partition_key for r in result.run_requests]
        out["tick_seconds_one_changed"] = round(statistics.median(times), 4)
        out["tick_seconds_one_changed_max"] = round(max(times), 4)
        out["requested"] = requested
    engine.dispose()
    out["scan_over_prepared_watermark"] = round(scan_s / wm_s, 1)
    out["tick_over_target"] = round(out["tick_seconds_one_changed"] / TARGET_S, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 8_000_000])
    ap.add_argument("--ticks", type=int, default=5)
    args = ap.parse_args()
    results = []
    for rows in args.rows:
        tag = uuid.uuid4().hex[:8]
        cat_name, api_name = f"openverse_bench_cat_{tag}", f"openverse_bench_api_{tag}"
        cat_url, api_url = synth.create_database(ADMIN, cat_name), synth.create_database(ADMIN, api_name)
        try:
            print(f"== {rows:,} rows", flush=True)
            shape = build(cat_url, api_url, rows)
            print(json.dumps(shape), flush=True)
            figures = {**shape, **measure(cat_url, api_url, args.ticks)}
            print(json.dumps(figures, indent=2), flush=True)
            results.append(figures)
        finally:
            synth.drop_database(ADMIN, cat_name)
            synth.drop_database(ADMIN, api_name)
    summary = {
        "command": "benchmarks/sensor_tick.py --rows " + " ".join(map(str, args.rows)),
        "target_tick_seconds": TARGET_S,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # 2 cores shared: ticks are slower loaded
        "runs": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    for r in results:
        print(
            f"{r['rows']:>10,} rows, {r['providers']} providers: tick {r['tick_seconds_one_changed']:.3f}s "
            f"({r['tick_over_target']:.2f}x the {TARGET_S}s target), watermark query "
            f"{r['watermark_seconds_with_indexes']:.4f}s prepared vs {r['watermark_seconds_without_indexes']:.2f}s "
            f"on Openverse's indexes ({r['scan_over_prepared_watermark']:.0f}x); unprepared tick skips in "
            f"{r['tick_seconds_without_indexes']:.3f}s; requested {r['requested']}"
        )


if __name__ == "__main__":
    main()
