"""The release's guards as pure functions: no takedowns, valid licenses, a card that tells the truth.

`defs/checks.py` only wires these into Dagster asset checks; here they take paths and a DuckDB connection and
return a `Verdict`, so they are tested on good and bad inputs without Dagster.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from openverse_dataset import licenses as lic
from openverse_dataset.layout import DataLayout
from openverse_dataset.publish.targets import Target
from openverse_dataset.release.subsets import SubsetStats
from openverse_dataset.release.tree import release_files

EXAMPLES = 20


@dataclass
class Verdict:
    """A check's outcome: pass/fail, headline numbers, and a table of examples (empty when nothing is wrong)."""

    passed: bool
    facts: dict[str, int | str | bool] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)


def takedown_leaks(conn: duckdb.DuckDBPyConnection, data: list[str] | str, takedowns: Path) -> Verdict:
    """Identifiers of `data` (Parquet paths or a glob) found in the takedown snapshot `takedowns`."""
    conn.read_parquet(data).create_view("released")
    conn.read_parquet(str(takedowns)).create_view("takedowns")
    rows = conn.execute(
        f"select r.identifier, t.reason from released r join takedowns t using (identifier) order by 1 limit {EXAMPLES}"
    ).fetchall()
    leaked = conn.execute("select count(*) from released semi join takedowns using (identifier)").fetchall()[0][0]
    return Verdict(leaked == 0, {"leaked": int(leaked)}, ["identifier", "reason"], [list(r) for r in rows])


def live_takedown_leaks(
    conn: duckdb.DuckDBPyConnection, data: list[str], catalog_url: str, api_url: str, media, layout: DataLayout
) -> tuple[Verdict, int]:
    """`takedown_leaks` against the takedown tables as they are now (a scratch snapshot, removed after); also
    the number of takedown rows read. What the clean step's snapshot missed (a takedown committed during the
    build) is caught here."""
    from openverse_dataset.catalog.takedowns import snapshot_takedowns
    from openverse_dataset.layout import release_staging

    scratch_root = layout.staging_dir("checks")  # owned by this run, removed by release_staging
    try:
        snap = snapshot_takedowns(catalog_url, api_url, media, DataLayout(scratch_root))
        return takedown_leaks(conn, data, DataLayout(scratch_root).takedowns_file(media.name)), snap.total
    finally:
        release_staging(scratch_root)


def invalid_licenses(stats: SubsetStats) -> Verdict:
    """(license, version, jurisdiction) combinations of the release that do not exist, are not served by
    Openverse, or have rows without a license_url or attribution. Reads the subsets' counts (kept per shard
    sha256), not the rows again."""
    combos = [
        [r["license"], r["license_version"], r["license_jurisdiction"], r["rows"], r["missing_url_or_attribution"]]
        for r in stats.by_license_version
    ]
    bad = [c for c in combos if not lic.is_valid(c[0], c[1], c[2] or "") or not lic.LICENSES[c[0]].served or c[4]]
    return Verdict(
        not bad,
        {"combinations": len(combos)},
        ["license", "version", "jurisdiction", "rows", "missing url/attribution"],
        bad,
    )


def card_rows(conn: duckdb.DuckDBPyConnection, card: str, stats: SubsetStats, files_for) -> Verdict:
    """Each config of the card's front matter loads the rows the card states, from the files `files_for(globs)`
    returns (Parquet paths of the release as a reader sees it); the body's table states the same number."""
    try:
        front = yaml.safe_load(card.split("---", 2)[1])
        configs = front["configs"]
    except (IndexError, KeyError, TypeError, yaml.YAMLError) as exc:
        return Verdict(False, {"error": f"the card has no readable front matter with configs: {exc}"})
    rows, ok = [], True
    for cfg in configs:
        name = cfg["config_name"]
        patterns = files_for(cfg["data_files"][0]["path"])
        n = conn.read_parquet(patterns).aggregate("count(*)").fetchall()[0][0] if patterns else 0
        known = next((c for c in stats.configs if c.name == name), None)
        want = known.rows if known else -1
        stated = known is not None and f"| {want:,} |" in card
        ok &= n == want and stated
        rows.append([name, f"{want:,}" if known else "(not in this release)", f"{n:,}", "yes" if stated else "no"])
    return Verdict(ok, {"configs": len(rows)}, ["config", "card says", "files hold", "in card body"], rows)


@dataclass
class ReleasedView:
    """What a reader of the target sees: the card's text and the data files behind a list of globs."""

    card_path: Path
    data: list[Path]  # released Parquet files, readable locally
    repo_root: Path | None  # the released repository folder, when the target has one
    tree: list = field(default_factory=list)

    def files_for(self, globs: list[str]) -> list[str]:
        if self.repo_root is not None:
            return [str(p) for g in globs for p in sorted(self.repo_root.glob(g))]
        return [f.source for f in self.tree if any(fnmatch.fnmatchcase(f.path, g) for g in globs)]


def released_view(
    layout: DataLayout, stats: SubsetStats, target: Target, repo_name: str, *, dry_run: bool
) -> ReleasedView:
    """The released repository when the target has a local one and the last release was not a dry run; else the
    local release tree (the Hub holds exactly it: the publish plan compares sha256 per file)."""
    folder = None if dry_run else target.released_dir(repo_name)
    if folder is not None:
        return ReleasedView(folder / "README.md", sorted(folder.glob("data/*/*/*.parquet")), folder)
    card = layout.card_file(stats.media)
    tree = [f for f in release_files(layout, stats, card) if f.path.endswith(".parquet")]
    return ReleasedView(card, [Path(f.source) for f in tree], None, tree)
