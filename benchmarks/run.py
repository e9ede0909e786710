"""Extract and clean benchmark against PostgreSQL's own COPY ceiling, all in one run.

    .venv/bin/python benchmarks/run.py                # 2,000,000 rows, then the 4x (8M) memory check
    .venv/bin/python benchmarks/run.py --rows 200000 --scale 0 --repeat 1   # a quick smoke run

It creates a scratch database on 127.0.0.1:5432 (dropped at the end), fills it server-side with a synthetic
`image` table (see `synth.py`), and times, on the largest provider's partition:
(a) `COPY (<the extract's SELECT> [ORDER BY identifier]) TO STDOUT (FORMAT binary)` via psql to /dev/null: the
ceiling (ordered, as our shards need, and unordered); (b) this project's raw extract (`readers=1` and `2`),
and its two sides apart (ADBC fetch with the batches discarded; the same rows encoded by the Parquet writer
from memory); (c) pandas.read_sql -> Parquet (on a capped subset: it holds everything in memory);
(d) polars.read_database over SQLAlchemy batches (`stream_results=True`) -> Parquet; and this project's clean
step on the extract's shards. Every method runs in its own process; peak RSS is that process's `ru_maxrss`
(os.wait4). Timed methods run `--repeat` times, interleaved, and the median is reported: the machine is
shared, so only ratios within one run mean anything. A run's fixed cost (interpreter, imports, connections;
and a Dagster materialization) is measured on an empty partition. Results go to `benchmarks/results/latest.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ADMIN_URL = os.environ.get("OPENVERSE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------- child side
def _child(args: argparse.Namespace) -> None:
    """Run one method in this process and print {"rows", "seconds"} as JSON (seconds exclude start-up)."""
    from openverse_dataset.catalog.extract import _pg_sql, extract_partition, select_partition
    from openverse_dataset.layout import DataLayout
    from openverse_dataset.media import IMAGE

    work = Path(args.workdir)
    if args.method.startswith("extract"):
        t = time.perf_counter()
        r = extract_partition(args.url, IMAGE, args.provider, DataLayout(work), readers=args.readers)
        out = {"rows": r.rows, "seconds": time.perf_counter() - t, "bytes": r.bytes, "shards": len(r.shards)}
    elif args.method == "adbc_fetch":
        # The extract's read side alone: the same SELECT through ADBC, batches discarded (no Parquet).
        import adbc_driver_postgresql.dbapi as pgdbapi

        from openverse_dataset.catalog.extract import ADBC_BATCH_BYTES

        t = time.perf_counter()
        rows = 0
        with pgdbapi.connect(args.url) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(ADBC_BATCH_BYTES)})
            cur.execute(_pg_sql(select_partition(IMAGE, args.provider)))
            for batch in cur.fetch_record_batch():
                rows += batch.num_rows
        out = {"rows": rows, "seconds": time.perf_counter() - t}
    elif args.method == "encode":
        # The extract's write side alone: its shards' rows, read into memory first (untimed), encoded again
        # with the same writer; CPU seconds are what the writer adds on top of reading.
        import pyarrow.parquet as pq

        from openverse_dataset.parquet import ShardWriter

        src = sorted((work / "raw" / "image" / args.provider).glob("part-*.parquet"))
        table = pq.read_table(src).combine_chunks()
        c0, t = time.process_time(), time.perf_counter()
        w = ShardWriter(work / "encode", IMAGE.raw_schema)
        for batch in table.to_batches(max_chunksize=20_000):
            w.write(batch)
        w.close()
        out = {"rows": table.num_rows, "seconds": time.perf_counter() - t, "encode_cpu_s": time.process_time() - c0}
    elif args.method == "clean":
        from openverse_dataset.transform.partition import clean_partition

        t = time.perf_counter()
        r = clean_partition(DataLayout(work), IMAGE, args.provider)
        out = {"rows": r.rows_in, "seconds": time.perf_counter() - t, "bytes": r.bytes, "kept": r.kept}
    elif args.method == "pandas":
        import pandas as pd
        import sqlalchemy as sa

        sql = _pg_sql(select_partition(IMAGE, args.provider).limit(args.limit))
        t = time.perf_counter()
        engine = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://"))
        df = pd.read_sql(sql, engine)
        df.to_parquet(work / "pandas.parquet", compression="zstd", index=False)
        out = {"rows": len(df), "seconds": time.perf_counter() - t}
    elif args.method == "polars":
        import polars as pl
        import pyarrow.parquet as pq
        import sqlalchemy as sa

        sql = _pg_sql(select_partition(IMAGE, args.provider))
        t = time.perf_counter()
        engine = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg://"))
        rows, writer = 0, None
        with engine.connect().execution_options(stream_results=True) as conn:
            for df in pl.read_database(sql, conn, iter_batches=True, batch_size=50_000):
                table = df.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(work / "polars.parquet", table.schema, compression="zstd")
                writer.write_table(table)
                rows += df.height
        if writer is not None:
            writer.close()
        out = {"rows": rows, "seconds": time.perf_counter() - t}
    elif args.method == "dagster_empty":
        import dagster as dg

        from openverse_dataset.defs.raw import raw_asset
        from openverse_dataset.defs.resources import CatalogResource, DataDirResource

        t = time.perf_counter()
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("image_providers", [args.provider])
        res = dg.materialize(
            [raw_asset(IMAGE)],
            partition_key=args.provider,
            instance=instance,
            resources={
                "catalog": CatalogResource(url=args.url, data_dir=str(work)),
                "data_dir": DataDirResource(path=str(work)),
            },
        )
        assert res.success
        out = {"rows": 0, "seconds": time.perf_counter() - t}
    else:
        raise SystemExit(f"unknown method {args.method}")
    out["peak_rss_mib"] = _vm_hwm_mib()
    print(json.dumps(out))


def _vm_hwm_mib() -> float:
    """This process's own peak RSS. (ru_maxrss of a child started from a big parent counts the parent's pages
    at fork time, so children report VmHWM, which starts afresh at exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------------------- parent side
