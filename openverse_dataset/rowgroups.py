"""Parquet row groups as movable units: read one out of a file as bytes, write files made of such units.

Why: a merge that touches one row group of a 64 MiB shard used to decode and encode the whole shard. Row groups
here are content-defined and independent (`parquet.ShardWriter`; Arrow's page-level chunking, which carries
state across groups, is off), so an untouched group can be copied byte for byte into the new file, as
`datasets`' append mode does (huggingface/datasets#8601). What has to change in a copied group is only where it
sits: the absolute file offsets in its footer entry (`RowGroup`/`ColumnChunk`/`ColumnMetaData`) and in its page
index (`OffsetIndex`). A shard that receives copied groups is assembled here (`GroupFile`), its other groups
encoded by pyarrow one at a time into a scratch file and copied in the same way; the page index and footer are
laid out as pyarrow lays them out, so the assembled file is byte for byte the file pyarrow writes for the same
rows (tested), which keeps an incremental merge byte-identical to a from-scratch write.

The footer is Thrift's compact protocol. The codec below is generic (every field is kept, in order, with its
type), so fields this module does not know pass through unchanged; only the offset fields listed are moved.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# Thrift compact protocol type codes.
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

# A struct is a list of [field id, type, value]; a list/set value is (element type, [values]); a map value is
# (key type, value type, [(key, value)]).
Struct = list


def _varint(b: bytes, i: int) -> tuple[int, int]:
    x = b[i]
    i += 1
    if x < 0x80:
        return x, i
    out, shift = x & 0x7F, 7
    while True:
        x = b[i]
        i += 1
        out |= (x & 0x7F) << shift
        if x < 0x80:
            return out, i
        shift += 7


def _unzig(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(b: bytes, i: int, t: int):
    if t in (_I16, _I32, _I64):
        n, i = _varint(b, i)
        return _unzig(n), i
    if t == _BINARY:
        n, i = _varint(b, i)
        return bytes(b[i : i + n]), i + n
    if t == _STRUCT:
        return read_struct(b, i)
    if t in (_LIST, _SET):
        return _read_list(b, i)
    if t == _MAP:
        size, i = _varint(b, i)
        if not size:
            return (0, 0, []), i
        kv = b[i]
        i += 1
        kt, vt = kv >> 4, kv & 0x0F
        pairs = []
        for _ in range(size):
            k, i = _value(b, i, kt)
            v, i = _value(b, i, vt)
            pairs.append((k, v))
        return (kt, vt, pairs), i
    if t == _BYTE:
        return struct.unpack_from("<b", b, i)[0], i + 1
    if t == _DOUBLE:
        return struct.unpack_from("<d", b, i)[0], i + 8
    raise ValueError(f"Parquet footer: unknown Thrift compact type {t}")


def _read_list(b: bytes, i: int) -> tuple[tuple[int, list], int]:
    """A list or set: (element type, [values]), each element decoded without a dispatch call where it can be."""
    h = b[i]
    i += 1
    size, et = h >> 4, h & 0x0F
    if size == 15:
        size, i = _varint(b, i)
    items: list = []
    append = items.append
    if et == _STRUCT:
        for _ in range(size):
            v, i = read_struct(b, i)
            append(v)
    elif et in (_I16, _I32, _I64):
        for _ in range(size):
            x, i = _varint(b, i)
            append(_unzig(x))
    elif et == _BINARY:
        for _ in range(size):
            n, i = _varint(b, i)
            append(b[i : i + n])
            i += n
    elif et in (_BOOL_TRUE, _BOOL_FALSE):
        for _ in range(size):
            append(b[i] == _BOOL_TRUE)
            i += 1
    else:
        for _ in range(size):
            v, i = _value(b, i, et)
            append(v)
    return (et, items), i


def read_struct(b: bytes, i: int = 0) -> tuple[Struct, int]:
    """Decode one compact-protocol struct at `b[i:]` (bytes); returns it and the position after it. The common
    types are decoded here rather than through `_value`: a shard's footer holds tens of thousands of values, and a
    merge reads several footers."""
    fields: Struct = []
    append = fields.append
    last = 0
    while True:
        h = b[i]
        i += 1
        if h == 0:
            return fields, i
        t = h & 0x0F
        if h >> 4:
            fid = last + (h >> 4)
        else:
            n, i = _varint(b, i)
            fid = _unzig(n)
        last = fid
        if t in (_I32, _I64, _I16):
            x, i = _varint(b, i)
            append([fid, t, _unzig(x)])
        elif t == _STRUCT:
            v, i = read_struct(b, i)
            append([fid, t, v])
        elif t == _BINARY:
            n, i = _varint(b, i)
            append([fid, t, b[i : i + n]])
            i += n
        elif t in (_BOOL_TRUE, _BOOL_FALSE):
            append([fid, _BOOL_TRUE, t == _BOOL_TRUE])
        elif t in (_LIST, _SET):
            v, i = _read_list(b, i)
            append([fid, t, v])
        else:
            v, i = _value(b, i, t)
            append([fid, t, v])


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector held off while a footer is decoded. A footer becomes tens of thousands of
    small lists, and an allocation burst sets off collections that walk the process's tracked objects (a run
    process holds Dagster's). 15 flickr footers (1.4 MB) took 0.58 s to decode with it running at CPython's
    default thresholds, 0.18 s with it held off; at the package's thresholds (`openverse_dataset.GC_THRESHOLD`),
    beside 1.5M live objects, 0.35-0.42 s against 0.28-0.34 s (decode and encode). The structures hold no cycles,
    so reference counting frees them all the same."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zig(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _put_value(out: bytearray, t: int, v) -> None:
    if t in (_I16, _I32, _I64):
        _put_varint(out, _zig(v))
    elif t == _BINARY:
        _put_varint(out, len(v))
        out += v
    elif t == _STRUCT:
        write_struct(out, v)
    elif t in (_LIST, _SET):
        et, items = v
        if len(items) < 15:
            out.append((len(items) << 4) | et)
        else:
            out.append(0xF0 | et)
            _put_varint(out, len(items))
        for item in items:
            if et in (_BOOL_TRUE, _BOOL_FALSE):
                out.append(_BOOL_TRUE if item else _BOOL_FALSE)
            else:
                _put_value(out, et, item)
    elif t == _MAP:
        kt, vt, pairs = v
        if not pairs:
            out.append(0)
            return
        _put_varint(out, len(pairs))
        out.append((kt << 4) | vt)
        for k, val in pairs:
            _put_value(out, kt, k)
            _put_value(out, vt, val)
    elif t == _BYTE:
        out += struct.pack("<b", v)
    elif t == _DOUBLE:
        out += struct.pack("<d", v)
    else:
        raise ValueError(f"Parquet footer: unknown Thrift compact type {t}")


def write_struct(out: bytearray, fields: Struct) -> None:
    """Encode a struct as Thrift's C++ compact writer does (short field headers when the id delta is 1..15)."""
    last = 0
    for fid, t, v in fields:
        wire = (_BOOL_TRUE if v else _BOOL_FALSE) if t == _BOOL_TRUE else t
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | wire)
        else:
            out.append(wire)
            _put_varint(out, _zig(fid))
        if t != _BOOL_TRUE:
            _put_value(out, t, v)
        last = fid
    out.append(0)


