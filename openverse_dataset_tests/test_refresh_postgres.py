"""Incremental refresh on PostgreSQL: after updates, inserts, deletes, a provider move and a takedown, the merged
raw, clean and rejects files are byte-identical to a from-scratch build of the same catalog state."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from openverse_dataset.catalog.prepare import prepare_catalog
from openverse_dataset.catalog.refresh import RawState, refresh_raw
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.catalog.takedowns import snapshot_takedowns
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import IMAGE
from openverse_dataset.transform.partition import refresh_clean
from openverse_dataset_tests.test_extract_postgres import rows

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 12, 1, tzinfo=UTC)
KW = {"row_group_rows": 256, "shard_bytes": 40_000}
CLEAN_KW = {"row_group_rows": 128, "shard_bytes": 30_000, "batch_rows": 200}


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
        if ".staging" not in p.parts
    }


def build(cat, layout: DataLayout, provider: str, now: datetime, **kw) -> tuple:
    snapshot_takedowns(cat.catalog_url, cat.api_url, IMAGE, layout)
    raw = refresh_raw(cat.catalog_url, IMAGE, provider, layout, now=now, **KW, **kw)
    clean = refresh_clean(layout, IMAGE, provider, takedowns=layout.takedowns_file("image"), **CLEAN_KW)
    return raw, clean


def outputs(layout: DataLayout, provider: str) -> dict[str, str]:
    out = {}
    for stage, folder in [
        ("raw", layout.raw_dir("image", provider)),
        ("clean", layout.clean_dir("image", provider)),
        ("rejects", layout.rejects_dir("image", provider)),
    ]:
        out |= {f"{stage}/{k}": v for k, v in tree(folder).items()}
    return out


@pytest.fixture
def catalog(upstream_catalog):
    """Openverse's own DDL (catalog and API databases) plus prepare-catalog's indexes, with 1,540 rows."""
    prepare_catalog(upstream_catalog.catalog_url)  # the indexes change detection needs, as deployed
    data = rows(1500) + rows(40, provider="wikimedia")
    for i, r in enumerate(data):
        if i % 97 == 0:
            r["license"] = "nonsense"  # rejected rows: the rejects merge is exercised too
    upstream_catalog.insert_media("image", data)
    return upstream_catalog


def change(cat) -> dict:
    """Updates, inserts, deletions, a row moving to flickr, a takedown: stamped as Openverse stamps them."""
    t = MEDIA_TABLES["image"]
    later = NOW - timedelta(hours=1)
    with cat.catalog.begin() as conn:
        ids = sorted(conn.scalars(sa.select(sa.cast(t.c.identifier, sa.Text)).where(t.c.provider == "flickr")))
        updated, deleted, taken = ids[5:400:25], ids[7:400:40], ids[900]
        conn.execute(
            t.update()
            .where(sa.cast(t.c.identifier, sa.Text).in_(updated))
            .values(title="re-ingested", updated_on=later)
        )
        moved = conn.execute(sa.select(t.c.identifier).where(t.c.provider == "wikimedia").limit(3)).scalars().all()
        conn.execute(
            t.update()
            .where(t.c.identifier.in_(moved))
            .values(provider="flickr", foreign_identifier=t.c.foreign_identifier + "-moved", updated_on=later)
        )
    new = rows(30, start=50_000)
    for r in new:
        r["created_on"], r["updated_on"] = later, later
    cat.insert_media("image", new)
    cat.move_to_deleted("image", deleted, when=later)
    cat.take_down("image", [taken], when=later)
    return {"updated": len(updated), "new": len(new), "deleted": len(deleted), "moved": len(moved)}


def test_incremental_refresh_is_byte_identical_to_a_full_build(catalog, tmp_path):
    inc = DataLayout(tmp_path / "incremental")
    raw, (clean, mode, _) = build(catalog, inc, "flickr", NOW - timedelta(days=1))
    assert raw.mode == "full" and mode == "full"
    build(catalog, inc, "wikimedia", NOW - timedelta(days=1))
    before = outputs(inc, "flickr")
    n = change(catalog)

    raw, (clean, mode, why) = build(catalog, inc, "flickr", NOW)
    assert (raw.mode, raw.reason, mode, why) == ("incremental", "", "incremental", "")
    # plus rows stamped in the 10 minutes before the watermark: the overlap re-reads them, harmlessly
    assert 0 <= raw.rows_changed - (n["updated"] + n["new"] + n["moved"]) <= 11
    assert raw.rows_read < 100  # not the 1,500-row partition
    assert clean.rows_cleaned < 100
    wiki, (_, wiki_mode, _) = build(catalog, inc, "wikimedia", NOW)
    assert wiki.mode == "incremental" and wiki_mode == "incremental" and wiki.rows_removed >= n["moved"]

    fresh = DataLayout(tmp_path / "fresh")
    for provider in ("flickr", "wikimedia"):
        f_raw, (_, f_mode, _) = build(catalog, fresh, provider, NOW)
        assert f_raw.mode == "full" and f_mode == "full"
        assert outputs(inc, provider) == outputs(fresh, provider)
    after = outputs(inc, "flickr")
    assert after != before
    reasons = pq.read_table(inc.rejects_dir("image", "flickr"), columns=["reason"])["reason"].to_pylist()
    assert "taken_down" in reasons and "deleted_in_catalog" not in reasons  # deleted rows left the partition

    # Nothing changed: a refresh re-reads only the overlap window before its watermark, and writes the same bytes.
    raw, (_, mode, _) = build(catalog, inc, "flickr", NOW)
    assert raw.mode == "incremental" and raw.rows_changed <= 50 and outputs(inc, "flickr") == after


def test_out_of_range_timestamps_after_a_full_build_are_counted_by_the_refresh_as_by_a_full_build(catalog, tmp_path):
    """infinity, year 10000 and BC values arriving between builds: read as NULL and counted by the incremental
    refresh too, and its outputs equal a from-scratch build's (where the same rows are counted)."""
    inc = DataLayout(tmp_path / "incremental")
    first, _ = build(catalog, inc, "flickr", NOW - timedelta(days=1))
    assert first.mode == "full" and first.extract.timestamps_out_of_range == 0
    later = NOW - timedelta(hours=1)
    new = rows(5, start=70_000)
    for r in new:
        r["created_on"], r["updated_on"] = later, later
    catalog.insert_media("image", new)
    odd = {  # foreign_identifier -> what is stored
        new[0]["foreign_identifier"]: {"created_on": "infinity"},
        new[1]["foreign_identifier"]: {"created_on": "10000-01-01 00:00:00+00"},
        new[2]["foreign_identifier"]: {"created_on": "0044-03-15 00:00:00+00 BC"},
        new[3]["foreign_identifier"]: {"updated_on": "-infinity"},  # below every watermark
    }
    with catalog.catalog.begin() as conn:
        for fid, values in odd.items():
            sets = ", ".join(f"{c} = CAST(:{c} AS timestamptz)" for c in values)
            conn.execute(sa.text(f"UPDATE image SET {sets} WHERE foreign_identifier = :fid"), {**values, "fid": fid})

    raw, (_, mode, _) = build(catalog, inc, "flickr", NOW)
    assert (raw.mode, mode) == ("incremental", "incremental")
    assert raw.extract.timestamps_out_of_range == len(odd)
    fresh = DataLayout(tmp_path / "fresh")
    full, _ = build(catalog, fresh, "flickr", NOW)
    assert full.mode == "full" and full.extract.timestamps_out_of_range == len(odd)  # the same rule, the same count
    assert outputs(inc, "flickr") == outputs(fresh, "flickr")  # published or rejected alike, byte for byte
    fanned = DataLayout(tmp_path / "fanned")
    build(catalog, fanned, "flickr", NOW, readers=3)  # created_on ranges read in parallel: the odd rows go last
    assert outputs(fanned, "flickr") == outputs(fresh, "flickr")
    got = pq.read_table(inc.raw_dir("image", "flickr")).to_pylist()
    by_fid = {r["foreign_identifier"]: r for r in got}
    assert all(fid in by_fid for fid in odd)  # no row lost, the -infinity one included
    for fid, values in odd.items():
        assert all(by_fid[fid][c] is None for c in values)  # extracted as NULL, never wrapped
    again, _ = build(catalog, inc, "flickr", NOW)  # the -infinity row is re-read each time: same bytes
    assert again.mode == "incremental" and outputs(inc, "flickr") == outputs(fresh, "flickr")


