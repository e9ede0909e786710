"""Raw extract of one provider partition: catalog rows -> Arrow batches -> Parquet shards, never all in memory.

Two readers produce the same Arrow batches from the same SELECT (built once with SQLAlchemy):
- PostgreSQL fast path: ADBC's libpq driver streams Arrow record batches over COPY (binary) with no Python
  objects per row;
- generic path: a SQLAlchemy server-side cursor (`stream_results`) in `partitions(N)` batches, for SQLite and any
  other database.
Both read one snapshot (REPEATABLE READ on PostgreSQL) and record its watermark (rows, max `updated_on`).

On the fast path a reader thread fetches while the main thread encodes Parquet (both release the GIL), so
libpq parsing and zstd run on two cores. With `readers > 1` the partition fans out over identifier ranges:
a coordinator exports its snapshot (`pg_export_snapshot()`), each reader connection imports it, and the
ranges are written strictly in identifier order. A reader that runs ahead blocks on a small per-range queue
while its server backend finishes the scan and sort, so the parallelism is server-side and client memory stays
bounded by readers x queue depth x batch size, whatever the partition size. The output is byte-identical to a
single reader's.

Rows are ordered by (created_on, identifier): ingestion order, so rows a later ingestion adds land at the end of
the partition's files and the pages before them keep their bytes (see `docs/scale.md`). Fan-out ranges are
slices of created_on between the partition's oldest and newest row (read in the shared snapshot).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openverse_dataset.catalog.connect import (
    CatalogError,
    as_utc,
    make_engine,
    redact,
    sane_max,
    scrub,
    with_pg_timeouts,
)
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.layout import DataLayout, crash_point, release_staging, replace_dir
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import (
    DEFAULT_SHARD_BYTES,
    ORDER_KEY,
    RAW_ROW_GROUP_ROWS,
    ShardInfo,
    ShardWriter,
)
from openverse_dataset.streams import put_unless_stopped

DEFAULT_BATCH_ROWS = 50_000
# Batches a reader may hold ahead of the writer, per range (16 x ~4 MiB). Enough to keep the server streaming
# while the writer encodes a 100k-row group (~0.3 s): with 2 the reader stalled at every row group and the
# 1.4M-row benchmark partition took 18.3 s; with 16, 12.7 s for 13 MiB more peak RSS.
QUEUE_BATCHES = 16
ADBC_BATCH_BYTES = 4 << 20  # ADBC's batch size hint (default 16 MiB): smaller batches, less memory in flight
_END = object()
Progress = Callable[[int, float], None]  # (rows so far, seconds so far)


@dataclass
class ExtractResult:
    """What one partition's extract wrote and the snapshot it read."""

    media: str
    provider: str
    method: str
    rows: int
    shards: list[ShardInfo]
    snapshot_rows: int
    max_updated_on: datetime | None
    seconds: float
    batches: int = 0
    extra: dict = field(default_factory=dict)
    timestamps_out_of_range: int = 0  # values read as NULL (infinity, BC, past 9999): counted, never wrapped

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


# The provider name is untrusted text (it may hold `%`, quotes, anything): the fast path binds it as a
# parameter of `set_config` and its COPY queries read it back with `current_setting`, never as a literal.
PROVIDER_SETTING = "openverse.provider"


IdRange = tuple[str | None, str | None]  # [lo, hi) of `identifier` (UUID text); None: open at that end


class TooManyRows(RuntimeError):
    """The snapshot holds more rows than the unit may (OPENVERSE_PARTITION_MAX_ROWS): split it, then read again."""

    def __init__(self, rows: int, max_rows: int) -> None:
        super().__init__(f"{rows:,} rows, more than the bound of {max_rows:,}")
        self.rows, self.max_rows = rows, max_rows

    def __reduce__(self):  # raised in a slice worker process, re-raised in the run's: keep both numbers
        return (TooManyRows, (self.rows, self.max_rows))


def in_id_range(col: sa.ColumnElement, id_range: IdRange | None) -> list[sa.ColumnElement]:
    """Conditions restricting `identifier` to one slice's range (served by the catalog's identifier index)."""
    lo, hi = id_range or (None, None)
    out = []
    if lo is not None:
        out.append(col >= lo)
    if hi is not None:
        out.append(col < hi)
    return out