def encode(fields: Struct) -> bytes:
    out = bytearray()
    write_struct(out, fields)
    return bytes(out)


def decode(b: bytes) -> Struct:
    """The struct `b` holds (a whole footer or page-index entry)."""
    with _no_gc():
        return read_struct(bytes(b))[0]


def _get(fields: Struct, fid: int, default=None):
    for f, _, v in fields:
        if f == fid:
            return v
    return default


def _set(fields: Struct, fid: int, t: int, value) -> None:
    """Set a field, keeping fields in id order (as Thrift writes them)."""
    for f in fields:
        if f[0] == fid:
            f[1], f[2] = t, value
            return
    at = next((k for k, f in enumerate(fields) if f[0] > fid), len(fields))
    fields.insert(at, [fid, t, value])


def _drop(fields: Struct, *fids: int) -> None:
    fields[:] = [f for f in fields if f[0] not in fids]


def _shift(fields: Struct, fid: int, by: int) -> None:
    for f in fields:
        if f[0] == fid and f[2]:  # 0 means unset for the offsets moved here
            f[2] += by


# Field ids (parquet.thrift).
_FMD_NUM_ROWS, _FMD_ROW_GROUPS = 3, 4
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_OFFSET_INDEX_OFFSET, _CC_OFFSET_INDEX_LENGTH, _CC_COLUMN_INDEX_OFFSET, _CC_COLUMN_INDEX_LENGTH = 4, 5, 6, 7
_PAGE_INDEX_FIELDS = (4, 5, 6, 7)  # where a column chunk's page index is: set only where a file is assembled
_CMD_TOTAL_COMPRESSED, _CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM = 7, 9, 10, 11, 14
_OI_PAGES, _PL_OFFSET = 1, 1


