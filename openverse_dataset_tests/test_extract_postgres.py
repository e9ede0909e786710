"""Raw extract on PostgreSQL: fast path == generic path, fan-out == single reader, crash safety, hostile values."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from openverse_dataset.catalog.extract import created_ranges, extract_partition
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import IMAGE

pytestmark = pytest.mark.postgres
T0 = datetime(2020, 1, 1, tzinfo=UTC)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def rows(n: int, provider: str = "flickr", start: int = 0) -> list[dict]:
    """`n` plain rows whose identifiers spread over the whole uuid space (so every fan-out range has rows)."""
    out = []
    for i in range(start, start + n):
        h = hashlib.md5(f"{provider}{i}".encode()).hexdigest()
        out.append(
            {
                "identifier": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}",
                # ingestion time in batches (ties broken by identifier), not in identifier order
                "created_on": T0 + timedelta(hours=int(h[:2], 16) % 37),
                "updated_on": T0 + timedelta(minutes=i),
                "ingestion_type": "provider_api",
                "provider": provider,
                "source": provider,
                "foreign_identifier": str(i),
                "foreign_landing_url": f"https://www.flickr.com/photos/x/{i}",
                "url": f"https://live.staticflickr.com/{provider}/{i}_b.jpg",
                "thumbnail": None if i % 3 else f"https://live.staticflickr.com/{i}_m.jpg",
                "width": 1024,
                "height": None if i % 5 == 0 else 683,
                "filesize": None,
                "license": "by",
                "license_version": "2.0",
                "creator": f"creator {i}",
                "creator_url": None,
                "title": f"title {i} " + "ü" * (i % 7),
                "meta_data": {"license_url": "https://creativecommons.org/licenses/by/2.0/", "views": i},
                "tags": [{"name": f"tag{i}", "provider": provider}] if i % 2 else None,
                "watermarked": False,
                "last_synced_with_source": T0,
                "removed_from_source": False,
                "filetype": "jpg",
                "category": None,
                "standardized_popularity": i / 1000,
            }
        )
    return out


@pytest.fixture
def pg_catalog(upstream_catalog) -> str:
    """Openverse's real image table holding 1,500 flickr and 40 wikimedia rows."""
    upstream_catalog.insert_media("image", rows(1500) + rows(40, provider="wikimedia"))
    return upstream_catalog.catalog_url


KW = {"row_group_rows": 256, "shard_bytes": 20_000, "batch_rows": 97}


def test_fast_path_and_generic_path_write_identical_parquet(pg_catalog, tmp_path):
    a, b = DataLayout(tmp_path / "adbc"), DataLayout(tmp_path / "sqlalchemy")
    ra = extract_partition(pg_catalog, IMAGE, "flickr", a, method="adbc", **KW)
    rb = extract_partition(pg_catalog, IMAGE, "flickr", b, method="sqlalchemy", **KW)
    assert (ra.method, rb.method) == ("adbc", "sqlalchemy")
    assert ra.rows == rb.rows == ra.snapshot_rows == rb.snapshot_rows == 1500
    assert ra.max_updated_on == rb.max_updated_on == T0 + timedelta(minutes=1499)
    assert len(ra.shards) > 2
    assert digest(a.raw_dir("image", "flickr")) == digest(b.raw_dir("image", "flickr"))


@pytest.mark.parametrize(("readers", "ranges"), [(2, None), (3, None), (5, None), (2, 7), (1, 4)])
def test_fan_out_gives_byte_identical_shards_to_a_single_reader(pg_catalog, tmp_path, readers, ranges):
    one, many = DataLayout(tmp_path / "one"), DataLayout(tmp_path / "many")
    r1 = extract_partition(pg_catalog, IMAGE, "flickr", one, readers=1, **KW)
    rn = extract_partition(pg_catalog, IMAGE, "flickr", many, readers=readers, ranges=ranges, **KW)
    assert rn.extra == {"readers": readers, "ranges": ranges or readers}
    assert rn.rows == r1.rows == rn.snapshot_rows == 1500
    assert rn.max_updated_on == r1.max_updated_on
    assert digest(one.raw_dir("image", "flickr")) == digest(many.raw_dir("image", "flickr"))
    t = pq.read_table(many.raw_dir("image", "flickr"), columns=["created_on", "identifier"])
    keys = list(zip(t["created_on"].to_pylist(), t["identifier"].to_pylist(), strict=True))
    assert keys == sorted(keys) and len({c for c, _ in keys}) > 30  # ingestion order, over many batches


