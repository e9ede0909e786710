"""Bounded partitions: a provider above OPENVERSE_PARTITION_MAX_ROWS is extracted and cleaned in identifier-range
slices of at most that many rows, each on its own snapshot; its files are released under the provider's folder,
every row exactly once; incremental refreshes of slices and re-plans on growth match a from-scratch build."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from datetime import timedelta
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from openverse_dataset.catalog.extract import TooManyRows, extract_partition
from openverse_dataset.catalog.refresh import RawState, refresh_raw
from openverse_dataset.catalog.schema import MEDIA_TABLES
from openverse_dataset.catalog.slices import (
    id_ranges,
    load_plan,
    plan_new_provider,
    provider_units,
    refresh_provider,
    refresh_slice,
    round_finished,
    run_units,
    slice_count,
    slice_of,
    target_slices,
)
from openverse_dataset.catalog.takedowns import snapshot_takedowns
from openverse_dataset.cli import main
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import IMAGE
from openverse_dataset.transform import partition
from openverse_dataset.transform.partition import clean_provider, refresh_clean
from openverse_dataset_tests.test_build import tree_digest
from openverse_dataset_tests.test_extract_postgres import rows
from openverse_dataset_tests.test_refresh_postgres import CLEAN_KW, KW, NOW, change, tree

BOUND = 300


def test_slice_count_ranges_and_target_are_consistent():
    assert [slice_count(r, 300) for r in (0, 300, 301, 540, 541, 1500, 2160, 2161)] == [1, 1, 2, 2, 4, 8, 8, 16]
    for n in (2, 4, 8):
        ranges = id_ranges(n)
        assert ranges[0][0] is None and ranges[-1][1] is None
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        finer = id_ranges(2 * n)
        assert [r[0] for r in finer[::2]] == [r[0] for r in ranges]  # ranges nest: a re-plan splits slices
        for _ in range(50):
            ident = str(uuid.uuid4())
            k = slice_of(ident, n)
            lo, hi = ranges[k]
            assert (lo is None or ident >= lo) and (hi is None or ident < hi)
    assert target_slices([250, 260, 240, 280], 300) == 4
    assert target_slices([100, 100, 100, 100], 300) == 2  # coarser plan fits: re-plan down
    assert target_slices([100, 310], 300) is None  # a slice is over the bound: a finer read is needed
    assert target_slices([900], 300) is None


def test_slice_units_have_their_own_folders(tmp_path: Path):
    layout = DataLayout(tmp_path)
    from openverse_dataset.layout import slice_unit

    unit = slice_unit("flickr", "3of8")
    assert layout.raw_dir("image", unit) != layout.raw_dir("image", "flickr")
    assert layout.raw_dir("image", unit).is_relative_to(layout.slices_dir("raw", "image", "flickr"))
    assert layout.state_file("raw", "image", unit) != layout.state_file("raw", "image", "flickr")
    # a provider whose name looks like a slice label is a provider, never a slice
    assert layout.raw_dir("image", "flickr/3") == tmp_path / "raw" / "image" / "flickr%2F3"


@pytest.fixture
def catalog(upstream_catalog):
    from openverse_dataset.catalog.prepare import prepare_catalog

    prepare_catalog(upstream_catalog.catalog_url)
    data = rows(1500) + rows(40, provider="wikimedia")
    for i, r in enumerate(data):
        if i % 97 == 0:
            r["license"] = "nonsense"
    upstream_catalog.insert_media("image", data)
    return upstream_catalog


def build(cat, layout: DataLayout, provider: str, now, bound: int = BOUND, workers: int = 1):
    snapshot_takedowns(cat.catalog_url, cat.api_url, IMAGE, layout)
    one = partial(refresh_raw, cat.catalog_url, IMAGE, provider, layout, now=now, **KW)
    raw = refresh_provider(cat.catalog_url, IMAGE, provider, layout, bound=bound, refresh=one, workers=workers)
    tk = layout.takedowns_file("image")
    clean = clean_provider(layout, IMAGE, provider, takedowns=tk, workers=workers, **CLEAN_KW)
    return raw, clean


def outputs(layout: DataLayout, provider: str) -> dict[str, str]:
    out = {}
    for stage in ("raw", "clean", "rejects"):
        out |= {f"{stage}/{k}": v for k, v in tree(getattr(layout, f"{stage}_dir")("image", provider)).items()}
    units = provider_units(layout, "image", provider) or []
    for s in units:
        for stage in ("raw", "clean", "rejects"):
            folder = getattr(layout, f"{stage}_dir")("image", s.unit)
            out |= {f"{s.label}/{stage}/{k}": v for k, v in tree(folder).items()}
    return out


def catalog_ids(cat, provider: str) -> set[str]:
    t = MEDIA_TABLES["image"]
    with cat.catalog.connect() as conn:
        return set(conn.scalars(sa.select(sa.cast(t.c.identifier, sa.Text)).where(t.c.provider == provider)))


def assert_bounded(layout: DataLayout, provider: str, cat) -> int:
    """Every unit at most BOUND rows; the provider's folders hold each catalog row exactly once."""
    units = provider_units(layout, "image", provider)
    assert units is not None and len(units) >= 2
    for s in units:
        state = RawState.load(layout.state_file("raw", "image", s.unit))
        assert state is not None and state.rows <= BOUND, s.label
    plan = load_plan(layout, "image", provider)
    assert plan.slices == len(units) and max(plan.slice_rows) <= BOUND and sum(plan.slice_rows) == plan.rows
    raw = pq.read_table(layout.raw_dir("image", provider), columns=["identifier"])["identifier"].to_pylist()
    clean = pl.read_parquet(layout.clean_dir("image", provider) / "*" / "*.parquet")["identifier"].to_list()
    rej = pq.read_table(layout.rejects_dir("image", provider), columns=["identifier"])["identifier"].to_pylist()
    want = catalog_ids(cat, provider)
    assert len(raw) == len(set(raw)) and set(raw) == want
    assert len(clean) + len(rej) == len(want) and set(clean) | set(rej) == want
    names = sorted(p.name for p in layout.raw_dir("image", provider).glob("part-*.parquet"))
    assert [int(n.split("-")[1]) for n in names] == sorted(int(n.split("-")[1]) for n in names)  # slice order
    return len(units)


