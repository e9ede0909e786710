"""Raw extract: streaming shards, atomic replacement, determinism, and paths that never leave the data dir."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from openverse_dataset.catalog.extract import extract_partition
from openverse_dataset.catalog.seed import seed_catalog
from openverse_dataset.layout import DataLayout, UnsafePathError, segment, unsegment
from openverse_dataset.media import IMAGE


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    seed_catalog(url)
    return url


def test_extract_streams_into_several_shards_in_ingestion_order(sqlite_catalog, tmp_path):
    layout = DataLayout(tmp_path / "data")
    r = extract_partition(
        sqlite_catalog, IMAGE, "flickr", layout, batch_rows=100, row_group_rows=128, shard_bytes=40_000
    )
    assert r.batches == 11 and r.rows == r.snapshot_rows == 1001
    assert len(r.shards) > 1 and sum(s.rows for s in r.shards) == 1001
    table = pq.read_table(layout.raw_dir("image", "flickr"))
    ids = table["identifier"].to_pylist()
    keys = list(zip(table["created_on"].to_pylist(), ids, strict=True))
    assert keys == sorted(keys) and len(set(ids)) == 1001
    assert table.schema.equals(IMAGE.raw_schema)
    meta = pq.ParquetFile(layout.raw_dir("image", "flickr") / "part-00000.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    groups = [
        md.row_group(g).num_rows
        for s in r.shards
        for md in [pq.ParquetFile(layout.raw_dir("image", "flickr") / s.name).metadata]
        for g in range(md.num_row_groups)
    ]
    # content-defined row groups: at least a quarter of the bound (all but the very last), at most the bound
    assert all(32 <= n <= 128 for n in groups[:-1]) and 1 <= groups[-1] <= 128 and len(set(groups)) > 2


def test_same_catalog_gives_byte_identical_shards_whatever_the_batch_size(sqlite_catalog, tmp_path):
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    extract_partition(sqlite_catalog, IMAGE, "flickr", a, batch_rows=97)
    extract_partition(sqlite_catalog, IMAGE, "flickr", b, batch_rows=1000)
    assert digest(a.raw_dir("image", "flickr")) == digest(b.raw_dir("image", "flickr"))


def test_killed_extract_leaves_previous_shards_and_rerun_succeeds(sqlite_catalog, tmp_path):
    layout = DataLayout(tmp_path / "data")
    kw = {"batch_rows": 100, "row_group_rows": 100, "shard_bytes": 20_000}
    extract_partition(sqlite_catalog, IMAGE, "flickr", layout, **kw)
    before = digest(layout.raw_dir("image", "flickr"))
    with sa.create_engine(sqlite_catalog).begin() as conn:  # the catalog changes, then the re-extract dies
        conn.execute(sa.text("update image set title = 'changed' where provider = 'flickr'"))
    with pytest.raises(RuntimeError, match="simulated failure"):
        extract_partition(sqlite_catalog, IMAGE, "flickr", layout, fail_after_rows=500, **kw)
    assert digest(layout.raw_dir("image", "flickr")) == before  # no partial shard, old release intact
    assert not any((tmp_path / "data" / ".staging").rglob("*.parquet"))
    r = extract_partition(sqlite_catalog, IMAGE, "flickr", layout, **kw)
    assert r.rows == 1001
    assert set(pq.read_table(layout.raw_dir("image", "flickr"))["title"].to_pylist()) == {"changed"}


def test_failed_first_extract_leaves_nothing_that_looks_complete(sqlite_catalog, tmp_path):
    layout = DataLayout(tmp_path / "data")
    with pytest.raises(RuntimeError):
        extract_partition(
            sqlite_catalog, IMAGE, "flickr", layout, batch_rows=100, row_group_rows=100, fail_after_rows=300
        )
    assert not layout.raw_dir("image", "flickr").exists()


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", ".", "x\\y", "%2E%2E", "/abs", "flickr*?[x]"])
def test_provider_names_become_one_safe_segment(tmp_path, name):
    layout = DataLayout(tmp_path)
    seg = segment(name)
    assert "/" not in seg and seg not in {".", ".."} and not seg.startswith(".")
    assert unsegment(seg) == name
    p = layout.raw_dir("image", name)
    assert p.parent == (tmp_path / "raw" / "image").resolve()


def test_escaping_paths_are_refused(tmp_path):
    layout = DataLayout(tmp_path)
    with pytest.raises(UnsafePathError):
        layout._inside("..", "x")
    with pytest.raises(UnsafePathError):
        segment("")
