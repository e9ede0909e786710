"""License subsets: which Hub configs a release has, their glob patterns and their row counts.

Configs are views over one set of data files laid out as `data/<license>/<provider>/part-*.parquet`, so a
config is a list of globs and no byte is stored twice. Counts are computed by DuckDB reading the cleaned
Parquet files (no database file, so parallel partition runs never contend for a lock).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from openverse_dataset import licenses as lic
from openverse_dataset.layout import DataLayout, segment
from openverse_dataset.shards import REJECTS_GLOB, ShardRecord, shard_records

DATA_DIR = "data"


def data_glob(license_folder: str = "*") -> str:
    """Glob of the data files of one license folder (or all), relative to the repository root."""
    return f"{DATA_DIR}/{license_folder}/*/*.parquet"


@dataclass
class ConfigStats:
    name: str
    description: str
    slugs: list[str]
    patterns: list[str]
    rows: int
    default: bool = False


@dataclass
class SubsetStats:
    """Everything the card and the release need to know about the cleaned data of one media type."""

    media: str
    providers: list[str]
    missing_providers: list[str]  # listed in the catalog but not cleaned yet
    rows: int
    by_license_provider: list[dict]  # {license, provider, rows, files}
    by_license_version: list[dict]  # {license, license_version, license_jurisdiction, rows}
    configs: list[ConfigStats] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SubsetStats:
        data = json.loads(text)
        data["configs"] = [ConfigStats(**c) for c in data["configs"]]
        return cls(**data)

    def rows_by_provider(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.by_license_provider:
            out[r["provider"]] = out.get(r["provider"], 0) + r["rows"]
        return dict(sorted(out.items()))

    def rows_by_license(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.by_license_provider:
            out[r["license"]] = out.get(r["license"], 0) + r["rows"]
        return dict(sorted(out.items()))

    def config(self, name: str) -> ConfigStats:
        return next(c for c in self.configs if c.name == name)


def clean_files(layout: DataLayout, media: str, providers: list[str]) -> dict[str, list[Path]]:
    """The cleaned shards of each listed provider (providers never cleaned map to an empty list)."""
    return {p: sorted(layout.clean_dir(media, p).glob("*/part-*.parquet")) for p in providers}


STATS_FORMAT = "s2"  # part of each cached count's name: bump when what is counted changes


def _cached(path: Path, compute) -> object:
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)
    return value


def shard_counts(conn: duckdb.DuckDBPyConnection, layout: DataLayout, media: str, provider: str, shard) -> list:
    """[license, version, jurisdiction, rows, rows missing license_url or attribution] of one cleaned shard,
    counted once per sha256 (cached)."""
    path = shard.folder / shard.record.path
    cache = layout.release_segment(media, provider, f"{STATS_FORMAT}-{shard.record.sha256[:32]}", ".counts.json")
    sql = (
        "select license, license_version, license_jurisdiction, count(*), "
        "count(*) filter (where license_url is null or attribution is null) from t group by all order by all"
    )

    def count() -> list:
        return [[a, b, c, int(n), int(m)] for a, b, c, n, m in conn.read_parquet(str(path)).query("t", sql).fetchall()]

    return _cached(cache, count)


def rejects_counts(conn: duckdb.DuckDBPyConnection, layout: DataLayout, media: str, provider: str) -> dict[str, int]:
    """Rejected rows per reason of one provider, counted once per rejects version (cached)."""
    rejects = shard_records(layout.rejects_dir(media, provider), REJECTS_GLOB)
    paths = [str(rejects.folder / r.path) for r in rejects.records]
    if not paths:
        return {}
    cache = layout.release_segment(media, provider, f"{STATS_FORMAT}-rejects-{rejects.version()}", ".counts.json")
    sql = "select reason, count(*) from r group by all order by all"
    return _cached(cache, lambda: dict(conn.read_parquet(paths).query("r", sql).fetchall()))


@dataclass(frozen=True)
class _Shard:
    folder: Path
    record: ShardRecord


def _nulls_last(values: tuple) -> tuple:
    return tuple((v is None, v) for v in values)


def compute_subsets(
    conn: duckdb.DuckDBPyConnection, layout: DataLayout, media: str, providers: list[str]
) -> SubsetStats:
    """Count rows per (license, provider) and per config from the cleaned files of `providers`.

    Counts are kept per shard sha256 and rejects version (cached under the release segments): a release after
    one provider changed reads only the rows of its changed shards.
    """
    missing = [p for p in providers if not layout.clean_dir(media, p).exists()]
    per_lp: list[dict] = []
    per_lv: Counter = Counter()
    no_url_or_attribution: Counter = Counter()
    rejected: Counter = Counter()
    for p in providers:
        if p in missing:
            continue
        clean = shard_records(layout.clean_dir(media, p))
        rows: Counter = Counter()
        files: Counter = Counter()
        for r in clean.records:
            counts = shard_counts(conn, layout, media, p, _Shard(clean.folder, r))
            for a, b, c, n, m in counts:
                per_lv[(a, b, c)] += n
                no_url_or_attribution[(a, b, c)] += m
                rows[a] += n
            files.update({x[0] for x in counts})
        per_lp += [{"license": a, "provider": p, "rows": n, "files": files[a]} for a, n in rows.items()]
        rejected.update(rejects_counts(conn, layout, media, p))
    per_lp.sort(key=lambda r: _nulls_last((r["license"], r["provider"], r["rows"], r["files"])))
    stats = SubsetStats(
        media=media,
        providers=[p for p in providers if p not in missing],
        missing_providers=missing,
        rows=sum(r["rows"] for r in per_lp),
        by_license_provider=per_lp,
        by_license_version=[
            {
                "license": a,
                "license_version": b,
                "license_jurisdiction": c,
                "rows": n,
                "missing_url_or_attribution": no_url_or_attribution[(a, b, c)],
            }
            for (a, b, c), n in sorted(per_lv.items(), key=lambda kv: _nulls_last(kv[0]))
        ],
        rejected_by_reason=dict(sorted(rejected.items())),
    )
    by_license = stats.rows_by_license()
    for cfg in lic.all_configs():
        present = [s for s in cfg.slugs if by_license.get(s)]
        if not present:
            continue  # a config with no file would not load; the card says which are absent
        stats.configs.append(
            ConfigStats(
                name=cfg.name,
                description=cfg.description,
                slugs=present,
                patterns=[data_glob(lic.LICENSES[s].config_name) for s in present]
                if cfg.name != lic.DEFAULT_CONFIG
                else [data_glob()],
                rows=sum(by_license[s] for s in present),
                default=cfg.name == lic.DEFAULT_CONFIG,
            )
        )
    return stats


def release_path(license_slug: str, provider: str, shard_name: str) -> str:
    """Where a cleaned shard lives in the dataset repository."""
    return f"{DATA_DIR}/{lic.LICENSES[license_slug].config_name}/{segment(provider)}/{shard_name}"