def test_full_rebuild_when_due_when_watermark_goes_back_or_files_do_not_match(catalog, tmp_path):
    layout = DataLayout(tmp_path / "d")
    first, _ = build(catalog, layout, "flickr", NOW - timedelta(days=8))
    assert first.mode == "full" and first.reason == "no previous extract"
    due, _ = build(catalog, layout, "flickr", NOW)
    assert due.mode == "full" and due.reason.startswith("periodic full rebuild")
    assert due.state.last_full_rebuild == NOW.isoformat()
    state = RawState.load(layout.state_file("raw", "image", "flickr"))
    next(layout.raw_dir("image", "flickr").glob("part-*.parquet")).unlink()
    broken, (_, mode, why) = build(catalog, layout, "flickr", NOW)
    assert broken.reason == "previous files missing or not as recorded"
    assert mode == "full" and why == "raw extract was rebuilt in full"
    with catalog.catalog.begin() as conn:  # the newest row is deleted outright: the watermark goes backwards
        t = MEDIA_TABLES["image"]
        newest = conn.scalar(sa.select(sa.func.max(t.c.updated_on)).where(t.c.provider == "flickr"))
        conn.execute(t.delete().where(t.c.provider == "flickr", t.c.updated_on == newest))
    back, _ = build(catalog, layout, "flickr", NOW)
    assert back.reason == "updated_on watermark went backwards"
    assert state.version != back.state.version


