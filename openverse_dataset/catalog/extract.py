"""Raw extract of one provider partition: catalog rows -> Arrow batches -> Parquet shards, never all in memory.

Two readers produce the same Arrow batches from the same SELECT (built once with SQLAlchemy):
- PostgreSQL fast path: ADBC's libpq driver streams Arrow record batches over COPY (binary) with no Python
  objects per row;
- generic path: a SQLAlchemy server-side cursor (`stream_results`) in `partitions(N)` batches, for SQLite and any
  other database.
Both read one snapshot (REPEATABLE READ on PostgreSQL) and record its watermark (rows, max `updated_on`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openverse_dataset.catalog.connect import CatalogError, make_engine, redact, scrub
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.layout import DataLayout, replace_dir
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import DEFAULT_ROW_GROUP_ROWS, DEFAULT_SHARD_BYTES, ShardInfo, ShardWriter

DEFAULT_BATCH_ROWS = 50_000
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

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


def select_partition(media: MediaType, provider: str) -> sa.Select:
    """The partition's rows, every column by name, uuid/jsonb as text, in a stable order (identifier)."""
    t = MEDIA_TABLES[media.name]
    cols = [
        sa.cast(t.c[f.name], sa.Text).label(f.name)
        if f.name == "identifier" or f.name in media.json_columns
        else t.c[f.name]
        for f in media.raw_schema
    ]
    return sa.select(*cols).where(t.c.provider == provider).order_by(t.c.identifier)


def select_watermark(media: MediaType, provider: str) -> sa.Select:
    t = MEDIA_TABLES[media.name]
    return sa.select(sa.func.count(), sa.func.max(t.c.updated_on)).where(t.c.provider == provider)


def _as_utc(value: datetime | str | None) -> datetime | None:
    """Aggregates come back aware (PostgreSQL), naive or as text (SQLite, where we store UTC)."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _rows_to_batch(rows: list, schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = [pa.array(col, type=f.type, from_pandas=False) for col, f in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _generic_batches(
    engine: sa.Engine, media: MediaType, provider: str, batch_rows: int, watermark: list
) -> Iterator[pa.RecordBatch]:
    schema = media.raw_schema
    options: dict = {"stream_results": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        watermark.extend(conn.execute(select_watermark(media, provider)).one())
        result = conn.execute(select_partition(media, provider))
        for rows in result.partitions(batch_rows):
            yield _rows_to_batch(rows, schema)


def _pg_sql(stmt: sa.Select) -> str:
    return str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def _adbc_uri(url: str) -> str:
    u = sa.engine.make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def _adbc_batches(
    url: str, media: MediaType, provider: str, batch_rows: int, watermark: list
) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as pgdbapi

    schema = media.raw_schema
    with pgdbapi.connect(_adbc_uri(url)) as conn:
        with conn.cursor() as cur:
            # ADBC opens a transaction (autocommit off); make it one REPEATABLE READ snapshot for both queries.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(_pg_sql(select_watermark(media, provider)))
            watermark.extend(cur.fetchone())
            cur.execute(_pg_sql(select_partition(media, provider)))
            reader = cur.fetch_record_batch()
            for batch in reader:
                if batch.num_rows:
                    yield batch.rename_columns(schema.names).cast(schema)
        conn.rollback()  # read-only: end the snapshot


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
    batch_rows: int = DEFAULT_BATCH_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    progress: Progress | None = None,
    fail_after_rows: int | None = None,
) -> ExtractResult:
    """Stream one provider's rows into shards in a staging folder, then swap the folder into place.

    A failure at any point leaves the previous shards untouched and no partial file in the partition folder.
    `fail_after_rows` simulates a crash mid-partition (for tests).
    """
    method = choose_method(url, method)
    final = layout.raw_dir(media.name, provider)
    staging = layout.staging_dir(f"raw-{media.name}")
    writer = ShardWriter(staging, media.raw_schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows)
    watermark: list = []
    start = time.perf_counter()
    engine = None
    n_batches = 0
    try:
        if method == "adbc":
            batches = _adbc_batches(url, media, provider, batch_rows, watermark)
        else:
            engine = make_engine(url)
            batches = _generic_batches(engine, media, provider, batch_rows, watermark)
        for batch in batches:
            writer.write(batch)
            n_batches += 1
            seen = writer.rows + writer._pending_rows
            if fail_after_rows is not None and seen >= fail_after_rows:
                raise RuntimeError(f"simulated failure after {seen} rows")
            if progress:
                progress(seen, time.perf_counter() - start)
        shards = writer.close()
        replace_dir(staging, final)
    except sa.exc.SQLAlchemyError as exc:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise CatalogError(
            f"extract of {media.name}/{provider!r} from {redact(url)} failed: {scrub(str(exc), url)}"
        ) from None
    except Exception as exc:
        writer.abort()
        shutil.rmtree(staging, ignore_errors=True)
        if type(exc).__module__.startswith("adbc_driver"):
            raise CatalogError(
                f"extract of {media.name}/{provider!r} from {redact(url)} failed: {scrub(str(exc), url)}"
            ) from None
        raise
    finally:
        if engine is not None:
            engine.dispose()
    rows_seen, max_updated = [*watermark, 0, None][:2]
    return ExtractResult(
        media=media.name,
        provider=provider,
        method=method,
        rows=writer.rows,
        shards=shards,
        snapshot_rows=int(rows_seen or 0),
        max_updated_on=_as_utc(max_updated),
        seconds=time.perf_counter() - start,
        batches=n_batches,
    )
