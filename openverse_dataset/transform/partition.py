"""Run the cleaning rules over one provider partition's files in bounded memory, whatever its size.

raw shards (in identifier order) -> chunks of `batch_rows` -> `clean_lazy` on each chunk, with the slice of the
takedown snapshot that can match it -> kept rows split by license into
`clean/<media>/<provider>/<license>/part-*.parquet`, rejects into `rejects/<media>/<provider>/`; duplicates of
(provider, foreign_identifier) are then removed across chunks with DuckDB (out of core). Both folders are swapped
into place only when complete. Chunking by hand rather than polars' streaming engine: the engine kept far more
than a batch in flight for this plan (4.4 GiB peak on a 1.4M-row partition, growing with the partition).

Kept rows go to one lz4 Arrow IPC spool per license during the pass and become Parquet after it, two license
folders at a time: one pending row group per license for the whole pass would grow with the number of licenses.
Raw batches are decoded one ahead in a thread, so Parquet decoding overlaps the cleaning.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openverse_dataset import licenses as lic
from openverse_dataset.catalog.takedowns import read_hidden_sources
from openverse_dataset.layout import DataLayout, crash_point, release_staging, replace_dirs
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import DEFAULT_SHARD_BYTES, ShardInfo, ShardWriter
from openverse_dataset.shards import REJECTS_GLOB, record_shards
from openverse_dataset.streams import put_unless_stopped
from openverse_dataset.transform.clean import (
    FIX_COLUMNS,
    REJECT_COLUMNS,
    clean_lazy,
    one_reason_per_work,
    output_columns,
    reject_frame,
)

# Memory is bounded by the chunks in flight (one being cleaned, one prefetched) plus one pending row group per
# Parquet writer (two at a time, after the pass): whatever the partition size or its number of licenses.
# Measured on the benchmark's 1.4M-row flickr partition: 15k-row chunks 20.9 s / 450 MiB peak, 20k 20.0 s /
# 490 MiB, 25k 19.6 s / 531 MiB.
BATCH_ROWS = 15_000
CLEAN_ROW_GROUP_ROWS = 20_000
WRITE_THREADS = 2
# Plain `string`/`list` Arrow types (not large_*): what the Hub's viewer and most readers expect.
ARROW_COMPAT = pl.CompatLevel.oldest()
TAKEDOWN_SCHEMA = {"identifier": pl.String, "reason": pl.String}


@dataclass
class CleanResult:
    """What the clean step kept, rejected (by reason) and repaired (by rule) for one partition."""

    media: str
    provider: str
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)
    tags_dropped: int = 0
    by_license: Counter = field(default_factory=Counter)
    by_source: Counter = field(default_factory=Counter)  # rows in, per source: which sources live in this partition
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    preview: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for shards in self.shards.values() for s in shards)


def clean_schema(media: MediaType) -> pa.Schema:
    """Arrow schema of cleaned files (from the polars output types, so writers and readers agree)."""
    raw = pl.DataFrame(schema=pl.Schema(media.raw_schema))
    out = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA)).select(output_columns(media))
    return out.collect().to_arrow(compat_level=ARROW_COMPAT).schema


def reject_schema(media: MediaType) -> pa.Schema:
    raw = pl.DataFrame(schema=pl.Schema(media.raw_schema))
    out = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA))
    return reject_frame(out.collect()).to_arrow(compat_level=ARROW_COMPAT).schema


def license_folder(slug: str) -> str:
    """Folder of a license inside a clean partition and in the release (`data/<license>/<provider>/`)."""
    return lic.LICENSES[slug].config_name


def _takedown_frame(path: Path | None) -> pl.DataFrame:
    """Takedown snapshot, one row per identifier (the first reason in priority order), sorted by identifier."""
    if path is None or not path.exists():
        return pl.DataFrame(schema=TAKEDOWN_SCHEMA)
    tk = pl.read_parquet(path).select(list(TAKEDOWN_SCHEMA))
    return one_reason_per_work(tk.lazy()).collect().sort("identifier")


def _raw_batches(files: list[Path], media: MediaType, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The partition's raw rows in identifier order, `batch_rows` at a time: memory is bounded by one batch."""
    schema = media.raw_schema
    for f in files:
        # No pre-buffering and no column threads: pyarrow's defaults read whole row groups ahead (575 MiB peak
        # for a 100k-row group here against 250 MiB this way, for ~1 s more per 1.4M rows).
        raw = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)
        for batch in raw.iter_batches(batch_size=batch_rows, use_threads=False):
            if batch.num_rows:
                yield batch.cast(schema)


