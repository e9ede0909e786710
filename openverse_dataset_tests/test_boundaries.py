"""Content-defined row-group and shard boundaries, and merges that keep the files a change does not touch.

A merge must give the bytes a from-scratch write of the same rows gives (every refresh promises it), while
decoding and encoding only the shards the change touches: that is what makes a refresh cost proportional to the
change. Each case here writes the changed rows from scratch and compares every file.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from openverse_dataset.parquet import (
    ORDER_KEY,
    ShardWriter,
    cut_hashes,
    merge_into,
    sort_by_key,
)

SCHEMA = pa.schema(
    [
        ("identifier", pa.large_string()),
        ("created_on", pa.timestamp("us", tz="UTC")),
        ("title", pa.large_string()),
    ]
)
T0 = datetime(2020, 1, 1, tzinfo=UTC)
KW = {"shard_bytes": 60_000, "row_group_rows": 400}
N = 12_000


def _rows(n: int, seed: int = 1, start: int = 0, nulls: int = 0) -> pa.Table:
    rng = random.Random(seed)
    out = [
        {
            "identifier": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "created_on": T0 + timedelta(minutes=start + i // 3),  # ties broken by identifier
            "title": f"title {i} " + "x" * rng.randint(0, 60),
        }
        for i in range(n)
    ]
    for r in out[:nulls]:
        r["created_on"] = None  # sorts last
    return sort_by_key(pa.Table.from_pylist(out, schema=SCHEMA), ORDER_KEY)


def _write(folder: Path, table: pa.Table, batch: int = 997) -> list[str]:
    w = ShardWriter(folder, SCHEMA, sorting=ORDER_KEY, **KW)
    for b in table.to_batches(max_chunksize=batch):
        w.write(b)
    return [s.name for s in w.close()]


def _digests(folder: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))]


_M64 = (1 << 64) - 1


def _reference_hash(value: str | None) -> int:
    """The rule `cdc1` in plain Python: FNV-1a over the last 16 bytes (last first), xor the length, splitmix64."""
    if value is None:
        return 0x9E3779B97F4A7C15
    data = value.encode()
    h = 0xCBF29CE484222325
    for byte in reversed(data[-16:]):
        h = ((h ^ byte) * 0x100000001B3) & _M64
    h ^= len(data)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        h ^= h >> shift
        h = (h * mult) & _M64
    return h ^ (h >> 31)


def test_cut_hash_is_the_rule_whatever_the_neighbours():
    """The hash decides where files end, so previous files are only kept while it is the same: a change to it must
    come with a new `BOUNDARY_RULE`. The values are pinned, and each value is the same whatever strings share its
    array (short, long, NULL, sliced)."""
    values = ["3f2c1a9e-8d4b-4c1e-9f7a-2b6d5e8c0a11", "a", "", None, "ü" * 20]
    assert cut_hashes(pa.array(values, pa.large_string())).tolist() == [
        1328030041882478321,
        9266097309480679803,
        17665956581633026203,
        11400714819323198485,
        10522089899481986588,
    ]
    rng = random.Random(3)
    mixed = [None if rng.random() < 0.05 else "".join(rng.choices("ab-ü0", k=rng.randint(0, 40))) for _ in range(500)]
    want = [_reference_hash(v) for v in mixed]
    assert cut_hashes(pa.array(mixed, pa.string())).tolist() == want
    chunked = pa.chunked_array([pa.array(mixed[:7], pa.large_string()), pa.array(mixed[7:], pa.large_string())])
    assert cut_hashes(chunked).tolist() == want
    assert cut_hashes(pa.array(mixed, pa.large_string()).slice(100, 50)).tolist() == want[100:150]


def test_boundaries_depend_on_the_rows_only_and_fall_back_into_step(tmp_path: Path):
    table = _rows(N)
    names = _write(tmp_path / "a", table, batch=997)
    assert _write(tmp_path / "b", table, batch=31) == names
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")  # however the rows arrived
    groups = [
        pq.ParquetFile(p).metadata.row_group(g).num_rows
        for p in sorted((tmp_path / "a").glob("*.parquet"))
        for g in range(pq.ParquetFile(p).num_row_groups)
    ]
    assert len(names) >= 4 and len(set(groups)) > 3 and max(groups) <= KW["row_group_rows"]
    # 40 rows removed near the start: the first file changes, the boundaries fall back into step, and every file
    # after the next one is byte for byte the same as before.
    ids = table["identifier"].slice(300, 40)
    shorter = table.filter(pc.invert(pc.is_in(table["identifier"], value_set=ids)))
    _write(tmp_path / "c", shorter)
    before, after = _digests(tmp_path / "a"), _digests(tmp_path / "c")
    assert before[0] != after[0]
    assert after[-(len(before) - 2) :] == before[2:]


def _change(table: pa.Table, kind: str, files: list[Path], seed: int = 7) -> tuple[pa.Table, list[str]]:
    """(delta rows, identifiers to drop) for one kind of change, as a raw refresh reads it: every changed row's
    identifier is dropped and the row comes back in the delta."""
    rng = random.Random(seed)
    ids = table["identifier"].to_pylist()
    rows = table.to_pylist()
    delta: list[dict] = []
    drop: list[str] = []
    n = len(ids)
    if kind == "nothing":
        pass
    elif kind == "overlap":  # re-read rows that did not change (the refresh's overlap window)
        picked = rows[n // 2 : n // 2 + 25] + rows[-10:]
        delta, drop = picked, [r["identifier"] for r in picked]
    elif kind == "clustered":  # a re-ingested day, a withdrawn batch, today's new rows
        upd = [dict(r, title=r["title"] + " (edited)") for r in rows[n // 3 : n // 3 + 30]]
        delta = upd + _rows(40, seed=99, start=10**6).to_pylist()
        drop = [r["identifier"] for r in upd] + ids[2 * n // 3 : 2 * n // 3 + 20]
    elif kind == "random":
        picked = rng.sample(range(n), 60)
        upd = [dict(rows[i], title="edited") for i in picked[:30]]
        delta = upd + _rows(30, seed=98, start=rng.randint(0, n // 3)).to_pylist()
        drop = [ids[i] for i in picked]
    elif kind == "moves":  # an update that changes the sort key: the row leaves its file for another
        moved = [dict(r, created_on=T0 + timedelta(days=400)) for r in rows[100:105]]
        delta, drop = moved, [r["identifier"] for r in moved]
    elif kind == "file_edges":  # the first row of the second file and the last row of the first
        w_first = pq.ParquetFile(files[1]).read_row_group(0).slice(0, 1).to_pylist()[0]
        i = ids.index(w_first["identifier"])
        drop = [ids[i], ids[i - 1]]
        delta = [dict(rows[i - 1], title="edge")]
    elif kind == "before_everything":
        early = _rows(5, seed=97).to_pylist()
        for r in early:
            r["created_on"] = T0 - timedelta(days=1)
        delta = early
    elif kind == "all_gone":
        drop = ids
    else:
        raise AssertionError(kind)
    return pa.Table.from_pylist(delta, schema=SCHEMA), drop


@pytest.mark.parametrize(
    "kind", ["nothing", "overlap", "clustered", "random", "moves", "file_edges", "before_everything", "all_gone"]
)
def test_merge_equals_a_from_scratch_write_and_keeps_untouched_files(tmp_path: Path, kind: str):
    table = _rows(N, nulls=7)
    _write(tmp_path / "prev", table)
    files = sorted((tmp_path / "prev").glob("part-*.parquet"))
    delta, drop = _change(table, kind, files)
    drop_arr = pa.array(drop, pa.large_string())
    expected = sort_by_key(
        pa.concat_tables([table.filter(pc.invert(pc.is_in(table["identifier"], value_set=drop_arr))), delta]),
        ORDER_KEY,
    )
    _write(tmp_path / "scratch", expected)

    writer = ShardWriter(tmp_path / "merged", SCHEMA, sorting=ORDER_KEY, **KW)
    decoded: list[Path] = []

    def read(f: Path, groups: list[int]):
        if f not in decoded:
            decoded.append(f)
        return pq.ParquetFile(f).iter_batches(batch_size=500, row_groups=groups)

    stats = merge_into(writer, files, delta, ORDER_KEY, drop_arr, read)
    writer.close()
    assert _digests(tmp_path / "merged") == _digests(tmp_path / "scratch")
    assert stats.files_kept + stats.files_rewritten == len(files) and len(decoded) == stats.files_rewritten
    assert stats.rows_kept + stats.rows_copied + stats.rows_rewritten == table.num_rows
    assert set(writer.adopted.values()) == set(files) - set(decoded)
    for name, src in writer.adopted.items():  # kept files are the previous files themselves, linked
        assert (tmp_path / "merged" / name).stat().st_ino == src.stat().st_ino
    if kind in ("nothing", "overlap"):
        assert stats.files_kept == len(files)  # nothing to encode again
    if kind == "clustered":  # three places touched: the rest is kept, and most groups of the touched files too
        assert stats.files_rewritten <= 6 and stats.files_kept >= len(files) - 6
        assert stats.groups_copied > 0 and stats.rows_copied > stats.rows_rewritten
    if kind == "all_gone":
        assert stats.files_kept == 0 and not list((tmp_path / "merged").glob("*.parquet"))


def _group_digests(path: Path) -> list[str]:
    """sha256 of each row group's column-chunk bytes (its pages, dictionary pages included)."""
    md, data = pq.ParquetFile(path).metadata, path.read_bytes()
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        cols = [rg.column(c) for c in range(rg.num_columns)]
        starts = [min(o for o in (c.dictionary_page_offset, c.data_page_offset) if o) for c in cols]
        end = max(s + c.total_compressed_size for s, c in zip(starts, cols, strict=True))
        out.append(hashlib.sha256(data[min(starts) : end]).hexdigest())
    return out


