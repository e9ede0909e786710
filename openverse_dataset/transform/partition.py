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

import functools
import json
import os
import queue
import shutil
import threading
import time
import uuid
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
from openverse_dataset.layout import DataLayout, crash_point, release_staging
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import (
    DEFAULT_SHARD_BYTES,
    ORDER_KEY,
    MergeStats,
    ShardInfo,
    ShardWriter,
    identifier_groups,
    large_types,
    layout_settings,
    merge_into,
    merge_sorted,
    sha256_file,
    sort_by_key,
)
from openverse_dataset.shards import (
    CLEAN_GLOB,
    REJECTS_GLOB,
    assemble_folders,
    file_sizes,
    install_clean_output,
    shard_records,
)
from openverse_dataset.streams import put_unless_stopped
from openverse_dataset.transform.clean import (
    FIX_COLUMNS,
    REJECT_COLUMNS,
    clean_lazy,
    one_reason_per_work,
    output_columns,
    reject_frame,
)
from openverse_dataset.transform.optout import NO_OPT_OUTS, OptOuts

# Memory is bounded by the chunks in flight (one being cleaned, one prefetched) plus one pending row group per
# Parquet writer (two at a time, after the pass): whatever the partition size or its number of licenses.
# Measured on the benchmark's 1.4M-row flickr partition: 15k-row chunks 20.9 s / 450 MiB peak, 20k 20.0 s /
# 490 MiB, 25k 19.6 s / 531 MiB. 2026-12-07, runtime-only environment, a fresh process cleaning flickr twice (the
# second pass peaks higher, as a long-lived run process does): 15k 23.4-24.0 s / 395 then 440 MiB, 10k
# 26.7-27.6 s / 356 then 399 MiB. The CLI's full build peaked at 513 MiB with 15k (the last provider's clean):
# 10k keeps every run process under the 512 MiB target for ~15% more clean time.
BATCH_ROWS = 10_000
# The most rows in a cleaned row group (content-defined cuts average about half). A cleaned row group is what a
# release re-uploads when one of its rows changes (a merge copies the untouched ones byte for byte), so it is
# the unit of the Hub's deduplication. New chunk bytes of flickr's release after the refresh benchmark's clustered
# change set, 20k -> 10k: 12.4% -> 7.0% at 2M (interleaved), 3.2% -> 2.5% at 8M, for files 0.7% larger (footers
# and page indexes hold twice the groups). docs/scale.md, "2026-12-08".
CLEAN_ROW_GROUP_ROWS = 10_000
WRITE_THREADS = 2
# Rows of the previous clean output read per step of an incremental merge. Two license folders merge at once,
# each holding a base batch, its filtered and merged copies and the writer's row group. Flickr's clean merge
# after a random change set (every row group touched; 2M-row catalog, a fresh run process, runtime-only
# environment): 10k rows 5.4 s / 547 MiB, 5k 5.6 s / 499 MiB, 2.5k 5.9 s / 486 MiB; one folder at a time
# instead, 9.0 s / 445 MiB. (20k -> 10k had taken it from 526 to 475 MiB outside Dagster.) At 8M rows the random
# refresh's CLI process peaked at 517 MiB with 5k and 506 MiB with 2.5k (69.7 s vs 70.6 s).
MERGE_BATCH_ROWS = 2_500
# polars' oldest Arrow types (`string`, not string views), then cast to `large_types`: one string type everywhere.
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
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    preview: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    by_source: Counter = field(default_factory=Counter)  # rows in, per source: which sources live in this partition
    rows_cleaned: int | None = None  # rows the rules ran on (all of them, unless the clean was incremental)
    opt_out_sha256: str | None = None  # the opt-out list the rules ran with (None: no list configured)
    merge: MergeStats | None = None  # an incremental clean: previous shards kept as they were, or written again

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
    return large_types(out.collect().to_arrow(compat_level=ARROW_COMPAT).schema)


def reject_schema(media: MediaType) -> pa.Schema:
    raw = pl.DataFrame(schema=pl.Schema(media.raw_schema))
    out = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA))
    return large_types(reject_frame(out.collect()).to_arrow(compat_level=ARROW_COMPAT).schema)


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
    """The partition's raw rows in file order, `batch_rows` at a time: memory is bounded by one batch."""
    return _file_batches(files, media.raw_schema, batch_rows)