def test_unprepared_catalog_falls_back_to_full_reads_and_says_what_to_run(upstream_catalog, tmp_path):
    upstream_catalog.insert_media("image", rows(300))
    layout = DataLayout(tmp_path / "d")
    build(upstream_catalog, layout, "flickr", NOW - timedelta(days=1))
    again, (_, mode, _) = build(upstream_catalog, layout, "flickr", NOW)
    assert again.mode == "full" and mode == "full"
    assert "not prepared" in again.reason and "prepare-catalog" in again.reason


def test_a_refresh_keeps_the_files_its_change_does_not_touch(catalog, tmp_path):
    """Today's new rows and a withdrawn batch: the merges link every raw and clean shard the change does not reach
    (no decode, no encode, no new hash) and the result is still a from-scratch build's, byte for byte."""
    inc = DataLayout(tmp_path / "incremental")
    build(catalog, inc, "flickr", NOW - timedelta(days=1))
    before = outputs(inc, "flickr")
    later = NOW - timedelta(hours=1)
    new = rows(20, start=60_000)
    for r in new:
        r["created_on"], r["updated_on"] = later, later  # ingested today: they sort after every row
    catalog.insert_media("image", new)
    t = MEDIA_TABLES["image"]
    with catalog.catalog.begin() as conn:  # one ingestion batch withdrawn: the rows created in one hour
        first_hour = min(conn.scalars(sa.select(t.c.created_on).where(t.c.provider == "flickr")))
        gone = conn.scalars(
            sa.select(sa.cast(t.c.identifier, sa.Text)).where(t.c.provider == "flickr", t.c.created_on == first_hour)
        ).all()
    catalog.move_to_deleted("image", list(gone), when=later)

    raw, (clean, mode, _) = build(catalog, inc, "flickr", NOW)
    assert (raw.mode, mode) == ("incremental", "incremental")
    raw_files = len(raw.state.shards)
    assert raw_files >= 5 and raw.extra["files_kept"] >= raw_files - 3  # the first and the last are touched
    assert clean.merge.files_kept >= 5 and clean.merge.files_rewritten <= 3
    after = outputs(inc, "flickr")
    kept = set(before.values()) & set(after.values())
    assert len(kept) >= raw.extra["files_kept"] + clean.merge.files_kept  # the same bytes, not rewritten
    fresh = DataLayout(tmp_path / "fresh")
    build(catalog, fresh, "flickr", NOW)
    assert outputs(fresh, "flickr") == after


