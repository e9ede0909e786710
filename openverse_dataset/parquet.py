"""One Parquet writer for every stage: deterministic, size-bounded shards with the Hub's settings.

Rows are regrouped into row groups bounded in rows and in text bytes (counted per row) whatever batch sizes
arrive, so the same rows in the same order give byte-identical files whichever reader produced them. zstd,
page index (the dataset viewer needs it for large files) and content-defined row-group and shard boundaries (the
Hub's Xet storage deduplicates unchanged regions, and a merge keeps untouched files whole).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from openverse_dataset import progress
from openverse_dataset.rowgroups import Group, GroupFile, empty_footer, encode_group, groups_of, read_footer

DEFAULT_ROW_GROUP_ROWS = 100_000  # the most rows in a row group (content-defined cuts average about half)
# Raw extracts (internal files, read only by the clean step): 25k-row groups. The writer holds one group being
# filled and one being encoded, so at 100k rows Flickr's extract peaked at 379 MiB and its incremental merge at
# 482 MiB (2M-row catalog, outside Dagster); at 25k, 311 and 409 MiB, the extract no slower (10.9 s vs 11.9 s).
RAW_ROW_GROUP_ROWS = 25_000
# The largest a shard gets (encoded bytes). Shards end at content-defined points past a quarter of it, so they
# average about half of it: ~32 MB files. Small enough that a refresh re-encodes only the files a change touches
# (a file no change touches is kept as it is, see `merge_into`), big enough for the Hub (an 800M-row release is
# ~4k files, under 1k in the biggest folder; the limits are 10k a folder, 100k a repo).
DEFAULT_SHARD_BYTES = 64 * 1024 * 1024
# A row group also ends once its rows' text reaches this many bytes (a few rows of 10 MB titles would otherwise
# make a 100k-row group of gigabytes). Counted per row, so the boundaries depend only on the rows.
DEFAULT_ROW_GROUP_BYTES = 128 * 1024 * 1024
# Every stage's row order within a partition: ingestion order, so rows a later ingestion adds land at the end.
ORDER_KEY = ("created_on", "identifier")
# The column whose values decide where row groups and shards end (content-defined: see `ShardWriter`).
CUT_COLUMN = "identifier"
# Bump when the boundary rule or the shard size semantics change: outputs of another layout are never merged into.
BOUNDARY_RULE = "cdc1"

WRITER_OPTIONS = {
    "compression": "zstd",
    # Level 1, not 3: on raw catalog rows it encodes ~25% faster and, with dictionaries only where values
    # repeat (below), files came out 7% smaller than level 3 with dictionaries everywhere.
    "compression_level": 1,
    "write_page_index": True,
    # Off: Arrow's page-level chunker carries its state from one row group into the next (pyarrow 26: a changed
    # group changed the following groups' pages too), while the row groups here are content-defined themselves
    # (`ShardWriter`), so a group's bytes depend on its rows alone and an unchanged group keeps every byte. On the
    # 2M-row benchmark's clustered change set: 10.3% new chunk bytes off, 11.3% on, and encoding 16% faster off.
    "use_content_defined_chunking": False,
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
    """Writes record batches into `folder/<prefix>-00000.parquet`, `-00001`, ... with content-defined boundaries.

    Where a row group or a shard ends depends only on the rows since the shard began, never on their position in
    the partition: a row group ends after a row whose `CUT_COLUMN` hash matches once it holds a quarter of
    `row_group_rows` (at `row_group_rows`, or when its text reaches `row_group_bytes`, at the latest), and a shard
    ends after a row group whose last row's hash matches once the shard is a quarter of `shard_bytes` (with a
    chance proportional to the group's bytes; at `shard_bytes` at the latest). So after an insertion or a removal
    the boundaries fall back into step within a group or a shard, and every later page and file keeps its bytes:
    the Hub's chunk deduplication sees them unchanged, and a merge can keep an untouched file as it is, and an
    untouched row group of a touched file (`merge_into`): a shard it copies groups into is assembled by
    `rowgroups.GroupFile` from copied groups and groups pyarrow encoded on their own, which gives the bytes
    pyarrow writes for the same rows. Without a `CUT_COLUMN` in the schema, row groups are cut at
    `row_group_rows`.
    """

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
        self._cut_column = CUT_COLUMN if CUT_COLUMN in schema.names else None
        self._min_rows = max(1, row_group_rows // 4)
        self._cut_every = max(1, row_group_rows // 4)  # a row past the minimum ends the group with this odds
        self.shards: list[ShardInfo] = []
        self.adopted: dict[str, Path] = {}  # shard name -> the file it was linked from (`adopt`)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._sizes: list[np.ndarray] = []  # each pending row's text bytes, in row order
        self._hashes: list[np.ndarray] = []  # each pending row's cut hash, in row order
        # A shard is written by pyarrow directly (`_writer`), or, when a merge copies row groups into it,
        # assembled group by group (`_file`, `rowgroups.GroupFile`): the two give the same bytes (tested).
        self.assemble = False  # how the next shard is written; set by `merge_into`
        self._writer: pq.ParquetWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._file: GroupFile | None = None
        self._template: list | None = None  # an assembled shard's footer before its groups (`empty_footer`)
        self._scratch = self.folder / f".{prefix}-group.tmp"  # where an assembled shard's new groups are encoded
        sort = {"sorting_columns": self.sorting} if self.sorting else {}
        self._options = {**writer_options(schema), **sort}  # pyarrow's settings, the same for every group
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
            if self._cut_column is not None:
                self._hashes.append(cut_hashes(b.column(self._cut_column)))
        while (n := self._next_group()) is not None:
            self._flush(n)

    def _next_group(self, final: bool = False) -> int | None:
        """Rows in the next row group: up to the first content-defined cut past the minimum, at most `row_group_rows`,
        fewer when one more row would take their text past `row_group_bytes` (a row over the bound alone is a
        group); None while the pending rows hold no cut and do not fill a group."""
        if not self._pending_rows:
            return None
        sizes = np.concatenate(self._sizes)[: self.row_group_rows]
        fits = int(np.searchsorted(np.cumsum(sizes), self.row_group_bytes, side="right"))
        limit = max(fits, 1) if fits < len(sizes) else None  # the next row would cross the bound: end before it
        if self._cut_column is not None:
            hashes = np.concatenate(self._hashes)[self._min_rows - 1 : limit or self.row_group_rows]
            hits = np.flatnonzero(hashes % np.uint64(self._cut_every) == 0)
            if len(hits):
                return int(hits[0]) + self._min_rows
        if limit is not None:
            return limit
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
        last_hash = None
        if self._cut_column is not None:
            hashes = np.concatenate(self._hashes)
            last_hash = int(hashes[n - 1])
            self._hashes = [hashes[n:]] if len(hashes) > n else []
        del tail
        if self._writer is None and self._file is None:
            if self.assemble:
                self._open_assembled()
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                path = self.folder / self._next_name()
                self._sink = pa.OSFile(str(path), "wb")  # native file: page writes never wait for the GIL
                self._writer = pq.ParquetWriter(self._sink, self.schema, **self._options)
        if self._file is not None:
            encoded = encode_group(group, self.schema, self._scratch, **self._options)
            del group
            self._append(encoded, last_hash)
            return
        before = self._sink.tell()
        self._writer.write_table(group, row_group_size=n)
        del group
        self._rows_in_shard += n
        self.rows += n
        if self._shard_ends(self._sink.tell(), self._sink.tell() - before, last_hash):
            self._close_shard()

    def _append(self, group: Group, last_hash: int | None) -> None:
        """Place an encoded or copied row group at the end of the assembled shard, then end the shard where the
        rule says."""
        size = self._file.append(group)
        self._rows_in_shard += group.rows
        self.rows += group.rows
        if self._shard_ends(size, group.size, last_hash):
            self._close_shard()

    def _shard_ends(self, size: int, group_bytes: int, last_hash: int | None) -> bool:
        """Whether the shard ends after this row group: at `shard_bytes`, or past a quarter of it when the group's
        last row's hash (its high 32 bits, independent of the row-group cut) falls under the group's share of a
        quarter: about one cut per quarter `shard_bytes` of groups, so shards average about half of it."""
        if size >= self.shard_bytes:
            return True
        quarter = self.shard_bytes // 4
        if last_hash is None or size < quarter:
            return False
        return (last_hash >> 32) * quarter < group_bytes << 32

    def _next_name(self) -> str:
        return f"{self.prefix}-{len(self.shards):05d}.parquet"

    def _close_shard(self) -> None:
        if self._file is not None:
            size = self._file.close()
        else:
            assert self._writer is not None and self._sink is not None
            self._writer.close()
            size = self._sink.tell()
            self._sink.close()
        self.shards.append(ShardInfo(self._next_name(), self._rows_in_shard, size))
        self._writer, self._sink, self._file, self._rows_in_shard = None, None, None, 0

    def at_boundary(self) -> bool:
        """No shard open and no row pending: the next row starts a shard, as it would after a content-defined end."""
        return self._writer is None and self._file is None and not self._pending_rows

    def can_copy(self) -> bool:
        """Whether `copy_group` may be called now: between row groups of an assembled shard, or between shards
        with `assemble` set."""
        if self._pending_rows:
            return False
        return self._file is not None or (self._writer is None and self.assemble)

    @property
    def cut_column(self) -> str | None:
        """The column whose values cut row groups (`CUT_COLUMN` when the schema has it)."""
        return self._cut_column

    def ends_itself(self, ids: pa.Array | pa.ChunkedArray) -> bool:
        """Whether a row group of these `CUT_COLUMN` values (in row order), written by this writer's rules, ended
        where it did whatever row came next: at a content-defined cut (its last row's hash matches) or at
        `row_group_rows`. Only such a group can be copied (`copy_group`): one ended by the text-bytes bound
        depends on the size of the row after it."""
        n = len(ids)
        if self._cut_column is None or n == 0:
            return False
        if n == self.row_group_rows:
            return True
        return n >= self._min_rows and int(cut_hashes(ids[n - 1 :])[0]) % self._cut_every == 0

    def copy_group(self, group: Group, last_hash: int) -> None:
        """Take a row group of a previous shard as the next one, byte for byte, without decoding it.

        Only valid when `can_copy`, and for a group that `ends_itself` and whose rows are exactly what would be
        written next (the caller checks; `merge_into` does): the writer would then encode the same rows into the
        same group bytes. `last_hash`: the cut hash of its last row (decides the shard's end, as when written).
        """
        assert self.can_copy(), "copy_group() between row groups of an assembled shard only"
        if self._file is None:
            self._open_assembled()
        self._append(group, last_hash)

    def _open_assembled(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._template is None:
            self._template = empty_footer(self.schema, **self._options)
        self._file = GroupFile(self.folder / self._next_name(), self._template)

    def adopt(self, path: Path, rows: int) -> None:
        """Take an existing shard as the next one, by hard link (a copy across file systems), without decoding it.

        Only valid `at_boundary` and for a file this writer's rules would write byte for byte from the same rows
        (the caller checks the rows; `merge_into` does): a file the writer ended at a content-defined boundary
        of its own, from a shard start.
        """
        assert self.at_boundary(), "adopt() between shards only"
        self.folder.mkdir(parents=True, exist_ok=True)
        dest = self.folder / self._next_name()
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)
        self.adopted[dest.name] = Path(path)
        self.shards.append(ShardInfo(dest.name, rows, dest.stat().st_size))
        self.rows += rows

    def close(self) -> list[ShardInfo]:
        """Write what is buffered and close the open shard; returns every shard written."""
        while (n := self._next_group(final=True)) is not None:
            self._flush(n)
        if self._writer is not None or self._file is not None:
            self._close_shard()
        self._scratch.unlink(missing_ok=True)
        return self.shards

    def abort(self) -> None:
        """Close handles after a failure (the caller discards the staging folder)."""
        if self._file is not None:
            self._file.abort()
            self._file = None
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._sink.close()
            self._writer = None
        self._scratch.unlink(missing_ok=True)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_CUT_BYTES = 16  # a uuid's last 16 characters hold 60 random bits; the length counts too


def cut_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash of each string (its last 16 bytes and its length; NULL is one fixed value).

    Plain numpy, so the same rows give the same boundaries on every machine and library version (polars' and
    DuckDB's hashes promise no such thing). FNV-1a over the bytes, then splitmix64's finalizer to spread them.
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    ends, lengths = offsets[1:], offsets[1:] - offsets[:-1]
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    shortest = int(lengths.min())
    with np.errstate(over="ignore"):
        for k in range(1, _CUT_BYTES + 1):
            if k <= shortest:  # every string has a k-th last byte (all of a uuid column's do)
                h = (h ^ data[ends - k].astype(np.uint64)) * _FNV_PRIME
                continue
            has = lengths >= k  # shorter strings stop here: a value's hash never depends on its neighbours
            if not has.any():
                break
            byte = data[np.where(has, ends - k, 0)].astype(np.uint64)
            h = np.where(has, (h ^ byte) * _FNV_PRIME, h)
        h ^= lengths.astype(np.uint64)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    if arr.null_count:
        h[np.asarray(arr.is_null())] = np.uint64(0x9E3779B97F4A7C15)
    return h


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
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):
        return table  # already in order (the stable sort keeps it): no copy of a change set the caller still holds
    return table.take(order)


def _at_or_before(delta: pa.Table, key: Sequence[str], last: Sequence, inclusive: bool = True) -> int:
    """How many leading rows of the sorted `delta` sort at or before the key value `last` (strictly before it
    when not `inclusive`), nulls last."""
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
        return inclusive

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


def layout_settings(settings: dict) -> dict:
    """Writer settings plus what else decides a file's bytes (the boundary rule, pyarrow's encoder): a merge keeps
    previous files only when all of it is unchanged, so state records compare this, not the settings alone."""
    options = ",".join(f"{k}={WRITER_OPTIONS[k]}" for k in sorted(WRITER_OPTIONS))
    return {**settings, "boundary_rule": BOUNDARY_RULE, "writer": options, "pyarrow": pa.__version__}


def identifier_groups(
    files: Sequence[Path], column: str = "identifier"
) -> Iterator[tuple[pq.ParquetFile, int, pa.ChunkedArray]]:
    """(file, row group, its `column`) for every row group: lookups by identifier read one group's column at a
    time, never the partition's identifiers (~45 bytes each, ~250 MB at 5.6M rows)."""
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            yield pf, g, pf.read_row_group(g, columns=[column])[column]


def _head(path: Path, key: Sequence[str]) -> tuple[list, int]:
    """A shard's first key value and its rows, from one footer read and its first row group's key columns."""
    pf = pq.ParquetFile(path)
    head = pf.read_row_group(0, columns=list(key)).slice(0, 1)
    return [head.column(k)[0].as_py() for k in key], pf.metadata.num_rows


@dataclass
class MergeStats:
    """What a merge did with the previous files: kept as they were, or decoded and written again (in part: the
    untouched row groups of a rewritten file are copied byte for byte)."""

    files_kept: int = 0
    files_rewritten: int = 0
    rows_kept: int = 0
    rows_rewritten: int = 0  # rows decoded and encoded again
    groups_copied: int = 0  # row groups of rewritten files copied as they were
    rows_copied: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: MergeStats) -> None:
        """Sum another merge's counts into these (a provider's slices, a partition's license folders)."""
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


