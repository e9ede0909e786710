"""Release bookkeeping seconds at 2M and 8M rows: a first release, then a release after one small provider changed.

    .venv/bin/python benchmarks/bookkeeping.py            # 2M and 8M rows (~3 min, ~3 GB of scratch Parquet)
    .venv/bin/python benchmarks/bookkeeping.py --rows 200000 --rows 800000   # a quick look

Synthetic cleaned Parquet shaped like the image catalog (~70% flickr, the long tail of `benchmarks/synth.py`'s
providers, a fixed 10k-row `spacex`), written by the project's `ShardWriter` into a scratch data directory with
the shard sidecars the clean step records. Bookkeeping is what the subsets, card and release steps spend beyond
rendering the card and sending bytes: subset counts, provider versions, index segments, the diff against the
previous release (removals file, changelog) and the release tree's file sha256s. Measured for (a) the first
release, (b) a release after 10 rows of `spacex` changed (5 edited, 3 removed at the source, 2 added; median of
`--repeats`, interleaved across sizes so that load from other processes hits both alike), and, for
reference, (b) done the pre-segment way (whole-release index of every row + sha256 of every shard). Prints the
8M/2M ratio of (b) and writes benchmarks/results/bookkeeping.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import PROVIDERS

from openverse_dataset.layout import DataLayout, release_staging
from openverse_dataset.media import IMAGE
from openverse_dataset.parquet import ShardWriter, sha256_file
from openverse_dataset.publish.targets import LocalTarget
from openverse_dataset.release.changes import ReleaseFiles, prepare_changes
from openverse_dataset.release.subsets import compute_subsets
from openverse_dataset.release.tree import release_files
from openverse_dataset.shards import install_clean_output
from openverse_dataset.transform.partition import clean_schema, license_folder, reject_schema

MEDIA = "image"
SMALL = ("spacex", 10_000)
LICENSE_SHARES = [("by", 0.40), ("by-sa", 0.20), ("by-nc", 0.15), ("cc0", 0.15), ("pdm", 0.10)]
VERSIONS = {"by": "4.0", "by-sa": "4.0", "by-nc": "2.0", "cc0": "1.0", "pdm": "1.0"}
RESULTS = Path(__file__).resolve().parent / "results" / "bookkeeping.json"

_ROWS_SQL = """
select
  printf('%08x-%04x-4%03x-8%03x-%012x', i, i % 65536, i % 4096, (i * 7) % 4096, hash(i) % 281474976710656)
    as identifier,
  '{provider}' as provider, '{provider}' as source, 'fid-' || i::varchar as foreign_identifier,
  'Title of work number ' || i::varchar || ' ' || repeat('x', (hash(i) % 60)::int) as title,
  'creator ' || (i % 5000)::varchar as creator,
  'https://www.{provider}.example/people/' || (i % 5000)::varchar as creator_url,
  '{license}' as license, '{version}' as license_version, null::varchar as license_jurisdiction,
  'https://creativecommons.org/licenses/{license}/{version}/' as license_url,
  '"Title ' || i::varchar || '" by creator is licensed under CC {license} {version}.' as attribution,
  'https://www.{provider}.example/photos/' || i::varchar as foreign_landing_url,
  'https://live.staticflickr.example/' || (i % 9999)::varchar || '/' || md5(i::varchar) || '_b.jpg' as url,
  'https://live.staticflickr.example/' || md5(i::varchar) || '_m.jpg' as thumbnail,
  (640 + i % 3000)::int as width, (480 + i % 2000)::int as height, (100000 + hash(i) % 5000000)::int as filesize,
  'jpg' as filetype, 'photograph' as category,
  case when i % 5 < 3 then [
    {{'name': 'tag' || (i % 97)::varchar, 'provider': '{provider}', 'accuracy': null::double}},
    {{'name': 'tag' || (i % 89)::varchar, 'provider': '{provider}', 'accuracy': null::double}},
    {{'name': 'machine' || (i % 31)::varchar, 'provider': 'clarifai', 'accuracy': 0.95}}
  ] end as tags,
  '{{"license_url": "https://creativecommons.org/licenses/{license}/{version}/", "views": ' || (i % 1000)::varchar
    || '}}' as meta_data,
  false as watermarked, (hash(i) % 1000) / 1000.0 as standardized_popularity, 'provider_api' as ingestion_type,
  timestamptz '2020-01-01 00:00:00+00' + to_seconds(i % 100000000) as created_on,
  timestamptz '2024-01-01 00:00:00+00' + to_seconds(i % 10000000) as updated_on,
  timestamptz '2024-06-01 00:00:00+00' as last_synced_with_source
