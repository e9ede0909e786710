"""Incremental refresh of one provider partition's raw extract: read what changed, merge it into the files.

A partition's raw files hold its catalog rows in ingestion order (created_on, identifier). After the first full
extract, a refresh reads only, in one snapshot:
- rows of the provider with `updated_on` newer than the recorded watermark (updates, inserts, rows that moved in),
- identifiers moved to `deleted_<media>` since the recorded `deleted_on` watermark,
- identifiers of other providers' rows updated since the watermark (rows whose provider changed away),
each window reaching back `overlap` before the watermark (a transaction that stamped `updated_on` earlier but
committed later is still seen; re-reading an unchanged row is harmless). Those rows replace their old versions
in a streaming merge of the previous files: the output is the same sorted set of rows written by the same writer,
hence byte-identical to a full extract of the same snapshot.

Changes that bypass `updated_on` (Openverse's popularity refresh can rewrite `standardized_popularity` in batched
updates without touching it; a provider renamed in place) are reconciled by a periodic full rebuild
(`full_every`, recorded as `last_full_rebuild`), which also runs when the previous output is missing or does not
match its recorded state, when a watermark went backwards, or when the change is too big to be worth merging.

What changed is written to `changes/<media>/<provider>/` for the clean step, which cleans only those rows.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from openverse_dataset.catalog.connect import CatalogError, as_utc, make_engine, redact, sane_max, scrub
from openverse_dataset.catalog.extract import (
    TIMESTAMP_LOW,
    ExtractResult,
    IdRange,
    _rows_to_batch,
    extract_partition,
    in_id_range,
    raw_columns,
    timestamp_out_of_range,
)
from openverse_dataset.catalog.prepare import MissingIndexes, require_indexes
from openverse_dataset.catalog.schema import DELETED_TABLES, MEDIA_TABLES
from openverse_dataset.catalog.watermarks import (
    TakedownMark,
    catalog_watermarks,
    provider_watermark,
    takedown_mark,
    takedowns_since,
)
from openverse_dataset.layout import DataLayout, release_staging, replace_dir, replace_dirs
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import (
    DEFAULT_SHARD_BYTES,
    ORDER_KEY,
    RAW_ROW_GROUP_ROWS,
    ShardInfo,
    ShardWriter,
    layout_settings,
    merge_into,
)
from openverse_dataset.shards import file_sizes
from openverse_dataset.transform.partition import _file_batches, _prefetched

FORMAT = 3  # raw layout version: 2 = rows in (created_on, identifier) order, 3 = content-defined shard and
# row-group boundaries (parquet.BOUNDARY_RULE). Another format is rebuilt.
DEFAULT_FULL_EVERY = timedelta(days=7)
DEFAULT_OVERLAP = timedelta(minutes=10)
# A change bigger than this share of the partition is extracted whole: the merge would rewrite every file anyway
# and a full read reconciles whatever else moved (e.g. a popularity refresh that also stamped updated_on).
MAX_CHANGE_SHARE = 0.25
ID_SCHEMA = pa.schema([("identifier", pa.string())])


def full_every_from_env() -> timedelta:
    """`OPENVERSE_FULL_REBUILD_DAYS` (default 7; 0 = every refresh is a full rebuild)."""
    raw = os.environ.get("OPENVERSE_FULL_REBUILD_DAYS", "").strip()
    try:
        return timedelta(days=float(raw)) if raw else DEFAULT_FULL_EVERY
    except ValueError:
        raise CatalogError(f"OPENVERSE_FULL_REBUILD_DAYS must be a number of days, not {raw!r}") from None


def overlap_from_env() -> timedelta:
    """`OPENVERSE_REFRESH_OVERLAP_MINUTES` (default 10): how far before a watermark a refresh reads again."""
    raw = os.environ.get("OPENVERSE_REFRESH_OVERLAP_MINUTES", "").strip()
    try:
        return timedelta(minutes=float(raw)) if raw else DEFAULT_OVERLAP
    except ValueError:
        raise CatalogError(f"OPENVERSE_REFRESH_OVERLAP_MINUTES must be a number, not {raw!r}") from None


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


@dataclass
class RawState:
    """What a partition's raw folder holds, as recorded when it was written."""

    version: str
    rows: int
    shards: list[dict]
    max_updated_on: str | None
    max_deleted_on: str | None
    last_full_rebuild: str
    settings: dict
    format: int = FORMAT
    trigger: str | None = None  # the catalog change (watermark token) a slice run refreshed this unit for

    @classmethod
    def load(cls, path: Path) -> RawState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        os.replace(tmp, path)


