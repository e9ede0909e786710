"""One Parquet writer for every stage: deterministic, size-bounded shards with the Hub's settings.

Rows are regrouped into row groups bounded in rows and in text bytes (counted per row) whatever batch sizes
arrive, so the same rows in the same order give byte-identical files whichever reader produced them. zstd,
page index (the dataset viewer needs it for large files) and content-defined chunking (the Hub's Xet storage
deduplicates unchanged regions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openverse_dataset import progress

DEFAULT_ROW_GROUP_ROWS = 100_000
# Raw extracts (internal files, read only by the clean step): 25k-row groups. The writer holds one group being
# filled and one being encoded, so at 100k rows Flickr's extract peaked at 379 MiB and its incremental merge at
# 482 MiB (2M-row catalog, outside Dagster); at 25k, 311 and 409 MiB, the extract no slower (10.9 s vs 11.9 s).
RAW_ROW_GROUP_ROWS = 25_000
DEFAULT_SHARD_BYTES = 384 * 1024 * 1024
# A row group also ends once its rows' text reaches this many bytes (a few rows of 10 MB titles would otherwise
# make a 100k-row group of gigabytes). Counted per row, so the boundaries depend only on the rows.
DEFAULT_ROW_GROUP_BYTES = 128 * 1024 * 1024
# Every stage's row order within a partition: ingestion order, so rows a later ingestion adds land at the end.
ORDER_KEY = ("created_on", "identifier")

WRITER_OPTIONS = {
    "compression": "zstd",
    # Level 1, not 3: on raw catalog rows it encodes ~25% faster and, with dictionaries only where values
    # repeat (below), files came out 7% smaller than level 3 with dictionaries everywhere.
    "compression_level": 1,
    "write_page_index": True,
    "use_content_defined_chunking": True,
    "write_statistics": True,
}

# Columns whose values repeat (a few licenses, providers, file types...): dictionary-encoded. The rest
# (identifiers, URLs, titles, JSON text) are nearly unique: a dictionary attempt there only costs CPU before
# the writer falls back to plain encoding.
DICTIONARY_COLUMNS = frozenset(
    {
        "provider", "source", "ingestion_type", "license", "license_version", "license_jurisdiction",
        "license_url", "filetype", "category", "watermarked", "removed_from_source", "width", "height",
        "reason", "raw_license", "raw_license_version", "sample_rate", "bit_rate", "audio_set",
    }
)  # fmt: skip


def _large(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return (pa.large_list if pa.types.is_large_list(t) else pa.list_)(_large(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_large(f.type)) for f in t])
    return t


def large_types(schema: pa.Schema) -> pa.Schema:
    """`schema` with every string (top level, in lists and structs) as `large_string`: one string type in every
    file of every stage, and no 2 GiB offset limit per column chunk (a few rows of 10 MB titles overflowed it)."""
    return pa.schema([f.with_type(_large(f.type)) for f in schema], metadata=schema.metadata)


def writer_options(schema: pa.Schema) -> dict:
    """Writer settings for one schema: the shared options plus dictionaries for its repeating columns."""
    return {**WRITER_OPTIONS, "use_dictionary": [n for n in schema.names if n in DICTIONARY_COLUMNS]}


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: its name inside the folder, rows and bytes."""

    name: str
    rows: int
    bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