def _file_batches(
    files: list[Path], schema: pa.Schema, batch_rows: int, row_groups: list[int] | None = None
) -> Iterator[pa.RecordBatch]:
    for f in files:
        # No pre-buffering and no column threads: pyarrow's defaults read whole row groups ahead (575 MiB peak
        # for a 100k-row group here against 250 MiB this way, for ~1 s more per 1.4M rows).
        raw = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)
        for batch in raw.iter_batches(batch_size=batch_rows, row_groups=row_groups, use_threads=False):
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
    out = reject_frame(cleaned, reason="duplicate").select(REJECT_COLUMNS)
    return out.to_arrow(compat_level=ARROW_COMPAT).cast(rej_schema)


def _drop_duplicates(
    staging: Path,
    result: CleanResult,
    rejects: list[pa.Table],
    rej_schema: pa.Schema,
    new_writer,
    raw_files: list[Path],
    media: MediaType,
    among: pa.Array | None = None,
) -> None:
    """Reject all but the first (by identifier) of rows sharing (provider, foreign_identifier), across chunks.

    DuckDB finds duplicate keys over the kept rows out of core (the catalog's unique index makes them rare, so
    this is one aggregate in the normal case); only license folders that hold a duplicate are rewritten, with
    the same writer, so the output equals a whole-partition dedupe. The dropped rows are appended to `rejects`
    (merged into the rejects in row order by the caller).

    `among` (an incremental clean): the foreign_identifier of each row kept now. The rows kept before held no
    duplicate, so every duplicate group holds one of these: only rows whose foreign_identifier is among them
    are grouped (a filtered scan instead of an aggregate over every kept row), same result.
    """
    files = sorted(staging.glob("*/part-*.parquet"))
    if not files:
        return
    keys = None
    if among is not None:
        keys = pc.unique(among.drop_null().cast(pa.large_string()))
        if not len(keys):
            return  # no row cleaned now has a key: nothing can have become a duplicate
    con = duckdb.connect()
    try:
        # 64 MB and keys hashed first: the aggregate over a 5.6M-row partition took the process 150 MiB past
        # the chunk loop's peak at 256 MB with exact keys; hashed keys (8 bytes each) spill less and run faster,
        # and only rows whose hash repeats are grouped by their exact key.
        con.execute("SET memory_limit = '64MB'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET temp_directory = ?", [str(staging.parent / f"{staging.name}.duckdb-tmp")])
        con.read_parquet([str(f) for f in files]).create_view("c")
        only = ""
        if keys is not None:
            con.register("k", pa.table({"fid": keys}))
            only = " AND foreign_identifier IN (SELECT fid FROM k)"
        dups = [
            r[0]
            for r in con.execute(
                "WITH keyed AS (SELECT identifier, provider, foreign_identifier, "
                f"hash(provider, foreign_identifier) AS h FROM c WHERE foreign_identifier IS NOT NULL{only}), "
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
    rejects.append(_duplicate_rejects(raw_files, media, gone, rej_schema))
    result.by_license = Counter({k: v for k, v in result.by_license.items() if v})
    dup_set = set(dups)
    result.preview = [r for r in result.preview if r["identifier"] not in dup_set]


def _matching_takedowns(tk: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """The rows of the (identifier-sorted) takedown frame whose identifier is in `ids`: a sorted search each."""
    if tk.height == 0 or ids.len() == 0:
        return tk.clear()
    pos = tk["identifier"].search_sorted(ids.sort(), side="left")
    pos = pos.filter(pos < tk.height).unique()
    hit = tk[pos]
    return hit.filter(pl.col("identifier").is_in(ids.implode()))


class _Pass:
    """One pass of the rules over raw batches: kept rows spooled per license folder, rejects spooled too."""

    def __init__(
        self,
        media: MediaType,
        tk: pl.DataFrame,
        staging: Path,
        result: CleanResult,
        hidden: tuple = (),
        opt_outs: OptOuts = NO_OPT_OUTS,
    ) -> None:
        self.media, self.tk, self.staging, self.result = media, tk, staging, result
        self.hidden = hidden  # the API's hidden sources, recorded with the takedown snapshot
        self.opt_outs = opt_outs
        result.opt_out_sha256 = opt_outs.sha256
        self.cols = output_columns(media)
        self.schema = clean_schema(media)
        self.rej_schema = reject_schema(media)
        self.spools: dict[str, _Spool] = {}
        self.rejects = _Spool(staging / ".rejects.arrows", self.rej_schema)

    def run(self, batches: Iterator[pa.RecordBatch], progress=None, start: float = 0.0) -> None:
        result = self.result
        for raw_batch in batches:
            chunk = pl.from_arrow(raw_batch)
            del raw_batch
            tk = _matching_takedowns(self.tk, chunk["identifier"])
            batch = clean_lazy(
                chunk.lazy(), self.media, tk.lazy(), dedupe=False, hidden_sources=self.hidden, opt_outs=self.opt_outs
            ).collect()
            result.rows_in += batch.height
            result.by_source.update(dict(batch["source"].fill_null(result.provider).value_counts().iter_rows()))
            fixes = batch.select([pl.col(c).sum() for c in FIX_COLUMNS] + [pl.col("_tags_dropped").sum()]).row(0)
            for name, n in zip([*FIX_COLUMNS, "_tags_dropped"], fixes, strict=True):
                if name == "_tags_dropped":
                    result.tags_dropped += int(n or 0)
                elif n:
                    result.repairs[name.removeprefix("_fix_")] += int(n)
            kept = batch.filter(pl.col("_reject").is_null()).select(self.cols)
            bad = batch.filter(pl.col("_reject").is_not_null())
            del batch
            if bad.height:
                result.rejected.update(dict(bad["_reject"].value_counts().iter_rows()))
                self.rejects.write(
                    reject_frame(bad).select(REJECT_COLUMNS).to_arrow(compat_level=ARROW_COMPAT).cast(self.rej_schema)
                )
            if kept.height:
                result.kept += kept.height
                if len(result.preview) < 5:
                    result.preview += kept.head(5 - len(result.preview)).to_dicts()
                for (slug,), part in kept.partition_by("license", as_dict=True, maintain_order=True).items():
                    folder = license_folder(slug)
                    if folder not in self.spools:
                        self.spools[folder] = _Spool(self.staging / f".{folder}.arrows", self.schema)
                    self.spools[folder].write(part.to_arrow(compat_level=ARROW_COMPAT).cast(self.schema))
                    result.by_license[slug] += part.height
            crash_point("clean")
            if progress:
                progress(result.rows_in, time.perf_counter() - start)

    def abort(self) -> None:
        for spool in [*self.spools.values(), self.rejects]:
            spool.abort()


def _table(batches, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=schema)


def _write_rejects(
    writer: ShardWriter, base: Iterator[pa.RecordBatch], extra: list[pa.Table], schema: pa.Schema, drop=None
) -> None:
    """Rejects in row order: the sorted base stream with the (small, unsorted) extra rows merged in."""
    delta = pa.concat_tables([t.cast(schema) for t in extra]) if extra else schema.empty_table()
    for table in merge_sorted(base, delta, ORDER_KEY, drop):
        writer.write(table)


class _Output:
    """The staging folders of one clean (license folders of kept rows, rejects) and every writer into them."""

    def __init__(self, layout: DataLayout, media: MediaType, **writer_kw) -> None:
        self.clean = layout.staging_dir(f"clean-{media.name}")
        self.rejects_dir = layout.staging_dir(f"rejects-{media.name}")
        self.clean.mkdir(parents=True)
        self.rejects_dir.mkdir(parents=True)
        self.schema, self.kw = clean_schema(media), writer_kw
        self.writers: list[ShardWriter] = []
        self.rejects = ShardWriter(self.rejects_dir, reject_schema(media), sorting=ORDER_KEY, **writer_kw)

    def new_writer(self, folder: str, root: Path | None = None) -> ShardWriter:
        self.writers.append(ShardWriter((root or self.clean) / folder, self.schema, sorting=ORDER_KEY, **self.kw))
        return self.writers[-1]

    def abort(self) -> None:
        for w in [*self.writers, self.rejects]:
            w.abort()
        release_staging(self.clean)
        release_staging(self.rejects_dir)


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
    unit: str | None = None,
    opt_outs: OptOuts = NO_OPT_OUTS,
) -> CleanResult:
    """Clean one provider partition (or one slice of it: `unit`) from its raw shards; counts for metadata and logs."""
    start = time.perf_counter()
    result = CleanResult(media=media.name, provider=provider)
    unit = unit or provider
    raw_dir = layout.require_dir(layout.raw_dir(media.name, unit), f"raw extract of {media.name}/{unit!r}")
    raw_files = sorted(raw_dir.glob("part-*.parquet"))
    tk = _takedown_frame(takedowns)
    out = _Output(layout, media, shard_bytes=shard_bytes, row_group_rows=row_group_rows)
    clean_staging, rej_staging, rejects, new_writer = out.clean, out.rejects_dir, out.rejects, out.new_writer
    cpass = _Pass(media, tk, clean_staging, result, read_hidden_sources(takedowns), opt_outs)

    try:
        cpass.run(_prefetched(_raw_batches(raw_files, media, batch_rows)), progress, start)

        def write_folder(folder: str) -> list[ShardInfo]:
            writer = new_writer(folder)
            for batch in cpass.spools[folder].batches():
                writer.write(batch)
            return writer.close()

        # License folders are independent files and the Parquet encoder releases the GIL: two at a time.
        with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="clean-writer") as pool:
            folders = sorted(cpass.spools)
            for folder, shards in zip(folders, pool.map(write_folder, folders), strict=True):
                result.shards[folder] = shards
        dups: list[pa.Table] = []
        _drop_duplicates(clean_staging, result, dups, cpass.rej_schema, new_writer, raw_files, media)
        _write_rejects(rejects, cpass.rejects.batches(), dups, cpass.rej_schema)
        rejects.close()
        install_clean_output(
            clean_staging, rej_staging, layout.clean_dir(media.name, unit), layout.rejects_dir(media.name, unit)
        )
    except BaseException:
        out.abort()
        cpass.abort()
        raise
    result.seconds = time.perf_counter() - start
    result.rows_cleaned = result.rows_in
    return result


# --- incremental clean -------------------------------------------------------------------------------------

CLEAN_FORMAT = 3  # 2: rows in (created_on, identifier) order in every license folder and in rejects; 3: content-
# defined shard and row-group boundaries (parquet.BOUNDARY_RULE)
TAKEDOWN_REASONS = frozenset({"taken_down", "deleted_in_catalog", "mature"})


def _pin_snapshot(layout: DataLayout, media: str, takedowns: Path | None) -> tuple[Path | None, str | None]:
    """The takedown snapshot this clean reads, pinned under its sha256 (`layout.takedown_snapshot`): hard-linked
    before it is hashed, so the rules, the sha the state records and the copy the next clean compares with are the
    same bytes, even if the takedowns asset replaces the snapshot meanwhile. Returns (pinned path, sha256)."""
    if takedowns is None or not takedowns.exists():
        return takedowns, None
    folder = layout.takedown_snapshots_dir(media)
    folder.mkdir(parents=True, exist_ok=True)
    pin = folder / f".pin-{uuid.uuid4().hex}"
    try:
        os.link(takedowns, pin)
    except OSError:  # a file system without hard links: a copy holds the same bytes
        shutil.copyfile(takedowns, pin)
    sha = sha256_file(pin)
    dest = layout.takedown_snapshot(media, sha)
    os.replace(pin, dest)
    return dest, sha


# A pin younger than this is kept even when no state refers to it: a clean running alongside may have pinned it
# and not saved its state yet. A unit's clean (pin to saved state) is ~11 min at the default 25M-row bound.
PIN_GRACE_S = 7_200


def _prune_snapshots(layout: DataLayout, media: str) -> None:
    """Remove pinned takedown snapshots no clean state refers to any more, once `PIN_GRACE_S` old (another
    partition's clean may have pinned one and not yet recorded it; st_ctime is when it was pinned)."""
    folder = layout.takedown_snapshots_dir(media)
    if not folder.is_dir():  # no clean has read a snapshot yet
        return
    keep = {(_load_json(f) or {}).get("takedowns") for f in layout.clean_state_files(media)}
    old = time.time() - PIN_GRACE_S
    for f in folder.iterdir():
        try:
            if f.stem not in keep and f.stat().st_ctime < old:
                f.unlink()
        except FileNotFoundError:  # removed by another clean's prune meanwhile
            pass


def _moved_takedowns(before: pl.DataFrame, now: pl.DataFrame) -> pl.Series:
    """Identifiers whose takedown reason (one per work, as the rules apply it) differs between two snapshots:
    listed, unlisted, or listed for another reason. A row's outcome depends on the snapshot only through its own
    identifier's reason, so these are the only rows a takedown change can move."""
    both = before.join(now, on="identifier", how="full", coalesce=True, suffix="_now")
    return both.filter(pl.col("reason").ne_missing(pl.col("reason_now")))["identifier"]


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _ids(files: list[Path], columns: list[str], where: pl.Expr | None = None) -> pl.DataFrame:
    """These columns of every file; with `where`, only the rows it keeps (filtered a file at a time, so a
    partition's rejects are never all held to find the few an incremental clean needs)."""
    frames = [pl.from_arrow(pq.read_table(f, columns=columns)) for f in files]
    if where is not None:
        frames = [f.filter(where) for f in frames]
    return pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.String for c in columns})