def _prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """Produce `items` in a thread, `depth` ahead: Parquet decoding (GIL released) overlaps the cleaning."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for item in items:
                if not put_unless_stopped(q, item, stop):
                    return
        except BaseException as exc:  # raised in the consumer, after the items before it
            failure.append(exc)
        put_unless_stopped(q, end, stop)

    thread = threading.Thread(target=run, name="clean-reader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not end:
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join()


class _Spool:
    """A license's kept rows, spooled to an lz4 Arrow IPC stream until the pass over the partition ends.

    Writing every license folder's Parquet as rows arrive keeps one pending row group per license in memory
    (~200 MiB for flickr's 8 licenses at 20k rows a group, more for providers with more licenses); spooling
    keeps one chunk, and the Parquet writers then run one license at a time.
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self._sink = pa.OSFile(str(path), "wb")
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        self._writer = pa.ipc.new_stream(self._sink, schema, options=options)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def batches(self):
        """Close the stream and read it back batch by batch (plain reads: a memory map would stay resident)."""
        self._writer.close()
        self._sink.close()
        with pa.OSFile(str(self.path), "rb") as source:
            yield from pa.ipc.open_stream(source)
        self.path.unlink()

    def abort(self) -> None:
        if not self._sink.closed:
            self._sink.close()
        self.path.unlink(missing_ok=True)


def _duplicate_rejects(raw_files: list[Path], media: MediaType, ids: pa.Array, rej_schema: pa.Schema) -> pa.Table:
    """Reject rows for the duplicates, projected from their raw rows by `reject_frame` like every other reject."""
    parts = [pq.read_table(f, filters=pc.field("identifier").isin(ids)).cast(media.raw_schema) for f in raw_files]
    raw = pl.from_arrow(pa.concat_tables(parts)) if parts else pl.DataFrame(schema=pl.Schema(media.raw_schema))
    cleaned = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA), dedupe=False).collect()
    out = reject_frame(cleaned, reason="duplicate").sort("identifier")
    return out.to_arrow(compat_level=ARROW_COMPAT).cast(rej_schema)


def _drop_duplicates(
    staging: Path,
    result: CleanResult,
    rejects: ShardWriter,
    rej_schema: pa.Schema,
    new_writer,
    raw_files: list[Path],
    media: MediaType,
) -> None:
    """Reject all but the first (by identifier) of rows sharing (provider, foreign_identifier), across chunks.

    DuckDB finds duplicate keys over the kept rows out of core (the catalog's unique index makes them rare, so
    this is one aggregate in the normal case); only license folders that hold a duplicate are rewritten, with
    the same writer, so the output equals a whole-partition dedupe.
    """
    files = sorted(staging.glob("*/part-*.parquet"))
    if not files:
        return
    con = duckdb.connect()
    try:
        # 64 MB and keys hashed first: the aggregate over a 5.6M-row partition took the process 150 MiB past
        # the chunk loop's peak at 256 MB with exact keys; hashed keys (8 bytes each) spill less and run faster,
        # and only rows whose hash repeats are grouped by their exact key.
        con.execute("SET memory_limit = '64MB'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET temp_directory = ?", [str(staging.parent / f"{staging.name}.duckdb-tmp")])
        con.read_parquet([str(f) for f in files]).create_view("c")
        dups = [
            r[0]
            for r in con.execute(
                "WITH keyed AS (SELECT identifier, provider, foreign_identifier, "
                "hash(provider, foreign_identifier) AS h FROM c WHERE foreign_identifier IS NOT NULL), "
                "twins AS (SELECT * FROM keyed WHERE h IN (SELECT h FROM keyed GROUP BY h HAVING count(*) > 1)) "
                "SELECT identifier FROM (SELECT identifier, row_number() OVER (PARTITION BY provider, "
                "foreign_identifier ORDER BY identifier) AS n FROM twins) WHERE n > 1"
            ).fetchall()
        ]
    finally:
        con.close()
        shutil.rmtree(staging.parent / f"{staging.name}.duckdb-tmp", ignore_errors=True)
    if not dups:
        return
    gone = pa.array(sorted(dups), pa.string())
    for folder in sorted({f.parent for f in files}):
        shards = sorted(folder.glob("part-*.parquet"))
        hit = any(
            pc.any(pc.is_in(pq.read_table(f, columns=["identifier"])["identifier"], value_set=gone)).as_py()
            for f in shards
        )
        if not hit:
            continue
        writer = new_writer(folder.name, staging / ".dedupe")
        for f in shards:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=50_000):
                dup = pc.is_in(batch["identifier"], value_set=gone)
                writer.write(batch.filter(pc.invert(dup)))
                dropped = pl.from_arrow(batch.filter(dup))
                if dropped.height:
                    slug = dropped["license"][0]
                    result.kept -= dropped.height
                    result.by_license[slug] -= dropped.height
                    result.rejected["duplicate"] += dropped.height
        result.shards[folder.name] = writer.close()
        shutil.rmtree(folder)
        if result.shards[folder.name]:
            (staging / ".dedupe" / folder.name).rename(folder)
        else:
            del result.shards[folder.name]
    shutil.rmtree(staging / ".dedupe", ignore_errors=True)
    rejects.write(_duplicate_rejects(raw_files, media, gone, rej_schema))
    result.by_license = Counter({k: v for k, v in result.by_license.items() if v})
    dup_set = set(dups)
    result.preview = [r for r in result.preview if r["identifier"] not in dup_set]