from range({lo}, {hi}) t(i)
"""


def provider_sizes(rows: int) -> list[tuple[str, int]]:
    """Rows per provider: the synthetic catalog's shares of `rows - 10k`, plus the fixed small provider."""
    rest = rows - SMALL[1]
    sizes = [(p, int(rest * share)) for p, share in PROVIDERS]
    sizes[0] = (sizes[0][0], sizes[0][1] + rest - sum(n for _, n in sizes))
    return [*sizes, SMALL]


def write_provider(
    conn: duckdb.DuckDBPyConnection, layout: DataLayout, provider: str, lo: int, n: int, edit=None
) -> None:
    """Write one provider's clean folder (by license) and rejects as the clean step does, sidecars included."""
    schema, rej_schema = clean_schema(IMAGE), reject_schema(IMAGE)
    staging, rej_staging = layout.staging_dir("bench-clean"), layout.staging_dir("bench-rejects")
    staging.mkdir(parents=True)
    rej_staging.mkdir(parents=True)
    start = lo
    rejected: list[pa.Table] = []
    for k, (slug, share) in enumerate(LICENSE_SHARES):
        m = n - (start - lo) if k == len(LICENSE_SHARES) - 1 else int(n * share)
        sql = _ROWS_SQL.format(provider=provider, license=slug, version=VERSIONS[slug], lo=start, hi=start + m)
        writer = ShardWriter(staging / license_folder(slug), schema)
        for batch in conn.sql(sql).to_arrow_reader(100_000):
            table = pa.Table.from_batches([batch]).cast(schema)
            if edit is not None:
                table, gone = edit(table)
                rejected.append(gone)
            writer.write(table)
        writer.close()
        start += m
    rejects = ShardWriter(rej_staging, rej_schema)
    for gone in rejected:
        if gone.num_rows:
            cols = {c: gone[c] if c in gone.column_names else pa.nulls(gone.num_rows) for c in rej_schema.names}
            cols["reason"] = pa.array(["removed_from_source"] * gone.num_rows)
            rejects.write(pa.table(cols).cast(rej_schema))
    rejects.close()
    install_clean_output(staging, rej_staging, layout.clean_dir(MEDIA, provider), layout.rejects_dir(MEDIA, provider))
    release_staging(staging)
    release_staging(rej_staging)


