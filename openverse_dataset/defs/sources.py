"""The catalog side of each chain: which providers exist (partitions) and which works must not be published."""

import json
import time

import dagster as dg
import sqlalchemy as sa

from openverse_dataset.catalog.connect import catalog_engines, redact
from openverse_dataset.catalog.providers import discover_providers
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.catalog.slices import max_rows_from_env, plan_new_provider
from openverse_dataset.catalog.snapshot_marks import snapshot_with_mark
from openverse_dataset.catalog.watermarks import catalog_watermarks
from openverse_dataset.defs.common import (
    CATALOG_POOL,
    OWNERS,
    PROVIDER_PARTITIONS,
    counts_table,
    key,
    latest_partition_metadata,
    md_table,
    metadata_int,
    recorded_watermarks,
    sync_slice_partitions,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, catalog_kind
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.transform.clean import REJECT_REASONS


def register_providers(instance: dg.DagsterInstance, media: MediaType, providers: list[str]) -> list[str]:
    """Add providers not yet known as dynamic partitions; returns the new ones."""
    pdef = PROVIDER_PARTITIONS[media.name]
    have = set(instance.get_dynamic_partitions(pdef.name))
    new = [p for p in providers if p not in have]
    if new:
        instance.add_dynamic_partitions(pdef.name, new)
    return new


def count_rows_by_provider(url: str, media: MediaType) -> dict[str, int]:
    """Rows per provider in the catalog's media table: what each provider would contribute before cleaning.

    One grouped count over the provider column (an index-only scan on PostgreSQL); only this asset runs it,
    never the sensors, so its cost is paid when a maintainer or the discovery job asks for it.
    """
    t = MEDIA_TABLES[media.name]
    with catalog_engines(f"counting {media.name} rows at {redact(url)}", url) as (engine,), engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.provider, sa.func.count()).where(t.c.provider.is_not(None)).group_by(t.c.provider)
        ).all()
    return {str(p): int(n) for p, n in rows}


def provider_table(
    instance: dg.DagsterInstance,
    media: MediaType,
    providers: list[str],
    catalog_rows: dict[str, int],
    changed: dict[str, bool | None] | None = None,
) -> tuple[dg.MetadataValue, dict[str, int | None]]:
    """Per provider: catalog rows now, and what its last refresh extracted, published and rejected.

    The last-refresh columns come from the partitions' own materialization metadata, so the providers page
    answers "how much did each provider contribute" without opening every partition.
    """
    raw = latest_partition_metadata(instance, key(media, "raw"), providers)
    clean = latest_partition_metadata(instance, key(media, "clean"), providers)

    def n(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    rows, totals = [], {"catalog": 0, "extracted": None, "published": None, "rejected": None}
    for p in sorted(providers, key=lambda p: (-catalog_rows.get(p, 0), p)):
        got = {
            "catalog": catalog_rows.get(p, 0),
            "extracted": metadata_int(raw.get(p), "dagster/row_count"),
            "published": metadata_int(clean.get(p), "dagster/row_count"),
            "rejected": metadata_int(clean.get(p), "rows_rejected"),
        }
        for k, v in got.items():
            if v is not None:
                totals[k] = (totals[k] or 0) + v
        moved = (changed or {}).get(p)
        rows.append(
            [p, *(n(v) for v in got.values()), "never extracted" if moved is None else "yes" if moved else "no"]
        )
    table = md_table(
        ["provider", "rows in catalog", "last extracted", "last published", "last rejected", "changed since extract"],
        rows or [["(none)", 0, "-", "-", "-", "-"]],
    )
    return table, totals


TAKEDOWN_REASONS = {k: REJECT_REASONS[k] for k in ("taken_down", "deleted_in_catalog", "mature")}


def providers_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "providers"),
        group_name=media.name,
        kinds={catalog_kind()},
        owners=OWNERS,
        pool=CATALOG_POOL,
        code_version="1",
        description=(
            f"Providers of {media.name} works in the catalog: each one becomes a partition of the "
            f"`{media.name}` chain. Materialize it to discover new providers (a sensor also does this). "
            "Shows rows per provider (in the catalog, and extracted/published/rejected by its last refresh); "
            "provider names that cannot be partition keys, and rows without a provider, are counted here."
        ),
    )
    def _providers(
        context: dg.AssetExecutionContext, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        start = time.perf_counter()
        found = discover_providers(catalog.catalog_url(), media)
        catalog_rows = count_rows_by_provider(catalog.catalog_url(), media)
        new = register_providers(context.instance, media, found.providers)
        bound = max_rows_from_env()
        planned = 0
        for p in found.providers:  # a big provider never extracted: its first extract runs one run per slice
            units = plan_new_provider(data_dir.layout, media.name, p, catalog_rows.get(p, 0), bound)
            if units:
                sync_slice_partitions(context.instance, media, p, units)
                planned += 1
        path = data_dir.layout.providers_file(media.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"providers": found.providers, "refused": found.refused}, indent=2))
        for name, why in found.refused.items():
            context.log.warning(f"provider {name!r} cannot be a partition: {why}; its rows are not extracted")
        if found.rows_without_provider:
            context.log.warning(f"{found.rows_without_provider:,} {media.name} rows have no provider")
        context.log.info(f"{len(found.providers)} providers, {len(new)} new: {', '.join(new) or '-'}")
        # The catalog watermark of each provider against the one its last raw extract recorded (its data version).
        # require_prepared=False: this maintainer-run asset counts every row anyway (the sensors never scan)
        marks = catalog_watermarks(catalog.catalog_url(), media, require_prepared=False)
        recorded = recorded_watermarks(context.instance, media)
        changed = {p: (recorded[p] != marks[p].token) if p in recorded else None for p in marks}
        by_provider, totals = provider_table(context.instance, media, found.providers, catalog_rows, changed)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(found.providers),
                "rows_by_provider": by_provider,
                "providers_changed_since_extract": sum(1 for v in changed.values() if v),
                "catalog_rows": totals["catalog"],
                # Only once some partition has been refreshed: a 0 would draw a false point on the plots.
                **{f"last_{k}_rows": totals[k] for k in ("published", "rejected") if totals[k] is not None},
                "new_providers": len(new),
                "providers_in_slices": planned,  # above OPENVERSE_PARTITION_MAX_ROWS: a partition per slice
                "partition_max_rows": bound,
                "new_provider_names": ", ".join(new) or "(none)",
                "refused_providers": md_table(
                    ["provider", "why"], [[repr(k), v] for k, v in found.refused.items()] or [["(none)", ""]]
                ),
                "rows_without_provider": found.rows_without_provider,
                "seconds": round(time.perf_counter() - start, 3),
                "catalog": catalog.display(),
            }
        )

    return _providers