Reader = Callable[[Path, list[int]], Iterable[pa.RecordBatch]]


def merge_into(
    writer: ShardWriter,
    files: Sequence[Path],
    delta: pa.Table,
    key: Sequence[str],
    drop: pa.Array | None,
    read: Reader,
    drop_column: str = "identifier",
) -> MergeStats:
    """`merge_sorted` of the previous shards `files` (in order) with `delta`, keeping untouched shards as they are
    and copying the untouched row groups of the others.

    A shard is untouched when no row of it is dropped or replaced by a different row, and no new row sorts into
    its key range (from its first row to the next shard's first row). Because `writer` cuts shards at
    content-defined points, such a shard reached while the writer is between shards is exactly the file the writer
    would write from its rows, so it is linked, not decoded and encoded again. Within a touched shard the same
    holds one level down: an untouched row group reached while the writer is between groups, and that ended at a
    cut of its own (`ShardWriter.ends_itself`), is copied byte for byte; the others are decoded (`read(file,
    [group])`), merged and encoded. The result is byte-identical to writing every row (the tests compare the
    two), at a cost proportional to the row groups the change touches. The last shard is kept only when nothing
    sorts after it (rows appended to the end make it longer).
    """
    stats = MergeStats()
    delta = sort_by_key(delta, key)
    drop = (drop if drop is not None else pa.array([], pa.string())).cast(pa.large_string())  # cast once
    heads = [_head(f, key) for f in files]
    for i, (f, (_, rows)) in enumerate(zip(files, heads, strict=True)):
        n = _at_or_before(delta, key, heads[i + 1][0], inclusive=False) if i + 1 < len(files) else delta.num_rows
        part, delta = delta.slice(0, n), delta.slice(n)
        ids: list[pa.ChunkedArray] = []  # the file's `drop_column`, group by group, as far as the check read it

        def groups(f: Path = f, ids: list = ids) -> Iterator[tuple[pq.ParquetFile, int, pa.ChunkedArray]]:
            for pf, g, col in identifier_groups([f], drop_column):
                ids.append(col)
                yield pf, g, col

        if writer.at_boundary() and _unchanged_rows(part, key, drop, drop_column, groups()):
            writer.adopt(f, rows)
            stats.files_kept += 1
            stats.rows_kept += rows
            continue
        copied = _merge_file(writer, f, part, key, drop, drop_column, read, stats, ids)
        stats.files_rewritten += 1
        stats.rows_rewritten += rows - copied
    if delta.num_rows:  # no previous file at all
        writer.write(delta)
    return stats


