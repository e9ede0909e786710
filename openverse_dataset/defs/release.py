"""License subsets, the dataset card and the release, per media type (not partitioned: they span providers)."""

import json
import os
from datetime import UTC, date, datetime

import dagster as dg
from dagster_duckdb import DuckDBResource

from openverse_dataset.defs.common import OWNERS, PUBLISH_POOL, counts_table, key, md_table
from openverse_dataset.defs.resources import DataDirResource, PublishTargetResource
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.publish.local import publish_local
from openverse_dataset.release.card import render_card
from openverse_dataset.release.subsets import SubsetStats, compute_subsets
from openverse_dataset.release.tree import release_files
from openverse_dataset.transform.clean import REJECT_REASONS


def release_date() -> date:
    """`OPENVERSE_RELEASE_DATE` (YYYY-MM-DD) or today in UTC: the date the card and tag carry."""
    text = os.environ.get("OPENVERSE_RELEASE_DATE")
    return date.fromisoformat(text) if text else datetime.now(UTC).date()


def repo_id(media: MediaType, target: PublishTargetResource) -> str:
    kind, where = target.resolved()
    return f"{where if kind == 'hf' else 'openverse'}/{media.repo_name}"


def load_stats(data_dir: DataDirResource, media: MediaType) -> SubsetStats:
    path = data_dir.layout.subsets_file(media.name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize {media.name}/subsets first")
    return SubsetStats.from_json(path.read_text())


def current_providers(data_dir: DataDirResource, media: MediaType) -> list[str]:
    path = data_dir.layout.providers_file(media.name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize {media.name}/providers first")
    return json.loads(path.read_text())["providers"]


def subsets_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "subsets"),
        deps=[key(media, "clean"), key(media, "providers")],
        group_name=media.name,
        kinds={"duckdb", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            "The license subsets (Hub configs) of the release: `all`, `commercial`, `modification`, "
            "`commercial-modification`, `public-domain` and one per license present. Configs are glob "
            "patterns over the one set of cleaned files, so no byte is stored twice; counts per config, "
            "license and provider come from DuckDB reading the Parquet files."
        ),
    )
    def _subsets(
        context: dg.AssetExecutionContext, data_dir: DataDirResource, duckdb: DuckDBResource
    ) -> dg.MaterializeResult:
        providers = current_providers(data_dir, media)
        with duckdb.get_connection() as conn:
            stats = compute_subsets(conn, data_dir.layout, media.name, providers)
        if stats.missing_providers:
            context.log.warning(f"not cleaned yet, left out: {', '.join(stats.missing_providers)}")
        path = data_dir.layout.subsets_file(media.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stats.to_json())
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": stats.rows,
                "configs": md_table(
                    ["config", "licenses", "rows"],
                    [[c.name, ", ".join(c.slugs), f"{c.rows:,}"] for c in stats.configs],
                ),
                **{f"rows_{c.name}": c.rows for c in stats.configs},
                "rows_by_license": counts_table(stats.rows_by_license(), "license"),
                "rows_by_provider": counts_table(stats.rows_by_provider(), "provider"),
                "rejected_by_reason": counts_table(stats.rejected_by_reason, "reason", REJECT_REASONS),
                "providers_missing": len(stats.missing_providers),
            }
        )

    return _subsets


def card_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "card"),
        deps=[key(media, "subsets")],
        group_name=media.name,
        kinds={"huggingface", "markdown"},
        owners=OWNERS,
        code_version="1",
        description=(
            "The dataset card (README.md of the dataset repository): YAML front matter with licenses, "
            "configs and sizes, and a body generated from this release's numbers: configs, providers, "
            "columns, what each license allows, how to attribute, how to report a work or opt out."
        ),
    )
    def _card(
        context: dg.AssetExecutionContext, data_dir: DataDirResource, publish_target: PublishTargetResource
    ) -> dg.MaterializeResult:
        stats = load_stats(data_dir, media)
        text = render_card(
            media,
            stats,
            repo_id=repo_id(media, publish_target),
            release_date=release_date(),
            cleaning=stats.rejected_by_reason,
        )
        path = data_dir.layout.card_file(media.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return dg.MaterializeResult(
            metadata={
                "card": dg.MetadataValue.md(text),
                "dagster/row_count": stats.rows,
                "configs": len(stats.configs),
                "bytes": len(text.encode()),
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return _card


def release_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "release"),
        deps=[key(media, "card"), key(media, "clean")],
        group_name=media.name,
        kinds={"huggingface", "parquet"},
        owners=OWNERS,
        pool=PUBLISH_POOL,
        code_version="1",
        description=(
            f"The `{media.repo_name}` dataset repository written to the publish target: the card plus the "
            "cleaned Parquet files as `data/<license>/<provider>/part-*.parquet`. Replaced as a whole, so "
            "readers see the previous release or this one, never a mix."
        ),
    )
    def _release(
        context: dg.AssetExecutionContext, data_dir: DataDirResource, publish_target: PublishTargetResource
    ) -> dg.MaterializeResult:
        stats = load_stats(data_dir, media)
        files = release_files(data_dir.layout, stats, data_dir.layout.card_file(media.name))
        kind, where = publish_target.resolved()
        if kind != "local":
            raise NotImplementedError("hf: publishing to the Hub is not built yet; use local:DIR")
        plan = publish_local(files, where, media.repo_name)
        dest = os.path.join(where, media.repo_name)
        context.log.info(f"released {len(files)} files to {dest}: {plan.summary()}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": stats.rows,
                "target": f"local:{where}",
                "repository": dg.MetadataValue.path(dest),
                "release_tag": release_date().strftime("%Y.%m.%d"),
                "files": len(files),
                "bytes": sum(f.size for f in files),
                **{f"files_{k}": v for k, v in plan.summary().items()},
                **{f"bytes_{k}": v for k, v in plan.bytes.items()},
                "plan": md_table(
                    ["action", "files", "bytes"],
                    [[k, v, f"{plan.bytes[k]:,}"] for k, v in plan.summary().items()],
                ),
            }
        )

    return _release


@dg.definitions
def defs() -> dg.Definitions:
    assets = []
    for m in MEDIA_TYPES.values():
        assets += [subsets_asset(m), card_asset(m), release_asset(m)]
    return dg.Definitions(assets=assets)