def small_change(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """In the first batch of the `by` folder: 5 titles edited, 3 rows removed at the source; 2 rows added."""
    if table.num_rows < 20 or table["license"][0].as_py() != "by" or getattr(small_change, "done", False):
        return table, table.slice(0, 0)
    small_change.done = True
    gone = table.slice(5, 3)
    kept = pa.concat_tables([table.slice(0, 5), table.slice(8)])
    titles = pc.if_else(pa.array([i < 5 for i in range(kept.num_rows)]), pa.scalar("edited title"), kept["title"])
    kept = kept.set_column(kept.schema.get_field_index("title"), "title", titles)
    added = table.slice(10, 2)
    ids = pa.array([f"ffffffff-0000-4000-8000-00000000000{i}" for i in range(2)])
    added = added.set_column(0, table.schema.field(0), ids.cast(table.schema.field(0).type))
    return pa.concat_tables([kept, added]), gone


def bookkeeping(conn, layout: DataLayout, providers: list[str], target: LocalTarget) -> dict:
    """One release's bookkeeping, timed by phase (the card is a fixed stand-in: rendering is not measured)."""
    t0 = time.perf_counter()
    stats = compute_subsets(conn, layout, MEDIA, providers)
    t1 = time.perf_counter()
    changelog, book = prepare_changes(layout, MEDIA, stats.providers, target, IMAGE.repo_name)
    t2 = time.perf_counter()
    card = layout.card_file(MEDIA)
    card.parent.mkdir(parents=True, exist_ok=True)
    card.unlink(missing_ok=True)  # a new inode, as the card step writes it (the target holds a link of the old)
    card.write_text(f"card of {stats.rows} rows\n")
    files = release_files(layout, stats, card, ReleaseFiles(layout, MEDIA).removals)
    t3 = time.perf_counter()
    target.plan(files, IMAGE.repo_name)
    t4 = time.perf_counter()
    return {
        "seconds": round(t3 - t0, 3),
        "subset_counts": round(t1 - t0, 3),
        "index_diff_removals": round(t2 - t1, 3),
        **{f"  {k}": v for k, v in book.seconds.items()},
        "file_hashes": round(t3 - t2, 3),
        "local_target_plan_not_in_total": round(t4 - t3, 3),
        "segments_built": book.segments_built,
        "providers_reindexed": book.built,
        "segments_reused": book.reused,
        "providers_diffed": book.diffed,
        "shards_hashed": book.shards_rehashed,
        "files": len(files),
        "rows": stats.rows,
        "changelog": changelog.totals(),
        "removed_by_reason": changelog.removed_by_reason,
        "_files": files,
    }


def whole_release_way(conn, layout: DataLayout, providers: list[str]) -> float:
    """(b) as before per-provider segments: index every row of the release and hash every shard."""
    t0 = time.perf_counter()
    paths = [str(p) for prov in providers for p in sorted(layout.clean_dir(MEDIA, prov).glob("*/part-*.parquet"))]
    conn.sql(
        "select identifier, provider, license, md5(t::varchar) as row_hash "
        f"from read_parquet({paths!r}) t order by identifier"
    ).to_arrow_table()
    for p in paths:
        sha256_file(Path(p))
    return round(time.perf_counter() - t0, 3)


@dataclass
class Scale:
    """One catalog size, prepared: its first release published, then the small provider changed."""

    rows: int
    layout: DataLayout
    target: LocalTarget
    result: dict


def prepare(rows: int, scratch: Path, conn: duckdb.DuckDBPyConnection, log=print) -> Scale:
    layout = DataLayout(scratch / f"data-{rows}")
    target = LocalTarget(str(scratch / f"hub-{rows}"))
    sizes = provider_sizes(rows)
    log(f"[{rows:,} rows] writing synthetic clean Parquet for {len(sizes)} providers ...")
    t = time.perf_counter()
    lo = 0
    offsets = {}
    for p, n in sizes:
        offsets[p] = lo
        write_provider(conn, layout, p, lo, n)
        lo += n
    tk = layout.takedowns_file(MEDIA)
    tk.parent.mkdir(parents=True, exist_ok=True)
    conn.execute(
        f"copy (select printf('%08x-dead-4000-8000-000000000000', i) as identifier, 'taken_down' as reason "
        f"from range(1000) t(i)) to '{tk}' (format parquet)"
    )
    write_s = time.perf_counter() - t
    bytes_ = sum(f.stat().st_size for f in (layout.root / "clean").rglob("*.parquet"))
    log(f"[{rows:,} rows] written in {write_s:.1f}s ({bytes_ / 2**20:,.0f} MiB); first release ...")
    providers = [p for p, _ in sizes]
    first = bookkeeping(conn, layout, providers, target)
    target.publish(first.pop("_files"), IMAGE.repo_name, tag="bench")  # hard links: what the next plan compares
    ReleaseFiles(layout, MEDIA).promote(target)
    log(f"[{rows:,} rows] first release: {first['seconds']}s; changing 10 rows of {SMALL[0]} ...")
    small_change.done = False
    write_provider(conn, layout, SMALL[0], offsets[SMALL[0]], SMALL[1], edit=small_change)
    return Scale(
        rows,
        layout,
        target,
        {
            "rows": rows,
            "providers": len(sizes),
            "clean_bytes": bytes_,
            "write_seconds_incl_sidecars": round(write_s, 1),
            "first_release": first,
        },
    )


def changed_release(conn: duckdb.DuckDBPyConnection, scale: Scale) -> dict:
    """(b) once more from the same state: what the previous (b) built is dropped first (next index, the changed
    provider's new segment and counts), so every repeat does the same work."""
    rf = ReleaseFiles(scale.layout, MEDIA)
    rf.next_index.unlink(missing_ok=True)
    rf.prune()
    out = bookkeeping(conn, scale.layout, [p for p, _ in provider_sizes(scale.rows)], scale.target)
    out.pop("_files")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="catalog sizes (default: 2M and 8M)")
    ap.add_argument("--repeats", type=int, default=5, help="(b) repeats per size, interleaved across sizes")
    ap.add_argument("--skip-whole-release", action="store_true", help="do not time (b) the pre-segment way")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sizes = args.rows or [2_000_000, 8_000_000]
    scratch = Path(tempfile.mkdtemp(prefix="bookkeeping-bench-"))
    conn = duckdb.connect()
    try:
        scales = [prepare(n, scratch, conn) for n in sizes]
        runs: dict[int, list[dict]] = {s.rows: [] for s in scales}
        for rep in range(args.repeats):  # interleaved: a load spike from other processes hits every size alike
            for s in scales:
                runs[s.rows].append(changed_release(conn, s))
            print(
                f"(b) repeat {rep + 1}/{args.repeats}: "
                + ", ".join(f"{n:,} rows {r[-1]['seconds']}s" for n, r in runs.items())
            )
        for s in scales:
            secs = sorted(r["seconds"] for r in runs[s.rows])
            s.result["one_small_provider_changed"] = {
                **runs[s.rows][-1],
                "seconds": statistics.median(secs),
                "seconds_min": secs[0],
                "seconds_all": [r["seconds"] for r in runs[s.rows]],
            }
            if not args.skip_whole_release:
                way = whole_release_way(conn, s.layout, [p for p, _ in provider_sizes(s.rows)])
                s.result["one_small_provider_changed_whole_release_way_seconds"] = way
                print(f"[{s.rows:,} rows] (b) the whole-release way: {way}s")
    finally:
        conn.close()
        shutil.rmtree(scratch, ignore_errors=True)
    results = [s.result for s in scales]
    b = [r["one_small_provider_changed"]["seconds"] for r in results]
    out = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bookkeeping.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "target": "bookkeeping of a release after one small provider changed <= 1 s at 2M rows, flat at 8M",
        "runs": results,
        "ratio_changed_release_largest_over_smallest": round(b[-1] / b[0], 2) if b[0] else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print()
    print(
        f"{'rows':>12} {'first release s':>16} {'(b) median s':>13} {'(b) min s':>10} {'(b) whole-release way s':>24}"
    )
    for r in results:
        print(
            f"{r['rows']:>12,} {r['first_release']['seconds']:>16} {r['one_small_provider_changed']['seconds']:>13} "
            f"{r['one_small_provider_changed']['seconds_min']:>10} "
            f"{r.get('one_small_provider_changed_whole_release_way_seconds', '-'):>24}"
        )
    if len(b) > 1:
        ratio = out["ratio_changed_release_largest_over_smallest"]
        print(f"ratio {sizes[-1]:,}/{sizes[0]:,} rows of (b), medians: {ratio}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