def test_a_changed_row_group_leaves_the_next_groups_bytes_alone(tmp_path: Path):
    """The next group's pages keep their bytes after rows near the end of an earlier group of the same file are
    removed: Arrow's page chunker, which carries its state across groups, is off (with it on, this fails), so the
    Hub deduplicates every group the change missed."""
    rng = random.Random(5)
    table = _rows(40_000)  # groups of ~1 MB of titles: several of Arrow's chunks (256 KiB at least) each
    table = table.set_column(
        2, "title", pa.array(["x" * rng.randint(0, 200) for _ in range(40_000)], pa.large_string())
    )
    kw = {"shard_bytes": 1 << 40, "row_group_rows": 16_000}

    def write(folder: Path, t: pa.Table) -> list[str]:
        w = ShardWriter(folder, SCHEMA, sorting=ORDER_KEY, **kw)
        w.write(t)
        w.close()
        return _group_digests(folder / "part-00000.parquet")

    before = write(tmp_path / "a", table)
    first = pq.ParquetFile(tmp_path / "a" / "part-00000.parquet").metadata.row_group(0).num_rows
    gone = table["identifier"].slice(first - 11, 10)  # the group still ends at the same row
    after = write(tmp_path / "b", table.filter(pc.invert(pc.is_in(table["identifier"], value_set=gone))))
    assert len(before) == len(after) >= 3
    assert before[0] != after[0] and before[1:] == after[1:]
