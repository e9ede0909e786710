"""One Parquet writer for every stage: deterministic, size-bounded shards with the Hub's settings.

Rows are regrouped into fixed-size row groups whatever batch sizes arrive, so the same rows in the same order
give byte-identical files whichever reader produced them. zstd, page index (the dataset viewer needs it for
large files) and content-defined chunking (the Hub's Xet storage deduplicates unchanged regions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openverse_dataset import progress

DEFAULT_ROW_GROUP_ROWS = 100_000
DEFAULT_SHARD_BYTES = 384 * 1024 * 1024
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
    ) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.prefix = prefix
        self.shard_bytes = shard_bytes
        self.row_group_rows = row_group_rows
        self.shards: list[ShardInfo] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
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
        while self._pending_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

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
        del tail
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.prefix}-{len(self.shards):05d}.parquet"
            self._sink = pa.OSFile(str(path), "wb")  # native file: page writes never wait for the GIL
            self._writer = pq.ParquetWriter(self._sink, self.schema, **writer_options(self.schema))
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
        if self._pending_rows:
            self._flush(self._pending_rows)
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
