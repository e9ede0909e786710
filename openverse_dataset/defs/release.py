"""License subsets, the dataset card and the release, per media type (not partitioned: they span providers)."""

import json
import os
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from openverse_dataset.defs.common import (
    OWNERS,
    PROVIDER_PARTITIONS,
    PUBLISH_POOL,
    READY,
    card_md,
    counts_table,
    key,
    md_table,
)
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, PublishTargetResource
from openverse_dataset.defs.status import provider_states
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.release.card import CITATION, citation_cff, render_card, write_new
from openverse_dataset.release.changes import ReleaseFiles, prepare_changes
from openverse_dataset.release.croissant import CROISSANT, build_croissant, croissant_json
from openverse_dataset.release.facts import data_files, measure, schema_of
from openverse_dataset.release.holdback import HoldbackReport, decide
from openverse_dataset.release.manifest import write_release_manifest
from openverse_dataset.release.subsets import SubsetStats, compute_subsets
from openverse_dataset.release.tree import release_files
from openverse_dataset.release.verify import live_takedown_leaks
from openverse_dataset.transform.clean import REJECT_REASONS
from openverse_dataset.transform.partition import opt_out_lists

# Publish when the card changed (nothing upstream still running; a missing provider does not block), and
# weekly on Tuesday 06:00 UTC after Openverse's Monday data refresh; never while a blocking check upstream fails.
RELEASE_CONDITION = (
    READY | dg.AutomationCondition.on_cron("0 6 * * 2")
) & dg.AutomationCondition.all_deps_blocking_checks_passed()


class TakedownLeakError(RuntimeError):
    """A work in the release was taken down after it was cleaned: the release is refused before publishing."""


def release_date() -> date:
    """`OPENVERSE_RELEASE_DATE` (YYYY-MM-DD) or today in UTC: the date the card and tag carry."""
    text = os.environ.get("OPENVERSE_RELEASE_DATE")
    try:
        return date.fromisoformat(text) if text else datetime.now(UTC).date()
    except ValueError as exc:
        raise ValueError(f"OPENVERSE_RELEASE_DATE must be a date (YYYY-MM-DD), got {text!r}: {exc}") from None


def release_tag(day: date | None = None) -> str:
    """The tag a release carries on the Hub, e.g. `2026.11.27`."""
    return (day or release_date()).strftime("%Y.%m.%d")


def release_bookkeeping(data_dir: DataDirResource, media: MediaType) -> ReleaseFiles:
    return ReleaseFiles(data_dir.layout, media.name)


def load_stats(data_dir: DataDirResource, media: MediaType) -> SubsetStats:
    path = data_dir.layout.subsets_file(media.name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize {media.name}/subsets first")
    return SubsetStats.from_json(path.read_text())


def current_providers(instance: dg.DagsterInstance, media: MediaType) -> list[str]:
    """The provider set: the media type's dynamic partitions (the stale-provider sensor adds and removes them)."""
    return sorted(instance.get_dynamic_partitions(PROVIDER_PARTITIONS[media.name].name))


def load_holdback(data_dir: DataDirResource, media: MediaType) -> HoldbackReport:
    """The providers the pending release holds back (none recorded: none held back)."""
    path = data_dir.layout.holdback_file(media.name)
    return HoldbackReport.from_json(path.read_text()) if path.exists() else HoldbackReport(released=[])


def holdback_table(report: HoldbackReport) -> dg.MetadataValue:
    return md_table(
        ["provider", "in this release", "why", "since"],
        [[h.provider, h.kept, h.reason, h.since or "-"] for h in report.held_back] or [["(none)", "", "", ""]],
    )


def subsets_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "subsets"),
        deps=[key(media, "clean"), key(media, "providers")],
        group_name=media.name,
        kinds={"duckdb", "parquet"},
        owners=OWNERS,
        code_version="1",
        automation_condition=READY,
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
        start = time.perf_counter()
        # Every current provider partition; one whose latest refresh failed keeps its last cleaned files.
        holdback = decide(provider_states(context.instance, media, data_dir.layout))
        with duckdb.get_connection() as conn:
            stats = compute_subsets(conn, data_dir.layout, media.name, holdback.released)
        if holdback.held_back:
            context.log.warning(holdback.summary())
        path = data_dir.layout.subsets_file(media.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stats.to_json())
        data_dir.layout.holdback_file(media.name).write_text(holdback.to_json())
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
                "rows_rejected": sum(stats.rejected_by_reason.values()),
                "providers": len(stats.providers),
                "providers_missing": len(stats.missing_providers),
                "providers_missing_names": ", ".join(stats.missing_providers) or "(none)",
                "providers_held_back": len(holdback.held_back),
                "held_back": holdback_table(holdback),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )

    return _subsets


