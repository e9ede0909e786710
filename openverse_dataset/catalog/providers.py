"""Provider discovery: which providers a media table holds, cheaply, and which of them can be partitions."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from openverse_dataset.catalog.connect import catalog_engines, redact
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.media import MediaType

# Dagster refuses these in partition keys; a provider name holding one is reported, never silently skipped.
_FORBIDDEN = ["...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0"]
MAX_PROVIDER_LENGTH = 80  # varchar(80) in the catalog


@dataclass
class Discovery:
    """Providers found, providers refused as partition keys (with why), rows that have no provider."""

    providers: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    rows_without_provider: int = 0


def partition_key_problem(name: str) -> str | None:
    """Why `name` cannot be a partition key, or None if it can."""
    if not name.strip():
        return "empty or blank provider name"
    if len(name) > MAX_PROVIDER_LENGTH:
        return f"longer than {MAX_PROVIDER_LENGTH} characters"
    bad = [s for s in _FORBIDDEN if s in name]
    if bad:
        return f"contains {bad[0]!r}, which Dagster does not allow in partition keys"
    return None


def loose_scan_cte(table: str) -> str:
    """`WITH RECURSIVE p(provider)`: the distinct non-null providers of `table`, one index probe each.

    PostgreSQL has no skip scan before 18; this walks any index led by `provider` (Openverse's own
    `(provider, md5(foreign_identifier))` on both the media and the deleted table) from one provider to the next,
    so listing 300 providers of an 800M-row table costs 300 probes, not a scan. Rows of `p` may be NULL at the end:
    filter `p.provider IS NOT NULL`. `table` comes from media.py, never from input.
    """
    return f"""
        WITH RECURSIVE p(provider) AS (
            (SELECT provider FROM {table} WHERE provider IS NOT NULL ORDER BY provider LIMIT 1)
            UNION ALL
            SELECT (SELECT t.provider FROM {table} t WHERE t.provider > p.provider ORDER BY t.provider LIMIT 1)
            FROM p WHERE p.provider IS NOT NULL
        )"""


def _distinct_providers_sql(table: str) -> sa.TextClause:
    return sa.text(f"{loose_scan_cte(table)} SELECT provider FROM p WHERE provider IS NOT NULL")


def discover_providers(url: str, media: MediaType) -> Discovery:
    """List the providers of a media table (sorted) and count rows that have none."""
    t = MEDIA_TABLES[media.name]
    with (
        catalog_engines(f"listing {media.name} providers at {redact(url)}", url) as (engine,),
        engine.connect() as conn,
    ):
        if conn.dialect.name == "postgresql":
            names = list(conn.scalars(_distinct_providers_sql(media.table)))
        else:
            names = list(conn.scalars(sa.select(t.c.provider).where(t.c.provider.is_not(None)).distinct()))
        orphans = conn.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.provider.is_(None)))
    ok, refused = [], {}
    for name in sorted(set(names)):
        problem = partition_key_problem(name)
        if problem:
            refused[name] = problem
        else:
            ok.append(name)
    return Discovery(providers=ok, refused=refused, rows_without_provider=int(orphans or 0))