def _ids_among(files: list[Path], values: pl.Series) -> pl.Series:
    """The identifiers of these files that are in `values` (a takedown list: small), a row group at a time."""
    hits: list[pa.Array] = []
    if len(values):
        wanted = values.to_arrow()
        for _, _, col in identifier_groups(files):
            mask = pc.is_in(col, value_set=wanted.cast(col.type))
            if pc.any(mask).as_py():
                hits.append(col.filter(mask).cast(pa.string()).combine_chunks())
    return pl.Series("identifier", pa.concat_arrays(hits) if hits else pa.array([], pa.string()), pl.String)


def _value_counts(files: list[Path], column: str, null_as: str) -> Counter:
    """Counts of a column's values over these files, a row group at a time (flat in the partition's size)."""
    counts: Counter = Counter()
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            for item in pc.value_counts(pf.read_row_group(g, columns=[column])[column]).to_pylist():
                counts[null_as if item["values"] is None else item["values"]] += item["counts"]
    return counts


def _rows_by_id(files: list[Path], ids: pa.Array, schema: pa.Schema) -> pa.Table:
    """Raw rows with these identifiers: reads the identifier column of each row group, then only the groups hit."""
    out = []
    if len(ids):
        for pf, g, col in identifier_groups(files):
            mask = pc.is_in(col, value_set=ids)
            if pc.any(mask).as_py():
                out.append(pf.read_row_group(g).filter(mask).cast(schema))
    return pa.concat_tables(out) if out else schema.empty_table()


