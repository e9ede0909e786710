"""Bounded partitions: a provider above `OPENVERSE_PARTITION_MAX_ROWS` rows is read and cleaned in slices.

Flickr is ~60% of the catalog: one extract of it would hold one snapshot open for hours on the production
catalog. A provider whose rows exceed the bound is split into N = 2^k slices by ranges of `identifier` (uuids
are uniform, and the catalog's `identifier` index serves `identifier >= lo AND identifier < hi AND provider = X`,
reading ~1/N of the table per slice; created_on has no index). Each slice is a unit of work with its own short
snapshot, its own raw/clean/rejects folders and refresh state (`layout.slice_unit`), refreshed incrementally
with its range condition; the provider's folders are then assembled from its slices' files (hard links, in slice
order), so everything downstream (release, Hub layout per provider, S3 dump) reads one folder per provider.

N is a deterministic function of the provider's state: the smallest power of two with
`rows <= N x bound x FILL` and every slice at most `bound` rows (a per-slice count at N gives the exact count at
every coarser N, since the ranges nest). Planning reads no extra row: the row count is the last refresh's (the
slices' recorded rows, exact as of their snapshots); only a provider never extracted is counted once (an index
scan of `(provider, updated_on)`). A slice extract's first query (its snapshot's count) stops it before any row
is streamed when it holds more than the bound, and the plan is refined. The plan is kept in
`layout.slice_plan_file`: the source of truth for which units a provider has (never parsed out of names).

A slice is also a unit of scheduling: `refresh_slice` is one slice's own run (the `<media>/slice` asset, one
partition per slice, requested by the stale-provider sensor), and the provider's run that follows takes the
slices refreshed for the same catalog change as they are. `unit_lock` keeps the two from meeting on one slice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import sqlalchemy as sa

from openverse_dataset.catalog.connect import CatalogError, catalog_engines, redact
from openverse_dataset.catalog.extract import ExtractResult, IdRange, TooManyRows
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.layout import DataLayout, slice_unit, unsegment
from openverse_dataset.media import MediaType

DEFAULT_MAX_ROWS = 25_000_000  # ~10 us/row extract + ~17 us/row clean: ~11 min of snapshot and work per unit
FILL = 0.9  # a fresh plan fills slices to 90% of the bound on average: growth before the next split
MAX_SLICES = 4096  # 800M rows at a bound of 200k: far beyond any real provider
PLAN_FORMAT = 1


def max_rows_from_env() -> int:
    """`OPENVERSE_PARTITION_MAX_ROWS` (default 25,000,000): the most rows one unit of extract/clean work holds."""
    raw = os.environ.get("OPENVERSE_PARTITION_MAX_ROWS", "").strip().replace("_", "")
    try:
        value = int(raw) if raw else DEFAULT_MAX_ROWS
    except ValueError:
        raise CatalogError(f"OPENVERSE_PARTITION_MAX_ROWS must be a whole number of rows, not {raw!r}") from None
    if value < 1:
        raise CatalogError(f"OPENVERSE_PARTITION_MAX_ROWS must be at least 1, not {value}")
    return value


def workers_from_env() -> int:
    """`OPENVERSE_SLICE_WORKERS` (default 1): how many of a split provider's slices are extracted or cleaned at once."""
    raw = os.environ.get("OPENVERSE_SLICE_WORKERS", "").strip()
    try:
        value = int(raw) if raw else 1
    except ValueError:
        raise CatalogError(f"OPENVERSE_SLICE_WORKERS must be a whole number of processes, not {raw!r}") from None
    if value < 1:
        raise CatalogError(f"OPENVERSE_SLICE_WORKERS must be at least 1, not {value}")
    return value


def run_units(fn: Callable, calls: list[dict], workers: int) -> list:
    """`fn(**call)` for every call, results in order: in this process, or in `workers` processes at once.

    Slices are independent units (own folders, own state, own snapshot), so they can run side by side: a split
    provider then takes about its slices' time over `workers`, not their sum, and every snapshot stays as short
    as one slice's. Worker processes are spawned (never forked from a process with threads) and `fn` and its
    arguments must pickle: no progress callback crosses. The first failure, in slice order, is raised.
    """
    if workers <= 1 or len(calls) <= 1:
        return [fn(**c) for c in calls]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, **c) for c in calls]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


