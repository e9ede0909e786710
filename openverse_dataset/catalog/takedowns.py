"""Snapshot of every identifier that must not be published: deleted, taken down or confirmed sensitive."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from openverse_dataset.catalog.connect import CatalogError, make_engine, redact, scrub
from openverse_dataset.catalog.schema import API_DELETED_TABLES, API_MATURE_TABLES, DELETED_TABLES
from openverse_dataset.layout import DataLayout, release_staging
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import ShardWriter

SCHEMA = pa.schema([("identifier", pa.string()), ("reason", pa.string())])
BATCH = 100_000


@dataclass
class TakedownSnapshot:
    counts: dict[str, int]  # reason -> identifiers

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _stream(url: str, table: sa.Table, reason: str, writer: ShardWriter) -> int:
    engine = make_engine(url)
    n = 0
    try:
        with engine.connect().execution_options(stream_results=True) as conn:
            result = conn.execute(sa.select(sa.cast(table.c.identifier, sa.Text)).order_by(table.c.identifier))
            for rows in result.partitions(BATCH):
                ids = [r[0] for r in rows]
                writer.write(
                    pa.record_batch([pa.array(ids, pa.string()), pa.array([reason] * len(ids))], schema=SCHEMA)
                )
                n += len(ids)
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(f"reading {table.name} at {redact(url)} failed: {scrub(str(exc), url)}") from None
    finally:
        engine.dispose()
    return n


def snapshot_takedowns(catalog_url: str, api_url: str, media: MediaType, layout: DataLayout) -> TakedownSnapshot:
    """Write (identifier, reason) for the three exclusion tables to `takedowns/<media>.parquet`, atomically.

    Reasons, in the priority the clean step applies: taken_down (api_deleted), deleted_in_catalog, mature.
    """
    staging = layout.staging_dir(f"takedowns-{media.name}")
    writer = ShardWriter(staging, SCHEMA, prefix="takedowns", shard_bytes=2**62)  # always one file
    try:
        counts = {
            "taken_down": _stream(api_url, API_DELETED_TABLES[media.name], "taken_down", writer),
            "deleted_in_catalog": _stream(catalog_url, DELETED_TABLES[media.name], "deleted_in_catalog", writer),
            "mature": _stream(api_url, API_MATURE_TABLES[media.name], "mature", writer),
        }
        shards = writer.close()
        final = layout.takedowns_file(media.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        if shards:
            os.replace(staging / shards[0].name, final)
        else:
            staging.mkdir(parents=True, exist_ok=True)
            pq.write_table(SCHEMA.empty_table(), staging / "empty.parquet")
            os.replace(staging / "empty.parquet", final)
    finally:
        writer.abort()
        release_staging(staging)
    return TakedownSnapshot(counts)