def opt_out_lists(layout: DataLayout, media: str, providers: list[str]) -> list[str]:
    """The sha256 of each opt-out list the providers' current clean outputs were made with (for the card)."""
    from openverse_dataset.catalog.slices import provider_units

    found = set()
    for p in providers:
        units = provider_units(layout, media, p)
        for unit in [p] if units is None else [s.unit for s in units]:  # a sliced provider's state is per slice
            state = _load_json(layout.state_file("clean", media, unit)) or {}
            if state.get("opt_outs"):
                found.add(state["opt_outs"])
    return sorted(found)


def _why_full_clean(layout: DataLayout, media: str, provider: str, state: dict | None, raw_version: str | None):
    """("" or the reason a full clean is needed, the raw change record to apply or None)."""
    from openverse_dataset.catalog.refresh import load_changes

    if raw_version is None:
        return "raw extract has no recorded state", None
    if state is None:
        return "no previous clean", None
    if state.get("format") != CLEAN_FORMAT:
        return "previous clean in another layout format", None
    if not layout.clean_dir(media, provider).is_dir() or not layout.rejects_dir(media, provider).is_dir():
        return "previous clean output missing", None
    if state.get("raw_version") == raw_version:
        return "", None  # raw unchanged: only takedowns can have moved
    changes = load_changes(layout, media, provider)
    if not changes or changes.get("version") != raw_version:
        return "raw change record missing", None
    if changes.get("mode") != "incremental":
        return "raw extract was rebuilt in full", None
    if changes.get("base_version") != state.get("raw_version"):
        return "clean is not at the raw extract's previous version", None
    return "", changes


