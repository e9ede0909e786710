"""The indexes change detection needs on Openverse's catalog, declared once, and the command that creates them.

Openverse's media tables have exactly three indexes (`(provider, md5(foreign_identifier))`, `identifier`, `url`)
and `deleted_<media>` two (`(provider, md5(foreign_identifier))`, `identifier`). None of them can answer "newest
`updated_on` of provider p" or "rows of p changed since t" without reading every row of p: on an 800M-row
catalog a watermark query is a scan of the table, every tick. Two btree indexes per media type turn each of those
questions into an index probe:

- `<media> (provider, updated_on)`: per-provider watermark (one backward probe), provider discovery (a loose index
  scan over its leading column), the incremental read `provider = p AND updated_on > :since` (an index range
  scan of exactly the changed rows) and rows that left p for another provider (same range, other p).
- `deleted_<media> (provider, deleted_on)`: per-provider deletion watermark, the newest deletion overall (one probe
  per provider) and the rows deleted since a mark, per provider.

`prepare_catalog` creates them with `CREATE INDEX CONCURRENTLY IF NOT EXISTS` (ingestion keeps writing while
they build), prints each statement, and is idempotent; `catalog_sql` is the same script for a DBA to run.
`missing_indexes` tells the sensors (and `doctor`) what is absent, so nothing scans the catalog silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from openverse_dataset.catalog.connect import CatalogError, catalog_engines, redact
from openverse_dataset.media import MEDIA_TYPES, MediaType


@dataclass(frozen=True)
class CatalogIndex:
    """One index the project needs on the catalog: where, on what, and why."""

    name: str
    table: str
    columns: tuple[str, ...]
    why: str

    def create_sql(self, dialect: str = "postgresql") -> str:
        """The idempotent statement; CONCURRENTLY on PostgreSQL, so writers are not blocked while it builds."""
        concurrently = "CONCURRENTLY " if dialect == "postgresql" else ""
        return f"CREATE INDEX {concurrently}IF NOT EXISTS {self.name} ON {self.table} ({', '.join(self.columns)})"

    def describe(self) -> str:
        return f"{self.name} on {self.table} ({', '.join(self.columns)})"


def media_indexes(media: MediaType) -> list[CatalogIndex]:
    """The indexes one media type's change detection and incremental refresh need."""
    return [
        CatalogIndex(
            f"{media.table}_provider_updated_on_idx",
            media.table,
            ("provider", "updated_on"),
            "per-provider watermark (newest updated_on) in one probe; incremental reads of rows updated since a "
            "watermark (provider = p AND updated_on > t) read only those rows",
        ),
        CatalogIndex(
            f"{media.deleted_table}_provider_deleted_on_idx",
            media.deleted_table,
            ("provider", "deleted_on"),
            "per-provider deletion watermark and the rows moved to the deleted table since a mark, without "
            "reading the whole table",
        ),
    ]


INDEXES: dict[str, list[CatalogIndex]] = {m.name: media_indexes(m) for m in MEDIA_TYPES.values()}

_PG_INDEXES = sa.text("""
    SELECT t.relname AS "table", i.relname AS name, x.indisvalid AND x.indisready AS valid,
           x.indpred IS NOT NULL AS partial, am.amname AS method,
           array(SELECT coalesce(a.attname, '<expression>')
                 FROM unnest((x.indkey::int2[])[0:x.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
                 LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                 ORDER BY k.ord) AS columns
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_am am ON am.oid = i.relam
    WHERE t.relname = ANY(:tables) AND pg_table_is_visible(t.oid)
""")


@dataclass(frozen=True)
class _Existing:
    name: str
    columns: tuple[str, ...]
    valid: bool = True
    usable: bool = True  # a plain btree (not partial)