def clean_partition(
    layout: DataLayout,
    media: MediaType,
    provider: str,
    *,
    takedowns: Path | None = None,
    batch_rows: int = BATCH_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = CLEAN_ROW_GROUP_ROWS,
    progress=None,
) -> CleanResult:
    """Clean one provider partition from its raw shards; returns counts for metadata and logs."""
    start = time.perf_counter()
    result = CleanResult(media=media.name, provider=provider)
    raw_dir = layout.require_dir(layout.raw_dir(media.name, provider), f"raw extract of {media.name}/{provider!r}")
    raw_files = sorted(raw_dir.glob("part-*.parquet"))
    cols = output_columns(media)
    schema = clean_schema(media)
    rej_schema = reject_schema(media)
    tk = _takedown_frame(takedowns)
    tk_ids = tk["identifier"]
    hidden = read_hidden_sources(takedowns)  # the API's hidden sources, recorded with the takedown snapshot

    clean_staging = layout.staging_dir(f"clean-{media.name}")
    rej_staging = layout.staging_dir(f"rejects-{media.name}")
    clean_staging.mkdir(parents=True)
    rej_staging.mkdir(parents=True)
    spools: dict[str, _Spool] = {}
    writers: list[ShardWriter] = []
    rejects = ShardWriter(rej_staging, rej_schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows)

    def new_writer(folder: str, root: Path = clean_staging) -> ShardWriter:
        writers.append(ShardWriter(root / folder, schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows))
        return writers[-1]

    try:
        for raw_batch in _prefetched(_raw_batches(raw_files, media, batch_rows)):
            chunk = pl.from_arrow(raw_batch)
            del raw_batch
            # Raw shards are in identifier order: the takedowns that can match this chunk are one slice.
            lo, hi = chunk["identifier"][0], chunk["identifier"][-1]
            i, j = tk_ids.search_sorted(lo, side="left"), tk_ids.search_sorted(hi, side="right")
            batch = clean_lazy(
                chunk.lazy(), media, tk.slice(i, j - i).lazy(), dedupe=False, hidden_sources=hidden
            ).collect()
            result.rows_in += batch.height
            result.by_source.update(dict(batch["source"].fill_null(provider).value_counts().iter_rows()))
            fixes = batch.select([pl.col(c).sum() for c in FIX_COLUMNS] + [pl.col("_tags_dropped").sum()]).row(0)
            for name, n in zip([*FIX_COLUMNS, "_tags_dropped"], fixes, strict=True):
                if name == "_tags_dropped":
                    result.tags_dropped += int(n or 0)
                elif n:
                    result.repairs[name.removeprefix("_fix_")] += int(n)
            kept = batch.filter(pl.col("_reject").is_null()).select(cols)
            bad = batch.filter(pl.col("_reject").is_not_null())
            del batch
            if bad.height:
                result.rejected.update(dict(bad["_reject"].value_counts().iter_rows()))
                rejects.write(
                    reject_frame(bad).select(REJECT_COLUMNS).to_arrow(compat_level=ARROW_COMPAT).cast(rej_schema)
                )
            if kept.height:
                result.kept += kept.height
                if len(result.preview) < 5:
                    result.preview += kept.head(5 - len(result.preview)).to_dicts()
                for (slug,), part in kept.partition_by("license", as_dict=True, maintain_order=True).items():
                    folder = license_folder(slug)
                    if folder not in spools:
                        spools[folder] = _Spool(clean_staging / f".{folder}.arrows", schema)
                    spools[folder].write(part.to_arrow(compat_level=ARROW_COMPAT).cast(schema))
                    result.by_license[slug] += part.height
            crash_point("clean")
            if progress:
                progress(result.rows_in, time.perf_counter() - start)

        def write_folder(folder: str) -> list[ShardInfo]:
            writer = new_writer(folder)
            for batch in spools[folder].batches():
                writer.write(batch)
            return writer.close()

        # License folders are independent files and the Parquet encoder releases the GIL: two at a time.
        with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="clean-writer") as pool:
            for folder, shards in zip(sorted(spools), pool.map(write_folder, sorted(spools)), strict=True):
                result.shards[folder] = shards
        _drop_duplicates(clean_staging, result, rejects, rej_schema, new_writer, raw_files, media)
        rejects.close()
        record_shards(clean_staging)  # each shard's sha256, once: releases read it instead of re-hashing
        record_shards(rej_staging, REJECTS_GLOB)
        # One transaction: the removal reasons always match the kept rows, even across a kill.
        replace_dirs(
            [
                (clean_staging, layout.clean_dir(media.name, provider)),
                (rej_staging, layout.rejects_dir(media.name, provider)),
            ]
        )
    except BaseException:
        for w in [*writers, rejects]:
            w.abort()
        for spool in spools.values():
            spool.abort()
        release_staging(clean_staging)
        release_staging(rej_staging)
        raise
    result.seconds = time.perf_counter() - start
    return result