def refresh_clean(
    layout: DataLayout,
    media: MediaType,
    provider: str,
    *,
    takedowns: Path | None = None,
    force_full: bool = False,
    progress=None,
    unit: str | None = None,
    opt_outs: OptOuts = NO_OPT_OUTS,
    **kw,
) -> tuple[CleanResult, str, str]:
    """Clean only what the last raw refresh changed (and rows whose takedown status moved), else in full.

    Returns (result, mode, reason). Either way the output is what `clean_partition` writes from the current raw
    files and takedown snapshot, byte for byte.
    """
    from openverse_dataset.catalog.refresh import RawState

    unit = unit or provider
    raw_state = RawState.load(layout.state_file("raw", media.name, unit))
    state_path = layout.state_file("clean", media.name, unit)
    state = _load_json(state_path)
    takedowns, tk_sha = _pin_snapshot(layout, media.name, takedowns)
    settings = layout_settings({k: kw[k] for k in sorted(kw) if k in ("shard_bytes", "row_group_rows", "batch_rows")})
    reason, changes = _why_full_clean(layout, media.name, unit, state, raw_state.version if raw_state else None)
    hidden = read_hidden_sources(takedowns)
    if not reason and state.get("settings") != settings:
        reason = "writer settings changed"
    if not reason and tuple(state.get("hidden", ())) != hidden:
        reason = "hidden sources changed"  # may hide or unhide any row: rare, decided by a full pass
    if not reason and state.get("opt_outs") != opt_outs.sha256:
        reason = "opt-out list changed"  # may opt out or back in any row: a full pass decides
    if force_full:
        reason = "full clean requested"
    unchanged = (
        None
        if reason or state.get("raw_version") != raw_state.version or state.get("takedowns") != tk_sha
        else _unchanged_result(layout, media.name, provider, unit, state.get("result"))
    )
    if unchanged is not None:
        # Same raw version, same takedown bytes, same rules: the output cannot differ (a slice its own run has
        # cleaned, met again by the provider's run). Its recorded totals stand; no file is read.
        result, mode = unchanged, "incremental"
        result.opt_out_sha256 = opt_outs.sha256  # unchanged since the last clean (else `reason`)
    elif reason:
        result = clean_partition(
            layout, media, provider, takedowns=takedowns, progress=progress, unit=unit, opt_outs=opt_outs, **kw
        )
        mode = "full"
    else:
        moved = tk_sha != state.get("takedowns")
        before = layout.takedown_snapshot(media.name, state["takedowns"]) if moved and state.get("takedowns") else None
        before = before if before is not None and before.exists() else None  # pruned or never pinned: fall back
        result = _clean_changes(
            layout, media, provider, takedowns, changes, moved, unit=unit, opt_outs=opt_outs, previous=before, **kw
        )
        mode = "incremental"
    if raw_state is not None:
        _save_json(
            state_path,
            {
                "format": CLEAN_FORMAT,
                "raw_version": raw_state.version,
                "takedowns": tk_sha,
                "hidden": list(hidden),
                "opt_outs": opt_outs.sha256,
                "settings": settings,
                "result": _result_record(layout, media.name, unit, result),
            },
        )
        _prune_snapshots(layout, media.name)
    return result, mode, reason


