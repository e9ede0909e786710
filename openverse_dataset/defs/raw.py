"""Raw extract, partitioned by provider: the catalog's rows as Parquet shards, streamed in batches."""

from datetime import timedelta
from functools import partial
from typing import Literal

import dagster as dg

from openverse_dataset.catalog.refresh import full_every_from_env, overlap_from_env, refresh_raw
from openverse_dataset.catalog.slices import (
    max_rows_from_env,
    provider_units,
    refresh_provider,
    summary,
    workers_from_env,
)
from openverse_dataset.catalog.watermarks import Watermark, provider_watermark
from openverse_dataset.defs.common import (
    CATALOG_POOL,
    OWNERS,
    PROVIDER_PARTITIONS,
    column_schema,
    key,
    md_table,
    sync_slice_partitions,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, catalog_kind
from openverse_dataset.defs.tags import CATALOG_CHANGE_TAG
from openverse_dataset.faults import raise_if_injected
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import MEDIA_TYPES, MediaType


class RawConfig(dg.Config):
    """Tuning for one extract run (defaults suit a Flickr-sized partition on a 2-core machine)."""

    batch_rows: int = 50_000
    shard_mb: int = 64
    method: Literal["auto", "adbc", "sqlalchemy"] = "auto"  # a typo is rejected by the launchpad, not slow
    readers: int = 1  # PostgreSQL: parallel identifier-range readers on one exported snapshot (same bytes out)
    ranges: int = 0  # created_on ranges to split into (0: one per reader); more = smaller server-side sorts
    full_rebuild: bool = False  # read the whole partition even when an incremental refresh would do


def unit_refresher(url: str, media: MediaType, layout: DataLayout, config: RawConfig, watermark: Watermark) -> partial:
    """`refresh_raw` with one run's settings bound: a provider run and a slice's own run refresh units alike."""
    return partial(
        refresh_raw,
        url,
        media,
        layout=layout,
        full_every=full_every_from_env(),
        overlap=overlap_from_env(),
        force_full=config.full_rebuild,
        current=(watermark.max_updated_on, watermark.max_deleted_on),
        method=config.method,
        readers=config.readers,
        ranges=config.ranges or None,
        batch_rows=config.batch_rows,
        shard_bytes=config.shard_mb * 1024 * 1024,
    )


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
        workers = workers_from_env()  # slices side by side in worker processes: no progress callback crosses
        # A provider run requested after its slices' own runs takes the slices they refreshed as they are.
        settled = context.run.tags.get(CATALOG_CHANGE_TAG)
        one_unit = partial(
            unit_refresher(catalog.catalog_url(), media, data_dir.layout, config, watermark),
            provider=provider,
            settled=settled,
            progress=progress if workers == 1 else None,
        )
        bound = max_rows_from_env()
        sliced = refresh_provider(
            catalog.catalog_url(), media, provider, data_dir.layout, bound=bound, refresh=one_unit, workers=workers
        )
        sync_slice_partitions(context.instance, media, provider, provider_units(data_dir.layout, media.name, provider))
        units = sliced.results
        refresh = next((r for r in units if r.mode == "full"), units[0])  # the first full one says why
        mode = "full" if any(r.mode == "full" for r in units) else "incremental"
        total = summary(sliced)
        result = refresh.extract
        rate = total["rows"] / sliced.seconds if sliced.seconds else 0.0
        rows_changed = sum(r.rows_changed for r in units)
        rows_removed = sum(r.rows_removed for r in units)
        how = (
            f"full ({refresh.reason})"
            if mode == "full"
            else (f"incremental: {rows_changed:,} changed rows read, {rows_removed:,} removed")
        )
        own = sum(r.extra.get("settled_by_slice_run", 0) for r in units)
        split = f" in {sliced.slices} slices of at most {bound:,} rows" if sliced.slices > 1 else ""
        split += f" ({own} refreshed by their own runs)" if own else ""
        context.log.info(
            f"{provider}: {total['rows']:,} rows{split}, {total['shards']} shards, "
            f"{total['bytes']:,} bytes in {sliced.seconds:.2f}s via {result.method}; {how}"
        )
        return dg.MaterializeResult(
            # The catalog watermark is the raw extract's data version: the stale-provider sensor compares it.
            data_version=dg.DataVersion(watermark.token),
            metadata={
                "dagster/row_count": total["rows"],
                "dagster/column_schema": column_schema(media.raw_schema),
                "bytes": total["bytes"],
                "shards": total["shards"],
                "seconds": round(sliced.seconds, 3),
                "rows_per_second": round(rate, 1),
                "method": result.method,
                # How this materialization was reached; `last_full_rebuild` is what the card shows.
                "refresh_mode": mode,
                "full_rebuild_reason": refresh.reason,
                "last_full_rebuild": min(r.state.last_full_rebuild for r in units),
                "full_rebuild_every_days": full_every_from_env().total_seconds() / 86400,
                "rows_read_from_catalog": sum(r.rows_read for r in units),
                "rows_changed": rows_changed,
                "rows_removed": rows_removed,
                # An incremental merge keeps the files the change does not touch, byte for byte.
                "shards_kept": sum(r.extra.get("files_kept", 0) for r in units),
                "shards_rewritten": sum(r.extra.get("files_rewritten", 0) for r in units),
                # ... and in the rewritten ones, the row groups it does not touch
                "row_groups_copied": sum(r.extra.get("groups_copied", 0) for r in units),
                "timestamps_out_of_range": total["timestamps_out_of_range"],  # extracted as NULL
                "snapshot_rows": total["snapshot_rows"],
                # Bounded partitions: each unit held its own snapshot of at most `partition_max_rows` rows.
                "slices": sliced.slices,
                # Slices their own runs had refreshed for this change (`openverse/catalog_change`): taken as they are.
                "slices_refreshed_by_own_runs": own,
                "partition_max_rows": bound,
                "largest_unit_rows": total["largest_unit_rows"],
                "watermark_updated_on": total["max_updated_on"].isoformat() if total["max_updated_on"] else "",
                "watermark_deleted_on": watermark.max_deleted_on.isoformat() if watermark.max_deleted_on else "",
                "shard_files": md_table(
                    ["shard", "rows", "bytes"],
                    [
                        [s.name if sliced.slices == 1 else f"{label}: {s.name}", f"{s.rows:,}", f"{s.bytes:,}"]
                        for label, r in zip(sliced.labels, units, strict=True)
                        for s in r.extract.shards
                    ]
                    or [["(none)", 0, 0]],
                ),
                "path": dg.MetadataValue.path(str(data_dir.layout.raw_dir(media.name, provider))),
            },
        )

    return _raw


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[raw_asset(m) for m in MEDIA_TYPES.values()])
