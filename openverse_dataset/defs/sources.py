"""The catalog side of each chain: which providers exist (partitions) and which works must not be published."""

import json

import dagster as dg

from openverse_dataset.catalog.providers import discover_providers
from openverse_dataset.catalog.takedowns import snapshot_takedowns
from openverse_dataset.defs.common import (
    CATALOG_POOL,
    OWNERS,
    PROVIDER_PARTITIONS,
    counts_table,
    key,
    md_table,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, catalog_kind
from openverse_dataset.media import MEDIA_TYPES, MediaType


def register_providers(instance: dg.DagsterInstance, media: MediaType, providers: list[str]) -> list[str]:
    """Add providers not yet known as dynamic partitions; returns the new ones."""
    pdef = PROVIDER_PARTITIONS[media.name]
    have = set(instance.get_dynamic_partitions(pdef.name))
    new = [p for p in providers if p not in have]
    if new:
        instance.add_dynamic_partitions(pdef.name, new)
    return new


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
            "Provider names that cannot be partition keys, and rows without a provider, are counted here."
        ),
    )
    def _providers(
        context: dg.AssetExecutionContext, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        found = discover_providers(catalog.catalog_url(), media)
        new = register_providers(context.instance, media, found.providers)
        path = data_dir.layout.providers_file(media.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"providers": found.providers, "refused": found.refused}, indent=2))
        for name, why in found.refused.items():
            context.log.warning(f"provider {name!r} cannot be a partition: {why}; its rows are not extracted")
        if found.rows_without_provider:
            context.log.warning(f"{found.rows_without_provider:,} {media.name} rows have no provider")
        context.log.info(f"{len(found.providers)} providers, {len(new)} new: {', '.join(new) or '-'}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(found.providers),
                "providers": md_table(["provider"], [[p] for p in found.providers]),
                "new_providers": len(new),
                "refused_providers": md_table(
                    ["provider", "why"], [[repr(k), v] for k, v in found.refused.items()] or [["(none)", ""]]
                ),
                "rows_without_provider": found.rows_without_provider,
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
            f"`{media.deleted_table}` (deleted from the catalog) and `{media.api_mature_table}` (sensitive). "
            "The clean step excludes them, and the release checks none slipped through."
        ),
    )
    def _takedowns(
        context: dg.AssetExecutionContext, catalog: CatalogResource, data_dir: DataDirResource
    ) -> dg.MaterializeResult:
        snap = snapshot_takedowns(catalog.catalog_url(), catalog.takedown_url(), media, data_dir.layout)
        context.log.info(f"takedown snapshot: {snap.counts}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": snap.total,
                "by_reason": counts_table(snap.counts, "reason"),
                **{f"{k}_rows": v for k, v in snap.counts.items()},
                "path": dg.MetadataValue.path(str(data_dir.layout.takedowns_file(media.name))),
            }
        )

    return _takedowns


@dg.definitions
def defs() -> dg.Definitions:
    assets = []
    for m in MEDIA_TYPES.values():
        assets += [providers_asset(m), takedowns_asset(m)]
    return dg.Definitions(assets=assets)
