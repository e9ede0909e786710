"""Raw extract, partitioned by provider: the catalog's rows as Parquet shards, streamed in batches."""

from datetime import timedelta
from typing import Literal

import dagster as dg

from openverse_dataset.catalog.refresh import full_every_from_env, overlap_from_env, refresh_raw
from openverse_dataset.catalog.watermarks import provider_watermark
from openverse_dataset.defs.common import (
    CATALOG_POOL,
    OWNERS,
    PROVIDER_PARTITIONS,
    column_schema,
    key,
    md_table,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, catalog_kind
from openverse_dataset.faults import raise_if_injected
from openverse_dataset.media import MEDIA_TYPES, MediaType


class RawConfig(dg.Config):
    """Tuning for one extract run (defaults suit a Flickr-sized partition on a 2-core machine)."""

    batch_rows: int = 50_000
    shard_mb: int = 384
    method: Literal["auto", "adbc", "sqlalchemy"] = "auto"  # a typo is rejected by the launchpad, not slow
    readers: int = 1  # PostgreSQL: parallel identifier-range readers on one exported snapshot (same bytes out)
    ranges: int = 0  # created_on ranges to split into (0: one per reader); more = smaller server-side sorts
    full_rebuild: bool = False  # read the whole partition even when an incremental refresh would do


def raw_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "raw"),
        deps=[key(media, "providers")],
        partitions_def=PROVIDER_PARTITIONS[media.name],
        group_name=media.name,
        kinds={catalog_kind(), "parquet"},
        owners=OWNERS,
        pool=CATALOG_POOL,
        code_version="1",
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7)),
        description=(
            f"One provider's rows of the catalog's `{media.table}` table, as extracted: every column by name, "
            "in ingestion order (created_on, identifier), in size-bounded zstd Parquet shards. After the first "
            "extract a refresh reads only rows changed since the recorded watermark (newer updated_on, moved to "
            f"{media.deleted_table}, moved to another provider) and merges them in, byte-identical to a full "
            "extract; a periodic full rebuild (OPENVERSE_FULL_REBUILD_DAYS) reconciles changes that bypass "
            "updated_on."
        ),
    )
    def _raw(
        context: dg.AssetExecutionContext, config: RawConfig, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        provider = context.partition_key
        raise_if_injected("extract", provider)  # drills only: OPENVERSE_FAULT_FILE
        last_log = [0.0]

        def progress(rows: int, seconds: float) -> None:
            if seconds - last_log[0] >= 5 or rows < config.batch_rows * 2:
                last_log[0] = seconds
                context.log.info(
                    f"{provider}: {rows:,} rows in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)"
                )

        # Taken before the extract: a change during the extract moves the catalog past it and is seen next tick.
        watermark = provider_watermark(catalog.catalog_url(), media, provider)
        refresh = refresh_raw(
            catalog.catalog_url(),
            media,
            provider,
            data_dir.layout,
            full_every=full_every_from_env(),
            overlap=overlap_from_env(),
            force_full=config.full_rebuild,
            current=(watermark.max_updated_on, watermark.max_deleted_on),
            method=config.method,
            readers=config.readers,
            ranges=config.ranges or None,
            batch_rows=config.batch_rows,
            shard_bytes=config.shard_mb * 1024 * 1024,
            progress=progress,
        )
        result = refresh.extract
        rate = result.rows / result.seconds if result.seconds else 0.0
        how = (
            f"full ({refresh.reason})"
            if refresh.mode == "full"
            else (f"incremental: {refresh.rows_changed:,} changed rows read, {refresh.rows_removed:,} removed")
        )
        context.log.info(
            f"{provider}: {result.rows:,} rows, {len(result.shards)} shards, "
            f"{result.bytes:,} bytes in {result.seconds:.2f}s via {result.method}; {how}"
        )
        return dg.MaterializeResult(
            # The catalog watermark is the raw extract's data version: the stale-provider sensor compares it.
            data_version=dg.DataVersion(watermark.token),
            metadata={
                "dagster/row_count": result.rows,
                "dagster/column_schema": column_schema(media.raw_schema),
                "bytes": result.bytes,
                "shards": len(result.shards),
                "seconds": round(result.seconds, 3),
                "rows_per_second": round(rate, 1),
                "method": result.method,
                # How this materialization was reached; `last_full_rebuild` is what the card shows.
                "refresh_mode": refresh.mode,
                "full_rebuild_reason": refresh.reason,
                "last_full_rebuild": refresh.state.last_full_rebuild,
                "full_rebuild_every_days": full_every_from_env().total_seconds() / 86400,
                "rows_read_from_catalog": refresh.rows_read,
                "rows_changed": refresh.rows_changed,
                "rows_removed": refresh.rows_removed,
                "timestamps_out_of_range": result.timestamps_out_of_range,  # extracted as NULL
                "snapshot_rows": result.snapshot_rows,
                "watermark_updated_on": result.max_updated_on.isoformat() if result.max_updated_on else "",
                "watermark_deleted_on": watermark.max_deleted_on.isoformat() if watermark.max_deleted_on else "",
                "shard_files": md_table(
                    ["shard", "rows", "bytes"],
                    [[s.name, f"{s.rows:,}", f"{s.bytes:,}"] for s in result.shards] or [["(none)", 0, 0]],
                ),
                "path": dg.MetadataValue.path(str(data_dir.layout.raw_dir(media.name, provider))),
            },
        )

    return _raw


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[raw_asset(m) for m in MEDIA_TYPES.values()])