def card_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "card"),
        deps=[key(media, "subsets"), key(media, "rejects"), key(media, "takedowns")],
        group_name=media.name,
        kinds={"huggingface", "markdown"},
        owners=OWNERS,
        code_version="2",
        automation_condition=READY,
        description=(
            "The dataset card (README.md of the dataset repository): YAML front matter with licenses, "
            "configs, sizes and the languages detected on the titles, and a body following the Hub's card "
            "template, generated from this release's data: configs, providers, columns, an example row, "
            "personal information and biases measured on a deterministic sample, what each license allows, "
            "how to attribute, pin a release, fetch media politely, cite, report a work or opt out, and the "
            "changelog against the previous release. Also writes CITATION.cff, croissant.json (Croissant 1.0 "
            "with the RAI fields) and the release's removals file: identifiers gone since the previous "
            "release, with the reason from the rejects and takedowns."
        ),
    )
    def _card(
        context: dg.AssetExecutionContext,
        data_dir: DataDirResource,
        publish_target: PublishTargetResource,
    ) -> dg.MaterializeResult:
        stats = load_stats(data_dir, media)
        target = publish_target.get()
        changelog, book = prepare_changes(data_dir.layout, media.name, stats.providers, target, media.repo_name)
        context.log.info(
            f"release index: {len(book.built)} provider segments built ({', '.join(book.built) or 'none'}), "
            f"{book.reused} reused; diffed {len(book.diffed)} changed providers; {book.shards_rehashed} shards hashed"
        )
        started = time.perf_counter()
        data = data_files([(f.path, f.source) for f in release_files(data_dir.layout, stats, None)])
        facts = measure(data, stats.rows)
        seconds_facts = round(time.perf_counter() - started, 3)
        repo_id, day = target.repo_id(media.repo_name), release_date()
        text = render_card(
            media,
            stats,
            repo_id=repo_id,
            release_date=day,
            cleaning=stats.rejected_by_reason,
            changelog=changelog,
            notes=load_holdback(data_dir, media).card_lines(),
            opt_out_lists=opt_out_lists(data_dir.layout, media.name, stats.providers),
            facts=facts,
        )
        path = data_dir.layout.card_file(media.name)
        # new files, never rewritten in place: the local target's copies are hard links of the previous ones
        write_new(path, text)
        write_new(path.with_name(CITATION), citation_cff(media, stats, repo_id=repo_id, release_date=day))
        if (schema := schema_of(data)) is not None:
            doc = build_croissant(media, stats, schema, facts, repo_id=repo_id, release_date=day)
            write_new(path.with_name(CROISSANT), croissant_json(doc))
        else:
            path.with_name(CROISSANT).unlink(missing_ok=True)
        manifest = write_release_manifest(
            data_dir.layout,
            stats,
            path,
            release_bookkeeping(data_dir, media).removals,
            release=release_tag(),
            repo_id=target.repo_id(media.repo_name),
        )
        return dg.MaterializeResult(
            metadata={
                "card": card_md(text),
                "dagster/row_count": stats.rows,
                "configs": len(stats.configs),
                "bytes": len(text.encode()),
                "path": dg.MetadataValue.path(str(path)),
                "previous_release_known": changelog.previous,
                "manifest_files": len(manifest["files"]),
                "sample_rows": facts.sample_rows,
                "share_with_creator": round(facts.share(facts.with_creator), 4),
                "share_with_geolocation": round(facts.share(facts.with_geolocation), 4),
                "languages": ", ".join(facts.card_languages()) or "(none)",
                "seconds_facts": seconds_facts,
                **{f"rows_{k}": v for k, v in changelog.totals().items()},
                "removed_by_reason": counts_table(changelog.removed_by_reason, "reason"),
                "index_segments_built": len(book.built),
                "index_segments_reused": book.reused,
                "providers_diffed": len(book.diffed),
                "shards_hashed": book.shards_rehashed,
                **{f"seconds_{k}": v for k, v in book.seconds.items()},
            }
        )

    return _card


