"""SQLAlchemy Core definitions of the catalog's tables: the one place the schema and connection URLs live.

Upstream media tables (`image`, `audio`), the catalog's `deleted_<media>` tables and the API database's
takedown tables (`api_deleted<media>`, `api_mature<media>`), typed so the same definitions create a PostgreSQL
catalog (uuid, jsonb, arrays, md5 natural-key index) and a SQLite demo catalog.
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openverse_dataset.catalog.prepare import INDEXES
from openverse_dataset.media import MEDIA_TYPES, MediaType

UUID = sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite")
JSONB = postgresql.JSONB(none_as_null=True).with_variant(sa.JSON(none_as_null=True), "sqlite")
TS = sa.DateTime(timezone=True)
GENRES = postgresql.ARRAY(sa.String(80)).with_variant(sa.JSON(none_as_null=True), "sqlite")

_NOT_NULL = {"created_on", "updated_on", "url", "license", "removed_from_source"}
_LENGTHS = {
    "ingestion_type": 80,
    "provider": 80,
    "source": 80,
    "license": 50,
    "license_version": 25,
    "filetype": 5,
    "category": 80,
}


def _column_type(name: str, arrow_type: pa.DataType, media: MediaType) -> sa.types.TypeEngine:
    if name == "identifier":
        return UUID
    if name in media.json_columns:
        return JSONB
    if name == "genres":
        return GENRES
    if pa.types.is_timestamp(arrow_type):
        return TS
    if pa.types.is_integer(arrow_type):
        return sa.Integer()
    if pa.types.is_boolean(arrow_type):
        return sa.Boolean()
    if pa.types.is_floating(arrow_type):
        return sa.Float(precision=53)
    return sa.String(_LENGTHS[name]) if name in _LENGTHS else sa.Text()


def media_columns(media: MediaType) -> list[sa.Column]:
    """The media table's columns, built from the media type's facts."""
    return [
        sa.Column(
            f.name,
            _column_type(f.name, f.type, media),
            primary_key=f.name == "identifier",
            nullable=f.name not in _NOT_NULL and f.name != "identifier",
        )
        for f in media.raw_schema
    ]


metadata = sa.MetaData()
MEDIA_TABLES: dict[str, sa.Table] = {}
DELETED_TABLES: dict[str, sa.Table] = {}
API_DELETED_TABLES: dict[str, sa.Table] = {}
API_MATURE_TABLES: dict[str, sa.Table] = {}

for _m in MEDIA_TYPES.values():
    _t = sa.Table(_m.table, metadata, *media_columns(_m))
    # The catalog's natural key: unique (provider, md5(foreign_identifier)) on PostgreSQL; SQLite has no md5.
    sa.Index(f"{_m.table}_provider_fid_key", _t.c.provider, sa.func.md5(_t.c.foreign_identifier), unique=True).ddl_if(
        dialect="postgresql"
    )
    sa.Index(f"{_m.table}_provider_fid_idx", _t.c.provider, _t.c.foreign_identifier, unique=True).ddl_if(
        dialect="sqlite"
    )
    sa.Index(f"{_m.table}_url_key", _t.c.url, unique=True)
    MEDIA_TABLES[_m.name] = _t

    _d = sa.Table(
        _m.deleted_table,
        metadata,
        *media_columns(_m),
        sa.Column("deleted_on", TS, nullable=False),
        sa.Column("deleted_reason", sa.String(80)),
    )
    DELETED_TABLES[_m.name] = _d
    # The demo catalog comes prepared: the same indexes `prepare-catalog` adds to a real one, declared there.
    for _i in INDEXES[_m.name]:
        _on = {_t.name: _t, _d.name: _d}[_i.table]
        sa.Index(_i.name, *(_on.c[c] for c in _i.columns))

    API_DELETED_TABLES[_m.name] = sa.Table(
        _m.api_deleted_table,
        metadata,
        sa.Column("identifier", UUID, primary_key=True),
        sa.Column("created_on", TS, nullable=False),
        sa.Column("updated_on", TS, nullable=False),
    )
    API_MATURE_TABLES[_m.name] = sa.Table(
        _m.api_mature_table,
        metadata,
        sa.Column("identifier", UUID, primary_key=True),
        sa.Column("created_on", TS, nullable=False),
    )

# The API's sources (Django model `ContentSource`): `filter_content` hides every work of a source from the API.
# `provider_identifier` is the source key (`source` in the media tables), unique across media types.
CONTENT_PROVIDER = sa.Table(
    "content_provider",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_on", TS, nullable=False),
    sa.Column("provider_identifier", sa.String(50), nullable=False, unique=True),
    sa.Column("provider_name", sa.String(250), nullable=False),
    sa.Column("domain_name", sa.String(500), nullable=False),
    sa.Column("filter_content", sa.Boolean, nullable=False, default=False),
    sa.Column("notes", sa.Text),
    sa.Column("media_type", sa.String(80), nullable=False),
)

CATALOG_TABLES = [*MEDIA_TABLES.values(), *DELETED_TABLES.values()]
API_TABLES = [*API_DELETED_TABLES.values(), *API_MATURE_TABLES.values(), CONTENT_PROVIDER]


def create_catalog_tables(engine: sa.Engine) -> None:
    """Create the catalog tables (idempotent)."""
    metadata.create_all(engine, tables=CATALOG_TABLES)


def create_api_tables(engine: sa.Engine) -> None:
    """Create the API database's takedown tables and `content_provider` (idempotent)."""
    metadata.create_all(engine, tables=API_TABLES)
