"""Row groups moved between Parquet files (`openverse_dataset/rowgroups.py`).

A merge copies untouched row groups byte for byte into new shards, so the footer codec and the offset moves must
give files every reader reads, with a page index that points at the pages, and a copied group must give the
same file bytes as its rows encoded again.
"""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from openverse_dataset import rowgroups as R
from openverse_dataset.parquet import ORDER_KEY, ShardWriter, cut_hashes, sort_by_key, writer_options

SCHEMA = pa.schema(
    [
        ("identifier", pa.large_string()),
        ("created_on", pa.timestamp("us", tz="UTC")),
        ("provider", pa.large_string()),  # dictionary-encoded (parquet.DICTIONARY_COLUMNS)
        ("title", pa.large_string()),
        ("width", pa.int32()),
        ("tags", pa.large_list(pa.struct([("name", pa.large_string()), ("accuracy", pa.float64())]))),
    ]
)
OPTIONS = {**writer_options(SCHEMA), "sorting_columns": [pq.SortingColumn(1, nulls_first=False)]}


def _rows(n: int, seed: int = 3) -> pa.Table:
    rng = random.Random(seed)
    t0 = datetime(2021, 5, 1, tzinfo=UTC)
    rows = [
        {
            "identifier": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "created_on": t0 + timedelta(seconds=i),
            "provider": rng.choice(["flickr", "wikimedia", None]),
            "title": None if i % 17 == 0 else "t" * rng.randint(0, 300),
            "width": None if i % 11 == 0 else rng.randint(1, 5000),
            "tags": [{"name": f"tag{k}", "accuracy": k / 10} for k in range(rng.randint(0, 3))],
        }
        for i in range(n)
    ]
    return sort_by_key(pa.Table.from_pylist(rows, schema=SCHEMA), ORDER_KEY)


def _footer_bytes(data: bytes) -> bytes:
    n = int.from_bytes(data[-8:-4], "little")
    return data[-8 - n : -8]


def test_the_footer_codec_gives_back_pyarrows_bytes():
    """Decoding and encoding a pyarrow footer (statistics, dictionaries, sorting columns, page index locations,
    nested columns) gives its exact bytes: fields pass through untouched."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, SCHEMA, **OPTIONS) as w:
        for part in (_rows(3000).slice(0, 1000), _rows(3000).slice(1000)):
            w.write_table(part, row_group_size=part.num_rows)
    raw = _footer_bytes(sink.getvalue().to_pybytes())
    fields, end = R.read_struct(raw)
    assert end == len(raw)
    assert R.encode(fields) == raw


def _assemble(path: Path, groups: list[R.Group]) -> bytes:
    f = R.GroupFile(path, R.empty_footer(SCHEMA, **OPTIONS))
    for g in groups:
        f.append(g)
    f.close()
    return path.read_bytes()


def _bytes(group: R.Group) -> bytes:
    with open(group.source, "rb") as f:
        f.seek(group.start)
        return f.read(group.size)


def _offset_index_points_at_pages(path: Path) -> None:
    """Every column chunk's offset index starts at its first data page, and its page index locations are inside
    the file after the data (what a reader that skips pages by statistics follows)."""
    data = path.read_bytes()
    footer = R.read_footer(io.BytesIO(data))
    md = pq.ParquetFile(path).metadata
    for g, rg in enumerate(R._get(footer, 4)[1]):
        for c, cc in enumerate(R._get(rg, 1)[1]):
            oi_at, oi_len = R._get(cc, 4), R._get(cc, 5)
            ci_at, ci_len = R._get(cc, 6), R._get(cc, 7)
            assert oi_at and ci_at and oi_at + oi_len <= len(data) and ci_at + ci_len <= len(data)
            oi = R.read_struct(data[oi_at : oi_at + oi_len])[0]
            first = R._get(R._get(oi, 1)[1][0], 1)
            assert first == md.row_group(g).column(c).data_page_offset


def test_groups_encoded_or_copied_make_the_same_file_and_every_reader_reads_it(tmp_path: Path):
    table = _rows(5000)
    parts = [table.slice(0, 1200), table.slice(1200, 2500), table.slice(3700)]
    encoded = []
    for k, p in enumerate(parts):
        encoded.append(R.encode_group(p, SCHEMA, tmp_path / f"g{k}.tmp", **OPTIONS))
    first = _assemble(tmp_path / "a.parquet", encoded)
    # The groups copied out of that file, placed again in another order and back: the same bytes.
    copied = R.read_groups(tmp_path / "a.parquet")
    assert [_bytes(g) for g in copied] == [_bytes(g) for g in encoded]
    _assemble(tmp_path / "b.parquet", [copied[2], copied[0]])
    moved = R.read_groups(tmp_path / "b.parquet")
    copied = R.read_groups(tmp_path / "a.parquet")  # a group's entries are placed once: take them again
    assert _assemble(tmp_path / "c.parquet", [moved[1], copied[1], moved[0]]) == first
    # ... and that file is byte for byte what pyarrow writes itself for the same groups of rows.
    with pq.ParquetWriter(tmp_path / "direct.parquet", SCHEMA, **OPTIONS) as w:
        for p in parts:
            w.write_table(p, row_group_size=p.num_rows)
    assert (tmp_path / "direct.parquet").read_bytes() == first

    assert pq.read_table(tmp_path / "a.parquet").equals(table)
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(1).sorting_columns == tuple(
        OPTIONS["sorting_columns"]
    )
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.from_arrow(table))
    got = duckdb.sql(f"select count(*), count(distinct identifier) from '{tmp_path / 'a.parquet'}'").fetchall()[0]
    assert got == (5000, 5000)
    one = table["identifier"][4000].as_py()
    assert pq.read_table(tmp_path / "a.parquet", filters=[("identifier", "=", one)]).num_rows == 1
    _offset_index_points_at_pages(tmp_path / "a.parquet")
    _offset_index_points_at_pages(tmp_path / "b.parquet")


def test_only_a_group_that_ended_at_its_own_cut_may_be_copied(tmp_path: Path):
    """A group ends at a content-defined cut, at `row_group_rows`, or at the text-bytes bound; only the first two
    depend on its rows alone."""
    w = ShardWriter(tmp_path, SCHEMA, row_group_rows=400)
    ids = _rows(3000)["identifier"]
    hashes = cut_hashes(ids)
    hit = next(i for i in range(100, 3000) if hashes[i] % 100 == 0)  # min rows 100, one cut in 100 after that
    assert w.ends_itself(ids.slice(hit - 99, 100))  # at least the minimum, ending on a cut
    assert not w.ends_itself(ids.slice(hit - 50, 51))  # a cut, but under the minimum: the group went on
    assert not w.ends_itself(ids.slice(hit - 99, 101))  # one row past the cut: ended by the bytes bound
    assert w.ends_itself(ids.slice(0, 400))  # at row_group_rows
    assert not ShardWriter(tmp_path, pa.schema([("title", pa.large_string())])).ends_itself(ids.slice(0, 400))