def test_created_ranges_cover_the_span_in_order():
    assert created_ranges(T0, T0 + timedelta(days=4), 1) == [(None, None)]
    assert created_ranges(None, None, 4) == [(None, None)]
    r = created_ranges(T0, T0 + timedelta(days=4), 4)
    assert r[0][0] is None and r[-1][1] is None
    assert [hi for _, hi in r[:-1]] == [lo for lo, _ in r[1:]]
    assert r[1][0] == T0 + timedelta(days=1)


def test_fan_out_readers_share_one_snapshot(pg_catalog, tmp_path, monkeypatch):
    """Rows committed after the coordinator exported its snapshot, before the readers start, are not seen."""
    from openverse_dataset.catalog import extract

    engine = sa.create_engine(pg_catalog)
    start = extract._RangeReader.start
    changed = []

    def change_then_start(self) -> None:
        if not changed:
            with engine.begin() as conn:
                conn.execute(MEDIA_TABLES["image"].insert(), rows(300, start=10_000))  # columns by name only
                conn.execute(sa.text("UPDATE image SET title = 'changed' WHERE provider = 'flickr'"))
            changed.append(True)
        start(self)

    monkeypatch.setattr(extract._RangeReader, "start", change_then_start)
    layout = DataLayout(tmp_path / "d")
    r = extract_partition(pg_catalog, IMAGE, "flickr", layout, readers=3, **KW)
    engine.dispose()
    assert changed and r.rows == r.snapshot_rows == 1500
    assert "changed" not in set(pq.read_table(layout.raw_dir("image", "flickr"))["title"].to_pylist())


@pytest.mark.parametrize(("method", "readers"), [("adbc", 1), ("adbc", 3), ("sqlalchemy", 1)])
def test_killed_extract_leaves_no_partial_shard_and_rerun_succeeds(pg_catalog, tmp_path, method, readers):
    layout = DataLayout(tmp_path / "data")
    extract_partition(pg_catalog, IMAGE, "flickr", layout, method=method, readers=readers, **KW)
    before = digest(layout.raw_dir("image", "flickr"))
    with pytest.raises(RuntimeError, match="simulated failure"):
        extract_partition(
            pg_catalog, IMAGE, "flickr", layout, method=method, readers=readers, fail_after_rows=700, **KW
        )
    assert digest(layout.raw_dir("image", "flickr")) == before
    assert not any((tmp_path / "data" / ".staging").rglob("*.parquet"))
    fresh = DataLayout(tmp_path / "fresh")
    with pytest.raises(RuntimeError, match="simulated failure"):
        extract_partition(pg_catalog, IMAGE, "flickr", fresh, method=method, readers=readers, fail_after_rows=700, **KW)
    assert not fresh.raw_dir("image", "flickr").exists()
    r = extract_partition(pg_catalog, IMAGE, "flickr", fresh, method=method, readers=readers, **KW)
    assert r.rows == 1500 and digest(fresh.raw_dir("image", "flickr")) == before
    with sa.create_engine(pg_catalog).connect() as conn:  # no reader left a session behind
        sessions = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        assert conn.execute(sessions).scalar() == 1


def test_empty_partition_gives_an_empty_folder(pg_catalog, tmp_path):
    layout = DataLayout(tmp_path / "d")
    for readers in (1, 2):
        r = extract_partition(pg_catalog, IMAGE, "nobody", layout, readers=readers)
        assert r.rows == r.snapshot_rows == 0 and r.shards == [] and r.max_updated_on is None
        assert layout.raw_dir("image", "nobody").is_dir()


def _nested(depth: int) -> dict:
    value: dict = {"leaf": "\\xf1\\xff"}
    for i in range(depth):
        value = {f"k{i}": value, "n": i}
    return value


