"""Create the catalog tables in any SQLAlchemy URL and load the real sample rows shipped with the project.

Seeding twice is harmless: rows are inserted with "on conflict do nothing" on the primary key.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from openverse_dataset.catalog.connect import CatalogError, make_engine, redact, scrub
from openverse_dataset.catalog.schema import (
    API_DELETED_TABLES,
    API_MATURE_TABLES,
    DELETED_TABLES,
    MEDIA_TABLES,
    create_api_tables,
    create_catalog_tables,
)
from openverse_dataset.media import MEDIA_TYPES, MediaType

DEMO_FILES = {"image": "images.csv.gz", "audio": "audio.csv.gz"}
RENAMED_COLUMNS = {"alt_audio_files": "alt_files"}  # older catalog column names in the sample

# Sample identifiers the demo lists as taken down, so the demo release exercises every exclusion path.
DEMO_TAKEDOWNS: dict[str, dict[str, list[str]]] = {
    "image": {
        "api_deleted": ["b6acf35f-86cd-4184-88b1-67803413e115"],
        "api_mature": ["1560b5a3-dbf3-4663-a2bd-886f6b2b5787"],
        "deleted": [],  # filled with the first wikimedia row at seed time (see _demo_deleted)
    },
    "audio": {"api_deleted": ["ea609784-944d-412e-84d5-8dea096366e9"], "api_mature": [], "deleted": []},
}
_DEMO_EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # fixed, so the demo catalog is the same on every machine


def _ts(text: str) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def _bool(text: str) -> bool | None:
    return {"t": True, "true": True, "f": False, "false": False}.get(text.strip().lower()) if text else None


def _pg_array(text: str) -> list[str] | None:
    """`{rock,metal}` -> ["rock", "metal"] (the sample has no quoted elements)."""
    if not text:
        return None
    inner = text.strip().removeprefix("{").removesuffix("}")
    return [x.strip().strip('"') for x in inner.split(",") if x.strip()] if inner else []


def demo_rows(media: MediaType) -> Iterator[dict]:
    """The shipped sample rows of one media type, typed for insertion."""
    raw = resources.files("openverse_dataset.catalog").joinpath("demo", DEMO_FILES[media.name]).read_bytes()
    reader = csv.DictReader(io.StringIO(gzip.decompress(raw).decode("utf-8")))
    schema = media.raw_schema
    for rec in reader:
        rec = {RENAMED_COLUMNS.get(k, k): v for k, v in rec.items()}
        row: dict = {}
        for field in schema:
            text = rec.get(field.name, "")
            name, typ = field.name, field.type
            if name in media.json_columns:
                row[name] = json.loads(text) if text else None
            elif name == "genres":
                row[name] = _pg_array(text)
            elif str(typ).startswith("timestamp"):
                row[name] = _ts(text)
            elif str(typ) == "int64":
                row[name] = int(text) if text else None
            elif str(typ) == "bool":
                row[name] = _bool(text)
            elif str(typ) == "double":
                row[name] = float(text) if text else None
            else:
                row[name] = text if text != "" else None
        if row["removed_from_source"] is None:
            row["removed_from_source"] = False
        yield row


def _insert_ignore(conn: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # any other database: skip keys that are already there
        keys = [r["identifier"] for r in rows]
        have = set(conn.scalars(sa.select(table.c.identifier).where(table.c.identifier.in_(keys))))
        rows = [r for r in rows if r["identifier"] not in have]
        if not rows:
            return
        stmt = table.insert()
    conn.execute(stmt, rows)


def seed_catalog(url: str, api_url: str | None = None, media_names: list[str] | None = None) -> dict[str, int]:
    """Create every catalog table at `url` (takedown tables at `api_url`) and load the demo rows.

    Returns the number of media rows newly inserted per media type (0 on a second run).
    """
    engine = make_engine(url)
    api_engine = make_engine(api_url) if api_url and api_url != url else engine
    inserted: dict[str, int] = {}
    try:
        create_catalog_tables(engine)
        create_api_tables(api_engine)
        for name in media_names or list(MEDIA_TYPES):
            media = MEDIA_TYPES[name]
            rows = list(demo_rows(media))
            count = sa.select(sa.func.count()).select_from(MEDIA_TABLES[name])
            with engine.begin() as conn:
                before = conn.scalar(count)
                for i in range(0, len(rows), 500):
                    _insert_ignore(conn, MEDIA_TABLES[name], rows[i : i + 500])
                n = conn.scalar(count) - before
                deleted = _demo_deleted(media, rows)
                _insert_ignore(conn, DELETED_TABLES[name], deleted)
            with api_engine.begin() as conn:
                takedowns = DEMO_TAKEDOWNS[name]
                _insert_ignore(
                    conn,
                    API_DELETED_TABLES[name],
                    [
                        {"identifier": i, "created_on": _DEMO_EPOCH, "updated_on": _DEMO_EPOCH}
                        for i in takedowns["api_deleted"]
                    ],
                )
                _insert_ignore(
                    conn,
                    API_MATURE_TABLES[name],
                    [{"identifier": i, "created_on": _DEMO_EPOCH} for i in takedowns["api_mature"]],
                )
            inserted[name] = n
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(f"seeding the catalog at {redact(url)} failed: {scrub(str(exc), url, api_url)}") from None
    finally:
        engine.dispose()
        api_engine.dispose()
    return inserted


def _demo_deleted(media: MediaType, rows: list[dict]) -> list[dict]:
    """The first wikimedia row (by identifier), listed in `deleted_<media>` as a dead link."""
    wiki = sorted((r for r in rows if r["provider"] == "wikimedia"), key=lambda r: r["identifier"])
    return [{**r, "deleted_on": _DEMO_EPOCH, "deleted_reason": "deadlink"} for r in wiki[:1]]