@pytest.mark.postgres
def test_big_provider_is_sliced_each_slice_within_the_bound(catalog, tmp_path):
    layout = DataLayout(tmp_path / "d")
    raw, (clean, mode, _, units) = build(catalog, layout, "flickr", NOW)
    assert raw.slices == units == assert_bounded(layout, "flickr", catalog) == 8  # 1,500 / (0.9 x 300) -> 8
    assert max(r.extract.snapshot_rows for r in raw.results) <= BOUND  # every snapshot held at most the bound
    assert mode == "full" and clean.rows_in == 1500
    small, (_, _, _, one) = build(catalog, layout, "wikimedia", NOW)
    assert small.slices == one == 1 and provider_units(layout, "image", "wikimedia") is None
    assert not layout.slices_dir("raw", "image", "wikimedia").exists()


@pytest.mark.postgres
def test_sliced_incremental_refresh_and_growth_replan_match_a_fresh_build(catalog, tmp_path):
    inc = DataLayout(tmp_path / "inc")
    build(catalog, inc, "flickr", NOW - timedelta(days=1))
    build(catalog, inc, "wikimedia", NOW - timedelta(days=1))
    change(catalog)
    raw, (_, mode, why, _) = build(catalog, inc, "flickr", NOW)
    assert {r.mode for r in raw.results} == {"incremental"} and mode == "incremental", why
    assert sum(r.rows_read for r in raw.results) < 150  # each slice read only its changes
    build(catalog, inc, "wikimedia", NOW)
    fresh = DataLayout(tmp_path / "fresh")
    for p in ("flickr", "wikimedia"):
        build(catalog, fresh, p, NOW)
        assert outputs(inc, p) == outputs(fresh, p)
    assert_bounded(inc, "flickr", catalog)

    # Growth past the threshold (2,160 rows at 8 slices): the provider is re-planned into 16 slices.
    new = rows(900, start=80_000)
    for r in new:
        r["created_on"] = r["updated_on"] = NOW - timedelta(minutes=30)
    catalog.insert_media("image", new)
    grown, _ = build(catalog, inc, "flickr", NOW)
    assert grown.slices == 16 and grown.replans >= 1
    assert assert_bounded(inc, "flickr", catalog) == 16
    assert not any("of8" in p.name for p in inc.slices_dir("raw", "image", "flickr").iterdir())  # old plan gone
    fresh2 = DataLayout(tmp_path / "fresh2")
    build(catalog, fresh2, "flickr", NOW)
    assert outputs(inc, "flickr") == outputs(fresh2, "flickr")


