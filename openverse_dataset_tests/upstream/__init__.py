"""Test catalogs built from Openverse's own DDL, never from the project's schema helpers.

`UpstreamCatalog` owns two fresh PostgreSQL databases: the catalog (`image`, `deleted_image`, `audio`,
`deleted_audio`, created by the SQL files transcribed from WordPress/openverse `docker/upstream_db/`) and the
API database (`api_deleted<media>`, `api_mature<media>`, `content_provider`, as Django's migrations create
them). Rows go in through tables reflected from those databases, so a test sees exactly the columns, types,
constraints and indexes production has; the only extra indexes are the ones `prepare-catalog` creates.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from openverse_dataset.catalog.seed import DEMO_TAKEDOWNS, _demo_deleted, demo_rows
from openverse_dataset.media import MEDIA_TYPES, MediaType

HERE = Path(__file__).parent
CATALOG_DDL = ("0003_openledger_image_schema.sql", "0006_openledger_audio_schema.sql")
API_DDL = ("api_tables.sql",)
# The one statement of Openverse's files the fixture leaves out: the test cluster has no `deploy` role.
_SKIPPED = re.compile(r"^ALTER TABLE \S+ OWNER TO deploy$", re.IGNORECASE)
DEMO_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # the demo seed's takedown time, so PG and SQLite demos agree


def ddl_statements(name: str) -> list[str]:
    """The statements of one transcribed DDL file, in order (comments dropped, `OWNER TO deploy` skipped)."""
    text = "\n".join(line for line in (HERE / name).read_text().splitlines() if not line.lstrip().startswith("--"))
    out = []
    for stmt in text.split(";"):
        stmt = " ".join(stmt.split())
        if stmt and not _SKIPPED.match(stmt):
            out.append(stmt)
    return out


def apply_ddl(url: str, files: Iterable[str]) -> None:
    """Run the DDL files against `url` in one transaction."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for name in files:
                for stmt in ddl_statements(name):
                    conn.exec_driver_sql(stmt)
    finally:
        engine.dispose()


def _jsonable(value: object) -> object:
    """JSON columns accept Python values or JSON text (as the raw extract writes it)."""
    return json.loads(value) if isinstance(value, str) else value