@contextmanager
def unit_lock(layout: DataLayout, media: str, unit: str) -> Iterator[None]:
    """Hold one unit's lock (`layout.unit_lock_file`) while its folders and state change.

    A slice is refreshed by its own run (the slice asset) and again by its provider's run, which may meet it:
    they take turns, and the second finds nothing left to do. The kernel drops the lock if the holder dies.
    """
    path = layout.unit_lock_file(media, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def locked(fn: Callable, layout: DataLayout, media: str, *, unit: str, **kw):
    """`fn(unit=unit, **kw)` holding the unit's lock (module level, so worker processes can unpickle it)."""
    with unit_lock(layout, media, unit):
        return fn(unit=unit, **kw)


def slice_count(rows: int, bound: int) -> int:
    """The fewest slices (a power of two) for `rows`: 1 up to the bound, else average at most FILL x bound."""
    if rows <= bound:
        return 1
    n = 2
    while rows > bound * FILL * n and n < MAX_SLICES:
        n *= 2
    return n


def _uuid_at(k: int, n: int) -> str:
    return str(uuid.UUID(int=(k << 128) // n))


def id_ranges(n: int) -> list[IdRange]:
    """`n` (a power of two) contiguous identifier ranges in uuid order, open at both ends."""
    cuts = [_uuid_at(k, n) for k in range(1, n)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def slice_of(identifier: str, n: int) -> int:
    """Which of `n` slices an identifier falls in (uuid text -> its 128-bit value)."""
    return (uuid.UUID(identifier).int * n) >> 128


@dataclass(frozen=True)
class Slice:
    """One slice of a provider: its unit name (paths), its label (logs, UI) and identifier range."""

    provider: str
    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"{self.index:0{len(str(self.count - 1))}d}of{self.count}"

    @property
    def unit(self) -> str:
        return slice_unit(self.provider, self.tag)

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.index:0{len(str(self.count - 1))}d}"

    @property
    def id_range(self) -> IdRange:
        return id_ranges(self.count)[self.index]

    @property
    def key(self) -> str:
        """Its partition key in the UI and for its own runs (`<media>_slices`): `flickr/3of8`."""
        return f"{self.provider}/{self.tag}"


def slices(provider: str, n: int) -> list[Slice]:
    return [Slice(provider, k, n) for k in range(n)]


@dataclass
class SlicePlan:
    """How many slices a provider has now, the bound they were planned for and the row count they hold."""

    slices: int
    bound: int
    rows: int
    slice_rows: list[int]
    format: int = PLAN_FORMAT


def load_plan(layout: DataLayout, media: str, provider: str) -> SlicePlan | None:
    """The provider's current slice plan; None when it is one unit (never split, or merged back)."""
    try:
        plan = SlicePlan(**json.loads(layout.slice_plan_file(media, provider).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return plan if plan.format == PLAN_FORMAT and plan.slices > 1 else None


def provider_units(layout: DataLayout, media: str, provider: str) -> list[Slice] | None:
    """The provider's slices in order, per its plan; None when the provider is a single unit."""
    plan = load_plan(layout, media, provider)
    return slices(provider, plan.slices) if plan else None


def provider_of_key(key: str) -> str:
    """The provider a slice key (`Slice.key`, `flickr/3of8`) belongs to: everything before the last '/' (a
    provider name may hold '/', a tag never does)."""
    return key.rpartition("/")[0]


def slice_for_key(layout: DataLayout, media: str, key: str) -> Slice | None:
    """The slice a partition key names, if the provider's current plan has it (None: superseded or unknown).

    The key is matched against the plan's own slices, never parsed into a unit.
    """
    provider, tag = provider_of_key(key), key.rpartition("/")[2]
    units = provider_units(layout, media, provider) if provider else None
    return next((s for s in units or [] if s.tag == tag), None)


def _save_plan(layout: DataLayout, media: str, provider: str, plan: SlicePlan | None) -> None:
    path = layout.slice_plan_file(media, provider)
    if plan is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(plan.__dict__, indent=1, sort_keys=True))
    os.replace(tmp, path)


def target_slices(slice_rows: list[int], bound: int) -> int | None:
    """The plan's slice count given exact per-slice rows at len(slice_rows) slices; None when a finer plan is needed.

    Coarser plans are checked exactly (sibling ranges sum); a finer one needs a read: None asks for one.
    """
    n = len(slice_rows)
    need = slice_count(sum(slice_rows), bound)
    if need > n:
        return None
    m, rows = need, None
    while m <= n:
        step = n // m
        rows = [sum(slice_rows[i : i + step]) for i in range(0, n, step)]
        if max(rows, default=0) <= bound:
            return m
        m *= 2
    return None


def count_rows(url: str, media: MediaType, provider: str) -> int:
    """count(*) of one provider: an index-only scan of `(provider, updated_on)` on a prepared catalog.

    Only a provider never extracted is counted (later plans use the rows the last refresh recorded).
    """
    t = MEDIA_TABLES[media.name]
    with (
        catalog_engines(f"counting {media.name}/{provider!r} at {redact(url)}", url) as (engine,),
        engine.connect() as conn,
    ):
        return int(conn.scalar(sa.select(sa.func.count()).select_from(t).where(t.c.provider == provider)) or 0)


def _recorded_rows(layout: DataLayout, media: str, provider: str) -> list[int] | None:
    """Per-slice rows of the provider's last refresh (from its state files), or None when unknown."""
    from openverse_dataset.catalog.refresh import RawState

    units = provider_units(layout, media, provider)
    names = [s.unit for s in units] if units else [provider]
    rows = []
    for name in names:
        state = RawState.load(layout.state_file("raw", media, name))
        if state is None:
            return None
        rows.append(state.rows)
    return rows


@dataclass
class SlicedRefresh:
    """A provider's raw refresh over its units: one RefreshResult per unit, in order, and the plan it ended on."""

    results: list  # RefreshResult per unit
    labels: list[str]
    slices: int
    replans: int
    seconds: float

    @property
    def rows(self) -> int:
        return sum(r.extract.rows for r in self.results)


def refresh_provider(
    url: str,
    media: MediaType,
    provider: str,
    layout: DataLayout,
    *,
    bound: int,
    refresh: Callable,
    max_rounds: int = 8,
    workers: int = 1,
) -> SlicedRefresh:
    """Refresh one provider's raw data in units of at most `bound` rows, re-planning until every unit fits.

    `refresh(unit=..., id_range=..., max_rows=...)` refreshes one unit (`catalog.refresh.refresh_raw` with the
    provider's arguments bound). When the plan changes, every unit of the new plan is extracted in full and the
    old plan's folders are removed once the new ones are in place; the provider's raw folder is then assembled
    from its units (`assemble_raw`). With `workers` > 1, `workers` slices are refreshed at once (`run_units`).
    """
    import time

    start = time.perf_counter()
    recorded = _recorded_rows(layout, media.name, provider)
    plan = load_plan(layout, media.name, provider)
    n = plan.slices if plan else 1
    if recorded is None or (plan is not None and plan.bound != bound):
        if plan is not None and recorded is not None and plan.bound != bound:
            n = target_slices(recorded, bound) or slice_count(sum(recorded), bound)
        elif plan is None and not layout.raw_dir(media.name, provider).is_dir():
            n = slice_count(count_rows(url, media, provider), bound)  # never extracted: count once
    replans = 0
    for _ in range(max_rounds):
        units = slices(provider, n) if n > 1 else None
        try:
            one = partial(locked, refresh, layout, media.name)  # a slice's own run may hold it: take turns
            if units is None:
                results = [one(unit=provider, id_range=None, max_rows=bound)]
            else:
                calls = [{"unit": s.unit, "id_range": s.id_range, "max_rows": bound} for s in units]
                results = run_units(one, calls, workers)
        except TooManyRows as exc:
            n = min(MAX_SLICES, max(n * 2, n * slice_count(exc.rows, bound)))
            replans += 1
            continue
        rows = [r.extract.rows for r in results]
        target = target_slices(rows, bound)
        if target == n:
            break
        n = target if target is not None else min(MAX_SLICES, max(n * 2, slice_count(sum(rows), bound)))
        replans += 1
    else:
        raise CatalogError(f"{media.name}/{provider!r}: no slice plan fit {bound:,} rows in {max_rounds} rounds")
    new_plan = SlicePlan(n, bound, sum(rows), rows) if n > 1 else None
    _save_plan(layout, media.name, provider, new_plan)
    _assemble_raw(layout, media.name, provider, units)
    labels = [s.label for s in units] if units else [provider]
    return SlicedRefresh(results, labels, n, replans, time.perf_counter() - start)


STAGES = ("raw", "clean", "rejects", "changes", "state-raw", "state-clean")


def remove_other_slices(layout: DataLayout, media: str, provider: str, keep: list[Slice] | None) -> None:
    """Remove slice folders and states of plans other than `keep` (after the new plan's are in place)."""
    wanted = {s.tag for s in keep or []}
    for stage in STAGES:
        root = layout.slices_dir(stage, media, provider)
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            name = entry.name.removesuffix(".json")
            if name not in wanted:
                with unit_lock(layout, media, slice_unit(provider, unsegment(name))):  # a slice run ends first
                    _remove(entry)
        if not any(root.iterdir()):
            root.rmdir()


def _remove(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _assemble_raw(layout: DataLayout, media: str, provider: str, units: list[Slice] | None) -> None:
    from openverse_dataset.shards import assemble_folder

    if units is None:
        remove_other_slices(layout, media, provider, None)
        return
    # The provider's own state would describe files it no longer writes: without it, a later return to one
    # unit is a full extract, never a merge into slice-ordered files.
    layout.state_file("raw", media, provider).unlink(missing_ok=True)
    layout.state_file("clean", media, provider).unlink(missing_ok=True)
    assemble_folder(
        layout,
        [(s, layout.raw_dir(media, s.unit)) for s in units],
        layout.raw_dir(media, provider),
        "part-*.parquet",
        sidecar=False,
    )
    remove_other_slices(layout, media, provider, units)


def summary(result: SlicedRefresh) -> dict:
    """Combined extract numbers of a provider's units (for the raw asset's metadata)."""
    ex: list[ExtractResult] = [r.extract for r in result.results]
    newest: list[datetime] = [e.max_updated_on for e in ex if e.max_updated_on]
    return {
        "rows": sum(e.rows for e in ex),
        "bytes": sum(e.bytes for e in ex),
        "shards": sum(len(e.shards) for e in ex),
        "snapshot_rows": sum(e.snapshot_rows for e in ex),
        "timestamps_out_of_range": sum(e.timestamps_out_of_range for e in ex),
        "max_updated_on": max(newest) if newest else None,
        "largest_unit_rows": max((e.rows for e in ex), default=0),
    }


@dataclass
class SliceOutcome:
    """What one slice's own run did: its raw refresh and its clean, or why it did neither."""

    slice: Slice | None
    skipped: str = ""  # why nothing was done ("": it ran)
    raw: object = None  # catalog.refresh.RefreshResult
    clean: object = None  # transform.partition.CleanResult
    clean_mode: str = ""
    clean_reason: str = ""


def refresh_slice(
    layout: DataLayout,
    media: MediaType,
    key: str,
    *,
    refresh: Callable,
    clean: Callable,
    trigger: str | None,
    bound: int,
) -> SliceOutcome:
    """One slice's own run: refresh its raw files, then clean them, holding its lock; nothing else of the provider.

    `refresh(provider=..., unit=..., id_range=..., max_rows=..., trigger=...)` is `catalog.refresh.refresh_raw`
    with the run's arguments bound, `clean(provider=..., unit=...)` is `transform.partition.refresh_clean`.
    The slice is looked up in the provider's current plan, again once its lock is held: a plan changed by the
    provider's run in the meantime (a re-plan) makes this run a no-op, as does a slice now above the bound or a
    bound changed since the plan (the provider's next run re-plans). The provider's run assembles the slices'
    files; for the same `trigger` it takes them as they are (`refresh_raw`'s `settled`).
    """
    found = slice_for_key(layout, media.name, key)
    if found is None:
        return SliceOutcome(None, f"{key} is not in its provider's current slice plan (re-planned since)")
    with unit_lock(layout, media.name, found.unit):
        plan = load_plan(layout, media.name, found.provider)
        if slice_for_key(layout, media.name, key) is None or plan is None:
            return SliceOutcome(None, f"{key} left its provider's slice plan while this run waited for it")
        if plan.bound != bound:
            return SliceOutcome(found, f"the bound moved from {plan.bound:,} to {bound:,}: its provider's run re-plans")
        try:
            raw = refresh(
                provider=found.provider, unit=found.unit, id_range=found.id_range, max_rows=bound, trigger=trigger
            )
        except TooManyRows as exc:
            why = f"{key} now holds {exc.rows:,} rows, above {plan.bound:,}: its provider's next run re-plans"
            return SliceOutcome(found, why)
        result, mode, why = clean(provider=found.provider, unit=found.unit)
    return SliceOutcome(found, "", raw, result, mode, why)


def round_finished(statuses: list[bool], expected: int, waited_s: float, launch_grace_s: float = 120.0) -> bool:
    """Whether a round of slice runs is over: every run requested has finished (succeeded or failed for good)
    and all `expected` were launched, or some never came within the grace (the provider's run covers them)."""
    if any(not done for done in statuses):
        return False
    return len(statuses) >= expected or waited_s >= launch_grace_s


def plan_new_provider(layout: DataLayout, media: str, provider: str, rows: int, bound: int) -> list[Slice] | None:
    """Plan the slices of a provider never extracted from a row count already taken (the providers asset's), so
    its first extract, too, can run as one run per slice. None when it fits one unit or was extracted before
    (its plan is then its refreshes' business: `refresh_provider`)."""
    if load_plan(layout, media, provider) is not None or layout.state_file("raw", media, provider).exists():
        return provider_units(layout, media, provider)
    if layout.raw_dir(media, provider).is_dir():
        return None
    n = slice_count(rows, bound)
    if n == 1:
        return None
    _save_plan(layout, media, provider, SlicePlan(n, bound, rows, []))
    return slices(provider, n)