@pytest.mark.postgres
def test_slice_runs_then_the_provider_run_match_a_fresh_build(catalog, tmp_path, monkeypatch):
    """What the sensor does for a changed big provider: each slice refreshed and cleaned by a run of its own, then
    the provider's run, which takes those slices as they are (no catalog read, no clean) and assembles them."""
    inc = DataLayout(tmp_path / "inc")
    build(catalog, inc, "flickr", NOW - timedelta(days=1))
    build(catalog, inc, "wikimedia", NOW - timedelta(days=1))
    change(catalog)
    snapshot_takedowns(catalog.catalog_url, catalog.api_url, IMAGE, inc)  # the takedowns asset, before the runs
    tk = inc.takedowns_file("image")
    units = provider_units(inc, "image", "flickr")

    def slice_run(key: str, trigger: str = "T1", bound: int = BOUND):
        return refresh_slice(
            inc,
            IMAGE,
            key,
            refresh=partial(refresh_raw, catalog.catalog_url, IMAGE, layout=inc, now=NOW, **KW),
            clean=lambda **kw: refresh_clean(inc, IMAGE, takedowns=tk, **CLEAN_KW, **kw),
            trigger=trigger,
            bound=bound,
        )

    assert slice_run("flickr/0of2").skipped  # not in the plan: nothing done
    assert "bound moved" in slice_run(units[0].key, bound=BOUND * 2).skipped
    done = [slice_run(s.key) for s in units]
    assert not any(o.skipped for o in done) and {o.raw.mode for o in done} == {"incremental"}
    assert sum(o.raw.rows_changed for o in done) > 0 and sum(o.clean.rows_cleaned for o in done) > 0

    one = partial(refresh_raw, catalog.catalog_url, IMAGE, "flickr", inc, now=NOW, settled="T1", **KW)
    raw = refresh_provider(catalog.catalog_url, IMAGE, "flickr", inc, bound=BOUND, refresh=one)
    assert [r.extra.get("settled_by_slice_run") for r in raw.results] == [1] * len(units)
    assert sum(r.rows_read for r in raw.results) == 0  # the provider run read nothing from the catalog
    assert sum(r.rows_changed for r in raw.results) == sum(o.raw.rows_changed for o in done)  # still counted
    with monkeypatch.context() as m:  # nothing is cleaned again: not even an empty incremental pass
        m.setattr(partition, "_clean_changes", lambda *a, **k: pytest.fail("a settled slice was cleaned again"))
        m.setattr(partition, "clean_partition", lambda *a, **k: pytest.fail("a settled slice was cleaned again"))
        clean, mode, _, n = clean_provider(inc, IMAGE, "flickr", takedowns=tk, **CLEAN_KW)
    assert n == len(units) and mode == "incremental" and clean.rows_cleaned == 0  # nothing cleaned again
    assert clean.kept + clean.rejected_total == len(catalog_ids(catalog, "flickr"))
    build(catalog, inc, "wikimedia", NOW)
    fresh = DataLayout(tmp_path / "fresh")
    for p in ("flickr", "wikimedia"):
        build(catalog, fresh, p, NOW)
        assert outputs(inc, p) == outputs(fresh, p)

    # Another change token: the provider run does not take the slices as they are; it reads the catalog again.
    other = partial(refresh_raw, catalog.catalog_url, IMAGE, "flickr", inc, now=NOW, settled="T2", **KW)
    again = refresh_provider(catalog.catalog_url, IMAGE, "flickr", inc, bound=BOUND, refresh=other)
    assert not any(r.extra.get("settled_by_slice_run") for r in again.results)
    assert outputs(inc, "flickr") == outputs(fresh, "flickr")


@pytest.mark.postgres
def test_a_first_extract_planned_from_the_providers_count_runs_slice_by_slice(catalog, tmp_path):
    """The providers asset counts every provider anyway: a big one never extracted gets its plan from that count,
    so its first extract is one run per slice too; the provider's run then only assembles."""
    layout = DataLayout(tmp_path / "d")
    assert plan_new_provider(layout, "image", "wikimedia", 40, BOUND) is None  # fits one unit
    units = plan_new_provider(layout, "image", "flickr", 1500, BOUND)
    assert [s.key for s in units] == [f"flickr/{k}of8" for k in range(8)]
    assert plan_new_provider(layout, "image", "flickr", 99_999, BOUND) == units  # planned once, kept
    snapshot_takedowns(catalog.catalog_url, catalog.api_url, IMAGE, layout)
    tk = layout.takedowns_file("image")
    for s in units:
        out = refresh_slice(
            layout,
            IMAGE,
            s.key,
            refresh=partial(refresh_raw, catalog.catalog_url, IMAGE, layout=layout, now=NOW, **KW),
            clean=lambda **kw: refresh_clean(layout, IMAGE, takedowns=tk, **CLEAN_KW, **kw),
            trigger="first",
            bound=BOUND,
        )
        assert not out.skipped and out.raw.mode == "full" and out.raw.extract.snapshot_rows <= BOUND
    one = partial(refresh_raw, catalog.catalog_url, IMAGE, "flickr", layout, now=NOW, settled="first", **KW)
    raw = refresh_provider(catalog.catalog_url, IMAGE, "flickr", layout, bound=BOUND, refresh=one)
    assert raw.slices == 8 and raw.replans == 0 and sum(r.rows_read for r in raw.results) == 0
    clean_provider(layout, IMAGE, "flickr", takedowns=tk, **CLEAN_KW)
    assert assert_bounded(layout, "flickr", catalog) == 8
    fresh = DataLayout(tmp_path / "fresh")
    build(catalog, fresh, "flickr", NOW)
    assert outputs(layout, "flickr") == outputs(fresh, "flickr")