def _untake_down(cat, identifiers: list[str]) -> None:
    """A takedown withdrawn: its row leaves `api_deletedimage`."""
    with cat.api.begin() as conn:
        conn.execute(sa.text("DELETE FROM api_deletedimage WHERE identifier::text = ANY(:ids)"), {"ids": identifiers})


@pytest.mark.parametrize("pinned", [True, False])
def test_a_takedown_change_rechecks_only_the_works_it_moved(catalog, tmp_path, monkeypatch, pinned):
    """After the takedown list changed, an incremental clean re-runs the rules only on the works whose takedown
    reason moved (one listed, one unlisted, one listed for a higher-priority reason), found by comparing the
    snapshot with the one the last clean pinned, not on every listed work of the partition. Without the pinned
    snapshot (`pinned=False`) it falls back to rechecking every listed work. Either way the outputs equal a
    from-scratch build's, and only the snapshot a clean state refers to stays pinned."""
    import openverse_dataset.transform.partition as partition

    monkeypatch.setattr(partition, "PIN_GRACE_S", 0)  # prune at once what no state refers to
    partition._prune_snapshots(DataLayout(tmp_path / "empty"), "image")  # nothing pinned yet: nothing to do
    t = MEDIA_TABLES["image"]
    with catalog.catalog.begin() as conn:
        ids = sorted(conn.scalars(sa.select(sa.cast(t.c.identifier, sa.Text)).where(t.c.provider == "flickr")))
    catalog.take_down("image", ids[10:60], when=NOW - timedelta(days=2))
    catalog.mark_sensitive("image", ids[60:70], when=NOW - timedelta(days=2))
    inc = DataLayout(tmp_path / "incremental")
    build(catalog, inc, "flickr", NOW - timedelta(days=1))
    first = json.loads(inc.state_file("clean", "image", "flickr").read_text())["takedowns"]
    assert [p.name for p in inc.takedown_snapshots_dir("image").iterdir()] == [f"{first}.parquet"]
    if not pinned:
        shutil.rmtree(inc.takedown_snapshots_dir("image"))

    moved = [ids[100], ids[10], ids[65]]
    catalog.take_down("image", [ids[100]], when=NOW - timedelta(hours=1))  # listed
    _untake_down(catalog, [ids[10]])  # unlisted: the work comes back
    catalog.take_down("image", [ids[65]], when=NOW - timedelta(hours=1))  # mature -> taken_down
    raw, (clean, mode, why) = build(catalog, inc, "flickr", NOW)
    assert (raw.mode, mode, why) == ("incremental", "incremental", "")
    read = set(pq.read_table(inc.changes_dir("image", "flickr") / "removed.parquet")["identifier"].to_pylist())
    extra = clean.rows_cleaned - raw.rows_changed
    if pinned:
        assert extra == len(set(moved) - read)  # the three moved works, not the 60 listed ones
    else:
        assert extra >= 59  # every listed work of the partition, as before pinning (60 listed, one unlisted now)

    fresh = DataLayout(tmp_path / "fresh")
    build(catalog, fresh, "flickr", NOW)
    assert outputs(inc, "flickr") == outputs(fresh, "flickr")
    rejected = pq.read_table(inc.rejects_dir("image", "flickr"), columns=["identifier", "reason"]).to_pydict()
    reasons = dict(zip(rejected["identifier"], rejected["reason"], strict=True))
    assert reasons[ids[100]] == "taken_down" and reasons[ids[65]] == "taken_down" and ids[10] not in reasons
    now = json.loads(inc.state_file("clean", "image", "flickr").read_text())["takedowns"]
    assert now != first
    assert [p.name for p in inc.takedown_snapshots_dir("image").iterdir()] == [f"{now}.parquet"]