class UpstreamCatalog:
    """Two databases shaped like production; see the module docstring. Created by the `upstream_catalog` fixture."""

    def __init__(self, catalog_url: str, api_url: str) -> None:
        self.catalog_url = catalog_url
        self.api_url = api_url
        # no pool: the fixture holds no session between calls (tests count the sessions the project leaves)
        self.catalog = sa.create_engine(catalog_url, poolclass=sa.pool.NullPool)
        self.api = sa.create_engine(api_url, poolclass=sa.pool.NullPool)
        self._tables: dict[tuple[str, str], sa.Table] = {}

    def create(self) -> UpstreamCatalog:
        apply_ddl(self.catalog_url, CATALOG_DDL)
        apply_ddl(self.api_url, API_DDL)
        return self

    def dispose(self) -> None:
        self.catalog.dispose()
        self.api.dispose()

    # -- tables ---------------------------------------------------------------------------------------------
    def table(self, name: str, db: str = "catalog") -> sa.Table:
        """A table reflected from the catalog (`db="catalog"`) or the API database (`db="api"`)."""
        if (db, name) not in self._tables:
            engine = self.catalog if db == "catalog" else self.api
            self._tables[(db, name)] = sa.Table(name, sa.MetaData(), autoload_with=engine)
        return self._tables[(db, name)]

    def _rows_for(self, table: sa.Table, media: MediaType, rows: Iterable[dict]) -> list[dict]:
        cols = set(table.c.keys())
        out = []
        for r in rows:
            row = {k: v for k, v in r.items() if k in cols}
            for c in media.json_columns:
                if c in row:
                    row[c] = _jsonable(row[c])
            out.append(row)
        return out

    # -- writing rows ---------------------------------------------------------------------------------------
    def insert_media(self, media: str | MediaType, rows: Iterable[dict], *, deleted: bool = False) -> int:
        """Insert media rows (dicts keyed by column name; missing columns take the table's defaults).

        `deleted=True` writes to `deleted_<media>` (rows need `deleted_on`). Returns the rows inserted.
        """
        m = MEDIA_TYPES[media] if isinstance(media, str) else media
        table = self.table(m.deleted_table if deleted else m.table)
        batch = self._rows_for(table, m, rows)
        with self.catalog.begin() as conn:
            for i in range(0, len(batch), 1000):
                conn.execute(table.insert(), batch[i : i + 1000])
        return len(batch)

    def move_to_deleted(self, media: str, identifiers: Iterable[str], reason: str = "deadlink", when=None) -> int:
        """What the catalog does when a work dies: the row moves from `<media>` to `deleted_<media>`."""
        m = MEDIA_TYPES[media]
        ids = list(identifiers)
        cols = ", ".join(c.name for c in self.table(m.table).c)
        with self.catalog.begin() as conn:
            n = conn.execute(
                sa.text(
                    f"INSERT INTO {m.deleted_table} ({cols}, deleted_on, deleted_reason) "
                    f"SELECT {cols}, coalesce(:when, now()), :reason FROM {m.table} WHERE identifier = ANY(:ids)"
                ),
                {"ids": [uuid.UUID(i) for i in ids], "reason": reason, "when": when},
            ).rowcount
            conn.execute(
                sa.text(f"DELETE FROM {m.table} WHERE identifier = ANY(:ids)"), {"ids": [uuid.UUID(i) for i in ids]}
            )
        return n

    def take_down(self, media: str, identifiers: Iterable[str], when: datetime | None = None) -> None:
        """Rows in `api_deleted<media>` (the API's permanent de-indexing)."""
        when = when or datetime.now(UTC)
        rows = [{"identifier": i, "created_on": when, "updated_on": when} for i in identifiers]
        if rows:
            with self.api.begin() as conn:
                conn.execute(self.table(MEDIA_TYPES[media].api_deleted_table, "api").insert(), rows)

    def mark_sensitive(self, media: str, identifiers: Iterable[str], when: datetime | None = None) -> None:
        """Rows in `api_mature<media>` (confirmed sensitive)."""
        when = when or datetime.now(UTC)
        rows = [{"identifier": i, "created_on": when} for i in identifiers]
        if rows:
            with self.api.begin() as conn:
                conn.execute(self.table(MEDIA_TYPES[media].api_mature_table, "api").insert(), rows)

    def add_source(
        self, identifier: str, name: str, media_type: str, *, filter_content: bool = False, domain: str = ""
    ) -> None:
        """A `content_provider` row (the API's ContentSource; `filter_content` hides the source)."""
        row = {
            "created_on": datetime.now(UTC),
            "provider_identifier": identifier,
            "provider_name": name,
            "domain_name": domain or f"https://{identifier}.example",
            "filter_content": filter_content,
            "notes": None,
            "media_type": media_type,
        }
        with self.api.begin() as conn:
            conn.execute(self.table("content_provider", "api").insert(), [row])

    def seed_demo(self, media_names: Iterable[str] | None = None) -> dict[str, int]:
        """The shipped sample rows and the demo's takedowns, exactly as the SQLite demo catalog has them."""
        counts = {}
        for name in media_names or MEDIA_TYPES:
            m = MEDIA_TYPES[name]
            rows = list(demo_rows(m))
            counts[name] = self.insert_media(m, rows)
            self.insert_media(m, _demo_deleted(m, rows), deleted=True)
            self.take_down(name, DEMO_TAKEDOWNS[name]["api_deleted"], DEMO_EPOCH)
            self.mark_sensitive(name, DEMO_TAKEDOWNS[name]["api_mature"], DEMO_EPOCH)
        return counts

    def prepare(self) -> UpstreamCatalog:
        """Run `prepare-catalog`'s indexes on the catalog (the only indexes a test may add)."""
        from openverse_dataset.catalog.prepare import prepare_catalog

        prepare_catalog(self.catalog_url)
        return self

    # -- reading and configuring ----------------------------------------------------------------------------
    def scalar(self, sql: str, db: str = "catalog", **params) -> object:
        with (self.catalog if db == "catalog" else self.api).connect() as conn:
            return conn.scalar(sa.text(sql), params)

    def execute(self, sql: str, db: str = "catalog", **params) -> int:
        """Run one statement in its own transaction; returns the row count."""
        with (self.catalog if db == "catalog" else self.api).begin() as conn:
            return conn.execute(sa.text(sql), params).rowcount

    def indexes(self, table: str) -> set[str]:
        """Index names of a catalog table (what a test may assert `prepare-catalog` added)."""
        return {i["name"] for i in sa.inspect(self.catalog).get_indexes(table)} | {
            c["name"] for c in [sa.inspect(self.catalog).get_pk_constraint(table)] if c.get("name")
        }

    def env(self) -> dict[str, str]:
        """The project's configuration for this pair: catalog and API database, separate."""
        return {"OPENVERSE_CATALOG_URL": self.catalog_url, "OPENVERSE_API_DB_URL": self.api_url}

    def configure(self, monkeypatch) -> UpstreamCatalog:
        """Point the project at these databases (OPENVERSE_CATALOG_URL, OPENVERSE_API_DB_URL)."""
        for k, v in self.env().items():
            monkeypatch.setenv(k, v)
        return self