class ShardWriter:
    """Writes record batches into `folder/<prefix>-00000.parquet`, `-00001`, ... rotating at `shard_bytes`."""

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        *,
        prefix: str = "part",
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        sorting: Sequence[str] = (),
    ) -> None:
        """`sorting`: the columns the caller's rows are ordered by (ascending, nulls last), declared in every row
        group's metadata (`sorting_columns`) so readers can rely on it; only pass it when the rows are in it."""
        self.folder = Path(folder)
        self.sorting = [pq.SortingColumn(schema.get_field_index(c), nulls_first=False) for c in sorting]
        self.schema = schema
        self.prefix = prefix
        self.shard_bytes = shard_bytes
        self.row_group_rows = row_group_rows
        self.row_group_bytes = DEFAULT_ROW_GROUP_BYTES  # read at construction: tests lower the module default
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._sizes: list[np.ndarray] = []  # each pending row's text bytes, in row order
        self._writer: pq.ParquetWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._rows_in_shard = 0
        self.rows = 0

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        """Buffer rows; full row groups are written as soon as they are complete."""
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        for b in batches:
            if b.num_rows == 0:
                continue
            if b.schema != self.schema:
                b = b.select(self.schema.names).cast(self.schema)
            self._pending.append(b)
            self._pending_rows += b.num_rows
            self._sizes.append(row_bytes(b))
        while (n := self._next_group()) is not None:
            self._flush(n)

    def _next_group(self, final: bool = False) -> int | None:
        """Rows in the next full row group: `row_group_rows`, or fewer when one more row would take their text past
        `row_group_bytes` (a row over the bound alone is a group); None while the pending rows do not fill one."""
        if not self._pending_rows:
            return None
        sizes = np.concatenate(self._sizes)[: self.row_group_rows]
        fits = int(np.searchsorted(np.cumsum(sizes), self.row_group_bytes, side="right"))
        if fits < len(sizes):  # the next row would cross the bound: end the group before it (one row at least)
            return max(fits, 1)
        if self._pending_rows >= self.row_group_rows:
            return self.row_group_rows
        return self._pending_rows if final else None

    def _flush(self, n: int) -> None:
        # One contiguous row group whatever batches arrived: page and CDC boundaries then depend only on the rows.
        # Columns are combined one at a time and the incoming chunks of each are released as soon as it is
        # copied, so the peak is one row group plus one column, not two row groups.
        pending = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending = []
        heads, tails = [], []
        for _ in range(pending.num_columns):
            col = pending.column(0)
            heads.append(col.slice(0, n).combine_chunks())
            tails.append(col.slice(n))
            pending = pending.remove_column(0)
            del col
        group = pa.Table.from_arrays(heads, schema=self.schema)
        tail = pa.Table.from_arrays(tails, schema=self.schema)
        del heads, tails, pending
        self._pending = tail.to_batches()
        self._pending_rows = tail.num_rows
        rest = np.concatenate(self._sizes)[n:]
        self._sizes = [rest] if len(rest) else []
        del tail
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.prefix}-{len(self.shards):05d}.parquet"
            self._sink = pa.OSFile(str(path), "wb")  # native file: page writes never wait for the GIL
            sort = {"sorting_columns": self.sorting} if self.sorting else {}
            self._writer = pq.ParquetWriter(self._sink, self.schema, **writer_options(self.schema), **sort)
        self._writer.write_table(group, row_group_size=n)
        del group
        self._rows_in_shard += n
        self.rows += n
        if self._sink.tell() >= self.shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        assert self._writer is not None and self._sink is not None
        self._writer.close()
        size = self._sink.tell()
        self._sink.close()
        self.shards.append(ShardInfo(f"{self.prefix}-{len(self.shards):05d}.parquet", self._rows_in_shard, size))
        self._writer, self._sink, self._rows_in_shard = None, None, 0

    def close(self) -> list[ShardInfo]:
        """Write what is buffered and close the open shard; returns every shard written."""
        while (n := self._next_group(final=True)) is not None:
            self._flush(n)
        if self._writer is not None:
            self._close_shard()
        return self.shards

    def abort(self) -> None:
        """Close handles after a failure (the caller discards the staging folder)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._sink.close()
            self._writer = None


def row_bytes(batch: pa.RecordBatch) -> np.ndarray:
    """Each row's text bytes (string and binary columns, lists and structs of them) plus 8 per other column: an
    estimate of its share of a row group, from the values only."""
    total = np.zeros(batch.num_rows, dtype=np.int64)
    for col in batch.columns:
        total += _value_bytes(col)
    return total


def _value_bytes(arr: pa.Array) -> np.ndarray:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        # a list's values counted in bulk: its length times 32 (tags and genres are short), cheap for any size
        return pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64) * 32
    return np.full(len(arr), 8, dtype=np.int64)


def write_batches(folder: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch], **kw) -> list[ShardInfo]:
    """Write an iterable of batches as shards (convenience for small outputs and tests)."""
    w = ShardWriter(folder, schema, **kw)
    try:
        for b in batches:
            w.write(b)
        return w.close()
    except BaseException:
        w.abort()
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, streamed (reported as `hashing` progress: the CLI shows files and bytes)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    progress.report(progress.HASHING, files=1, nbytes=size)
    return h.hexdigest()


def sort_by_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """Rows in `key` order, nulls last (PostgreSQL's ascending order; uuids compare as their lowercase text)."""
    if table.num_rows < 2:
        return table
    order = pc.sort_indices(table, options=pc.SortOptions([(k, "ascending", "at_end") for k in key]))
    return table.take(order)


def _at_or_before(delta: pa.Table, key: Sequence[str], last: Sequence) -> int:
    """How many leading rows of the sorted `delta` sort at or before the key value `last`."""
    lo, hi = 0, delta.num_rows
    columns = [delta.column(k) for k in key]

    def before(i: int) -> bool:
        for col, bound in zip(columns, last, strict=True):
            v = col[i].as_py()
            if v == bound:
                continue
            if v is None:
                return False
            if bound is None:
                return True
            return v < bound
        return True

    while lo < hi:  # binary search: the delta is small and sorted, the comparisons are on Python values
        mid = (lo + hi) // 2
        if before(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


def merge_sorted(
    base: Iterable[pa.RecordBatch],
    delta: pa.Table,
    key: Sequence[str],
    drop: pa.Array | None = None,
    drop_column: str = "identifier",
) -> Iterator[pa.Table]:
    """Merge a stream already sorted by `key` (minus rows whose `drop_column` is in `drop`) with sorted `delta`.

    The result is the sorted union, produced batch by batch: memory is one base batch plus the delta, whatever
    the size of the base. Written with the same writer settings, it is byte-identical to writing the union
    sorted from scratch, which is what makes an incremental refresh equal to a full rebuild.
    """
    delta = sort_by_key(delta, key)
    for batch in base:
        if drop is not None and len(drop):
            batch = batch.filter(pc.invert(pc.is_in(batch[drop_column], value_set=drop)))
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        last = [table.column(k)[-1].as_py() for k in key]
        n = _at_or_before(delta, key, last)
        if n:
            table = sort_by_key(pa.concat_tables([table, delta.slice(0, n).cast(table.schema)]), key)
            delta = delta.slice(n)
        yield table
    if delta.num_rows:
        yield delta