def _provider_value(provider: str | None) -> sa.ColumnElement:
    return sa.func.current_setting(PROVIDER_SETTING) if provider is None else sa.literal(provider)


def raw_columns(media: MediaType) -> list:
    """Every raw column by name, uuid/jsonb cast to text (what both readers turn into the raw schema)."""
    t = MEDIA_TABLES[media.name]
    return [
        sa.cast(t.c[f.name], sa.Text).label(f.name)
        if f.name == "identifier" or f.name in media.json_columns
        else _readable_timestamp(t.c[f.name]).label(f.name)
        if pa.types.is_timestamp(f.type)
        else t.c[f.name]
        for f in media.raw_schema
    ]


# Timestamps a reader can hold: PostgreSQL also stores `infinity`, `-infinity`, BC dates and years past 9999,
# which psycopg cannot read at all and ADBC turns into wrapped numbers (-infinity became -9.2e18 us). Such a
# value is extracted as NULL and counted (`timestamps_out_of_range` in the raw metadata), never published wrapped.
TIMESTAMP_LOW = datetime(1, 1, 1, tzinfo=UTC)
TIMESTAMP_HIGH = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _timestamp_ok(col: sa.ColumnElement) -> sa.ColumnElement:
    typ = sa.DateTime(timezone=True)
    return col.between(sa.literal(TIMESTAMP_LOW, typ), sa.literal(TIMESTAMP_HIGH, typ))


def _readable_timestamp(col: sa.ColumnElement) -> sa.ColumnElement:
    return sa.case((_timestamp_ok(col), col), else_=sa.null())


def _timestamp_columns(media: MediaType) -> list[str]:
    return [f.name for f in media.raw_schema if pa.types.is_timestamp(f.type)]


def select_partition(
    media: MediaType,
    provider: str | None,
    lower: datetime | None = None,
    upper: datetime | None = None,
    id_range: IdRange | None = None,
) -> sa.Select:
    """The partition's rows, every column by name, in ingestion order (created_on, then identifier).

    `lower` (inclusive) and `upper` (exclusive) restrict it to one created_on range of a fan-out. `provider`
    None reads the provider bound in the session (`bind_provider`). PostgreSQL orders uuids by their bytes,
    i.e. by their lowercase hex text, as the merge code does.
    """
    t = MEDIA_TABLES[media.name]
    stmt = sa.select(*raw_columns(media)).where(
        t.c.provider == _provider_value(provider), *in_id_range(t.c.identifier, id_range)
    )
    # Ordered by created_on as extracted (out-of-range values are NULL, and NULLs sort last, as the merge of an
    # incremental refresh sorts them): a full extract and a merged one put such a row in the same place. The
    # last range of a fan-out holds them.
    created = _readable_timestamp(t.c.created_on)
    if lower is not None:
        stmt = stmt.where(sa.or_(created >= lower, created.is_(None)) if upper is None else created >= lower)
    if upper is not None:
        stmt = stmt.where(created < upper)
    return stmt.order_by(created.asc().nulls_last(), t.c.identifier)