def _result_record(layout: DataLayout, media: str, unit: str, r: CleanResult) -> dict:
    """A clean's totals and the files it left (its shards; the rejects' names and sizes), kept in its state for
    `_unchanged_result`."""
    return {
        "rows_in": r.rows_in,
        "kept": r.kept,
        "rejected": dict(sorted(r.rejected.items())),
        "by_license": dict(sorted(r.by_license.items())),
        "by_source": dict(sorted(r.by_source.items())),
        "shards": {f: [s.as_dict() for s in sh] for f, sh in sorted(r.shards.items())},
        "preview": [
            {k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in row.items()}
            for row in r.preview[:5]
        ],
        "reject_files": file_sizes(layout.rejects_dir(media, unit), REJECTS_GLOB),
    }


def _unchanged_result(layout: DataLayout, media: str, provider: str, unit: str, rec: dict | None) -> CleanResult | None:
    """The recorded result of the last clean when its files are still exactly as it left them (a stat), else None."""
    if not rec:
        return None
    try:
        shards = {f: [ShardInfo(**s) for s in sh] for f, sh in rec["shards"].items()}
        recorded = {f"{f}/{s.name}": s.bytes for f, sh in shards.items() for s in sh}
        if file_sizes(layout.clean_dir(media, unit), CLEAN_GLOB) != recorded:
            return None
        if file_sizes(layout.rejects_dir(media, unit), REJECTS_GLOB) != rec["reject_files"]:
            return None
        result = CleanResult(
            media=media,
            provider=provider,
            rows_in=rec["rows_in"],
            kept=rec["kept"],
            rejected=Counter(rec["rejected"]),
            by_license=Counter(rec["by_license"]),
            by_source=Counter(rec["by_source"]),
            shards=shards,
            preview=list(rec.get("preview", [])),
            rows_cleaned=0,
        )
    except (KeyError, TypeError):
        return None
    result.merge = MergeStats(files_kept=sum(len(sh) for sh in shards.values()))
    return result