@dataclass
class RefreshResult:
    """One raw refresh: how it ran (full or incremental, and why) and what it read and wrote."""

    mode: str  # "full" | "incremental"
    reason: str
    extract: ExtractResult
    state: RawState
    rows_read: int = 0  # rows (and identifiers) read from the catalog
    rows_changed: int = 0  # changed or new rows read
    rows_removed: int = 0  # identifiers removed from the partition (deleted, moved away, old versions)
    extra: dict = field(default_factory=dict)


def _folder_matches(folder: Path, state: RawState) -> bool:
    """The raw folder holds exactly the shards the state recorded (names and sizes: a stat, not a read)."""
    if not folder.is_dir():
        return False
    return file_sizes(folder, "part-*.parquet") == {s["name"]: s["bytes"] for s in state.shards}


def full_reason(
    state: RawState | None,
    folder: Path,
    settings: dict,
    now: datetime,
    full_every: timedelta,
    current_updated: datetime | None,
    current_deleted: datetime | None,
) -> str:
    """Why this refresh must read the whole partition ("" when an incremental refresh is safe)."""
    if state is None:
        return "no previous extract"
    if state.format != FORMAT:
        return f"previous extract is in layout format {state.format}, now {FORMAT}"
    if state.settings != settings:
        return "writer settings changed"
    if not _folder_matches(folder, state):
        return "previous files missing or not as recorded"
    if now - _dt(state.last_full_rebuild) >= full_every:
        return f"periodic full rebuild (every {full_every.total_seconds() / 86400:g} days)"
    before_u, before_d = _dt(state.max_updated_on), _dt(state.max_deleted_on)
    if before_u and (current_updated is None or current_updated < before_u):
        return "updated_on watermark went backwards"
    if before_d and (current_deleted is None or current_deleted < before_d):
        return "deleted_on watermark went backwards"
    return ""


def _delta_queries(
    media: MediaType, provider: str, others: list[str], since_u, since_d, id_range: IdRange | None = None
) -> dict:
    t, d = MEDIA_TABLES[media.name], DELETED_TABLES[media.name]
    changed = sa.select(*raw_columns(media)).where(t.c.provider == provider, *in_id_range(t.c.identifier, id_range))
    since = None
    if since_u is not None:
        # An updated_on before year 1 (-infinity, BC) is below every watermark: such a row is read on every
        # refresh (a second range of the same index) instead of never, so it is counted and merged like any other.
        low = sa.literal(TIMESTAMP_LOW, sa.DateTime(timezone=True))
        since = sa.or_(t.c.updated_on > since_u, t.c.updated_on < low)
        changed = changed.where(since)
    out_of_range = sa.select(sa.func.count()).where(
        t.c.provider == provider, timestamp_out_of_range(media), *in_id_range(t.c.identifier, id_range)
    )
    if since is not None:
        out_of_range = out_of_range.where(since)
    deleted = sa.select(sa.cast(d.c.identifier, sa.Text)).where(
        d.c.provider == provider, *in_id_range(d.c.identifier, id_range)
    )
    if since_d is not None:
        deleted = deleted.where(d.c.deleted_on > since_d)
    moved = sa.select(sa.cast(t.c.identifier, sa.Text)).where(
        t.c.provider.in_(others or [""]), *in_id_range(t.c.identifier, id_range)
    )
    if since_u is not None:
        moved = moved.where(t.c.updated_on > since_u)
    return {
        "watermark": sa.select(
            sa.select(sane_max(t.c.updated_on)).where(t.c.provider == provider).scalar_subquery(),
            sa.select(sane_max(d.c.deleted_on)).where(d.c.provider == provider).scalar_subquery(),
        ),
        "changed": changed.order_by(t.c.created_on, t.c.identifier),
        "out_of_range": out_of_range,
        "deleted": deleted,
        "moved": moved,
    }


def _other_providers(conn: sa.Connection, media: MediaType, provider: str) -> list[str]:
    """The media table's other providers (a loose index scan on PostgreSQL: one probe per provider)."""
    t = MEDIA_TABLES[media.name]
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text(f"""
            WITH RECURSIVE p(provider) AS (
                (SELECT provider FROM {media.table} WHERE provider IS NOT NULL ORDER BY provider LIMIT 1)
                UNION ALL
                SELECT (SELECT t.provider FROM {media.table} t WHERE t.provider > p.provider
                        ORDER BY t.provider LIMIT 1) FROM p WHERE p.provider IS NOT NULL
            ) SELECT provider FROM p WHERE provider IS NOT NULL
        """)  # table name from media.py
        )
        names = [r[0] for r in rows]
    else:
        names = list(conn.scalars(sa.select(t.c.provider).where(t.c.provider.is_not(None)).distinct()))
    return sorted(n for n in names if n != provider)