def takedowns_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "takedowns"),
        group_name=media.name,
        kinds={catalog_kind(), "parquet"},
        owners=OWNERS,
        pool=CATALOG_POOL,
        code_version="1",
        description=(
            f"Identifiers that must never be published: `{media.api_deleted_table}` (taken down), "
            f"`{media.deleted_table}` (deleted from the catalog) and `{media.api_mature_table}` (sensitive), and "
            "the sources the API hides (`content_provider.filter_content`, rejected as `source_hidden`). "
            "The clean step excludes them, and the release checks none slipped through."
        ),
    )
    def _takedowns(
        context: dg.AssetExecutionContext, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        start = time.perf_counter()
        snap, _ = snapshot_with_mark(catalog.catalog_url(), catalog.takedown_url(), media, data_dir.layout)
        context.log.info(f"takedown snapshot: {snap.counts}; hidden sources: {list(snap.hidden_sources)}")
        if not snap.content_provider_found:
            context.log.warning(
                "the API database has no content_provider table: no source is treated as hidden "
                "(point OPENVERSE_API_DB_URL at the API's database)"
            )
        path = data_dir.layout.takedowns_file(media.name)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": snap.total,
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn("identifier", "string", description="Openverse identifier of the work"),
                        dg.TableColumn("reason", "string", description=", ".join(TAKEDOWN_REASONS)),
                    ]
                ),
                "by_reason": counts_table(snap.counts, "reason", TAKEDOWN_REASONS),
                **{f"{k}_rows": v for k, v in snap.counts.items()},
                "hidden_sources": len(snap.hidden_sources),
                "hidden_source_names": ", ".join(snap.hidden_sources) or "(none)",
                "bytes": path.stat().st_size if path.exists() else 0,
                "seconds": round(time.perf_counter() - start, 3),
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return _takedowns


@dg.definitions
def defs() -> dg.Definitions:
    assets = []
    for m in MEDIA_TYPES.values():
        assets += [providers_asset(m), takedowns_asset(m)]
    return dg.Definitions(assets=assets)