def _clean_changes(
    layout: DataLayout,
    media: MediaType,
    provider: str,
    takedowns: Path | None,
    changes: dict | None,
    takedowns_moved: bool,
    *,
    opt_outs: OptOuts = NO_OPT_OUTS,
    batch_rows: int = BATCH_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = CLEAN_ROW_GROUP_ROWS,
    unit: str | None = None,
    previous: Path | None = None,
) -> CleanResult:
    """`previous`: the takedown snapshot the last clean read (pinned, existing), to recheck only what moved since;
    None when the snapshot moved and that one is gone: every listed work is rechecked."""
    start = time.perf_counter()
    result = CleanResult(media=media.name, provider=provider)
    raw_schema = media.raw_schema
    unit = unit or provider
    raw_files = sorted(layout.raw_dir(media.name, unit).glob("part-*.parquet"))
    clean_dir, rej_dir = layout.clean_dir(media.name, unit), layout.rejects_dir(media.name, unit)
    prev_clean = sorted(clean_dir.glob("*/part-*.parquet"))
    prev_rejects = sorted(rej_dir.glob("part-*.parquet"))
    tk = _takedown_frame(takedowns)

    # Rows to clean again: what the raw refresh read, plus rows whose takedown status may have moved.
    if changes is not None:
        folder = layout.changes_dir(media.name, unit)
        changed = pq.read_table(folder / "changed.parquet").cast(raw_schema)
        removed = pl.from_arrow(pq.read_table(folder / "removed.parquet"))["identifier"]
    else:
        changed, removed = raw_schema.empty_table(), pl.Series("identifier", [], pl.String)
    # Rejects to decide again (read filtered, never all of them): duplicates (a twin may have gone) and, when
    # the last clean's takedown snapshot is gone, every takedown reject and every listed work.
    whole_recheck = takedowns_moved and previous is None
    where = pl.col("reason") == "duplicate"
    if whole_recheck:
        tk_ids = tk["identifier"]
        where = where | pl.col("reason").is_in(list(TAKEDOWN_REASONS)) | pl.col("identifier").is_in(tk_ids.implode())
    recheck = _ids(prev_rejects, ["identifier", "reason"], where)["identifier"]
    if takedowns_moved and previous is not None:
        # Only works whose takedown reason moved since the last clean; `_rows_by_id` finds which are here.
        recheck = pl.concat([recheck, _moved_takedowns(_takedown_frame(previous), tk)])
    elif whole_recheck:
        recheck = pl.concat([recheck, _ids_among(prev_clean, tk_ids)])
    recheck = recheck.filter(~recheck.is_in(removed.implode())).unique().sort()
    again = _rows_by_id(raw_files, recheck.to_arrow(), raw_schema)
    delta_raw = sort_by_key(pa.concat_tables([changed, again]), ORDER_KEY)
    del changed, again  # the sorted copy is what the pass reads: the change is held once, not twice
    affected = pa.array(sorted(set(removed.to_list()) | set(recheck.to_list())), pa.string())

    out = _Output(layout, media, shard_bytes=shard_bytes, row_group_rows=row_group_rows)
    clean_staging, rej_staging, rejects, new_writer = out.clean, out.rejects_dir, out.rejects, out.new_writer
    cpass = _Pass(media, tk, clean_staging, result, read_hidden_sources(takedowns), opt_outs)

    try:
        cpass.run(iter(delta_raw.to_batches(max_chunksize=batch_rows)))
        del delta_raw  # spooled per license folder by the pass; the merges below read the spools
        delta_counts = (Counter(result.repairs), result.tags_dropped, result.rows_in)
        folders = sorted({f.parent.name for f in prev_clean} | set(cpass.spools))
        writers_by_folder = {f: new_writer(f) for f in folders}
        stats_by_folder: dict[str, MergeStats] = {}  # one entry per folder: no two threads update one object
        keys_by_folder: dict[str, pa.Array] = {}  # foreign_identifier of the rows kept now, per folder (a copy)

        def merge_folder(folder: str) -> list[ShardInfo]:
            # Shards the change does not touch are linked as they are; in the others, untouched row groups are
            # copied and the rest merged and encoded again. A folder's cleaned change is read from its spool
            # here, so only the folders being merged hold theirs.
            spool = cpass.spools.get(folder)
            delta = _table(spool.batches(), cpass.schema) if spool else cpass.schema.empty_table()
            keys_by_folder[folder] = delta["foreign_identifier"].combine_chunks()
            writer = writers_by_folder[folder]
            stats_by_folder[folder] = merge_into(
                writer,
                sorted((clean_dir / folder).glob("part-*.parquet")),
                delta,
                ORDER_KEY,
                affected,
                lambda f, groups: _file_batches([f], cpass.schema, MERGE_BATCH_ROWS, groups),
            )
            del delta
            return writer.close()

        # As in the full clean: license folders are independent files, two at a time.
        with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="clean-merge") as pool:
            for folder, shards in zip(folders, pool.map(merge_folder, folders), strict=True):
                if shards:
                    result.shards[folder] = shards
                else:
                    shutil.rmtree(clean_staging / folder, ignore_errors=True)
        dups: list[pa.Table] = []
        among = pa.chunked_array([keys_by_folder[f] for f in sorted(keys_by_folder)], pa.large_string())
        _drop_duplicates(clean_staging, result, dups, cpass.rej_schema, new_writer, raw_files, media, among)
        new_rejects = [_table(cpass.rejects.batches(), cpass.rej_schema), *dups]
        base = _file_batches(prev_rejects, cpass.rej_schema, 50_000)
        _write_rejects(rejects, base, new_rejects, cpass.rej_schema, affected)
        rejects.close()
        # A kept shard's sha256 is its previous one (same file): the sidecar is written without hashing it again.
        previous = shard_records(clean_dir).by_path()
        known = {
            f"{w.folder.name}/{name}": previous[f"{src.parent.name}/{src.name}"]
            for w in writers_by_folder.values()
            for name, src in w.adopted.items()
            if f"{src.parent.name}/{src.name}" in previous
        }
        install_clean_output(clean_staging, rej_staging, clean_dir, rej_dir, known=known)
    except BaseException:
        out.abort()
        cpass.abort()
        raise
    # Totals describe the whole partition (as after a full clean); repairs and tags count the rows cleaned now.
    result.repairs, result.tags_dropped, rows_cleaned = delta_counts
    slugs = {license_folder(s): s for s in lic.LICENSES}
    result.by_license = Counter({slugs.get(f, f): sum(s.rows for s in sh) for f, sh in result.shards.items()})
    result.kept = sum(result.by_license.values())
    rejects_now = sorted(rej_dir.glob("part-*.parquet"))  # counted a row group at a time, never held whole
    result.rejected = _value_counts(rejects_now, "reason", "unknown")
    result.by_source = _value_counts(sorted(clean_dir.glob("*/part-*.parquet")), "source", provider)
    result.by_source.update(_value_counts(rejects_now, "source", provider))
    result.rows_in = result.kept + result.rejected_total
    result.rows_cleaned = rows_cleaned
    result.merge = MergeStats()
    for stats in stats_by_folder.values():
        result.merge.add(stats)
    result.seconds = time.perf_counter() - start
    return result


