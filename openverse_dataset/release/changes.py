"""What changed since the previous release, at a cost proportional to what changed: index, diff, removals.

Consumers must learn what was *removed* (takedowns, deletions), not only what was added, so every release
carries `removals.parquet`: the identifiers that were in the previous release and are not in this one (or that
left a config because their license changed), each with a reason class taken from this run's rejects and the
takedown snapshot. The card's changelog counts added / removed / changed rows per provider.

The release index (identifier, provider, license, row hash) is kept in **segments, one per cleaned shard**,
named by the shard's sha256. The sha256s come from the sidecars the clean step writes when it writes a shard
(`openverse_dataset.shards`), so finding out what changed reads no row. A release then:

- builds segments only for shards not indexed before (reading only their rows; a provider that did not change
  is not read at all) and reuses every other segment file byte for byte;
- diffs, against the target's previous index, only the segments one side has and the other does not (plus the
  rejects of the providers they belong to, for removal reasons). A segment on both sides holds the same rows in
  both releases, and identifiers are unique in a release, so it adds nothing to the removals or the changelog;
  the joint diff of the changed segments equals the diff of the whole releases (the tests check it against a
  from-scratch computation, moves between providers included).

After a successful publish the pending index becomes the target's previous index (`promote`), and segments no
index refers to any more are deleted. A local target without an index is indexed from its own files; a Hub
target without one (first publish from this machine) gets an empty removals file and a changelog that says the
comparison was not possible.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from openverse_dataset.layout import DataLayout, release_staging
from openverse_dataset.parquet import writer_options
from openverse_dataset.publish.targets import Target
from openverse_dataset.shards import REJECTS_GLOB, ShardRecords, shard_records
from openverse_dataset.transform.clean import REMOVAL_CLASSES, reason_priority_sql, removal_class_sql

INDEX_FORMAT = "i2"  # part of every segment's version: bump when the segment schema changes
# How row hashes are computed. DuckDB's `hash()` of the whole row is ~8x faster than md5 of its text form, but
# DuckDB does not promise it stable across releases, so the version is part of the format: segments of
# different formats are never compared row hash to row hash (see `diff_indexes`).
ROW_HASH = f"duckdb-{duckdb.__version__}"
# DuckDB's memory for the card step's bookkeeping (see `bookkeeping_connection`). Indexing a shard hashes whole
# rows (every column decoded, per thread) in a streamed pass, then sorts the narrow result one identifier range
# at a time: 96 MB (64 MB with two threads ran out on a 1.1M-row Flickr shard of an 8M-row catalog); the diff
# joins four narrow columns and spills well at 64 MB (+102 MiB against +313).
INDEX_MEMORY = "96MB"
SEGMENT_SORT_ROWS = 100_000  # rows of one sorted identifier range of a segment (~10 MB of index rows)
SEGMENT_BATCH_ROWS = 100_000  # rows a segment is streamed in (and its row groups)
DIFF_MEMORY = "64MB"
# The diff joins one identifier range at a time, each about this many rows a side: one full outer join of
# Flickr's 5.6M index rows (8M-row catalog) ran out of the 64 MB; a 250k-row range's hash table fits in it with
# room to spare, and since segments are sorted by identifier each range reads only its own row groups.
DIFF_RANGE_ROWS = 250_000
LEGACY_ROW_HASH = "md5"  # md5(row::varchar): indexes written before per-shard segments
INDEX_SCHEMA = pa.schema(
    [("identifier", pa.string()), ("provider", pa.string()), ("license", pa.string()), ("row_hash", pa.string())]
)
REMOVALS_SCHEMA = pa.schema(
    [
        ("identifier", pa.string()),
        ("provider", pa.string()),
        ("license", pa.string()),  # the license it had in the previous release
        ("reason", pa.string()),  # a REASON_CLASSES key (deleted, taken_down, source_hidden, ...)
        ("detail", pa.string()),  # the reject reason code, or the new license
        ("new_license", pa.string()),  # only for `relicensed`
    ]
)
# The classes and the reason -> class mapping are the rule registry's (transform/clean.py `RULES`).
REASON_CLASSES: dict[str, str] = REMOVAL_CLASSES
_REASON_SQL = removal_class_sql("r.reason")


@dataclass
class Changelog:
    """Added / removed / changed per provider, and removals by reason class."""

    previous: bool  # whether a previous release was known
    by_provider: dict[str, dict[str, int]] = field(default_factory=dict)
    removed_by_reason: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def totals(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for counts in self.by_provider.values():
            for k in out:
                out[k] += counts.get(k, 0)
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Changelog:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Segment:
    """The index rows of one cleaned shard: named by the shard's sha256, so it holds while the shard does."""

    provider: str
    version: str  # INDEX_FORMAT + the shard's sha256: names the segment file
    rows: int
    row_hash: str = LEGACY_ROW_HASH  # how its row hashes were computed (ROW_HASH for segments built now)

    @property
    def identity(self) -> tuple[str, str]:
        """What the segment indexes: the same identity means the same rows, whatever the format."""
        return self.provider, self.version.rsplit("-", 1)[-1]


