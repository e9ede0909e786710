"""Snapshot of every identifier that must not be published: deleted, taken down or confirmed sensitive.

The snapshot also records the sources the API hides (`content_provider.filter_content` in the API database):
their works are rejected as `source_hidden`. Both are read in one step, so one file says what the API would
not serve at that moment; the hidden sources live in the file's Parquet metadata (`HIDDEN_KEY`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from openverse_dataset.catalog.connect import catalog_engines, redact
from openverse_dataset.catalog.schema import API_DELETED_TABLES, API_MATURE_TABLES, CONTENT_PROVIDER, DELETED_TABLES
from openverse_dataset.layout import DataLayout, release_staging
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import ShardWriter

SCHEMA = pa.schema([("identifier", pa.large_string()), ("reason", pa.large_string())])
BATCH = 100_000
HIDDEN_KEY = b"openverse.hidden_sources"  # JSON list of the sources the API hides, in the snapshot's metadata


@dataclass
class TakedownSnapshot:
    counts: dict[str, int]  # reason -> identifiers
    hidden_sources: tuple[str, ...] = ()
    content_provider_found: bool = True  # False: the API database has no content_provider table

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def hidden_sources(api_url: str) -> tuple[str, ...] | None:
    """Sources whose works the API hides (`content_provider.filter_content`), sorted; None without the table.

    Every media type's: `provider_identifier` is unique across media types and the API filters on it alone.
    """
    with (
        catalog_engines(f"reading content_provider at {redact(api_url)}", api_url) as (engine,),
        engine.connect() as conn,
    ):
        if not sa.inspect(conn).has_table(CONTENT_PROVIDER.name):
            return None
        t = CONTENT_PROVIDER
        rows = conn.execute(
            sa.select(t.c.provider_identifier).where(t.c.filter_content.is_(True)).order_by(t.c.provider_identifier)
        ).all()
    return tuple(str(r[0]) for r in rows)


def read_hidden_sources(path: Path | None) -> tuple[str, ...]:
    """The hidden sources a takedown snapshot recorded (none for a missing file or an older snapshot)."""
    if path is None or not Path(path).exists():
        return ()
    meta = pq.read_schema(path).metadata or {}
    return tuple(json.loads(meta[HIDDEN_KEY])) if HIDDEN_KEY in meta else ()


def _stream(url: str, table: sa.Table, reason: str, writer: ShardWriter) -> int:
    n = 0
    with (
        catalog_engines(f"reading {table.name} at {redact(url)}", url) as (engine,),
        engine.connect().execution_options(stream_results=True) as conn,
    ):
        result = conn.execute(sa.select(sa.cast(table.c.identifier, sa.Text)).order_by(table.c.identifier))
        for rows in result.partitions(BATCH):
            ids = [r[0] for r in rows]
            writer.write(
                pa.record_batch(
                    [pa.array(ids, pa.large_string()), pa.array([reason] * len(ids), pa.large_string())], schema=SCHEMA
                )
            )
            n += len(ids)
    return n


def snapshot_takedowns(catalog_url: str, api_url: str, media: MediaType, layout: DataLayout) -> TakedownSnapshot:
    """Write (identifier, reason) for the three exclusion tables to `takedowns/<media>.parquet`, atomically.

    Reasons, in the priority the clean step applies: taken_down (api_deleted), deleted_in_catalog, mature.
    The API's hidden sources go into the file's metadata.
    """
    hidden = hidden_sources(api_url)
    schema = SCHEMA.with_metadata({HIDDEN_KEY: json.dumps(list(hidden or ())).encode()})
    staging = layout.staging_dir(f"takedowns-{media.name}")
    writer = ShardWriter(staging, schema, prefix="takedowns", shard_bytes=2**62)  # always one file
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
            pq.write_table(schema.empty_table(), staging / "empty.parquet")
            os.replace(staging / "empty.parquet", final)
    finally:
        writer.abort()
        release_staging(staging)
    return TakedownSnapshot(counts, hidden_sources=hidden or (), content_provider_found=hidden is not None)
