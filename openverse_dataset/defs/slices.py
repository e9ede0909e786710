"""A big provider's slices as runs of their own: `<media>/slice`, partitioned by slice (`flickr/3of8`).

A provider above `OPENVERSE_PARTITION_MAX_ROWS` rows is split into slices (catalog/slices.py). When its catalog
watermark moves, the stale-provider sensor requests one run per slice of this asset (each extracts and cleans
only its identifier range, on its own short snapshot, in parallel as the run queue and the `catalog_db` pool
allow), then, once they have all finished, the provider's own run, which takes the slices they refreshed as
they are and assembles the provider's folders. A slice run that failed is simply redone by the provider's run.
"""

import time

import dagster as dg

from openverse_dataset.catalog.slices import max_rows_from_env, provider_of_key, refresh_slice
from openverse_dataset.catalog.snapshot_marks import snapshot_with_mark
from openverse_dataset.catalog.watermarks import provider_watermark
from openverse_dataset.defs.common import CATALOG_POOL, OWNERS, SLICE_PARTITIONS, counts_table, key
from openverse_dataset.defs.raw import RawConfig, unit_refresher
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, catalog_kind
from openverse_dataset.defs.tags import CATALOG_CHANGE_TAG
from openverse_dataset.faults import delay_if_injected, raise_if_injected
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.settings import value
from openverse_dataset.transform import optout
from openverse_dataset.transform.clean import REJECT_REASONS
from openverse_dataset.transform.partition import refresh_clean


def slice_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "slice"),
        deps=[key(media, "providers"), key(media, "takedowns")],
        partitions_def=SLICE_PARTITIONS[media.name],
        group_name=media.name,
        kinds={catalog_kind(), "parquet"},
        owners=OWNERS,
        pool=CATALOG_POOL,
        code_version="1",
        description=(
            "One slice of a provider too big for one unit of work (`OPENVERSE_PARTITION_MAX_ROWS`): its "
            "identifier range extracted (incrementally after the first time) and cleaned, on its own snapshot, "
            "in a run of its own. The stale-provider sensor runs every slice of a changed provider, then the "
            "provider's `raw`/`clean` run, which assembles the slices' files into the provider's folders (the "
            "Hub layout stays per provider). Keys are `provider/<k>of<n>`, from the provider's slice plan."
        ),
    )
    def _slice(
        context: dg.AssetExecutionContext, config: RawConfig, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        start = time.perf_counter()
        layout, slice_key = data_dir.layout, context.partition_key
        provider = provider_of_key(slice_key)
        raise_if_injected("extract", provider)  # drills only: a provider's injected fault applies to its slices
        delay_if_injected("extract", provider)
        trigger = context.run.tags.get(CATALOG_CHANGE_TAG)
        watermark = provider_watermark(catalog.catalog_url(), media, provider)  # before the slice's snapshot
        if not layout.takedowns_file(media.name).exists():  # never clean without the exclusion list
            snapshot_with_mark(catalog.catalog_url(), catalog.takedown_url(), media, layout)
        opt_outs = optout.load(value("OPENVERSE_OPT_OUT_LIST"))
        out = refresh_slice(
            layout,
            media,
            slice_key,
            refresh=unit_refresher(catalog.catalog_url(), media, layout, config, watermark),
            clean=lambda **kw: refresh_clean(
                layout, media, takedowns=layout.takedowns_file(media.name), opt_outs=opt_outs, **kw
            ),
            trigger=trigger,
            bound=max_rows_from_env(),
        )
        seconds = round(time.perf_counter() - start, 3)
        if out.skipped:
            context.log.warning(f"{slice_key}: nothing done: {out.skipped}")
            return dg.MaterializeResult(metadata={"outcome": out.skipped, "seconds": seconds})
        raw, clean = out.raw, out.clean
        context.log.info(
            f"{slice_key}: raw {raw.mode}{f' ({raw.reason})' if raw.reason else ''}: {raw.extract.rows:,} rows, "
            f"{raw.rows_changed:,} changed, {raw.rows_removed:,} removed; clean {out.clean_mode}: kept "
            f"{clean.kept:,}, rejected {clean.rejected_total:,}, in {seconds:.2f}s"
        )
        return dg.MaterializeResult(
            metadata={
                "outcome": "refreshed",
                "provider": provider,
                "slice": out.slice.index,
                "slices": out.slice.count,
                "identifier_range": f"[{out.slice.id_range[0] or 'start'}, {out.slice.id_range[1] or 'end'})",
                "catalog_change": trigger or "",
                "dagster/row_count": clean.kept,
                "raw_rows": raw.extract.rows,
                "refresh_mode": raw.mode,
                "full_rebuild_reason": raw.reason,
                "rows_read_from_catalog": raw.rows_read,
                "rows_changed": raw.rows_changed,
                "rows_removed": raw.rows_removed,
                "snapshot_rows": raw.extract.snapshot_rows,
                "clean_mode": out.clean_mode,
                "full_clean_reason": out.clean_reason,
                "rows_cleaned": clean.rows_cleaned or 0,
                "rows_kept": clean.kept,
                "rows_rejected": clean.rejected_total,
                "rejected_by_reason": counts_table(clean.rejected, "reason", REJECT_REASONS),
                "seconds": seconds,
            }
        )

    return _slice


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[slice_asset(m) for m in MEDIA_TYPES.values()])