def _merge_file(
    writer: ShardWriter,
    path: Path,
    part: pa.Table,
    key: Sequence[str],
    drop: pa.Array,
    drop_column: str,
    read: Reader,
    stats: MergeStats,
    ids: list[pa.ChunkedArray],
) -> int:
    """Merge `part` into one previous shard group by group; returns the rows copied without decoding. `ids`: the
    file's `drop_column` for its first groups, as the whole-file check already read it (not read again)."""
    pf = pq.ParquetFile(path)
    cut = writer.cut_column
    others = [c for c in dict.fromkeys([*key, *([cut] if cut else [])]) if c != drop_column]
    keyed = []
    for g in range(pf.num_row_groups):
        t = pf.read_row_group(g, columns=others)
        col = ids[g] if g < len(ids) else pf.read_row_group(g, columns=[drop_column])[drop_column]
        keyed.append(t.append_column(drop_column, col))
    firsts = [[t.column(k)[0].as_py() for k in key] for t in keyed]
    parts = []
    for g in range(len(keyed)):
        n = _at_or_before(part, key, firsts[g + 1], inclusive=False) if g + 1 < len(keyed) else part.num_rows
        parts.append(part.slice(0, n))
        part = part.slice(n)
    # Groups that could be copied: ended at a cut of their own, rows unchanged. Whether one is copied also
    # depends on where the writer stands when it gets there.
    copyable = [
        bool(cut)
        and writer.ends_itself(t.column(cut))
        and _unchanged_rows(gpart, key, drop, drop_column, [(pf, g, t.column(drop_column))])
        for g, (t, gpart) in enumerate(zip(keyed, parts, strict=True))
    ]
    if writer.at_boundary():  # a shard is assembled only when it may receive a copy (pyarrow writes the rest)
        writer.assemble = any(copyable)
    copied = 0
    with open(path, "rb") as fh:
        footer = None
        g = 0
        while g < len(keyed):
            if copyable[g] and writer.can_copy():
                footer = footer if footer is not None else read_footer(fh)
                ids = keyed[g].column(cut)
                writer.copy_group(groups_of(fh, footer, path, [g])[0], int(cut_hashes(ids[len(ids) - 1 :])[0]))
                stats.groups_copied += 1
                stats.rows_copied += keyed[g].num_rows
                copied += keyed[g].num_rows
                g += 1
                continue
            # Decoded: this group and the run of groups up to the next copyable one, in one read.
            end = next((k for k in range(g + 1, len(keyed)) if copyable[k]), len(keyed))
            run = pa.concat_tables(parts[g:end]) if end - g > 1 else parts[g]
            for table in merge_sorted(read(path, list(range(g, end))), run, key, drop, drop_column):
                writer.write(table)
            g = end
    return copied