def _machine_cpu_s() -> float:
    """CPU-seconds the whole machine has been busy (user+nice+system+irq+softirq), from /proc/stat.

    The server's share of a method is not in the child's rusage: the difference of this figure around a method
    counts it too, which shows how close a method runs to what the cores can do at all."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _measure(cmd: list[str], *, stdout: int | None = None, stderr: int | None = None) -> dict:
    """Run one process; wall seconds, its own peak RSS (ru_maxrss of exactly that child), and machine CPU."""
    busy = _machine_cpu_s()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=stderr, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]}... exited {proc.returncode}")
    result = {
        "process_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "machine_cpu_s": _machine_cpu_s() - busy,
    }
    if out.strip():
        result.update(json.loads(out.strip().splitlines()[-1]))
        if "peak_rss_mib" in result and result["peak_rss_mib"] > 0 and "seconds" not in result:
            result["peak_rss_mib"] /= 1024  # GNU time reports KiB
    return result


def _psql_copy(url: str, sql: str) -> list[str]:
    """psql's COPY to /dev/null, under GNU time when present so its peak RSS is psql's own (%M, KiB)."""
    import shutil

    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    wrap = ["/usr/bin/time", "-f", '{"peak_rss_mib": %M}', "-o", "/dev/stdout"] if shutil.which("time") else []
    return [
        *wrap,
        "psql",
        "-X",
        "-q",
        "-h",
        u.host or "127.0.0.1",
        "-p",
        str(u.port or 5432),
        "-U",
        u.username or "postgres",
        "-d",
        u.database,
        "-o",
        "/dev/null",
        "-c",
        f"COPY ({sql}) TO STDOUT (FORMAT binary)",
    ]


def _child_cmd(method: str, url: str, provider: str, workdir: Path, **kw) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--url", url]
    cmd += ["--provider", provider, "--workdir", str(workdir)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--scale", type=int, default=4, help="rows multiplier for the memory check (0: skip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pandas-rows", type=int, default=250_000, help="pandas holds all rows: cap its subset")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--url")
    ap.add_argument("--provider")
    ap.add_argument("--workdir")
    ap.add_argument("--readers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    if args.child:
        args.method = args.child
        _child(args)
        return

    import sqlalchemy as sa
    import synth

    from openverse_dataset.catalog.extract import _adbc_uri, _pg_sql, select_partition
    from openverse_dataset.media import IMAGE

    def log(msg: str) -> None:
        print(msg, flush=True)

    name = f"ovbench_{uuid.uuid4().hex[:8]}"
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": args.rows,
        "repeat": args.repeat,
        "methods": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="ovbench-"))
    url = synth.create_database(ADMIN_URL, name)
    pg_url = _adbc_uri(url)  # plain postgresql:// for every client
    try:
        log(f"database {name}: generating {args.rows:,} rows")
        t = time.perf_counter()
        synth.populate(url, 1, args.rows, log=log)
        report["generate_s"] = round(time.perf_counter() - t, 1)
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            provider, n = conn.execute(
                sa.text("SELECT provider, count(*) FROM image GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
            ).one()
            report["table_bytes"] = conn.execute(sa.text("SELECT pg_table_size('image')")).scalar()
            report["server"] = conn.execute(sa.text("SHOW server_version")).scalar()
        engine.dispose()
        report["provider"], report["partition_rows"] = provider, n
        log(f"largest provider {provider}: {n:,} rows; table {report['table_bytes'] / MiB:,.0f} MiB")

        ordered = _pg_sql(select_partition(IMAGE, provider))
        unordered = ordered.rsplit(" ORDER BY ", 1)[0]
        plan = {
            "copy_ordered": lambda: _measure(_psql_copy(url, ordered)),
            "copy_unordered": lambda: _measure(_psql_copy(url, unordered)),
            "extract": lambda: _measure(_child_cmd("extract", pg_url, provider, tmp / "data", readers=1)),
            "extract_readers2": lambda: _measure(_child_cmd("extract", pg_url, provider, tmp / "r2", readers=2)),
            "adbc_fetch_only": lambda: _measure(_child_cmd("adbc_fetch", pg_url, provider, tmp)),
            "polars_read_database": lambda: _measure(_child_cmd("polars", pg_url, provider, tmp)),
            "clean": lambda: _measure(_child_cmd("clean", pg_url, provider, tmp / "data")),
        }
        _measure(_psql_copy(url, ordered))  # warm the cache once, untimed
        runs: dict[str, list[dict]] = {k: [] for k in plan}
        for i in range(args.repeat):
            for key, fn in plan.items():
                r = fn()
                r["wall_s"] = r.get("seconds", r["process_s"])
                runs[key].append(r)
                log(f"  [{i + 1}/{args.repeat}] {key:22s} {r['wall_s']:7.2f}s  {r['peak_rss_mib']:7.0f} MiB")
        runs["parquet_encode_only"] = [_measure(_child_cmd("encode", pg_url, provider, tmp / "data"))]
        runs["parquet_encode_only"][0]["wall_s"] = runs["parquet_encode_only"][0]["seconds"]
        log("  pandas.read_sql (capped subset)")
        runs["pandas_read_sql"] = [
            _measure(_child_cmd("pandas", pg_url, provider, tmp, limit=min(args.pandas_rows, n))) for _ in range(1)
        ]
        runs["pandas_read_sql"][0]["wall_s"] = runs["pandas_read_sql"][0]["seconds"]

        # Fixed cost: an empty partition, as a whole process (interpreter + imports + connections + swap) and
        # as a Dagster materialization (run setup, resources, metadata).
        empty = "no-such-provider"
        runs["fixed_cost_extract_empty"] = [
            _measure(_child_cmd("extract", pg_url, empty, tmp / "empty")) for _ in range(args.repeat)
        ]
        runs["fixed_cost_dagster_empty"] = [
            _measure(_child_cmd("dagster_empty", pg_url, empty, tmp / "dg"), stderr=subprocess.DEVNULL)
        ]
        for key in ("fixed_cost_extract_empty", "fixed_cost_dagster_empty"):
            for r in runs[key]:
                r["wall_s"] = r["process_s"]  # the whole process is the fixed cost

        def med(key: str, field: str) -> float:
            return statistics.median(r[field] for r in runs[key])

        ceiling = med("copy_ordered", "wall_s")
        ceiling_un = med("copy_unordered", "wall_s")
        for key, rs in runs.items():
            rows = rs[0].get("rows", n) if not key.startswith("copy") else n
            fixed = key.startswith("fixed_cost")
            wall = med(key, "wall_s")
            entry = {
                "wall_s": round(wall, 2),
                "process_s": round(med(key, "process_s"), 2),
                "cpu_s": round(med(key, "cpu_s"), 2),
                # whole machine (server included) over the whole process, and its share of all cores
                "machine_cpu_s": round(med(key, "machine_cpu_s"), 2),
                "machine_busy": round(med(key, "machine_cpu_s") / (med(key, "process_s") * (os.cpu_count() or 1)), 2),
                "rows": rows,
                "rows_per_s": round(rows / wall) if wall and rows else None,
                "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs)),
                "runs_wall_s": [round(r["wall_s"], 2) for r in rs],
            }
            if "encode_cpu_s" in rs[0]:
                entry["encode_cpu_s"] = round(med(key, "encode_cpu_s"), 2)
            if rows and not fixed:  # per-row time against the ceiling's per-row time (pandas runs on a subset)
                entry["x_ordered_copy"] = round((wall / rows) / (ceiling / n), 3)
                entry["x_unordered_copy"] = round((wall / rows) / (ceiling_un / n), 3)
            report["methods"][key] = entry
        m = report["methods"]
        m["clean"]["x_extract"] = round(m["clean"]["wall_s"] / m["extract"]["wall_s"], 3)

        if args.scale > 1:
            big = args.rows * args.scale
            log(f"memory check: growing the table to {big:,} rows")
            synth.populate(url, args.rows + 1, big, log=log)
            with sa.create_engine(url).connect() as conn:
                count = sa.text("SELECT count(*) FROM image WHERE provider = :p")
                n_big = conn.execute(count, {"p": provider}).scalar()
            big_runs = [_measure(_child_cmd("extract", pg_url, provider, tmp / "big", readers=1)) for _ in range(1)]
            rss_big = max(r["peak_rss_mib"] for r in big_runs)
            clean_big = _measure(_child_cmd("clean", pg_url, provider, tmp / "big"))
            report["scale"] = {
                "rows": big,
                "partition_rows": n_big,
                "extract_wall_s": round(big_runs[0]["seconds"], 2),
                "extract_rows_per_s": round(n_big / big_runs[0]["seconds"]),
                "extract_peak_rss_mib": round(rss_big),
                "rss_vs_base": round(rss_big / m["extract"]["peak_rss_mib"], 3),
                "clean_wall_s": round(clean_big["seconds"], 2),
                "clean_peak_rss_mib": round(clean_big["peak_rss_mib"]),
                "clean_rss_vs_base": round(clean_big["peak_rss_mib"] / m["clean"]["peak_rss_mib"], 3),
            }
        report["targets"] = {
            "extract_x_ordered_copy<=1.25": m["extract"]["x_ordered_copy"] <= 1.25,
            "extract_rss<=512MiB": m["extract"]["peak_rss_mib"] <= 512,
            "extract_rss_flat_within_20pct": (abs(report["scale"]["rss_vs_base"] - 1) <= 0.2)
            if "scale" in report
            else None,
            "clean<=2x_extract": m["clean"]["x_extract"] <= 2,
            "clean_rss<=512MiB": m["clean"]["peak_rss_mib"] <= 512
            and ("scale" not in report or report["scale"]["clean_peak_rss_mib"] <= 512),
        }
    finally:
        if not args.keep_db:
            synth.drop_database(ADMIN_URL, name)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print()
    head = f"{'method':26s} {'wall s':>8s} {'rows/s':>10s} {'x ord.':>7s} {'x unord.':>8s} {'peak RSS':>9s}"
    print(f"{head} {'machine CPU s':>14s} {'busy':>5s}")
    for key, e in report["methods"].items():
        xo, xu = (f"{e[k]:.2f}" if k in e else "-" for k in ("x_ordered_copy", "x_unordered_copy"))
        rate = f"{e['rows_per_s']:,}" if e["rows_per_s"] else "-"
        row = f"{key:26s} {e['wall_s']:8.2f} {rate:>10s} {xo:>7s} {xu:>8s} {e['peak_rss_mib']:6d} MiB"
        print(f"{row} {e['machine_cpu_s']:14.1f} {e['machine_busy']:5.0%}")
    if "scale" in report:
        s = report["scale"]
        print(f"extract at {s['rows']:,} rows: {s['extract_peak_rss_mib']} MiB peak RSS ({s['rss_vs_base']:.2f}x)")
        print(f"clean at {s['rows']:,} rows: {s['clean_peak_rss_mib']} MiB peak RSS ({s['clean_rss_vs_base']:.2f}x)")
    print("targets:", json.dumps(report["targets"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
