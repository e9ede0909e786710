"""Clean + rejects, partitioned by provider: Openverse's cleaning rules, with every dropped row accounted for."""

import dagster as dg

from openverse_dataset.catalog.slices import workers_from_env
from openverse_dataset.catalog.snapshot_marks import mark_to_json, snapshot_mark, snapshot_with_mark
from openverse_dataset.defs.common import (
    OWNERS,
    PROVIDER_PARTITIONS,
    column_schema,
    counts_table,
    key,
    preview_md,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource
from openverse_dataset.defs.tags import REFRESH_TAKEDOWNS_TAG
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.settings import value
from openverse_dataset.transform import optout
from openverse_dataset.transform.clean import DERIVED, REJECT_REASONS, REPAIRS
from openverse_dataset.transform.partition import clean_provider, clean_schema, reject_schema

PREVIEW_COLUMNS = ["identifier", "title", "creator", "license", "license_version", "attribution"]


def _lineage(media: MediaType) -> dg.TableColumnLineage:
    raw = key(media, "raw")
    return dg.TableColumnLineage(
        deps_by_column={
            col: [dg.TableColumnDep(asset_key=raw, column_name=c) for c in cols] for col, cols in DERIVED.items()
        }
    )


def clean_assets(media: MediaType) -> dg.AssetsDefinition:
    deps = [key(media, "raw"), key(media, "takedowns")]
    common = {
        "deps": deps,
        "group_name": media.name,
        "owners": OWNERS,
        "code_version": "1",
        # Follow the raw extract; a new takedown snapshot alone re-cleans only via the takedown sensor.
        "automation_condition": dg.AutomationCondition.eager().ignore(
            dg.AssetSelection.assets(key(media, "takedowns"))
        ),
    }

    @dg.multi_asset(
        name=f"{media.name}_clean",
        partitions_def=PROVIDER_PARTITIONS[media.name],
        specs=[
            dg.AssetSpec(
                key=key(media, "clean"),
                kinds={"polars", "parquet"},
                description=(
                    "The provider's rows after Openverse's cleaning rules: URL schemes added, tags filtered "
                    "(accuracy >= 0.90, denylist), license slug/version normalised and validated, license_url "
                    "and Openverse's exact attribution text added; taken-down, deleted, sensitive and "
                    "removed_from_source works excluded; duplicates of (provider, foreign_identifier) dropped. "
                    "Files are split by license, ready to be the release's data files."
                ),
                **common,
            ),
            dg.AssetSpec(
                key=key(media, "rejects"),
                kinds={"polars", "parquet"},
                description=(
                    "Every row the clean step did not keep, with the reason (taken_down, removed_from_source, "
                    "unknown_license, ...) and the raw values the rule looked at: nothing is dropped silently."
                ),
                **common,
            ),
        ],
    )
    def _clean(context: dg.AssetExecutionContext, data_dir: DataDirResource, catalog: CatalogResource):
        provider = context.partition_key
        layout = data_dir.layout
        fresh = context.run.tags.get(REFRESH_TAKEDOWNS_TAG) == "true"  # set by the takedown sensor
        if fresh or not layout.takedowns_file(media.name).exists():
            # Never clean without the exclusion list: take the snapshot the takedowns asset would take.
            snap, _ = snapshot_with_mark(catalog.catalog_url(), catalog.takedown_url(), media, layout)
            context.log.info(f"took a fresh takedown snapshot: {snap.counts}")
        # Read at every clean, before any row: an unreadable list fails the run, never publishes without it.
        opt_outs = optout.load(value("OPENVERSE_OPT_OUT_LIST"))
        mark = snapshot_mark(layout, media)  # before the snapshot is read: where the takedown sensor resumes

        def progress(rows: int, seconds: float) -> None:
            context.log.info(
                f"{provider}: cleaned {rows:,} rows in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s)"
            )

        r, mode, why, units = clean_provider(
            layout,
            media,
            provider,
            takedowns=layout.takedowns_file(media.name),
            progress=progress,
            opt_outs=opt_outs,
            workers=workers_from_env(),  # a split provider's slices side by side (OPENVERSE_SLICE_WORKERS)
        )
        split = f" in {units} slices" if units > 1 else ""
        context.log.info(
            f"{provider}: {mode} clean{split}{f' ({why})' if why else ''} of {r.rows_cleaned:,} rows; kept {r.kept:,} "
            f"of {r.rows_in:,}; rejected {dict(r.rejected)}; repairs {dict(r.repairs)}"
        )
        yield dg.MaterializeResult(
            asset_key=key(media, "clean"),
            metadata={
                "dagster/row_count": r.kept,
                "dagster/column_schema": column_schema(clean_schema(media)),
                "dagster/column_lineage": _lineage(media),
                "rows_in": r.rows_in,
                "rows_kept": r.kept,
                "rows_rejected": r.rejected_total,
                "rows_opted_out": r.rejected.get("opted_out", 0),
                # sha256 of the opt-out list's bytes (empty: none configured); a new list re-cleans in full
                "opt_out_list_sha256": r.opt_out_sha256 or "",
                # incremental: only rows the last raw refresh changed (and takedown moves) were cleaned again;
                # repairs_by_rule and tags_dropped then count those rows
                "clean_mode": mode,
                "slices": units,
                "full_clean_reason": why,
                "rows_cleaned": r.rows_cleaned or 0,
                # An incremental clean keeps the shards the change does not touch, byte for byte.
                "shards_kept": r.merge.files_kept if r.merge else 0,
                "shards_rewritten": r.merge.files_rewritten if r.merge else 0,
                "row_groups_copied": r.merge.groups_copied if r.merge else 0,  # of the rewritten shards
                "rejected_by_reason": counts_table(r.rejected, "reason", REJECT_REASONS),
                "repairs_by_rule": counts_table(r.repairs, "rule", REPAIRS),
                "repairs": sum(r.repairs.values()),
                "tags_dropped": r.tags_dropped,
                "rows_by_license": counts_table(r.by_license, "license"),
                # Read by the takedown sensor: which partitions to re-clean when the API hides a source.
                "rows_by_source": dg.MetadataValue.json(dict(sorted(r.by_source.items()))),
                "bytes": r.bytes,
                "seconds": round(r.seconds, 3),
                "preview": preview_md(r.preview, PREVIEW_COLUMNS),
                "takedown_mark": mark_to_json(mark) if mark else "",
                "path": dg.MetadataValue.path(str(layout.clean_dir(media.name, provider))),
            },
        )
        yield dg.MaterializeResult(
            asset_key=key(media, "rejects"),
            metadata={
                "dagster/row_count": r.rejected_total,
                "dagster/column_schema": column_schema(reject_schema(media)),
                "rows_in": r.rows_in,
                "rejected_by_reason": counts_table(r.rejected, "reason", REJECT_REASONS),
                **{f"rejected_{k}": v for k, v in sorted(r.rejected.items())},
                "path": dg.MetadataValue.path(str(layout.rejects_dir(media.name, provider))),
            },
        )

    return _clean


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[clean_assets(m) for m in MEDIA_TYPES.values()])
