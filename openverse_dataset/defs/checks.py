"""Checks that guard what a release may contain: no takedowns, only valid licenses, a card that tells the truth.

Only wiring: the bodies are the pure functions of `openverse_dataset.release.verify`.
"""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from openverse_dataset.defs.common import key, md_table
from openverse_dataset.defs.release import load_stats, release_bookkeeping
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, PublishTargetResource
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.release import verify
from openverse_dataset.release.manifest import verify_release
from openverse_dataset.release.subsets import clean_files


def _clean_paths(data_dir: DataDirResource, media: MediaType) -> list[str]:
    files = clean_files(data_dir.layout, media.name, load_stats(data_dir, media).providers)
    return [str(f) for fs in files.values() for f in fs]


def _dry_run(data_dir: DataDirResource, media: MediaType) -> bool:
    """Whether the last release run only planned (then the checks read the release tree, not the target)."""
    plan = data_dir.layout.release_plan(media.name)
    return plan.exists() and json.loads(plan.read_text()).get("dry_run", False)


def _result(v: verify.Verdict, table: str = "examples", **extra) -> dg.AssetCheckResult:
    metadata = {**v.facts, **extra}
    if v.header:
        metadata[table] = md_table(v.header, v.rows or [["(none)", *[""] * (len(v.header) - 1)]])
    return dg.AssetCheckResult(passed=v.passed, metadata=metadata)


def media_checks(media: MediaType) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(
        asset=key(media, "subsets"),
        name="no_takedowns_in_subsets",
        blocking=True,
        description="Blocks the card and release if any cleaned work is taken down, deleted or sensitive.",
    )
    def no_takedowns(data_dir: DataDirResource, duckdb: DuckDBResource) -> dg.AssetCheckResult:
        paths = _clean_paths(data_dir, media)
        tk = data_dir.layout.takedowns_file(media.name)
        if not paths or not tk.exists():
            return dg.AssetCheckResult(passed=True, metadata={"leaked": 0, "note": "nothing to compare"})
        with duckdb.get_connection() as conn:
            return _result(verify.takedown_leaks(conn, paths, tk))

    @dg.asset_check(
        asset=key(media, "subsets"),
        name="licenses_valid_and_served",
        blocking=True,
        description="Blocks the release unless every row's license/version/jurisdiction exists, is served by "
        "Openverse, and has a license_url and attribution text.",
    )
    def licenses_valid(data_dir: DataDirResource) -> dg.AssetCheckResult:
        return _result(verify.invalid_licenses(load_stats(data_dir, media)), "invalid")

    @dg.asset_check(
        asset=key(media, "release"),
        name="card_matches_release",
        description="The released card's configs load the number of rows the card states, from the released files.",
    )
    def card_matches(
        data_dir: DataDirResource, publish_target: PublishTargetResource, duckdb: DuckDBResource
    ) -> dg.AssetCheckResult:
        stats = load_stats(data_dir, media)
        view = verify.released_view(
            data_dir.layout, stats, publish_target.get(), media.repo_name, dry_run=_dry_run(data_dir, media)
        )
        with duckdb.get_connection() as conn:
            v = verify.card_rows(conn, view.card_path.read_text(encoding="utf-8"), stats, view.files_for)
        return _result(v, "configs")

    @dg.asset_check(
        asset=key(media, "release"),
        name="release_matches_manifest",
        description="The released files match the release's manifest.json (path, size, sha256, rows per file, "
        "config and license) and each config holds only the licenses it promises: the same check as "
        "`openverse-dataset verify`.",
    )
    def release_manifest(data_dir: DataDirResource, publish_target: PublishTargetResource) -> dg.AssetCheckResult:
        stats = load_stats(data_dir, media)
        dry = _dry_run(data_dir, media)
        folder = None if dry else publish_target.get().released_dir(media.repo_name)
        layout = data_dir.layout
        res = verify_release(
            layout, stats, layout.card_file(media.name), release_bookkeeping(data_dir, media).removals, folder
        )
        rows = [[p] for p in res.problems[:50]]
        return dg.AssetCheckResult(
            passed=res.ok,
            metadata={
                "files": res.files,
                "rows": res.rows,
                "problems": len(res.problems),
                "examples": md_table(["problem"], rows or [["(none)"]]),
            },
        )

    @dg.asset_check(
        asset=key(media, "release"),
        name="release_has_no_takedowns",
        blocking=True,
        description="Fails if any released identifier is in a takedown table now (api_deleted, api_mature, "
        "deleted_<media>), read afresh rather than from the snapshot the clean step used.",
    )
    def release_no_takedowns(
        publish_target: PublishTargetResource,
        data_dir: DataDirResource,
        duckdb: DuckDBResource,
        catalog: CatalogResource,
    ) -> dg.AssetCheckResult:
        stats = load_stats(data_dir, media)
        view = verify.released_view(
            data_dir.layout, stats, publish_target.get(), media.repo_name, dry_run=_dry_run(data_dir, media)
        )
        if not view.data:
            return dg.AssetCheckResult(passed=False, metadata={"note": "no release to check"})
        with duckdb.get_connection() as conn:
            v, total = verify.live_takedown_leaks(
                conn, [str(p) for p in view.data], catalog.catalog_url(), catalog.takedown_url(), media, data_dir.layout
            )
        return _result(v, takedown_rows_checked=total)

    return [no_takedowns, licenses_valid, card_matches, release_manifest, release_no_takedowns]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[c for m in MEDIA_TYPES.values() for c in media_checks(m)])
