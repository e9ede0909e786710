"""Checks that guard what a release may contain: no takedowns, only valid licenses, a card that tells the truth."""

import fnmatch
import json
import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import yaml
from dagster_duckdb import DuckDBResource

from openverse_dataset import licenses as lic
from openverse_dataset.catalog.takedowns import snapshot_takedowns
from openverse_dataset.defs.common import key, md_table
from openverse_dataset.defs.release import current_providers, load_stats
from openverse_dataset.defs.resources import CatalogResource, DataDirResource, PublishTargetResource
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.release.removals import releases_dir
from openverse_dataset.release.subsets import clean_files
from openverse_dataset.release.tree import release_files


def _clean_paths(data_dir: DataDirResource, media: MediaType) -> list[str]:
    files = clean_files(data_dir.layout, media.name, current_providers(data_dir, media))
    return [str(f) for fs in files.values() for f in fs]


def _dry_run(data_dir: DataDirResource, media: MediaType) -> bool:
    """Whether the last release run only planned (then the checks read the release tree, not the target)."""
    plan = releases_dir(data_dir.layout, media.name) / "plan.json"
    return plan.exists() and json.loads(plan.read_text()).get("dry_run", False)


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
            conn.read_parquet(paths).create_view("clean")
            conn.read_parquet(str(tk)).create_view("takedowns")
            rows = conn.sql(
                "select c.identifier, t.reason from clean c join takedowns t using (identifier) order by 1 limit 20"
            ).fetchall()
            leaked = conn.execute("select count(*) from clean c semi join takedowns t using (identifier)").fetchone()[0]
        return dg.AssetCheckResult(
            passed=leaked == 0,
            metadata={
                "leaked": leaked,
                "examples": md_table(["identifier", "reason"], rows or [["(none)", ""]]),
            },
        )

    @dg.asset_check(
        asset=key(media, "subsets"),
        name="licenses_valid_and_served",
        blocking=True,
        description="Blocks the release unless every row's license/version/jurisdiction exists, is served by "
        "Openverse, and has a license_url and attribution text.",
    )
    def licenses_valid(data_dir: DataDirResource, duckdb: DuckDBResource) -> dg.AssetCheckResult:
        paths = _clean_paths(data_dir, media)
        if not paths:
            return dg.AssetCheckResult(passed=True, metadata={"combinations": 0})
        with duckdb.get_connection() as conn:
            combos = (
                conn.read_parquet(paths)
                .query(
                    "c",
                    "select license, license_version, license_jurisdiction, count(*), "
                    "count(*) filter (where license_url is null or attribution is null) "
                    "from c group by all order by all",
                )
                .fetchall()
            )
        bad = [c for c in combos if not lic.is_valid(c[0], c[1], c[2] or "") or not lic.LICENSES[c[0]].served or c[4]]
        return dg.AssetCheckResult(
            passed=not bad,
            metadata={
                "combinations": len(combos),
                "invalid": md_table(
                    ["license", "version", "jurisdiction", "rows", "missing url/attribution"],
                    [list(b) for b in bad] or [["(none)", "", "", 0, 0]],
                ),
            },
        )

    @dg.asset_check(
        asset=key(media, "release"),
        name="card_matches_release",
        description="The released card's configs load the number of rows the card states, from the released files.",
    )
    def card_matches(
        data_dir: DataDirResource, publish_target: PublishTargetResource, duckdb: DuckDBResource
    ) -> dg.AssetCheckResult:
        kind, where = publish_target.resolved()
        stats = load_stats(data_dir, media)
        if kind == "local" and not _dry_run(data_dir, media):
            repo = os.path.join(where, media.repo_name)
            card_path = os.path.join(repo, "README.md")
        else:  # the Hub holds exactly the local release tree (the publish plan compares sha256 per file)
            card_path = str(data_dir.layout.card_file(media.name))
            tree = [f for f in release_files(data_dir.layout, stats, Path(card_path)) if f.path.endswith(".parquet")]
        with open(card_path, encoding="utf-8") as f:
            card = f.read()
        front = yaml.safe_load(card.split("---", 2)[1])
        rows, ok = [], True
        with duckdb.get_connection() as conn:
            for cfg in front["configs"]:
                globs = cfg["data_files"][0]["path"]
                if kind == "local" and not _dry_run(data_dir, media):
                    patterns = [os.path.join(repo, p) for p in globs]
                else:
                    patterns = [f.source for f in tree if any(fnmatch.fnmatchcase(f.path, g) for g in globs)]
                n = conn.read_parquet(patterns).aggregate("count(*)").fetchall()[0][0] if patterns else 0
                want = stats.config(cfg["config_name"]).rows
                stated = f"| {want:,} |" in card
                ok &= n == want and stated
                rows.append([cfg["config_name"], f"{want:,}", f"{n:,}", "yes" if stated else "no"])
        return dg.AssetCheckResult(
            passed=ok,
            metadata={"configs": md_table(["config", "card says", "files hold", "in card body"], rows)},
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
        kind, where = publish_target.resolved()
        data: str | list[str] = os.path.join(where, media.repo_name, "data", "*", "*", "*.parquet")
        if kind != "local" or _dry_run(data_dir, media):  # the Hub (or a dry run) holds the local release tree
            data = _clean_paths(data_dir, media)
        if not data:
            return dg.AssetCheckResult(passed=False, metadata={"note": "no release to check"})
        scratch = DataLayout(data_dir.layout.root / ".checks" / uuid.uuid4().hex)
        try:
            snap = snapshot_takedowns(catalog.catalog_url(), catalog.takedown_url(), media, scratch)
            with duckdb.get_connection() as conn:
                conn.read_parquet(data).create_view("released")
                conn.read_parquet(str(scratch.takedowns_file(media.name))).create_view("takedowns")
                rows = conn.execute(
                    "select r.identifier, t.reason from released r join takedowns t using (identifier) "
                    "order by 1 limit 20"
                ).fetchall()
                leaked = conn.execute(
                    "select count(*) from released semi join takedowns using (identifier)"
                ).fetchone()[0]
        finally:
            shutil.rmtree(scratch.root, ignore_errors=True)
        return dg.AssetCheckResult(
            passed=leaked == 0,
            metadata={
                "leaked": leaked,
                "takedown_rows_checked": snap.total,
                "examples": md_table(["identifier", "reason"], rows or [["(none)", ""]]),
            },
        )

    return [no_takedowns, licenses_valid, card_matches, release_no_takedowns]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[c for m in MEDIA_TYPES.values() for c in media_checks(m)])
