"""Per-provider watermarks: has a provider's data changed since its last extract? One round trip for all.

A watermark is (newest `updated_on` in the media table, newest `deleted_on` in `deleted_<media>`): inserts
and updates move the first, rows moved out of the catalog move the second. On PostgreSQL both are index probes
per provider (a loose index scan over providers, then one backward probe of `prepare-catalog`'s
`(provider, updated_on)` / `(provider, deleted_on)` indexes), so a tick costs a few milliseconds per provider
even on an 800M-row table; the row count, which needs a scan, is optional. Openverse's own indexes cannot
answer these questions without reading every row of a provider, so without the prepared indexes these
functions raise `MissingIndexes` (naming them and the command to run) instead of scanning silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from openverse_dataset.catalog.connect import (
    PG_SANE_TIMESTAMP,
    as_utc,
    catalog_engines,
    redact,
    sane_max,
)
from openverse_dataset.catalog.prepare import require_indexes
from openverse_dataset.catalog.providers import loose_scan_cte
from openverse_dataset.catalog.schema import API_DELETED_TABLES, API_MATURE_TABLES, DELETED_TABLES, MEDIA_TABLES
from openverse_dataset.media import MediaType


@dataclass(frozen=True)
class Watermark:
    """What the catalog holds for one provider, as far as change detection needs."""

    provider: str
    max_updated_on: datetime | None
    max_deleted_on: datetime | None
    rows: int | None = None

    @property
    def token(self) -> str:
        """A compact, comparable form (recorded on raw materializations, used in run keys)."""
        u = self.max_updated_on.isoformat() if self.max_updated_on else "-"
        d = self.max_deleted_on.isoformat() if self.max_deleted_on else "-"
        return f"{u}|{d}"


def _pg_newest(table: str, col: str, where: str) -> str:
    """Newest sane `col` of the rows matching `where`, as one backward probe of a `(provider, col)` index.

    `ORDER BY col DESC LIMIT 1` rather than `max(col) FILTER (...)`: PostgreSQL turns only the former into an
    index probe when a range filter is present, the latter reads every row of the provider.
    """
    sane = PG_SANE_TIMESTAMP.format(col=f"x.{col}")
    return f"(SELECT x.{col} FROM {table} x WHERE {where} AND {sane} ORDER BY x.{col} DESC LIMIT 1)"


def _pg_sql(media: MediaType, counts: bool) -> sa.TextClause:
    count = f", (SELECT count(*) FROM {media.table} c WHERE c.provider = p.provider)" if counts else ", NULL"
    return sa.text(f"""
        {loose_scan_cte(media.table)}
        SELECT p.provider,
               {_pg_newest(media.table, "updated_on", "x.provider = p.provider")},
               {_pg_newest(media.deleted_table, "deleted_on", "x.provider = p.provider")}
               {count}
        FROM p WHERE p.provider IS NOT NULL ORDER BY p.provider
    """)  # table names come from media.py, never from input


def _pg_provider_sql(media: MediaType) -> sa.TextClause:
    return sa.text(f"""
        SELECT {_pg_newest(media.table, "updated_on", "x.provider = :provider")},
               {_pg_newest(media.deleted_table, "deleted_on", "x.provider = :provider")}
    """)


def _pg_newest_deletion_sql(media: MediaType) -> sa.TextClause:
    """Newest `deleted_on` overall, as one probe per provider of the deleted table (no scan of it)."""
    d = media.deleted_table
    return sa.text(f"""
        {loose_scan_cte(d)}
        SELECT greatest(
            (SELECT max({_pg_newest(d, "deleted_on", "x.provider = p.provider")}) FROM p WHERE p.provider IS NOT NULL),
            {_pg_newest(d, "deleted_on", "x.provider IS NULL")})
    """)


def _pg_deleted_since_sql(media: MediaType, since: bool) -> sa.TextClause:
    """(provider, identifier) of rows moved to the deleted table after `:since`: a range probe per provider."""
    d = media.deleted_table
    after = "AND x.deleted_on > :since" if since else ""
    return sa.text(f"""
        {loose_scan_cte(d)}
        SELECT p.provider, x.identifier::text FROM p
        CROSS JOIN LATERAL (SELECT identifier FROM {d} x WHERE x.provider = p.provider {after} LIMIT :limit) x
        WHERE p.provider IS NOT NULL LIMIT :limit
    """)


def catalog_watermarks(
    url: str, media: MediaType, *, counts: bool = False, require_prepared: bool = True
) -> dict[str, Watermark]:
    """Watermarks of every provider of a media type, in one round trip.

    Raises MissingIndexes when the catalog lacks `prepare-catalog`'s indexes, unless `require_prepared=False`
    (for callers that scan on purpose, e.g. a maintainer-run asset that counts every row anyway).
    """
    with (
        catalog_engines(f"reading {media.name} watermarks at {redact(url)}", url) as (engine,),
        engine.connect() as conn,
    ):
        if require_prepared:
            require_indexes(conn, url, media)
        if conn.dialect.name == "postgresql":
            rows = conn.execute(_pg_sql(media, counts)).all()
        else:
            t, d = MEDIA_TABLES[media.name], DELETED_TABLES[media.name]
            deleted = sa.select(d.c.provider, sane_max(d.c.deleted_on).label("m")).group_by(d.c.provider).subquery()
            stmt = (
                sa.select(
                    t.c.provider,
                    sane_max(t.c.updated_on),
                    sa.func.max(deleted.c.m),
                    sa.func.count() if counts else sa.null(),
                )
                .select_from(t.outerjoin(deleted, deleted.c.provider == t.c.provider))
                .where(t.c.provider.is_not(None))
                .group_by(t.c.provider)
                .order_by(t.c.provider)
            )
            rows = conn.execute(stmt).all()
    return {p: Watermark(p, as_utc(u), as_utc(dl), int(n) if n is not None else None) for p, u, dl, n in rows}


def provider_watermark(url: str, media: MediaType, provider: str) -> Watermark:
    """One provider's watermark (taken by the raw extract just before it reads the provider's rows)."""
    t, d = MEDIA_TABLES[media.name], DELETED_TABLES[media.name]
    with catalog_engines(f"reading the watermark of {provider!r}", url) as (engine,), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            u, dl = conn.execute(_pg_provider_sql(media), {"provider": provider}).one()
        else:
            u = conn.scalar(sa.select(sane_max(t.c.updated_on)).where(t.c.provider == provider))
            dl = conn.scalar(sa.select(sane_max(d.c.deleted_on)).where(d.c.provider == provider))
    return Watermark(provider, as_utc(u), as_utc(dl))


@dataclass(frozen=True)
class TakedownMark:
    """Newest entries of the exclusion tables of one media type."""

    api_deleted: datetime | None
    api_mature: datetime | None
    deleted: datetime | None

    @property
    def token(self) -> str:
        return "|".join(v.isoformat() if v else "-" for v in (self.api_deleted, self.api_mature, self.deleted))


def takedown_mark(catalog_url: str, api_url: str, media: MediaType) -> TakedownMark:
    """Newest `created_on`/`updated_on` of the API takedown tables and `deleted_on` of `deleted_<media>`.

    The API tables are read whole (Django gives them no index on these columns, and the project does not touch
    the API database); the deleted table, which grows with the catalog, through the prepared index (raises
    MissingIndexes without it).
    """
    ad, am, d = API_DELETED_TABLES[media.name], API_MATURE_TABLES[media.name], DELETED_TABLES[media.name]
    with catalog_engines("reading takedown marks", api_url, catalog_url) as (api, cat):
        with api.connect() as conn:
            a = conn.scalar(sa.select(sa.func.max(sa.func.coalesce(ad.c.updated_on, ad.c.created_on))))
            m = conn.scalar(sa.select(sa.func.max(am.c.created_on)))
        with cat.connect() as conn:
            require_indexes(conn, catalog_url, media)
            if conn.dialect.name == "postgresql":
                dl = conn.scalar(_pg_newest_deletion_sql(media))
            else:
                dl = conn.scalar(sa.select(sane_max(d.c.deleted_on)))
    return TakedownMark(as_utc(a), as_utc(m), as_utc(dl))


def takedowns_since(
    catalog_url: str,
    api_url: str,
    media: MediaType,
    since: TakedownMark | None,
    now: TakedownMark | None = None,
    limit: int = 100_000,
) -> dict[str, set[str]]:
    """Providers affected by exclusion entries newer than `since` -> their identifiers (bounded by `limit`).

    Only tables whose mark moved between `since` and `now` are read. An entry stamped with exactly the previous
    mark's microsecond but committed after the previous tick is missed here; the next regular refresh of its
    provider (which re-reads every takedown) still excludes it.
    """

    def moved(field: str) -> bool:
        return since is None or now is None or getattr(since, field) != getattr(now, field)

    ad, am, d = API_DELETED_TABLES[media.name], API_MATURE_TABLES[media.name], DELETED_TABLES[media.name]
    t = MEDIA_TABLES[media.name]
    ids: set[str] = set()
    affected: dict[str, set[str]] = {}
    with catalog_engines("reading new takedowns", api_url, catalog_url) as (api, cat):
        with api.connect() as conn:
            q1 = sa.select(sa.cast(ad.c.identifier, sa.Text))
            if since and since.api_deleted:
                q1 = q1.where(sa.func.coalesce(ad.c.updated_on, ad.c.created_on) > since.api_deleted)
            q2 = sa.select(sa.cast(am.c.identifier, sa.Text))
            if since and since.api_mature:
                q2 = q2.where(am.c.created_on > since.api_mature)
            if moved("api_deleted"):
                ids |= set(conn.scalars(q1.limit(limit)))
            if moved("api_mature"):
                ids |= set(conn.scalars(q2.limit(limit)))
        with cat.connect() as conn:
            after = since.deleted if since else None
            if conn.dialect.name == "postgresql":
                q3 = _pg_deleted_since_sql(media, after is not None).bindparams(limit=limit)
                q3 = q3.bindparams(since=after) if after else q3
            else:
                q3 = sa.select(d.c.provider, sa.cast(d.c.identifier, sa.Text)).where(d.c.provider.is_not(None))
                q3 = (q3.where(d.c.deleted_on > after) if after else q3).limit(limit)
            if moved("deleted"):
                for provider, ident in conn.execute(q3):
                    affected.setdefault(provider, set()).add(ident)
            id_list = sorted(ids)
            for i in range(0, len(id_list), 1000):  # works still in the media table: which provider?
                chunk = id_list[i : i + 1000]
                stmt = sa.select(t.c.provider, sa.cast(t.c.identifier, sa.Text)).where(
                    sa.cast(t.c.identifier, sa.Text).in_(chunk)
                    if conn.dialect.name != "postgresql"
                    else t.c.identifier.in_(chunk)
                )
                for provider, ident in conn.execute(stmt):
                    affected.setdefault(provider, set()).add(ident)
    return affected