def _existing(conn: sa.Connection, tables: Iterable[str]) -> dict[str, list[_Existing]]:
    """The indexes of `tables` (one catalog query on PostgreSQL: a sensor tick pays it every time)."""
    out: dict[str, list[_Existing]] = {t: [] for t in tables}
    if conn.dialect.name == "postgresql":
        for r in conn.execute(_PG_INDEXES, {"tables": list(out)}):
            out[r.table].append(
                _Existing(r.name, tuple(r.columns), bool(r.valid), r.method == "btree" and not r.partial)
            )
        return out
    inspector = sa.inspect(conn)
    return {t: [_Existing(i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(t)] for t in out}


def _satisfied(want: CatalogIndex, have: list[_Existing]) -> bool:
    """An index already serves `want` if a valid plain btree starts with its columns (whatever its name)."""
    n = len(want.columns)
    return any(h.valid and h.usable and h.columns[:n] == want.columns for h in have)


def missing_in(conn: sa.Connection, wanted: Iterable[CatalogIndex]) -> list[CatalogIndex]:
    """The wanted indexes no existing index serves, on an open connection."""
    wanted = list(wanted)
    have = _existing(conn, {w.table for w in wanted})
    return [w for w in wanted if not _satisfied(w, have[w.table])]


def missing_indexes(engine: sa.Engine, media: MediaType | str) -> list[CatalogIndex]:
    """The indexes change detection needs that the catalog lacks (empty when `prepare-catalog` has run)."""
    m = MEDIA_TYPES[media] if isinstance(media, str) else media
    with engine.connect() as conn:
        return missing_in(conn, INDEXES[m.name])


class MissingIndexes(CatalogError):
    """The catalog lacks indexes change detection needs; the message names them and the command to run."""

    def __init__(self, url: str, missing: list[CatalogIndex]) -> None:
        self.missing = missing
        super().__init__(missing_message(url, missing))


def missing_message(url: str, missing: list[CatalogIndex]) -> str:
    """One line: what is missing, why it matters, what to run (the URL with its password masked)."""
    return (
        f"the catalog lacks {len(missing)} index(es) change detection needs: "
        f"{'; '.join(i.describe() for i in missing)}. Without them every check would scan the table, so it is "
        f"skipped. Run: openverse-dataset prepare-catalog --url '{redact(url)}' (or add --print for the SQL)"
    )


def catalog_sql(media_names: Iterable[str] | None = None, dialect: str = "postgresql") -> list[str]:
    """Every statement `prepare-catalog` would run, in order (all idempotent), for a DBA to review or run."""
    return [i.create_sql(dialect) for name in media_names or MEDIA_TYPES for i in INDEXES[name]]


@dataclass(frozen=True)
class Prepared:
    """What `prepare_catalog` did to one index: created, already present (and as which index), or rebuilt."""

    index: CatalogIndex
    action: str  # "created" | "present" | "rebuilt"
    seconds: float


def prepare_catalog(
    url: str, media_names: Iterable[str] | None = None, echo: Callable[[str], None] = lambda _s: None
) -> list[Prepared]:
    """Create the missing indexes, printing each statement through `echo` before it runs.

    Idempotent: an index that an existing one already serves is left alone. An invalid index of ours (a
    CONCURRENTLY build that was interrupted) is dropped and built again: IF NOT EXISTS alone would keep it,
    and PostgreSQL never uses an invalid index.
    """
    done: list[Prepared] = []
    with (
        catalog_engines(f"preparing the catalog at {redact(url)}", url) as (engine,),
        engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn,  # CONCURRENTLY needs autocommit
    ):
        pg = conn.dialect.name == "postgresql"
        if pg:  # a DBA role's timeouts must not kill an hour-long build halfway
            conn.exec_driver_sql("SET statement_timeout = 0")
        for name in media_names or MEDIA_TYPES:
            for want in INDEXES[name]:
                have = _existing(conn, [want.table])[want.table]
                if _satisfied(want, have):
                    done.append(Prepared(want, "present", 0.0))
                    continue
                action = "created"
                if any(h.name == want.name for h in have):  # ours, but invalid or reshaped
                    drop = f"DROP INDEX {'CONCURRENTLY ' if pg else ''}IF EXISTS {want.name}"
                    echo(drop)
                    conn.exec_driver_sql(drop)
                    action = "rebuilt"
                stmt = want.create_sql(conn.dialect.name)
                echo(stmt)
                start = time.monotonic()
                conn.exec_driver_sql(stmt)
                done.append(Prepared(want, action, time.monotonic() - start))
    return done


def require_indexes(conn: sa.Connection, url: str, media: MediaType) -> None:
    """Raise MissingIndexes unless the catalog has every index `media`'s change detection needs."""
    missing = missing_in(conn, INDEXES[media.name])
    if missing:
        raise MissingIndexes(url, missing)