def _unchanged_rows(
    part: pa.Table,
    key: Sequence[str],
    drop: pa.Array,
    drop_column: str,
    groups: Iterable[tuple[pq.ParquetFile, int, pa.ChunkedArray]],
) -> bool:
    """Whether merging `part` into these row groups (dropping `drop`, large strings) leaves their rows exactly as
    they are: every dropped row they hold comes back unchanged in `part`, and `part` holds nothing else.

    Cheapest test first, so that a file a change does reach costs little more than its rewrite: a new row in
    `part` decides at once; then the groups' identifiers are looked at one group at a time, stopping as soon as
    they hold more dropped rows than `part` brings back; only when the counts match are those rows read and
    compared.
    """
    if not len(drop):
        return part.num_rows == 0
    if part.num_rows and not pc.all(pc.is_in(part[drop_column], value_set=drop)).as_py():
        return False  # a row that was not in the partition sorts into this file
    hit: list[tuple[pq.ParquetFile, int, pa.Array]] = []
    found = 0
    for pf, g, col in groups:
        mask = pc.is_in(col, value_set=drop)
        n = pc.sum(mask).as_py() or 0
        if n:
            found += n
            if found > part.num_rows:
                return False  # a row of this file is dropped for good
            hit.append((pf, g, mask))
    if found != part.num_rows:
        return False
    if not found:
        return True
    # A changed row (not an overlap re-read) differs in `updated_on`: compare that narrow projection before
    # decoding whole groups, which a change spread over every group would otherwise do for each one.
    narrow = list(dict.fromkeys([drop_column, *key, *(["updated_on"] if "updated_on" in part.schema.names else [])]))
    for columns in (narrow, None):
        old = sort_by_key(
            pa.concat_tables([pf.read_row_group(g, columns=columns).filter(m) for pf, g, m in hit]), key
        ).combine_chunks()
        new = part.select(old.schema.names).cast(old.schema).combine_chunks()
        if not old.equals(new):
            return False
    return True