def test_nastiest_real_values_round_trip_exactly_through_both_paths(upstream_catalog, tmp_path):
    """Huge titles, escape-looking text, deep JSON, NULLs where old schemas allowed them, on an old-style table."""
    # Openverse's table as older production schemas had it: varchar(3000) urls, no NOT NULL but the key's
    upstream_catalog.execute(
        "ALTER TABLE image ALTER COLUMN url TYPE character varying(3000), "
        + ", ".join(
            f"ALTER COLUMN {c} DROP NOT NULL"
            for c in ("url", "license", "created_on", "updated_on", "removed_from_source")
        )
    )
    old = upstream_catalog.table("image")
    pg_url = upstream_catalog.catalog_url
    engine = sa.create_engine(pg_url)
    nasty = rows(6)
    nasty[0].update(title="T" * 1_000_000 + " end", creator="\\xf1\\xff literal backslashes \\u0000 \\n")
    nasty[1].update(
        title="\\xf1\\xff",
        meta_data=_nested(100),
        tags=[{"name": "mu\\xf1o", "provider": "flickr"}, {"name": " spaced ", "accuracy": 0.5}],
    )
    nasty[2].update(
        url=None, license=None, created_on=None, updated_on=None, removed_from_source=None, provider="flickr"
    )
    nasty[3].update(title="emoji 🦀 zwj 👩‍👩‍👧 rtl \u202e nul-free \x7f", meta_data={"s": "\u2028\u2029\ufeff"})
    nasty[4].update(meta_data={"big": 12345678901234567890, "f": 1.5e300, "neg": -0.0, "list": [[[[]]]]})
    nasty[5].update(tags=[], meta_data={})
    with engine.begin() as conn:
        conn.execute(old.insert(), nasty)
        expected = {
            r.identifier: r
            for r in conn.execute(
                sa.select(
                    sa.cast(old.c.identifier, sa.Text).label("identifier"),
                    old.c.title,
                    old.c.creator,
                    old.c.url,
                    old.c.license,
                    old.c.updated_on,
                    old.c.removed_from_source,
                    sa.cast(old.c.meta_data, sa.Text).label("meta_data"),
                    sa.cast(old.c.tags, sa.Text).label("tags"),
                )
            )
        }
    engine.dispose()
    tables = {}
    for method in ("adbc", "sqlalchemy"):
        layout = DataLayout(tmp_path / method)
        r = extract_partition(pg_url, IMAGE, "flickr", layout, method=method)
        assert r.rows == 6
        tables[method] = pq.read_table(layout.raw_dir("image", "flickr"))
    assert tables["adbc"].equals(tables["sqlalchemy"])
    assert digest(tmp_path / "adbc" / "raw" / "image" / "flickr") == digest(
        tmp_path / "sqlalchemy" / "raw" / "image" / "flickr"
    )
    for row in tables["adbc"].to_pylist():
        want = expected[row["identifier"]]
        for col in ("title", "creator", "url", "license", "removed_from_source", "meta_data", "tags"):
            assert row[col] == getattr(want, col), col
        assert row["updated_on"] == want.updated_on
    by_id = {r["identifier"]: r for r in tables["adbc"].to_pylist()}
    first = by_id[nasty[0]["identifier"]]
    assert len(first["title"]) == 1_000_004 and first["creator"].startswith("\\xf1\\xff")
    assert json.loads(by_id[nasty[1]["identifier"]]["meta_data"]) == _nested(100)
    assert by_id[nasty[1]["identifier"]]["title"] == "\\xf1\\xff"  # text, not bytes: kept literally
    null_row = by_id[nasty[2]["identifier"]]
    assert null_row["url"] is None and null_row["updated_on"] is None and null_row["removed_from_source"] is None
    assert r.max_updated_on == max(v["updated_on"] for v in nasty if v["updated_on"] is not None)
    # the PostgreSQL dialect is what renders the catalog's SQL; make sure it still compiles uuid bounds
    assert "identifier >=" in str(
        sa.select(old.c.identifier).where(old.c.identifier >= "0").compile(dialect=postgresql.dialect())
    )