@dataclass
class ReleaseIndex:
    """A release as a set: one segment per shard (key `<provider>/<shard path>`), and each provider's rejects
    version (a change there can change removal reasons). Small JSON; the rows live in the segment files."""

    media: str
    segments: dict[str, Segment] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {
            "format": INDEX_FORMAT,
            "media": self.media,
            "segments": {k: asdict(s) for k, s in self.segments.items()},
            "rejects": self.rejects,
        }
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseIndex:
        body = json.loads(text)
        segments = {k: Segment(**s) for k, s in sorted(body["segments"].items())}
        return cls(body["media"], segments, dict(sorted(body.get("rejects", {}).items())))

    def providers(self) -> set[str]:
        return {s.provider for s in self.segments.values()} | set(self.rejects)

    def rows_by_provider(self) -> dict[str, int]:
        out: Counter = Counter()
        for s in self.segments.values():
            out[s.provider] += s.rows
        return dict(sorted(out.items()))


@dataclass
class Bookkeeping:
    """What the card step's bookkeeping did: providers and segments built and reused, shards hashed, seconds."""

    built: list[str] = field(default_factory=list)  # providers with at least one new segment
    segments_built: int = 0
    reused: int = 0  # segments reused as they were
    diffed: list[str] = field(default_factory=list)  # providers the diff read
    shards_rehashed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ProviderData:
    """The cleaned and rejected shards of one provider as the sidecars record them."""

    clean: ShardRecords
    rejects: ShardRecords


def segment_version(sha256: str) -> str:
    return f"{INDEX_FORMAT}-{sha256[:32]}"


def provider_data(layout: DataLayout, media: str, providers: list[str]) -> dict[str, ProviderData]:
    """Each provider's shards and versions, from the sidecars (no row is read while they hold)."""
    return {
        p: ProviderData(
            shard_records(layout.clean_dir(media, p)), shard_records(layout.rejects_dir(media, p), REJECTS_GLOB)
        )
        for p in providers
    }