@dataclass
class Group:
    """One row group of a file, ready to be placed anywhere in another: where its column chunks' bytes are
    (`source`, from `start`, `size` bytes; copied file to file by the kernel, never held in memory), and its footer
    and page-index entries with every offset as if the bytes began right after the leading magic (at 4, where a
    one-group file has them; 0 stays "unset")."""

    source: Path
    start: int
    size: int
    meta: Struct  # RowGroup, without page-index locations (set where the file is assembled) and ordinal
    column_index: list[bytes | None]  # per column, the ColumnIndex as encoded (it holds no offsets)
    offset_index: list[Struct | None]  # per column, the OffsetIndex (page offsets as in `meta`)

    @property
    def rows(self) -> int:
        return _get(self.meta, _RG_NUM_ROWS)


def _move_group(meta: Struct, offsets: list[Struct | None], by: int) -> None:
    _shift(meta, _RG_FILE_OFFSET, by)
    for cc in _get(meta, _RG_COLUMNS)[1]:
        _shift(cc, _CC_FILE_OFFSET, by)
        cmd = _get(cc, _CC_META)
        for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM):
            _shift(cmd, fid, by)
    for oi in offsets:
        if oi is not None:
            for loc in _get(oi, _OI_PAGES)[1]:
                _shift(loc, _PL_OFFSET, by)


def read_footer(f: BinaryIO) -> Struct:
    """The FileMetaData of an open Parquet file."""
    f.seek(-8, 2)
    tail = f.read(8)
    if tail[4:] != MAGIC:
        raise ValueError("not a Parquet file (no PAR1 at its end)")
    n = struct.unpack("<I", tail[:4])[0]
    f.seek(-8 - n, 2)
    return decode(f.read(n))


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def groups_of(f: BinaryIO, footer: Struct, path: Path, which: list[int] | None = None) -> list[Group]:
    """The row groups `which` (all by default) of the Parquet file `path`, open as `f`, each a movable `Group`.

    The groups take over (and change) their entries of `footer`: ask for each group of one parse once."""
    row_groups = _get(footer, _FMD_ROW_GROUPS, (_STRUCT, []))[1]
    out = []
    for g in range(len(row_groups)) if which is None else which:
        meta = row_groups[g]  # taken over (and changed): one footer parse serves each group once
        chunks = _get(meta, _RG_COLUMNS)[1]
        spans = []
        for cc in chunks:
            cmd = _get(cc, _CC_META)
            start = _get(cmd, _CMD_DICT_PAGE) or _get(cmd, _CMD_DATA_PAGE)
            spans.append((start, start + _get(cmd, _CMD_TOTAL_COMPRESSED)))
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        column_index, offset_index = [], []
        for cc in chunks:
            ci_at, ci_len = _get(cc, _CC_COLUMN_INDEX_OFFSET), _get(cc, _CC_COLUMN_INDEX_LENGTH)
            oi_at, oi_len = _get(cc, _CC_OFFSET_INDEX_OFFSET), _get(cc, _CC_OFFSET_INDEX_LENGTH)
            column_index.append(_read_at(f, ci_at, ci_len) if ci_at is not None else None)
            offset_index.append(decode(_read_at(f, oi_at, oi_len)) if oi_at is not None else None)
            _drop(cc, *_PAGE_INDEX_FIELDS)
        _drop(meta, _RG_ORDINAL)
        _move_group(meta, offset_index, len(MAGIC) - start)
        out.append(Group(path, start, end - start, meta, column_index, offset_index))
    return out


def read_groups(path: Path, which: list[int] | None = None) -> list[Group]:
    """Row groups of a Parquet file on disk (see `groups_of`)."""
    with open(path, "rb") as f:
        return groups_of(f, read_footer(f), path, which)