def created_ranges(oldest: datetime | None, newest: datetime | None, n: int) -> list[tuple]:
    """`n` contiguous created_on ranges covering [oldest, newest], split evenly in time (open at both ends).

    Ingestion is spread over years, so equal time slices hold roughly comparable rows; an uneven split only
    makes one reader finish later, never changes the output.
    """
    if n <= 1 or oldest is None or newest is None:
        return [(None, None)]
    step = (newest - oldest) / n
    cuts = [oldest + step * k for k in range(1, n)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def timestamp_out_of_range(media: MediaType) -> sa.ColumnElement:
    """True for a row with any timestamp a reader cannot hold (extracted as NULL): what both the full extract
    and the incremental refresh count as `timestamps_out_of_range`."""
    t = MEDIA_TABLES[media.name]
    return sa.or_(*[sa.and_(t.c[c].is_not(None), sa.not_(_timestamp_ok(t.c[c]))) for c in _timestamp_columns(media)])


def select_watermark(media: MediaType, provider: str | None, id_range: IdRange | None = None) -> sa.Select:
    t = MEDIA_TABLES[media.name]
    bad = timestamp_out_of_range(media)
    return sa.select(sa.func.count(), sane_max(t.c.updated_on), sa.func.count().filter(bad)).where(
        t.c.provider == _provider_value(provider), *in_id_range(t.c.identifier, id_range)
    )


def bind_provider(cur, provider: str) -> None:
    """Bind the provider name as a parameter, for this transaction's `current_setting` reads (ADBC cursor)."""
    cur.execute(f"SELECT set_config('{PROVIDER_SETTING}', $1, true)", parameters=(provider,))
    cur.fetchall()


def select_created_span(media: MediaType, provider: str | None, id_range: IdRange | None = None) -> sa.Select:
    t = MEDIA_TABLES[media.name]
    created = _readable_timestamp(t.c.created_on)  # infinity would make the ranges meaningless (or unreadable)
    return sa.select(sa.func.min(created), sa.func.max(created)).where(
        t.c.provider == _provider_value(provider), *in_id_range(t.c.identifier, id_range)
    )


def _check_bound(watermark: list, max_rows: int | None) -> None:
    """Stop before reading rows when the snapshot's count says the unit is above the bound."""
    if max_rows is not None and watermark and int(watermark[0] or 0) > max_rows:
        raise TooManyRows(int(watermark[0]), max_rows)


def _rows_to_batch(rows: list, schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, type=f.type, from_pandas=False) for col, f in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _generic_batches(
    engine: sa.Engine,
    media: MediaType,
    provider: str,
    batch_rows: int,
    watermark: list,
    id_range: IdRange | None = None,
    max_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    schema = media.raw_schema
    options: dict = {"stream_results": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        watermark.extend(conn.execute(select_watermark(media, provider, id_range)).one())
        _check_bound(watermark, max_rows)
        result = conn.execute(select_partition(media, provider, id_range=id_range))
        for rows in result.partitions(batch_rows):
            yield _rows_to_batch(rows, schema)


def _pg_sql(stmt: sa.Select) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def _adbc_uri(url: str) -> str:
    u = with_pg_timeouts(sa.engine.make_url(url).set(drivername="postgresql"))
    return u.render_as_string(hide_password=False)


def _malloc_trimmer() -> Callable[[], None]:
    """glibc's `malloc_trim`, or a no-op elsewhere.

    ADBC allocates batches with malloc in the reader threads; the writer frees them in the main thread, so
    each reader's malloc arena keeps the freed pages. Trimming once per row group returns them to the OS,
    which keeps peak RSS flat in the number of readers and the partition size.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def _own(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch copied into Arrow's pool, one buffer per column.

    An ADBC batch arrives as one C Data Interface import whose buffers (malloc'd, with the driver's growth
    slack) are freed only when every column is released, so the writer's column-at-a-time combine could not
    free anything until the whole row group was copied: two row groups in memory at the flush. A tight copy
    made here (a few ms per 100k rows, in the reader thread) frees the driver's memory at once, in the thread
    that allocated it, and lets each column go as soon as it is combined.
    """
    return pa.concat_batches([batch])


def _adbc_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("adbc_driver")


class _RangeReader(threading.Thread):
    """Streams its share of the ranges (k, k + readers, ...) into one bounded queue per range."""

    def __init__(
        self,
        uri: str,
        media: MediaType,
        provider: str,
        ranges: list[tuple[int, datetime | None, datetime | None]],
        queues: list[queue.Queue],
        stop: threading.Event,
        snapshot: str | None,
        watermark: list | None,
        id_range: IdRange | None = None,
        max_rows: int | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"extract-reader-{ranges[0][0]}")
        self.uri, self.media, self.provider = uri, media, provider
        self.ranges, self.queues, self.stop = ranges, queues, stop
        self.snapshot, self.watermark = snapshot, watermark
        self.id_range, self.max_rows = id_range, max_rows
        self._cursor = None

    def _put(self, k: int, item: object) -> bool:
        return put_unless_stopped(self.queues[k], item, self.stop)

    def cancel(self) -> None:
        """Ask the server to stop this reader's query (a sort can run for minutes before the first row)."""
        cur = self._cursor
        if cur is not None:
            with contextlib.suppress(Exception):  # best effort: the thread also checks `stop` between batches
                cur.adbc_cancel()

    def run(self) -> None:
        import adbc_driver_postgresql.dbapi as pgdbapi

        schema = self.media.raw_schema
        k = self.ranges[0][0]
        try:
            with pgdbapi.connect(self.uri) as conn, conn.cursor() as cur:
                self._cursor = cur
                # ADBC opens a transaction (autocommit off): make it REPEATABLE READ, on the coordinator's
                # exported snapshot when there is one, so every range sees the same point in time.
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                if self.snapshot:
                    cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
                bind_provider(cur, self.provider)
                if self.watermark is not None:
                    cur.execute(_pg_sql(select_watermark(self.media, None, self.id_range)))
                    self.watermark.extend(cur.fetchone())
                    _check_bound(self.watermark, self.max_rows)
                cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(ADBC_BATCH_BYTES)})
                for k, lower, upper in self.ranges:
                    if self.stop.is_set():
                        return
                    cur.execute(_pg_sql(select_partition(self.media, None, lower, upper, self.id_range)))
                    for batch in cur.fetch_record_batch():
                        if batch.num_rows and not self._put(k, _own(batch.rename_columns(schema.names).cast(schema))):
                            return  # the writer stopped: closing the connection ends the COPY and the snapshot
                    self._put(k, _END)
                conn.rollback()  # read-only: end the snapshot
        except BaseException as exc:
            if not self.stop.is_set():
                self._put(k, exc)
        finally:
            self._cursor = None


def _adbc_batches(
    url: str,
    media: MediaType,
    provider: str,
    readers: int,
    n_ranges: int,
    watermark: list,
    extra: dict,
    id_range: IdRange | None = None,
    max_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of the partition in identifier order, from `readers` connections on one snapshot."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    uri = _adbc_uri(url)
    readers = min(readers, n_ranges)
    extra["readers"], extra["ranges"] = readers, n_ranges
    depth = max(2, QUEUE_BATCHES // readers)  # the same memory in flight whatever the number of readers
    stop = threading.Event()
    threads: list[_RangeReader] = []
    coordinator = None
    try:
        snapshot = None
        ranges: list[tuple] = [(None, None)]
        if n_ranges > 1:
            coordinator = pgdbapi.connect(uri)
            with coordinator.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SELECT pg_export_snapshot()")
                snapshot = cur.fetchone()[0]
                bind_provider(cur, provider)
                cur.execute(_pg_sql(select_watermark(media, None, id_range)))
                watermark.extend(cur.fetchone())
                _check_bound(watermark, max_rows)
                cur.execute(_pg_sql(select_created_span(media, None, id_range)))
                ranges = created_ranges(*(as_utc(v) for v in cur.fetchone()), n_ranges)
        queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in ranges]
        indexed = [(k, lo, hi) for k, (lo, hi) in enumerate(ranges)]
        for j in range(min(readers, len(ranges))):
            mine = indexed[j::readers]
            threads.append(
                _RangeReader(
                    uri,
                    media,
                    provider,
                    mine,
                    queues,
                    stop,
                    snapshot,
                    None if snapshot else watermark,
                    id_range,
                    max_rows,
                )
            )
        for t in threads:
            t.start()
        for q in queues:
            while (item := q.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.cancel()
        for t in threads:
            t.join()
        if coordinator is not None:
            try:
                coordinator.rollback()
            finally:
                coordinator.close()


def choose_method(url: str, method: str = "auto") -> str:
    """`adbc` for PostgreSQL URLs when the driver is installed, else `sqlalchemy`."""
    if method != "auto":
        return method
    if sa.engine.make_url(url).get_backend_name() == "postgresql":
        try:
            import adbc_driver_postgresql.dbapi  # noqa: F401

            return "adbc"
        except ImportError:
            return "sqlalchemy"
    return "sqlalchemy"


def extract_partition(
    url: str,
    media: MediaType,
    provider: str,
    layout: DataLayout,
    *,
    method: str = "auto",
    readers: int = 1,
    ranges: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = RAW_ROW_GROUP_ROWS,
    progress: Progress | None = None,
    fail_after_rows: int | None = None,
    unit: str | None = None,
    id_range: IdRange | None = None,
    max_rows: int | None = None,
) -> ExtractResult:
    """Stream one provider's rows into shards in a staging folder, then swap the folder into place.

    A failure at any point leaves the previous shards untouched and no partial file in the partition folder.
    `readers` > 1 fans the PostgreSQL fast path out over created_on ranges (`ranges`, default one per reader)
    read in parallel on one exported snapshot; more ranges than readers make each server-side sort smaller
    (less temp space on a Flickr-sized partition) at the cost of one more scan per range. The generic path
    always reads with one. `fail_after_rows` simulates a crash mid-partition (for tests).

    A slice of a big provider passes its `unit` (where its files go) and `id_range`; `max_rows` makes the extract
    stop with `TooManyRows` as soon as its snapshot's count exceeds the bound, before any row is streamed.
    """
    method = choose_method(url, method)
    final = layout.raw_dir(media.name, unit or provider)
    staging = layout.staging_dir(f"raw-{media.name}")
    writer = ShardWriter(
        staging, media.raw_schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows, sorting=ORDER_KEY
    )
    watermark: list = []
    extra: dict = {}
    start = time.perf_counter()
    engine = None
    batches = None
    n_batches = 0
    try:
        if method == "adbc":
            readers = max(1, readers)
            batches = _adbc_batches(
                url, media, provider, readers, max(1, ranges or readers), watermark, extra, id_range, max_rows
            )
        else:
            engine = make_engine(url)
            batches = _generic_batches(engine, media, provider, batch_rows, watermark, id_range, max_rows)
            extra["readers"] = 1
        trim = _malloc_trimmer() if method == "adbc" else lambda: None
        groups = 0
        for batch in batches:
            writer.write(batch)
            n_batches += 1
            crash_point("extract")
            if writer.rows // row_group_rows != groups:  # a row group was written: its batches are free
                groups = writer.rows // row_group_rows
                trim()
            seen = writer.rows + writer._pending_rows
            if fail_after_rows is not None and seen >= fail_after_rows:
                raise RuntimeError(f"simulated failure after {seen} rows")
            if progress:
                progress(seen, time.perf_counter() - start)
        if hasattr(batches, "close"):
            batches.close()  # stops and joins the reader threads before the folder is swapped in
        shards = writer.close()
        if watermark and int(watermark[0] or 0) != writer.rows:  # readers did not see the watermark's snapshot
            raise RuntimeError(f"read {writer.rows} rows but the snapshot holds {watermark[0]}")
        staging.mkdir(parents=True, exist_ok=True)  # a partition with no rows is an empty folder, not an error
        replace_dir(staging, final)
    except sa.exc.SQLAlchemyError as exc:
        writer.abort()
        release_staging(staging)
        raise CatalogError(
            f"extract of {media.name}/{provider!r} from {redact(url)} failed: {scrub(str(exc), url)}"
        ) from None
    except Exception as exc:
        if batches is not None and hasattr(batches, "close"):
            batches.close()
        writer.abort()
        release_staging(staging)
        if _adbc_error(exc):
            raise CatalogError(
                f"extract of {media.name}/{provider!r} from {redact(url)} failed: {scrub(str(exc), url)}"
            ) from None
        raise
    finally:
        if engine is not None:
            engine.dispose()
    rows_seen, max_updated, out_of_range = [*watermark, 0, None, 0][:3]
    return ExtractResult(
        media=media.name,
        provider=provider,
        method=method,
        rows=writer.rows,
        shards=shards,
        snapshot_rows=int(rows_seen or 0),
        max_updated_on=as_utc(max_updated),
        seconds=time.perf_counter() - start,
        batches=n_batches,
        extra=extra,
        timestamps_out_of_range=int(out_of_range or 0),
    )