def _combine(media: MediaType, provider: str, results: list[CleanResult]) -> CleanResult:
    """One provider's totals from its slices' results (the metadata describes the provider)."""
    out = CleanResult(media=media.name, provider=provider, rows_cleaned=0)
    for r in results:
        out.rows_in += r.rows_in
        out.kept += r.kept
        out.rejected.update(r.rejected)
        out.repairs.update(r.repairs)
        out.tags_dropped += r.tags_dropped
        out.by_license.update(r.by_license)
        out.by_source.update(r.by_source)
        for folder, shards in r.shards.items():
            out.shards.setdefault(folder, []).extend(shards)
        out.preview = out.preview or r.preview
        out.opt_out_sha256 = out.opt_out_sha256 or r.opt_out_sha256  # one list for every slice of a run
        out.seconds += r.seconds
        out.rows_cleaned += r.rows_cleaned or 0
        if r.merge is not None:
            out.merge = out.merge or MergeStats()
            out.merge.add(r.merge)
    return out


def clean_provider(
    layout: DataLayout,
    media: MediaType,
    provider: str,
    *,
    takedowns: Path | None = None,
    progress=None,
    workers: int = 1,
    **kw,
) -> tuple[CleanResult, str, str, int]:
    """Clean one provider: as one unit, or slice by slice per its plan (catalog/slices.py), then assemble.

    Each slice is cleaned (incrementally when its raw refresh allows) into its own folders; the provider's clean
    and rejects folders are then its slices' files in slice order, switched in as one. Duplicates of
    (provider, foreign_identifier) are dropped within a slice: the catalog's unique index allows none within a
    snapshot. With `workers` > 1, that many slices are cleaned at once in worker processes (no progress
    callback then). Returns (result, mode, reason, number of units).
    """
    from openverse_dataset.catalog.slices import locked, provider_units, remove_other_slices, run_units

    units = provider_units(layout, media.name, provider)
    clean_one = functools.partial(
        refresh_clean,
        layout,
        media,
        provider,
        takedowns=takedowns,
        progress=progress if workers == 1 or units is None else None,
        **kw,
    )
    if units is None:
        result, mode, why = locked(clean_one, layout, media.name, unit=provider)
        return result, mode, why, 1
    results, modes, whys = [], [], []
    one = functools.partial(locked, clean_one, layout, media.name)  # a slice's own run may hold it: take turns
    for s, (r, mode, why) in zip(units, run_units(one, [{"unit": s.unit} for s in units], workers), strict=True):
        results.append(r)
        modes.append(mode)
        if why:
            whys.append(f"{s.label}: {why}")
    assemble_folders(
        layout,
        [
            (
                [(s, layout.clean_dir(media.name, s.unit)) for s in units],
                layout.clean_dir(media.name, provider),
                CLEAN_GLOB,
                True,
            ),
            (
                [(s, layout.rejects_dir(media.name, s.unit)) for s in units],
                layout.rejects_dir(media.name, provider),
                REJECTS_GLOB,
                True,
            ),
        ],
    )
    remove_other_slices(layout, media.name, provider, units)
    # The provider is cleaned (what `build` checks); its own incremental state no longer applies.
    _save_json(layout.state_file("clean", media.name, provider), {"format": "sliced", "slices": len(units)})
    mode = "incremental" if all(m == "incremental" for m in modes) else "full"
    return _combine(media, provider, results), mode, "; ".join(whys[:3]), len(units)