def test_a_round_of_slice_runs_is_over_when_every_run_has_finished():
    assert not round_finished([], 4, waited_s=5)  # not launched yet
    assert not round_finished([True, True, False, True], 4, waited_s=500)  # one still running (or retrying)
    assert round_finished([True] * 4, 4, waited_s=1)
    assert not round_finished([True] * 3, 4, waited_s=5)  # the fourth not launched yet
    assert round_finished([True] * 3, 4, waited_s=500)  # it never came: the provider's run covers it
    assert round_finished([], 4, waited_s=500)


def _pid_after(delay: float, fail: int | None = None) -> int:
    if fail is not None:
        raise TooManyRows(fail, BOUND)
    time.sleep(delay)
    return os.getpid()


def test_units_run_in_worker_processes_in_order_and_failures_come_back_whole():
    calls = [{"delay": 0.3}] * 4
    pids = run_units(_pid_after, calls, workers=2)
    assert len(pids) == 4 and os.getpid() not in pids and len(set(pids)) == 2  # two processes, side by side
    assert run_units(_pid_after, calls[:2], workers=1) == [os.getpid()] * 2  # 1 worker: in this process
    with pytest.raises(TooManyRows) as exc:  # a re-plan needs the row count from the worker
        run_units(_pid_after, [{"delay": 0.0}, {"delay": 0.0, "fail": 1234}], workers=2)
    assert (exc.value.rows, exc.value.max_rows) == (1234, BOUND)


@pytest.mark.postgres
def test_slices_side_by_side_give_the_bytes_of_slices_one_after_another(catalog, tmp_path):
    serial, parallel = DataLayout(tmp_path / "serial"), DataLayout(tmp_path / "parallel")
    for layout, workers in ((serial, 1), (parallel, 2)):
        build(catalog, layout, "flickr", NOW - timedelta(days=1), workers=workers)
    assert outputs(parallel, "flickr") == outputs(serial, "flickr")
    change(catalog)
    for layout, workers in ((serial, 1), (parallel, 2)):
        raw, (_, mode, why, units) = build(catalog, layout, "flickr", NOW, workers=workers)
        assert {r.mode for r in raw.results} == {"incremental"} and mode == "incremental", why
        assert raw.slices == units == 8
    assert outputs(parallel, "flickr") == outputs(serial, "flickr")
    assert_bounded(parallel, "flickr", catalog)


@pytest.mark.postgres
def test_slice_extract_stops_before_streaming_when_above_the_bound(catalog, tmp_path):
    layout = DataLayout(tmp_path / "d")
    with pytest.raises(TooManyRows) as exc:
        extract_partition(catalog.catalog_url, IMAGE, "flickr", layout, max_rows=BOUND)
    assert exc.value.rows == 1500
    assert not layout.raw_dir("image", "flickr").exists()  # nothing half-written


def test_demo_build_with_a_small_bound_releases_every_row_once_per_provider(env: Path, monkeypatch, tmp_path):
    from datasets import load_dataset

    assert main(["build", "--media", "image"]) == 0
    whole = pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")
    monkeypatch.setenv("OPENVERSE_DATA_DIR", str(tmp_path / "sliced"))
    monkeypatch.setenv("OPENVERSE_PARTITION_MAX_ROWS", "150")
    monkeypatch.setenv("OPENVERSE_SLICE_WORKERS", "2")  # the run's slices in two worker processes
    assert main(["build", "--media", "image"]) == 0
    data = tmp_path / "sliced"
    layout = DataLayout(data)
    sliced = [p.name for p in (data / "state" / "slice-plans" / "image").glob("*.json")]
    assert sliced  # at least one demo provider is above 150 rows
    for p in (data / "raw" / "image").iterdir():
        units = provider_units(layout, "image", p.name)
        for s in units or []:
            assert RawState.load(layout.state_file("raw", "image", s.unit)).rows <= 150
    repo = data / "hub" / "openverse-images"
    got = pl.read_parquet(repo / "data" / "*" / "*" / "*.parquet")
    assert got["identifier"].n_unique() == got.height == whole.height
    assert set(got["identifier"]) == set(whole["identifier"])
    # files stay under the provider's folder: each folder's rows are that provider's
    for f in (repo / "data").rglob("*.parquet"):
        assert set(pl.read_parquet(f)["provider"]) == {pl.read_parquet(f)["provider"][0]}
    ds = load_dataset(str(repo), "all", split="train")
    assert ds.num_rows == whole.height
    first = tree_digest(repo)
    assert main(["build", "--media", "image"]) == 0  # nothing changed: the same released bytes
    assert tree_digest(repo) == first