def encode_group(table: pa.Table, schema: pa.Schema, scratch: Path, **options) -> Group:
    """`table` as one row group, encoded by pyarrow with `options` into the file `scratch` (overwritten; pages go
    to disk as they are encoded, as when pyarrow writes a shard itself): valid until `scratch` is written again."""
    with pa.OSFile(str(scratch), "wb") as sink, pq.ParquetWriter(sink, schema, **options) as w:
        w.write_table(table, row_group_size=max(1, table.num_rows))
    return read_groups(scratch)[0]


def empty_footer(schema: pa.Schema, **options) -> Struct:
    """The FileMetaData pyarrow writes for `schema` and `options` with no rows: every shard's footer is this,
    plus its row groups and row count (so the footer never depends on which group came first)."""
    sink = pa.BufferOutputStream()
    pq.ParquetWriter(sink, schema, **options).close()
    return read_footer(pa.BufferReader(sink.getvalue()))


def _copy_range(src: int, dst: int, offset: int, size: int) -> None:
    """Copy `size` bytes of `src` from `offset` to `dst`'s current position, without passing them through Python
    (`os.copy_file_range`; chunked reads where the file system refuses it)."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, offset + done)
            if n == 0:
                raise OSError("copy_file_range copied nothing")
            done += n
        return
    except OSError:
        pass
    while done < size:
        block = os.pread(src, min(1 << 20, size - done), offset + done)
        if not block:
            raise OSError(f"short read copying a row group ({done} of {size} bytes)")
        done += os.write(dst, block)


class GroupFile:
    """A Parquet file written one `Group` at a time: data first, then the page index, then the footer."""

    def __init__(self, path: Path, template: Struct) -> None:
        self.path = path
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()/abort(); unbuffered: the
        # group copies write to the same descriptor
        self._write(MAGIC)
        self.pos = len(MAGIC)
        self._template = template
        self._groups: list[Group] = []
        self.rows = 0

    def append(self, group: Group) -> int:
        """Copy a group's bytes to the end of the data (in the kernel); returns the data bytes so far."""
        with open(group.source, "rb") as src:
            _copy_range(src.fileno(), self._f.fileno(), group.start, group.size)
        self._groups.append(group)
        self.rows += group.rows
        self.pos += group.size
        return self.pos

    def close(self) -> int:
        """Write the page index and the footer; returns the file's size."""
        # Each group's entries are moved in place (a group is placed once) and given no ordinal: the file is then
        # byte for byte what pyarrow writes for the same rows (`test_rowgroups.py`).
        placed: list[tuple[Struct, list[Struct | None]]] = []
        at = len(MAGIC)
        for g in self._groups:
            _move_group(g.meta, g.offset_index, at - len(MAGIC))
            placed.append((g.meta, g.offset_index))
            at += g.size
        # Column indexes of every group, then offset indexes (pyarrow's order).
        for g, (meta, _) in zip(self._groups, placed, strict=True):
            for cc, ci in zip(_get(meta, _RG_COLUMNS)[1], g.column_index, strict=True):
                if ci is not None:
                    _set(cc, _CC_COLUMN_INDEX_OFFSET, _I64, self.pos)
                    _set(cc, _CC_COLUMN_INDEX_LENGTH, _I32, len(ci))
                    self._write(ci)
                    self.pos += len(ci)
        for meta, offsets in placed:
            for cc, oi in zip(_get(meta, _RG_COLUMNS)[1], offsets, strict=True):
                if oi is not None:
                    raw = encode(oi)
                    _set(cc, _CC_OFFSET_INDEX_OFFSET, _I64, self.pos)
                    _set(cc, _CC_OFFSET_INDEX_LENGTH, _I32, len(raw))
                    self._write(raw)
                    self.pos += len(raw)
        footer = decode(encode(self._template))
        _set(footer, _FMD_NUM_ROWS, _I64, self.rows)
        _set(footer, _FMD_ROW_GROUPS, _LIST, (_STRUCT, [m for m, _ in placed]))
        raw = encode(footer)
        self._write(raw + struct.pack("<I", len(raw)) + MAGIC)
        self.pos += len(raw) + 8
        self._f.close()
        return self.pos

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may take fewer bytes than given
            view = view[self._f.write(view) :]

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