@dataclass
class ReleaseFiles:
    """Where one media type's release bookkeeping lives (every path comes from `DataLayout`)."""

    layout: DataLayout
    media: str

    @property
    def root(self) -> Path:
        return self.layout.releases_dir(self.media)

    @property
    def next_index(self) -> Path:
        return self.layout.release_next_index(self.media)

    @property
    def removals(self) -> Path:
        return self.layout.release_removals(self.media)

    @property
    def changelog(self) -> Path:
        return self.layout.release_changelog(self.media)

    @property
    def plan(self) -> Path:
        return self.layout.release_plan(self.media)

    def segment(self, provider: str, version: str) -> Path:
        return self.layout.release_segment(self.media, provider, version)

    def index(self, target: Target) -> Path:
        """The index of what `target` holds since its last successful publish."""
        return self.layout.release_target_index(self.media, target.key)

    def promote(self, target: Target) -> None:
        """After a successful publish: the pending index becomes the target's previous release."""
        dest = self.index(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(self.next_index.read_bytes())
        os.replace(tmp, dest)
        self.prune()

    def indexes(self) -> list[ReleaseIndex]:
        """The pending index and every target's index (those that exist)."""
        paths = [self.next_index, *self.layout.release_targets_root(self.media).glob("*/index.json")]
        return [ReleaseIndex.from_json(p.read_text()) for p in paths if p.exists()]

    def known_rows(self) -> dict[tuple[str, str], int]:
        """(provider, segment version) -> rows, as the indexes recorded them (saves reading segment footers)."""
        return {(s.provider, s.version): s.rows for idx in self.indexes() for s in idx.segments.values()}

    def prune(self) -> int:
        """Delete segment files (and cached counts) of versions no index refers to any more; returns how many.

        Kept: whatever the pending index or any target's index names, so every target can still be diffed.
        """
        keep: dict[str, set[str]] = {}
        for idx in self.indexes():
            for s in idx.segments.values():
                folder = self.segment(s.provider, s.version).parent.name
                keep.setdefault(folder, set()).add(s.version.split("-")[-1])
            for p, v in idx.rejects.items():
                keep.setdefault(self.segment(p, "x").parent.name, set()).add(v)
        removed = 0
        for f in self.layout.release_segments_root(self.media).glob("*/*"):
            if not any(v in f.name for v in keep.get(f.parent.name, ())):
                f.unlink(missing_ok=True)
                removed += 1
        return removed


def _quoted(path: Path | str) -> str:
    return str(path).replace("'", "''")


def _list(paths: list[Path] | list[str]) -> str:
    return "[" + ", ".join(f"'{_quoted(p)}'" for p in paths) + "]"


def range_filter(lo: str | None, hi: str | None) -> str:
    """The `where` clause of one half-open identifier range from `identifier_ranges` (empty for all rows).

    The last range also holds NULL identifiers (they sort last), so ranges together never drop a row."""
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f"where (identifier >= '{lo}' or identifier is null)"
    return f"where identifier < '{hi}'" if lo is None else f"where identifier >= '{lo}' and identifier < '{hi}'"


def _write(table: pa.Table, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(table, tmp, **writer_options(table.schema))
    os.replace(tmp, dest)


def write_segment(conn: duckdb.DuckDBPyConnection, paths: list[Path], dest: Path) -> int:
    """Index `paths` into one segment file (atomically); returns its rows.

    Two passes, so that no step holds a whole shard: the row hashes are streamed into a narrow unsorted file
    beside `dest` (a scan, no blocking operator), which is then sorted one identifier range at a time
    (`SEGMENT_SORT_ROWS` rows each) and streamed out batch by batch. One `hash ... order by identifier` over a
    1.0M-row Flickr shard (8M-row catalog) took its process +345 MiB at 256 MB (the card step's peak, 640 MiB);
    this way +184 MiB at 96 MB, in 2.4 s instead of 1.4 s (the same bytes). The narrow file is uncompressed: it is
    read once per range and deleted, and zstd cost 0.4 s a shard. A query's materialized result cannot spill, so
    results are fetched in batches.
    """
    if not paths:
        _write(INDEX_SCHEMA.empty_table(), dest)
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    narrow = dest.with_name(dest.name + ".hashes.tmp")
    try:
        conn.execute(
            "copy (select identifier, provider, license, hash(t)::varchar as row_hash "
            f"from read_parquet({_list(paths)}) t) to '{_quoted(narrow)}' (format parquet, compression uncompressed)"
        )
        total = sum(pq.read_metadata(p).num_rows for p in paths)
        rows, pending = 0, INDEX_SCHEMA.empty_table()
        with pq.ParquetWriter(tmp, INDEX_SCHEMA, **writer_options(INDEX_SCHEMA)) as writer:
            for lo, hi in identifier_ranges(total, SEGMENT_SORT_ROWS):
                reader = conn.sql(
                    f"select * from read_parquet('{_quoted(narrow)}') {range_filter(lo, hi)} order by identifier"
                ).fetch_record_batch(SEGMENT_BATCH_ROWS)
                # Row groups of exactly SEGMENT_BATCH_ROWS whatever batch sizes DuckDB hands out: the same file
                # each time, whatever the ranges.
                for batch in reader:
                    pending = pa.concat_tables([pending, pa.Table.from_batches([batch]).cast(INDEX_SCHEMA)])
                    while pending.num_rows >= SEGMENT_BATCH_ROWS:
                        writer.write_table(pending.slice(0, SEGMENT_BATCH_ROWS).combine_chunks())
                        pending = pending.slice(SEGMENT_BATCH_ROWS)
                    rows += batch.num_rows
            if pending.num_rows or not rows:
                writer.write_table(pending.combine_chunks())
        os.replace(tmp, dest)
    finally:
        narrow.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return rows


def build_index(
    conn: duckdb.DuckDBPyConnection, rf: ReleaseFiles, data: dict[str, ProviderData], book: Bookkeeping | None = None
) -> ReleaseIndex:
    """The release index of `data`: a segment is built only for a shard not indexed before (by sha256)."""
    book = book or Bookkeeping()
    index = ReleaseIndex(rf.media)
    built: set[str] = set()
    known = rf.known_rows()
    for provider, d in sorted(data.items()):
        for r in d.clean.records:
            version = segment_version(r.sha256)
            dest = rf.segment(provider, version)
            if dest.exists():
                rows = known.get((provider, version))
                rows = pq.read_metadata(dest).num_rows if rows is None else rows
                book.reused += 1
            else:
                rows = write_segment(conn, [d.clean.folder / r.path], dest)
                book.segments_built += 1
                built.add(provider)
            index.segments[f"{provider}/{r.path}"] = Segment(provider, version, rows, ROW_HASH)
        index.rejects[provider] = d.rejects.version()
        book.shards_rehashed += d.clean.rehashed + d.rejects.rehashed
    book.built = sorted(built)
    return index


def write_next_index(rf: ReleaseFiles, index: ReleaseIndex) -> None:
    rf.next_index.parent.mkdir(parents=True, exist_ok=True)
    tmp = rf.next_index.with_name(rf.next_index.name + ".tmp")
    tmp.write_text(index.to_json())
    os.replace(tmp, rf.next_index)


def _file_version(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def previous_index(
    conn: duckdb.DuckDBPyConnection, rf: ReleaseFiles, target: Target, repo_name: str
) -> ReleaseIndex | None:
    """What `target` held after its last successful publish, or None when that cannot be known.

    In order: the index recorded at that publish; an index kept by releases before per-provider segments
    (migrated once into segments); the target's own files when it has local ones (indexed once).
    """
    recorded = rf.index(target)
    if recorded.exists():
        idx = ReleaseIndex.from_json(recorded.read_text())
        if all(rf.segment(s.provider, s.version).exists() for s in idx.segments.values()):
            return idx
    legacy = rf.layout.release_legacy_index(rf.media, target.key)
    if legacy.exists():
        tag = f"legacy-{_file_version([legacy])}"
        idx = ReleaseIndex(rf.media)
        conn.execute(f"create or replace temp view legacy as select * from read_parquet('{legacy}')")
        for (provider,) in conn.sql("select distinct provider from legacy order by 1").fetchall():
            dest = rf.segment(provider, tag)
            table = (
                conn.sql("select * from legacy where provider = $p order by identifier", params={"p": provider})
                .to_arrow_table()
                .cast(INDEX_SCHEMA)
            )
            _write(table, dest)
            idx.segments[f"{provider}/legacy"] = Segment(provider, tag, table.num_rows)
        conn.execute("drop view if exists legacy")
        return idx
    own = target.own_release_files(repo_name)
    if not own:
        return None
    idx = ReleaseIndex(rf.media)
    for provider, paths in sorted(own.items()):
        for path in paths:
            version = f"target-{_file_version([path])}"
            dest = rf.segment(provider, version)
            rows = pq.read_metadata(dest).num_rows if dest.exists() else write_segment(conn, [path], dest)
            idx.segments[f"{provider}/{path.parent.name}/{path.name}"] = Segment(provider, version, rows, ROW_HASH)
    return idx


def changed_parts(previous: ReleaseIndex, current: ReleaseIndex) -> tuple[list[Segment], list[Segment], list[str]]:
    """Segments only the previous release has, segments only the current one has, and the providers with either
    or with changed rejects: all a diff must read. A segment on both sides holds the same rows in both releases,
    and identifiers are unique in a release, so nothing in it is added, removed or changed."""
    prev = {s.identity: s for s in previous.segments.values()}
    cur = {s.identity: s for s in current.segments.values()}
    gone = [s for k, s in sorted(prev.items()) if k not in cur]
    new = [s for k, s in sorted(cur.items()) if k not in prev]
    providers = {s.provider for s in gone + new}
    providers |= {
        p for p in previous.rejects.keys() | current.rejects.keys() if previous.rejects.get(p) != current.rejects.get(p)
    }
    return gone, new, sorted(providers)


def _view(conn: duckdb.DuckDBPyConnection, name: str, paths: list[Path]) -> None:
    if paths:
        conn.execute(f"create or replace temp view {name} as select * from read_parquet({_list(paths)})")
    else:
        conn.execute(
            f"create or replace temp view {name} as select ''::varchar identifier, ''::varchar provider, "
            "''::varchar license, ''::varchar row_hash limit 0"
        )


def identifier_ranges(rows: int, per_range: int | None = None) -> list[tuple[str | None, str | None]]:
    """Half-open identifier ranges [lo, hi) covering every string, about `per_range` rows each for `rows` uuids.

    Bounds are 4-hex-digit prefixes spread evenly over uuid space (identifiers are random uuids, so ranges are
    even); the first range has no lower bound and the last no upper one, so any identifier falls in exactly one.
    """
    k = min(65_536, max(1, -(-rows // (per_range or DIFF_RANGE_ROWS))))
    bounds = [f"{(i * 65_536) // k:04x}" for i in range(1, k)]
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def diff_indexes(
    conn: duckdb.DuckDBPyConnection,
    rf: ReleaseFiles,
    previous: ReleaseIndex | None,
    current: ReleaseIndex,
    takedowns: Path | None,
    book: Bookkeeping | None = None,
) -> Changelog:
    """Write the removals file (previous minus current, plus license changes) and return the changelog.

    Reads only the segments of changed shards, the changed providers' rejects and (for reasons of what is gone)
    the takedown snapshot.
    """
    book = book or Bookkeeping()
    if previous is None:
        _write(REMOVALS_SCHEMA.empty_table(), rf.removals)
        return Changelog(
            previous=False,
            by_provider={
                p: {"added": n, "removed": 0, "changed": 0} for p, n in current.rows_by_provider().items() if n
            },
            note="no previous release known for this target: every row counts as added",
        )
    gone_segments, new_segments, changed = changed_parts(previous, current)
    book.diffed = changed
    formats = {s.row_hash for s in gone_segments + new_segments}
    comparable = len(formats) <= 1
    _view(conn, "prev", [rf.segment(s.provider, s.version) for s in gone_segments])
    _view(conn, "cur", [rf.segment(s.provider, s.version) for s in new_segments])
    reason_files = [
        f
        for p in changed
        if p in current.rejects
        for f in sorted(rf.layout.rejects_dir(rf.media, p).glob(REJECTS_GLOB))
    ]
    if takedowns is not None and takedowns.exists():
        reason_files.append(takedowns)
    # One pass over both sides: a full outer join keeps only the rows that differ (added, removed, rehashed or
    # relicensed), a table the size of the change; every count and the removals come from it. Three separate
    # joins (one per count) took 3x the time and held up to three hash tables of the provider's identifiers.
    # Memory is bounded by joining one identifier range at a time (`identifier_ranges`).
    sides = max(sum(s.rows for s in gone_segments), sum(s.rows for s in new_segments))
    for i, (lo, hi) in enumerate(identifier_ranges(sides)):
        where = range_filter(lo, hi)
        conn.execute(
            f"""
            {"create or replace temp table delta as" if i == 0 else "insert into delta"}
            select coalesce(p.identifier, c.identifier) as identifier, p.identifier is not null as in_prev,
                   c.identifier is not null as in_cur, p.provider as p_provider, p.license as p_license,
                   c.provider as c_provider, c.license as c_license, p.row_hash <> c.row_hash as rehashed
            from (select * from prev {where}) p full outer join (select * from cur {where}) c
              on p.identifier = c.identifier
            where p.identifier is null or c.identifier is null or p.license <> c.license
               or (p.row_hash <> c.row_hash and $comparable)
            """,
            {"comparable": comparable},
        )
    gone = "select identifier, p_provider as provider, p_license as license from delta where not in_cur"
    if reason_files:
        conn.execute(
            # One reason per identifier, the one the clean step applies (taken_down before deleted_in_catalog).
            "create or replace temp view reasons as select identifier, "
            f"arg_min(reason, {reason_priority_sql('reason')}) as reason "
            f"from read_parquet({_list(reason_files)}, union_by_name=true) "
            f"where identifier in (select identifier from ({gone})) group by identifier"
        )
    else:
        conn.execute("create or replace temp view reasons as select ''::varchar identifier, ''::varchar reason limit 0")
    removals = conn.sql(
        f"""
        select p.identifier, p.provider, p.license, {_REASON_SQL} as reason,
               coalesce(r.reason, 'not_in_catalog') as detail, null::varchar as new_license
        from ({gone}) p left join reasons r using (identifier)
        union all
        select identifier, p_provider, p_license, 'relicensed', 'now ' || c_license, c_license
        from delta where in_prev and in_cur and p_license <> c_license
        order by provider, identifier
        """
    ).to_arrow_table()
    _write(removals.cast(REMOVALS_SCHEMA), rf.removals)
    rows = conn.sql(
        """
        select c_provider, 'added' as k, count(*) from delta where not in_prev group by all
        union all
        select p_provider, 'removed', count(*) from delta where not in_cur group by all
        union all
        select c_provider, 'changed', count(*) from delta where in_prev and in_cur and rehashed and $comparable
          group by all
        """,
        params={"comparable": comparable},
    ).fetchall()
    by_provider: dict[str, dict[str, int]] = {}
    for provider, k, n in rows:
        by_provider.setdefault(provider, {"added": 0, "removed": 0, "changed": 0})[k] = int(n)
    by_reason = Counter(removals.column("reason").to_pylist())
    for view in ("prev", "cur", "reasons"):
        conn.execute(f"drop view if exists {view}")
    conn.execute("drop table if exists delta")
    return Changelog(
        previous=True,
        by_provider=dict(sorted(by_provider.items())),
        removed_by_reason=dict(sorted(by_reason.items())),
        note="" if comparable else "the previous index hashed rows another way: changed rows are not counted this once",
    )


@contextmanager
def bookkeeping_connection(
    layout: DataLayout, limit: str = DIFF_MEMORY, config: dict | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection of its own for the release bookkeeping: held to `limit`, spilling inside the data dir.

    DuckDB's default (80% of RAM) let the diff of Flickr's 1.4M index rows take the card step's process
    +374 MiB at 2M catalog rows (its peak); held to 64 MB it took +102 MiB (and, as one full outer join instead
    of three joins, 0.86 s instead of 1.02 s). At 800M rows the same join spills instead of growing with the
    provider. An in-memory database spills into `./.tmp` by default: here into a staging folder, removed after.
    """
    spill = layout.staging_dir("duckdb-spill")
    conn = duckdb.connect(config={"memory_limit": limit, "temp_directory": str(spill), **(config or {})})
    try:
        yield conn
    finally:
        conn.close()
        release_staging(spill)  # the folder and its owner lock


def prepare_changes(
    layout: DataLayout,
    media: str,
    providers: list[str],
    target: Target,
    repo_name: str,
) -> tuple[Changelog, Bookkeeping]:
    """The card step's bookkeeping: index this release, diff it with the target's previous one, write the
    removals file, the changelog and the pending index."""
    rf = ReleaseFiles(layout, media)
    book = Bookkeeping()
    t0 = time.perf_counter()
    data = provider_data(layout, media, providers)
    t1 = time.perf_counter()
    with bookkeeping_connection(layout, INDEX_MEMORY) as conn:
        current = build_index(conn, rf, data, book)
        write_next_index(rf, current)
        t2 = time.perf_counter()
        previous = previous_index(conn, rf, target, repo_name)
        conn.execute(f"SET memory_limit = '{DIFF_MEMORY}'")
        changelog = diff_indexes(conn, rf, previous, current, layout.takedowns_file(media), book)
    rf.changelog.write_text(changelog.to_json())
    t3 = time.perf_counter()
    book.seconds = {"versions": round(t1 - t0, 4), "index": round(t2 - t1, 4), "diff": round(t3 - t2, 4)}
    return changelog, book
