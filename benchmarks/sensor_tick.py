"""How long one stale-provider sensor tick takes with many providers on PostgreSQL.

    .venv/bin/python benchmarks/sensor_tick.py [--providers 300] [--rows 1000000]

Creates a scratch database on 127.0.0.1:5432 with N providers (skewed: the first provider holds half the rows),
records a raw materialization (with its watermark) for every provider in a temporary Dagster instance, changes
one provider, then times ticks of `image_stale_providers`. Prints the figures and the ratio to the 5 s target
and to Dagster's 60 s evaluation limit; drops the database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid

import dagster as dg
import sqlalchemy as sa
import synth  # benchmarks/synth.py: scratch databases

ADMIN = os.environ.get("OPENVERSE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--providers", type=int, default=300)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ticks", type=int, default=5)
    args = ap.parse_args()
    name = f"openverse_bench_{uuid.uuid4().hex[:8]}"
    url = synth.create_database(ADMIN, name)
    try:
        run(url, args)
    finally:
        synth.drop_database(ADMIN, name)


def run(url: str, args: argparse.Namespace) -> None:
    from openverse_dataset.catalog.schema import create_api_tables, create_catalog_tables
    from openverse_dataset.catalog.watermarks import catalog_watermarks
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key
    from openverse_dataset.defs.resources import build_resources
    from openverse_dataset.defs.tags import WATERMARK_TAG
    from openverse_dataset.media import IMAGE

    engine = sa.create_engine(url)
    create_catalog_tables(engine)
    create_api_tables(engine)
    t0 = time.perf_counter()
    with engine.begin() as c:
        # provider p0 holds half the rows, the rest share the other half
        c.execute(
            sa.text("""
            insert into image (identifier, created_on, updated_on, provider, source, foreign_identifier, url,
                               license, license_version, removed_from_source)
            select gen_random_uuid(), now(), now() - (g % 1000) * interval '1 minute',
                   'p' || case when g % 2 = 0 then 0 else 1 + (g % (:n - 1)) end,
                   'src', g::text, 'https://example.org/' || g || '.jpg', 'by', '4.0', false
            from generate_series(1, :rows) g
        """),
            {"n": args.providers, "rows": args.rows},
        )
        c.execute(sa.text("analyze image"))
    print(f"catalog: {args.rows:,} rows, {args.providers} providers, built in {time.perf_counter() - t0:.1f}s")

    os.environ["OPENVERSE_CATALOG_URL"] = url
    os.environ.setdefault("OPENVERSE_DATA_DIR", tempfile.mkdtemp(prefix="openverse-bench-"))
    defs = load_defs()
    sensor = defs.resolve_sensor_def("image_stale_providers")
    with dg.instance_for_test() as instance:
        marks = catalog_watermarks(url, IMAGE)
        instance.add_dynamic_partitions(PROVIDER_PARTITIONS["image"].name, list(marks))
        for p, wm in marks.items():
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key("image", "raw"), partition=p, tags={WATERMARK_TAG: wm.token})
            )
        with engine.begin() as c:
            c.execute(
                sa.text(
                    "update image set updated_on = now() + interval '1 day' where provider = 'p7' "
                    "and foreign_identifier = (select min(foreign_identifier) from image "
                    "where provider = 'p7')"
                )
            )
        base = []
        for _ in range(args.ticks):  # baseline: one round trip to the same server
            s = time.perf_counter()
            with engine.connect() as c:
                c.execute(sa.text("select 1"))
            base.append(time.perf_counter() - s)
        times, requested = [], None
        for _ in range(args.ticks):
            s = time.perf_counter()
            result = sensor(dg.build_sensor_context(instance=instance, resources=build_resources()))
            times.append(time.perf_counter() - s)
            requested = [r.partition_key for r in result.run_requests]
    med = statistics.median(times)
    out = {
        "providers": args.providers,
        "rows": args.rows,
        "tick_seconds_median": round(med, 3),
        "tick_seconds_max": round(max(times), 3),
        "baseline_round_trip_seconds": round(statistics.median(base), 4),
        "ratio_to_5s_target": round(med / 5, 3),
        "ratio_to_60s_limit": round(med / 60, 4),
        "requested": requested,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