class ReleaseConfig(dg.Config):
    """`dry_run`: plan only (shown as metadata), change nothing in the target."""

    dry_run: bool = False


def release_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "release"),
        deps=[key(media, "card"), key(media, "clean")],
        group_name=media.name,
        kinds={"huggingface", "parquet"},
        owners=OWNERS,
        pool=PUBLISH_POOL,
        code_version="2",
        automation_condition=RELEASE_CONDITION,
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7)),
        description=(
            f"The `{media.repo_name}` dataset repository written to the publish target: the card, the removals "
            "file and the cleaned Parquet files as `data/<license>/<provider>/part-*.parquet`. A plan compares "
            "the release (path, size, sha256) with the target and only changed files are sent; the switch is "
            "atomic (one folder swap locally, one parent-checked commit on the Hub, tagged with the release "
            "date), so readers see the previous release or this one, never a mix. `dry_run` shows the plan only."
        ),
    )
    def _release(
        context: dg.AssetExecutionContext,
        config: ReleaseConfig,
        data_dir: DataDirResource,
        publish_target: PublishTargetResource,
        catalog: CatalogResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult:
        stats = load_stats(data_dir, media)
        rf = release_bookkeeping(data_dir, media)
        if not rf.removals.exists():
            raise FileNotFoundError(f"{rf.removals} is missing: materialize {media.name}/card first")
        files = release_files(data_dir.layout, stats, data_dir.layout.card_file(media.name), rf.removals)
        data = [f.source for f in files if f.path.startswith("data/")]
        if data and not config.dry_run:  # before any byte reaches the target: the takedown tables as they are now
            with duckdb.get_connection() as conn:
                leaks, _ = live_takedown_leaks(
                    conn, data, catalog.catalog_url(), catalog.takedown_url(), media, data_dir.layout
                )
            if not leaks.passed:
                raise TakedownLeakError(
                    f"{leaks.facts['leaked']} released {media.name} works were taken down since they were cleaned "
                    f"(e.g. {leaks.rows[0][0]}): nothing was published; re-clean their providers, then release"
                )
        target = publish_target.get()
        tag = release_tag()
        res = target.publish(files, media.repo_name, tag=tag, dry_run=config.dry_run)
        plan = res.plan
        meta: dict = {
            "repository": dg.MetadataValue.url(res.repository) if res.remote else dg.MetadataValue.path(res.repository)
        }
        if res.tag_url:
            meta["release_tag_url"] = dg.MetadataValue.url(res.tag_url)
        if res.remote:
            meta["commits"] = res.commits
        if res.commit:
            meta["commit"] = res.commit
        if not config.dry_run:
            rf.promote(target)
        rf.plan.write_text(
            json.dumps(
                {"target": target.label, "dry_run": config.dry_run, **res.record(), "plan": plan.to_dict()},
                indent=2,
                sort_keys=True,
            )
        )
        holdback = load_holdback(data_dir, media)
        if holdback.held_back:
            context.log.warning(holdback.summary())
        verb = "planned (dry run)" if config.dry_run else "released"
        context.log.info(f"{verb} {len(files)} files to {target.label}/{media.repo_name}: {plan.summary()}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": stats.rows,
                "target": target.label,
                "dry_run": config.dry_run,
                **meta,
                "release_tag": res.tag or tag,
                "files": len(files),
                "bytes": sum(f.size for f in files),
                "providers_held_back": len(holdback.held_back),
                "held_back": holdback_table(holdback),
                "upload_files": len(plan.upload_files),
                "upload_bytes": plan.upload_bytes,
                **{f"files_{k}": v for k, v in plan.summary().items()},
                **{f"bytes_{k}": v for k, v in plan.bytes.items()},
                "plan": md_table(["action", "files", "bytes"], plan.table_rows()),
                "changed_paths": md_table(
                    ["action", "path"],
                    [[a, p] for a in ("add", "replace", "delete") for p in getattr(plan, a)][:200] or [["(none)", ""]],
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
