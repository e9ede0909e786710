"""A synthetic Openverse `image` catalog generated server-side (one INSERT ... SELECT over generate_series).

Shapes follow the real sample rows (`shared/data/openverse-sample/images.csv`): ~70% flickr and ~10% wikimedia,
URL lengths ~50-80 characters (landing URLs without a scheme in some old rows), titles of 5-240 characters,
3-10 tags in 60% of rows (some machine tags with accuracy), meta_data objects with license_url, dates and
popularity. The tables are Openverse's own DDL (openverse_dataset_tests/upstream: `docker/upstream_db/*.sql`),
with exactly production's indexes; callers add `prepare-catalog`'s indexes themselves when they want them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from openverse_dataset_tests.upstream import CATALOG_DDL, apply_ddl

# (provider, share) - the rest of the 1.0 is spread over the long tail below.
PROVIDERS = [
    ("flickr", 0.70),
    ("wikimedia", 0.10),
    ("smithsonian", 0.05),
    ("europeana", 0.04),
    ("geographorguk", 0.03),
    ("inaturalist", 0.03),
    ("met", 0.02),
    ("eol", 0.015),
    ("rijksmuseum", 0.01),
    ("stocksnap", 0.005),
]

_TAG = (
    '\'{{"name": "\' || substr(m2, {k}, (3 + (h2 >> {k}) % 12)::int) || \'", "provider": "\' || p || \'"\''
    " || CASE WHEN (h1 >> {k}) % 5 = 0 THEN ', \"accuracy\": 0.' || (80 + (h2 >> {k}) % 20)::text ELSE '' END || '}}'"
)
_TAGS = "('[' || concat_ws(', ', {slots}) || ']')::jsonb".format(
    slots=", ".join(
        _TAG.format(k=k) if k <= 3 else f"CASE WHEN 3 + h2 % 10 >= {k} THEN {_TAG.format(k=k)} END"
        for k in range(1, 13)
    )
)

_INSERT = """
INSERT INTO image (
    identifier, created_on, updated_on, ingestion_type, provider, source, foreign_identifier,
    foreign_landing_url, url, thumbnail, width, height, filesize, license, license_version, creator, creator_url,
    title, meta_data, tags, watermarked, last_synced_with_source, removed_from_source, filetype, category,
    standardized_popularity)
SELECT
    gen_random_uuid(),
    ts, ts + (h2 % 900) * interval '1 day',
    'provider_api', p, p, fid,
    CASE WHEN h1 % 10 = 0 THEN '' ELSE 'https://' END || 'www.' || p || '.com/photos/' || (h2 % 99999999)::text
        || '@N0' || (h1 % 9)::text || '/' || fid,
    'https://live.static' || p || '.com/' || (h1 % 10000)::text || '/' || fid || '_' || left(m, 10) || '_b.jpg',
    CASE WHEN h1 % 5 < 3 THEN 'https://live.static' || p || '.com/' || (h1 % 10000)::text || '/' || fid || '_'
        || left(m, 10) || '_m.jpg' END,
    CASE WHEN h2 % 10 < 9 THEN 640 + h1 % 1400 END,
    CASE WHEN h2 % 10 < 9 THEN 480 + h2 % 1100 END,
    CASE WHEN h1 % 3 = 0 THEN 20000 + h2 % 9000000 END,
    (ARRAY['by','by-sa','by-nc','by-nc-sa','by-nc-nd','by-nd','cc0','pdm','BY','by-nd-nc'])[1 + h1 % 10],
    (ARRAY['2.0','2.0','4.0','3.0','2','1.0'])[1 + h2 % 6],
    CASE WHEN h2 % 12 > 0 THEN initcap(left(m, 4 + h1 % 14)) END,
    CASE WHEN h2 % 4 > 0 THEN 'https://www.' || p || '.com/photos/' || (h2 % 99999999)::text || '@N0'
        || (h1 % 9)::text END,
    CASE WHEN h1 % 40 > 0 THEN left(initcap(m2) || ' ' || fid || ' ' || m || ' ' || m2 || ' ' || m || m2 || m
        || m2 || m, CASE WHEN h2 % 10 = 0 THEN 20 + h1 % 221 ELSE 4 + h1 % 30 END) END,
    ('{"pub_date": "' || (1100000000 + h1 % 600000000)::text || '", "date_taken": "' || ts::text
        || '", "description": ' || CASE WHEN h2 % 3 = 0 THEN '"' || repeat(m || ' ', 1 + h1 % 6) || '"'
        ELSE 'null' END || ', "license_url": "https://creativecommons.org/licenses/by/2.0/", '
        || '"raw_license_url": null, "views": ' || (h2 % 100000)::text || '}')::jsonb,
    CASE WHEN h1 % 5 < 3 THEN TAGS END,
    false,
    ts + (h2 % 900) * interval '1 day',
    h2 % 50 = 0,
    CASE WHEN h1 % 7 = 0 THEN NULL ELSE 'jpg' END,
    CASE WHEN h1 % 3 = 0 THEN 'photograph' END,
    (h2 % 10000) / 10000.0
FROM (
    SELECT *, PROVIDER AS p
    FROM (
        SELECT i, md5(i::text) AS m, md5((-i)::text) AS m2,
            ('x' || substr(md5(i::text), 1, 8))::bit(32)::int & 2147483647 AS h1,
            ('x' || substr(md5(i::text), 9, 8))::bit(32)::int & 2147483647 AS h2,
            (10000000000 + i)::text AS fid,
            timestamptz '2018-01-01' + (i % 2000000) * interval '37 seconds' AS ts
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i
        OFFSET 0  -- a fence: without it the planner inlines md5() into every use of h1/h2/p
    ) s
    OFFSET 0
) s2
"""


def _provider_case() -> str:
    acc, parts = 0, []
    for name, share in PROVIDERS[:-1]:
        acc += round(share * 100000)
        parts.append(f"WHEN h1 % 100000 < {acc} THEN '{name}'")
    return f"CASE {' '.join(parts)} ELSE '{PROVIDERS[-1][0]}' END"


INSERT_SQL = _INSERT.replace("TAGS", _TAGS).replace("PROVIDER", _provider_case())


def create_database(admin_url: str, name: str) -> str:
    """Create a scratch database and return its URL."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def populate(url: str, first: int, last: int, *, chunk: int = 1_000_000, log=print) -> None:
    """Insert rows `first..last` (inclusive); secondary indexes are dropped during the load and rebuilt after.

    Creates Openverse's catalog tables on first use; whatever indexes the table has (Openverse's, and any a
    caller added) are rebuilt from their own definitions.
    """
    engine = sa.create_engine(url)
    if not sa.inspect(engine).has_table("image"):
        apply_ddl(url, CATALOG_DDL)
    start = time.perf_counter()
    with engine.begin() as conn:
        indexes = conn.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'image' AND indexname <> 'image_pkey'"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))
    for lo in range(first, last + 1, chunk):
        hi = min(lo + chunk - 1, last)
        with engine.begin() as conn:
            conn.execute(sa.text(INSERT_SQL), {"lo": lo, "hi": hi})
        log(f"  inserted rows {lo:,}..{hi:,} ({time.perf_counter() - start:.0f}s)")
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        for _, ddl in indexes:
            conn.execute(sa.text(ddl))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (FREEZE, ANALYZE) image"))
    engine.dispose()
    log(f"  indexes rebuilt, vacuumed ({time.perf_counter() - start:.0f}s)")
