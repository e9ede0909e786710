"""One Arrow string type (large_string) in every file of every stage, the declared sort order in every row group,
and very large text values carried from the catalog to the release."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from openverse_dataset import parquet
from openverse_dataset.catalog.extract import extract_partition
from openverse_dataset.catalog.seed import seed_catalog
from openverse_dataset.cli import main
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import IMAGE
from openverse_dataset.parquet import ORDER_KEY
from openverse_dataset.transform.partition import clean_partition


def _strings(t: pa.DataType) -> list[pa.DataType]:
    """Every string-like type inside `t` (lists and structs included)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return [t]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _strings(t.value_type)
    if pa.types.is_struct(t):
        return [s for f in t for s in _strings(f.type)]
    return []


def _declared_sort(path: Path) -> set[tuple]:
    md = pq.ParquetFile(path).metadata
    return {tuple((s.column_index, s.descending, s.nulls_first) for s in md.row_group(g).sorting_columns or ())
            for g in range(md.num_row_groups)}  # fmt: skip


def test_every_file_has_one_schema_per_stage_large_strings_and_its_sort_order(env: Path):
    assert main(["build", "--media", "audio"]) == 0
    stages = {
        "raw": sorted((env / "raw" / "audio").rglob("part-*.parquet")),
        "clean": sorted((env / "clean" / "audio").rglob("part-*.parquet")),
        "rejects": sorted((env / "rejects" / "audio").rglob("part-*.parquet")),
        "release": sorted((env / "hub" / "openverse-audio" / "data").rglob("*.parquet")),
    }
    for stage, files in stages.items():
        assert len(files) >= 1, stage
        schemas = {pq.read_schema(f).remove_metadata() for f in files}
        assert len(schemas) == 1, stage  # one schema in every file of the stage (every config reads these)
        schema = schemas.pop()
        kinds = {t for f in schema for t in _strings(f.type)}
        assert kinds == {pa.large_string()}, (stage, kinds)
        want = {tuple((schema.get_field_index(c), False, False) for c in ORDER_KEY)}
        for f in files:
            assert _declared_sort(f) == want, f
            rows = pq.read_table(f, columns=list(ORDER_KEY)).to_pylist()
            keys = [(r["created_on"], r["identifier"]) for r in rows]
            assert keys == sorted(keys), f  # the declaration is true
    release = pq.read_schema(stages["release"][0]).remove_metadata()
    assert release == pq.read_schema(stages["clean"][0]).remove_metadata()


def test_row_groups_end_at_a_byte_bound_whatever_the_batches(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(parquet, "DEFAULT_ROW_GROUP_BYTES", 1000)
    schema = pa.schema([("identifier", pa.large_string()), ("title", pa.large_string())])
    titles = ["x" * (300 if i % 7 else 900) for i in range(200)]
    table = pa.table({"identifier": [f"{i:05d}" for i in range(200)], "title": titles}, schema=schema)
    digests = set()
    for size in (1, 13, 200):
        out = tmp_path / f"b{size}"
        parquet.write_batches(out, schema, table.to_batches(max_chunksize=size), row_group_rows=50)
        md = pq.ParquetFile(out / "part-00000.parquet").metadata
        groups = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        assert sum(groups) == 200 and max(groups) <= 3  # 1000 bytes of text: at most 3 rows of >= 300 bytes
        digests.add(hashlib.sha256((out / "part-00000.parquet").read_bytes()).hexdigest())
    assert len(digests) == 1  # boundaries from the rows alone: byte-identical however the rows arrived


def test_ten_megabyte_titles_are_extracted_cleaned_and_kept_whole(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(parquet, "DEFAULT_ROW_GROUP_BYTES", 12 * 2**20)
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    seed_catalog(url, media_names=["image"])
    big = {}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.text(
                    "select identifier from image where provider = 'wikimedia' and not removed_from_source "
                    "order by identifier limit 3"
                )
            )
        ]
        for n, ident in enumerate(ids):
            big[ident] = f"{n}" + "t" * (10 * 2**20)
            conn.execute(sa.text("update image set title = :t where identifier = :i"), {"t": big[ident], "i": ident})
    engine.dispose()
    layout = DataLayout(tmp_path / "data")
    r = extract_partition(url, IMAGE, "wikimedia", layout)
    assert r.rows > 3
    raw = pq.read_table(layout.raw_dir("image", "wikimedia"))
    assert raw.schema.field("title").type == pa.large_string()
    shard = next(layout.raw_dir("image", "wikimedia").glob("part-*.parquet"))
    assert pq.ParquetFile(shard).metadata.num_row_groups >= 3  # each 10 MB title ends a row group
    c = clean_partition(layout, IMAGE, "wikimedia")
    clean = pq.read_table(layout.clean_dir("image", "wikimedia"), columns=["identifier", "title", "attribution"])
    titles = dict(zip(clean["identifier"].to_pylist(), clean["title"].to_pylist(), strict=True))
    kept = [i for i in ids if i in titles]
    assert kept and c.kept + c.rejected_total == r.rows
    for i in kept:
        assert titles[i] == big[i]  # whole, byte for byte