def read_changes(
    url: str,
    media: MediaType,
    state: RawState,
    provider: str,
    overlap: timedelta,
    out: Path,
    id_range: IdRange | None = None,
) -> dict:
    """Read the partition's changes since `state`'s watermarks into `out` (changed.parquet, removed.parquet).

    A slice (`id_range`) reads only the changes of its identifier range; the watermarks stay the provider's.

    One REPEATABLE READ snapshot for every query, so the new watermark describes exactly what was read.
    Returns counts and the new watermarks.
    """
    since_u, since_d = _dt(state.max_updated_on), _dt(state.max_deleted_on)
    since_u = since_u - overlap if since_u else None
    since_d = since_d - overlap if since_d else None
    engine = make_engine(url)
    out.mkdir(parents=True, exist_ok=True)
    options: dict = {"stream_results": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    changed_rows = 0
    try:
        with engine.connect().execution_options(**options) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                require_indexes(conn, url, media)  # never a silent scan of the whole table per refresh
            q = _delta_queries(media, provider, _other_providers(conn, media, provider), since_u, since_d, id_range)
            max_u, max_d = conn.execute(q["watermark"]).one()
            t = MEDIA_TABLES[media.name]
            probe = (
                sa.select(sa.func.count()).select_from(
                    sa.select(t.c.identifier)
                    .where(t.c.provider == provider, t.c.updated_on > since_u, *in_id_range(t.c.identifier, id_range))
                    .limit(max(1, int(state.rows * MAX_CHANGE_SHARE)) + 1)
                    .subquery()
                )
                if since_u is not None
                else None
            )
            if probe is not None and conn.scalar(probe) > state.rows * MAX_CHANGE_SHARE and state.rows:
                return {"too_big": True}
            writer = pq.ParquetWriter(out / "changed.parquet", media.raw_schema)
            try:
                for rows in conn.execute(q["changed"]).partitions(50_000):
                    writer.write_batch(_rows_to_batch(rows, media.raw_schema))
                    changed_rows += len(rows)
            finally:
                writer.close()
            out_of_range = conn.scalar(q["out_of_range"]) or 0
            deleted = list(conn.scalars(q["deleted"]))
            moved = list(conn.scalars(q["moved"]))
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(
            f"reading changes of {media.name}/{provider!r} from {redact(url)} failed: {scrub(str(exc), url)}"
        ) from None
    finally:
        engine.dispose()
    changed_ids = pq.read_table(out / "changed.parquet", columns=["identifier"])["identifier"].to_pylist()
    removed = sorted(set(deleted) | set(moved) | set(changed_ids))
    pq.write_table(pa.table({"identifier": pa.array(removed, pa.string())}, schema=ID_SCHEMA), out / "removed.parquet")
    return {
        "too_big": False,
        "max_updated_on": as_utc(max_u),
        "max_deleted_on": as_utc(max_d),
        "changed": changed_rows,
        "timestamps_out_of_range": int(out_of_range),
        "deleted": len(deleted),
        "moved": len(moved),
        "removed": len(removed),
        "read": changed_rows + len(deleted) + len(moved),
    }


def _write_changes_meta(folder: Path, meta: dict) -> None:
    (folder / "changes.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))


def load_changes(layout: DataLayout, media: str, provider: str) -> dict | None:
    """The last raw refresh's change record (mode, base_version, version), or None."""
    try:
        return json.loads((layout.changes_dir(media, provider) / "changes.json").read_text())
    except (OSError, ValueError):
        return None


def refresh_raw(
    url: str,
    media: MediaType,
    provider: str,
    layout: DataLayout,
    *,
    full_every: timedelta = DEFAULT_FULL_EVERY,
    overlap: timedelta = DEFAULT_OVERLAP,
    force_full: bool = False,
    current: tuple[datetime | None, datetime | None] | None = None,
    now: datetime | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = RAW_ROW_GROUP_ROWS,
    unit: str | None = None,
    id_range: IdRange | None = None,
    trigger: str | None = None,
    settled: str | None = None,
    **extract_kw,
) -> RefreshResult:
    """Bring the partition's raw folder up to the catalog: incrementally when safe, else a full extract.

    `current` is the provider's watermark (newest updated_on, deleted_on) taken just before, for the
    "went backwards" check (read here when not given). The change record for the clean step is rewritten
    either way. A slice of a big provider passes its `unit` (its folders and state) and `id_range`.

    Slice runs: a slice's own run passes the catalog change it answers (`trigger`, the watermark token the
    sensor saw), recorded in the state; the provider run requested after those runs passes the same token as
    `settled`, and a unit already refreshed for it is taken as it is (no catalog read, no write): it is as
    current as the sensor asked for, and anything newer moves the watermark and starts the next round.
    """
    now = now or datetime.now(UTC)
    unit = unit or provider
    state_path = layout.state_file("raw", media.name, unit)
    folder = layout.raw_dir(media.name, unit)
    state = RawState.load(state_path)
    settings = {"shard_bytes": shard_bytes, "row_group_rows": row_group_rows}
    layout_key = layout_settings(settings)  # an incremental merge keeps files: only into files of the same layout
    current_for = settled and not force_full and state is not None and state.trigger == settled
    if current_for and state.settings == layout_key and _folder_matches(folder, state):
        return _settled(layout, media, provider, unit, state)
    if current is None:
        wm = provider_watermark(url, media, provider)
        current = (wm.max_updated_on, wm.max_deleted_on)
    reason = (
        "full rebuild requested" if force_full else full_reason(state, folder, layout_key, now, full_every, *current)
    )
    if not reason:
        start = time.perf_counter()
        staging = layout.staging_dir(f"changes-{media.name}")
        try:
            counts = read_changes(url, media, state, provider, overlap, staging, id_range)
        except MissingIndexes as exc:  # still correct without them, just a whole read: say what to run
            release_staging(staging)
            counts = {"too_big": False, "unprepared": str(exc).splitlines()[0]}
        except BaseException:
            release_staging(staging)
            raise
        if counts.get("unprepared"):
            reason = f"catalog not prepared for incremental reads ({counts['unprepared']})"
        elif counts["too_big"]:
            release_staging(staging)
            reason = f"change larger than {MAX_CHANGE_SHARE:.0%} of the partition"
        else:
            return _merge(layout, media, unit, state, staging, counts, settings, start, trigger)
    extract_kw.update(unit=unit, id_range=id_range)
    return _full(url, media, provider, layout, reason, now, settings, current[1], extract_kw, trigger)


def _settled(layout: DataLayout, media: MediaType, provider: str, unit: str, state: RawState) -> RefreshResult:
    """A unit its slice run already refreshed for this change: its files and state as they are, and what that
    run changed (from its change record), so the provider's metadata still counts it."""
    done = load_changes(layout, media.name, unit) or {}
    result = ExtractResult(
        media=media.name,
        provider=provider,
        method="slice run",
        rows=state.rows,
        shards=[ShardInfo(**s) for s in state.shards],
        snapshot_rows=state.rows,
        max_updated_on=_dt(state.max_updated_on),
        seconds=0.0,
    )
    full = done.get("mode") == "full"
    return RefreshResult(
        "full" if full else "incremental",
        "by its slice run" if full else "",
        result,
        state,
        rows_read=0,  # by this run: the slice run's reads are on its own materialization
        rows_changed=int(done.get("changed", state.rows if full else 0)),
        rows_removed=int(done.get("removed", 0)),
        extra={"settled_by_slice_run": 1},
    )


def _full(url, media, provider, layout, reason, now, settings, deleted_mark, extract_kw, trigger=None) -> RefreshResult:
    # `deleted_mark` was read before the extract's snapshot: a row deleted after it is newer and seen next time.
    unit = extract_kw.get("unit") or provider
    prev = RawState.load(layout.state_file("raw", media.name, unit))
    result = extract_partition(url, media, provider, layout, **settings, **extract_kw)
    state = RawState(
        version=uuid.uuid4().hex,
        rows=result.rows,
        shards=[s.as_dict() for s in result.shards],
        max_updated_on=_iso(result.max_updated_on),
        max_deleted_on=_iso(deleted_mark),
        last_full_rebuild=now.isoformat(),
        settings=layout_settings(settings),
        trigger=trigger,
    )
    staging = layout.staging_dir(f"changes-{media.name}")
    staging.mkdir(parents=True)
    _write_changes_meta(
        staging, {"mode": "full", "base_version": prev.version if prev else None, "version": state.version}
    )
    replace_dir(staging, layout.changes_dir(media.name, unit))
    state.save(layout.state_file("raw", media.name, unit))
    return RefreshResult("full", reason, result, state, rows_read=result.rows, rows_changed=result.rows)


def _merge(layout, media, provider, state, staging, counts, settings, start, trigger=None) -> RefreshResult:
    folder = layout.raw_dir(media.name, provider)
    files = sorted(folder.glob("part-*.parquet"))
    changed = pq.read_table(staging / "changed.parquet").cast(media.raw_schema)
    removed = pq.read_table(staging / "removed.parquet")["identifier"].combine_chunks()
    out = layout.staging_dir(f"raw-{media.name}")
    writer = ShardWriter(out, media.raw_schema, sorting=ORDER_KEY, **settings)
    try:
        # Files the change does not touch are linked as they are, and untouched row groups of the others copied;
        # touched groups are decoded one batch ahead in a thread (both sides release the GIL), as in the clean
        # step, merged and written again.
        merged = merge_into(
            writer,
            files,
            changed,
            ORDER_KEY,
            removed,
            lambda f, groups: _prefetched(_file_batches([f], media.raw_schema, 20_000, groups)),
        )
        shards = writer.close()
        out.mkdir(parents=True, exist_ok=True)
    except BaseException:
        writer.abort()
        release_staging(out)
        release_staging(staging)
        raise
    new = RawState(
        version=uuid.uuid4().hex,
        rows=writer.rows,
        shards=[s.as_dict() for s in shards],
        max_updated_on=_iso(counts["max_updated_on"]),
        max_deleted_on=_iso(counts["max_deleted_on"]),
        last_full_rebuild=state.last_full_rebuild,
        settings=layout_settings(settings),
        trigger=trigger,
    )
    meta = {"mode": "incremental", "base_version": state.version, "version": new.version}
    kept = ("changed", "deleted", "moved", "removed", "read", "timestamps_out_of_range")
    meta.update({k: v for k, v in counts.items() if k in kept})
    meta.update(merged.as_dict())  # files kept as they were and written again, for the record
    _write_changes_meta(staging, meta)
    # Order matters for a crash in between: the state is written last, so a crash leaves files that do not
    # match the recorded state, and the next refresh rebuilds the partition in full.
    replace_dirs([(out, folder), (staging, layout.changes_dir(media.name, provider))])
    new.save(layout.state_file("raw", media.name, provider))
    seconds = time.perf_counter() - start
    result = ExtractResult(
        media=media.name,
        provider=provider,
        method="incremental",
        rows=writer.rows,
        shards=shards,
        snapshot_rows=writer.rows,
        max_updated_on=counts["max_updated_on"],
        seconds=seconds,
        timestamps_out_of_range=counts["timestamps_out_of_range"],  # among the rows read now, as NULL
    )
    return RefreshResult(
        "incremental",
        "",
        result,
        new,
        rows_read=counts["read"],
        rows_changed=counts["changed"],
        rows_removed=counts["removed"],
        extra={"deleted": counts["deleted"], "moved": counts["moved"], **merged.as_dict()},
    )


def providers_to_refresh(
    catalog_url: str, api_url: str, media: MediaType, providers: list[str], recorded: dict[str, str], layout: DataLayout
) -> tuple[dict[str, str], TakedownMark | None]:
    """Which providers `openverse-dataset build` must refresh, and why; plus the takedown mark seen now.

    The same decision the sensors make: a provider whose catalog watermark differs from the one its last raw
    extract recorded, one never extracted or never cleaned, and one holding works taken down since the last
    build's takedown mark (found by identifier, as the takedown sensor does). Save the returned mark with
    `save_takedown_mark` once the refresh succeeded.
    """
    try:
        marks = catalog_watermarks(catalog_url, media)
        now = takedown_mark(catalog_url, api_url, media)
    except MissingIndexes as exc:  # no cheap way to tell what changed: refresh everything (and say why)
        return {p: f"catalog not prepared: {str(exc).splitlines()[0]}" for p in providers}, None
    why: dict[str, str] = {}
    for p in providers:
        if p not in recorded:
            why[p] = "never extracted"
        elif p in marks and marks[p].token != recorded[p]:
            why[p] = "catalog changed"
        elif not layout.state_file("clean", media.name, p).exists():
            why[p] = "never cleaned"
    mark_path = layout.state_file("takedowns", media.name, "mark")
    try:
        previous = TakedownMark(**{k: _dt(v) for k, v in json.loads(mark_path.read_text()).items()})
    except (OSError, ValueError, TypeError):
        previous = None
    if previous is None:
        for p in providers:  # no record of what earlier builds applied: check every provider's takedowns once
            why.setdefault(p, "takedowns not yet checked")
    elif previous.token != now.token:
        for p in takedowns_since(catalog_url, api_url, media, previous, now):
            if p in providers:
                why.setdefault(p, "new takedowns")
    return why, now


def save_takedown_mark(layout: DataLayout, media: MediaType, mark: TakedownMark) -> None:
    """Record the takedown mark a successful build applied (the next build looks only at newer entries)."""
    path = layout.state_file("takedowns", media.name, "mark")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: _iso(v) for k, v in vars(mark).items()}, sort_keys=True))
