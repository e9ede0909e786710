"""Release bookkeeping per provider: reuse, equality with a from-scratch diff, shard sidecars, targets, verify."""

from __future__ import annotations

import os
import random
import uuid
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openverse_dataset.layout import DataLayout, release_staging
from openverse_dataset.media import IMAGE
from openverse_dataset.parquet import sha256_file, write_batches
from openverse_dataset.publish.targets import (
    TARGETS,
    HubTarget,
    LocalTarget,
    UnknownTargetError,
    resolve_target,
)
from openverse_dataset.release import verify
from openverse_dataset.release.card import render_card
from openverse_dataset.release.changes import REMOVALS_SCHEMA, ReleaseFiles, prepare_changes
from openverse_dataset.release.subsets import compute_subsets
from openverse_dataset.release.tree import release_files
from openverse_dataset.shards import ShardHashes, install_clean_output, shard_records
from openverse_dataset.transform.partition import license_folder

MEDIA = "image"
SCHEMA = pa.schema(
    [
        ("identifier", pa.string()),
        ("provider", pa.string()),
        ("license", pa.string()),
        ("license_version", pa.string()),
        ("license_jurisdiction", pa.string()),
        ("license_url", pa.string()),
        ("attribution", pa.string()),
        ("title", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema([("identifier", pa.string()), ("provider", pa.string()), ("reason", pa.string())])
LICENSES = [("by", "4.0"), ("cc0", "1.0"), ("by-sa", "4.0")]


def row(provider: str, ident: str, lic: tuple[str, str] = ("by", "4.0"), title: str = "t") -> dict:
    return {
        "identifier": ident,
        "provider": provider,
        "license": lic[0],
        "license_version": lic[1],
        "license_jurisdiction": None,
        "license_url": f"https://creativecommons.org/licenses/{lic[0]}/{lic[1]}/",
        "attribution": f"{title} by someone",
        "title": title,
    }


def write_provider(layout: DataLayout, provider: str, rows: list[dict], rejects: list[dict] = ()) -> None:
    """What the clean step leaves: rows split by license folder, rejects, sidecars, swapped into place."""
    staging = layout.staging_dir("clean-test")
    staging.mkdir(parents=True)
    by_lic: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["identifier"]):
        by_lic.setdefault(r["license"], []).append(r)
    for slug, rs in by_lic.items():
        write_batches(staging / license_folder(slug), SCHEMA, [pa.Table.from_pylist(rs, schema=SCHEMA)])
    rej = layout.staging_dir("rejects-test")
    rej.mkdir(parents=True)
    if rejects:
        write_batches(rej, REJECT_SCHEMA, [pa.Table.from_pylist(list(rejects), schema=REJECT_SCHEMA)])
    install_clean_output(staging, rej, layout.clean_dir(MEDIA, provider), layout.rejects_dir(MEDIA, provider))
    release_staging(staging)
    release_staging(rej)


def write_takedowns(layout: DataLayout, pairs: list[tuple[str, str]]) -> None:
    path = layout.takedowns_file(MEDIA)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {"identifier": [p[0] for p in pairs], "reason": [p[1] for p in pairs]}, schema=REJECT_SCHEMA.remove(1)
        ),
        path,
    )


# -- the reference: the release as one set, indexed and diffed from scratch (the pre-segment algorithm) ---------


def _list(paths) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def scratch_index(conn, layout: DataLayout, providers: list[str]) -> pa.Table:
    paths = [p for prov in providers for p in sorted(layout.clean_dir(MEDIA, prov).glob("*/part-*.parquet"))]
    return conn.sql(
        "select identifier, provider, license, md5(t::varchar) as row_hash "
        f"from read_parquet({_list(paths)}) t order by identifier"
    ).to_arrow_table()


def scratch_diff(conn, layout: DataLayout, prev: pa.Table, cur: pa.Table, providers: list[str]):
    conn = conn.cursor()  # its own views
    conn.register("prev", prev)
    conn.register("cur", cur)
    reasons = [p for prov in providers for p in sorted(layout.rejects_dir(MEDIA, prov).glob("*.parquet"))]
    reasons.append(layout.takedowns_file(MEDIA))
    conn.execute(
        "create or replace temp view reasons as select identifier, min(reason) as reason from "
        f"read_parquet({_list(reasons)}, union_by_name=true) group by identifier"
    )
    removals = conn.sql(
        """
        select p.identifier, p.provider, p.license,
          case when r.reason in ('taken_down', 'mature', 'mature_by_provider') then 'taken_down'
               when r.reason = 'deleted_in_catalog' then 'deleted'
               when r.reason = 'removed_from_source' then 'removed_from_source'
               when r.reason is null then 'deleted' else 'rejected' end as reason,
          coalesce(r.reason, 'not_in_catalog') as detail, null::varchar as new_license
        from prev p anti join cur c using (identifier) left join reasons r using (identifier)
        union all
        select p.identifier, p.provider, p.license, 'relicensed', 'now ' || c.license, c.license
        from prev p join cur c using (identifier) where p.license <> c.license
        order by provider, identifier
        """
    ).to_arrow_table()
    rows = conn.sql(
        """
        select provider, 'added' as k, count(*) from cur anti join prev using (identifier) group by all
        union all select provider, 'removed', count(*) from prev anti join cur using (identifier) group by all
        union all select c.provider, 'changed', count(*) from cur c join prev p using (identifier)
          where c.row_hash <> p.row_hash group by all
        """
    ).fetchall()
    by_provider: dict = {}
    for provider, k, n in rows:
        by_provider.setdefault(provider, {"added": 0, "removed": 0, "changed": 0})[k] = int(n)
    conn.close()
    return removals.cast(REMOVALS_SCHEMA), dict(sorted(by_provider.items()))


def corrupt_keeping_stat(path: Path) -> None:
    """Overwrite a file's bytes (same size and mtime): any reader would fail, the sidecar still vouches."""
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


@pytest.fixture
def conn():
    c = duckdb.connect()
    yield c
    c.close()


def ids(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(n)]


def test_release_after_one_provider_changed_reads_only_that_provider(layout: DataLayout, conn, tmp_path: Path):
    target = LocalTarget(str(tmp_path / "hub"))
    data = {
        "flickr": [row("flickr", i, LICENSES[k % 3]) for k, i in enumerate(ids(3000, 1))],
        "wikimedia": [row("wikimedia", i) for i in ids(500, 2)],
        "spacex": [row("spacex", i, ("cc0", "1.0")) for i in ids(40, 3)],
    }
    for p, rows in data.items():
        write_provider(layout, p, rows)
    write_takedowns(layout, [])
    providers = sorted(data)
    first, book = prepare_changes(layout, MEDIA, providers, target, "openverse-images")
    assert not first.previous and first.totals()["added"] == 3540 and sorted(book.built) == providers
    prev_full = scratch_index(conn, layout, providers)
    rf = ReleaseFiles(layout, MEDIA)
    rf.promote(target)

    # spacex changes: one row removed at the source, one taken down, one relicensed, one edited, one added
    sp = data["spacex"]
    gone_src, gone_tk, relic, edited = sp[0], sp[1], sp[2], sp[3]
    new_rows = [r for r in sp if r not in (gone_src, gone_tk)]
    new_rows[0] = {**relic, "license": "by", "license_version": "4.0"}
    new_rows[1] = {**edited, "title": "new title"}
    new_rows.append(row("spacex", ids(1, 4)[0], ("cc0", "1.0")))
    write_provider(layout, "spacex", new_rows, [{**gone_src, "reason": "removed_from_source"}])
    write_takedowns(layout, [(gone_tk["identifier"], "taken_down")])
    cur_full = scratch_index(conn, layout, providers)
    want_removals, want_by_provider = scratch_diff(conn, layout, prev_full, cur_full, providers)

    recorded = {}
    untouched_shards = sum(1 for p in ("flickr", "wikimedia") for _ in layout.clean_dir(MEDIA, p).rglob("part-*"))
    for p in ("flickr", "wikimedia"):  # from here on, reading any byte of these providers fails
        for f in [*layout.clean_dir(MEDIA, p).rglob("part-*.parquet"), *layout.rejects_dir(MEDIA, p).glob("*.parquet")]:
            recorded[str(f)] = sha256_file(f)
            corrupt_keeping_stat(f)
    changelog, book = prepare_changes(layout, MEDIA, providers, target, "openverse-images")
    assert book.built == ["spacex"] and book.reused == untouched_shards and book.diffed == ["spacex"]
    assert book.shards_rehashed == 0
    got = pq.read_table(rf.removals)
    assert got.equals(want_removals)
    assert changelog.by_provider == want_by_provider == {"spacex": {"added": 1, "removed": 2, "changed": 2}}
    assert changelog.removed_by_reason == {"relicensed": 1, "removed_from_source": 1, "taken_down": 1}
    # the release tree carries the sha256 recorded when the shards were written, not a re-hash of their bytes
    card = layout.card_file(MEDIA)
    card.parent.mkdir(parents=True)
    card.write_text("card")
    stats = compute_subsets(conn, layout, MEDIA, ["spacex"])
    stats.providers = providers
    tree = {f.source: f.sha256 for f in release_files(layout, stats, card, rf.removals)}
    assert all(tree[src] == sha for src, sha in recorded.items() if "/clean/" in src)


@pytest.mark.parametrize("range_rows", [1_000_000, 7], ids=["one-range", "many-ranges"])
def test_incremental_diff_equals_from_scratch_over_random_changes(
    layout: DataLayout, conn, tmp_path: Path, monkeypatch, range_rows: int
):
    """Also with the diff split into many identifier ranges (as a big provider's is): the same removals."""
    monkeypatch.setattr("openverse_dataset.release.changes.DIFF_RANGE_ROWS", range_rows)
    rnd = random.Random(7)
    target = LocalTarget(str(tmp_path / "hub"))
    providers = ["a", "b", "c", "d"]
    # Seeds apart from the new rows' (0..39) and from each other: `hash(p)` varied with the process's hash seed,
    # and when it hit a new-row seed two providers held the same identifiers (a release never does).
    state = {p: {i: row(p, i, rnd.choice(LICENSES)) for i in ids(200, 1000 + providers.index(p))} for p in providers}
    takedowns: list[tuple[str, str]] = []
    for p in providers:
        write_provider(layout, p, list(state[p].values()))
    write_takedowns(layout, takedowns)
    prepare_changes(layout, MEDIA, providers, target, "r")
    prev_full = scratch_index(conn, layout, providers)
    ReleaseFiles(layout, MEDIA).promote(target)
    for round_ in range(4):
        rewritten = set(rnd.sample(providers, 2))
        rejects: dict[str, list[dict]] = {p: [] for p in providers}
        for p in sorted(rewritten):
            for i in rnd.sample(sorted(state[p]), 10):
                action = rnd.choice(["reject", "takedown", "relicense", "edit", "move", "delete"])
                r = state[p].pop(i)
                if action == "reject":
                    rejects[p].append({**r, "reason": rnd.choice(["removed_from_source", "invalid_url"])})
                elif action == "takedown":
                    takedowns.append((i, rnd.choice(["taken_down", "mature", "deleted_in_catalog"])))
                elif action == "relicense":
                    state[p][i] = {**r, "license": "cc0", "license_version": "1.0"}
                elif action == "edit":
                    state[p][i] = {**r, "title": f"edit {round_}"}
                elif action == "move":  # the work now comes from another provider, which changes too
                    q = rnd.choice([x for x in providers if x != p])
                    state[q][i] = {**r, "provider": q}
                    rewritten.add(q)
            for i in ids(5, round_ * 10 + providers.index(p)):
                state[p][i] = row(p, i)
        for p in sorted(rewritten):
            write_provider(layout, p, list(state[p].values()), rejects[p])
        write_takedowns(layout, takedowns)
        cur_full = scratch_index(conn, layout, providers)
        want_removals, want_by_provider = scratch_diff(conn, layout, prev_full, cur_full, providers)
        changelog, book = prepare_changes(layout, MEDIA, providers, target, "r")
        assert book.built == sorted(rewritten) and book.diffed == sorted(rewritten), f"round {round_}"
        assert pq.read_table(ReleaseFiles(layout, MEDIA).removals).equals(want_removals), f"round {round_}"
        assert changelog.by_provider == want_by_provider, f"round {round_}"
        ReleaseFiles(layout, MEDIA).promote(target)
        prev_full = cur_full
    # segments no index refers to were pruned: one per clean shard remains
    shards = [f for p in providers for f in layout.clean_dir(MEDIA, p).rglob("part-*.parquet")]
    assert len(list(layout.release_segments_root(MEDIA).glob("*/*.parquet"))) == len(shards) >= len(providers)


def test_local_target_without_index_is_indexed_from_its_own_files(layout: DataLayout, conn, tmp_path: Path):
    target = LocalTarget(str(tmp_path / "hub"))
    rows = [row("p", i) for i in ids(50, 9)]
    write_provider(layout, "p", rows)
    write_takedowns(layout, [])
    prepare_changes(layout, MEDIA, ["p"], target, "repo")
    stats = compute_subsets(conn, layout, MEDIA, ["p"])
    card = layout.card_file(MEDIA)
    card.parent.mkdir(parents=True)
    card.write_text("card")
    target.publish(release_files(layout, stats, card, ReleaseFiles(layout, MEDIA).removals), "repo", tag="t")
    # no promote: the index of what the target holds is unknown, so it is read from the target's own files
    write_provider(layout, "p", rows[1:])
    changelog, _ = prepare_changes(layout, MEDIA, ["p"], target, "repo")
    assert changelog.previous and changelog.by_provider == {"p": {"added": 0, "removed": 1, "changed": 0}}


def test_stale_or_missing_sidecar_is_rehashed_never_trusted(layout: DataLayout):
    write_provider(layout, "p", [row("p", i) for i in ids(20, 5)])
    folder = layout.clean_dir(MEDIA, "p")
    shard = next(folder.rglob("part-*.parquet"))
    assert shard_records(folder).rehashed == 0
    pq.write_table(pa.Table.from_pylist([row("p", "x", title="rewritten")], schema=SCHEMA), shard)
    recs = shard_records(folder)
    assert recs.rehashed == 1 and recs.by_path()[shard.relative_to(folder).as_posix()].sha256 == sha256_file(shard)
    assert shard_records(folder).rehashed == 0  # the sidecar was brought up to date
    recorded = sha256_file(shard)
    corrupt_keeping_stat(shard)
    assert ShardHashes().sha256(shard) == recorded  # taken from the sidecar (the S3 dump's path), not re-read
    shard.write_bytes(b"other bytes")
    assert ShardHashes().sha256(shard) == sha256_file(shard) != recorded  # size/mtime moved: hashed again
    layout.shard_manifest(folder).unlink()
    assert shard_records(folder).rehashed == 1


def test_target_registry_resolves_schemes_and_rejects_unknown_ones(tmp_path: Path, monkeypatch):
    assert set(TARGETS) >= {"local", "hf"}
    local = resolve_target(f"local:{tmp_path}/out")
    assert isinstance(local, LocalTarget) and local.label == f"local:{tmp_path}/out" and local.check() == []
    hub = resolve_target("hf:someorg")
    assert isinstance(hub, HubTarget) and hub.repo_id("openverse-images") == "someorg/openverse-images"
    assert hub.released_dir("x") is None and local.released_dir("x") == tmp_path / "out" / "x"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert any("HF_TOKEN" in p for p in hub.check())
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert hub.check() == []
    with pytest.raises(UnknownTargetError, match=r"unknown publish target 's3:bucket'.*local:DIR or hf:NAMESPACE"):
        resolve_target("s3:bucket")
    with pytest.raises(UnknownTargetError, match="names no location"):
        resolve_target("hf:")
    with pytest.raises(UnknownTargetError):
        resolve_target("/just/a/path")
    assert local.key != resolve_target(f"local:{tmp_path}/other").key


def test_publish_target_resource_reports_unknown_scheme_as_a_value_error(tmp_path: Path):
    from openverse_dataset.defs.resources import PublishTargetResource

    with pytest.raises(ValueError, match="OPENVERSE_PUBLISH_TARGET must be local:DIR or hf:NAMESPACE") as err:
        PublishTargetResource(target="ftp:somewhere").get()
    assert "\n" not in str(err.value)  # the CLI prints ValueErrors as one line
    default = PublishTargetResource(data_dir=str(tmp_path)).get()
    assert isinstance(default, LocalTarget) and default.location == str(tmp_path / "hub")


def test_verify_functions_on_good_and_bad_inputs(layout: DataLayout, conn, tmp_path: Path):
    good = [row("p", i, LICENSES[k % 3]) for k, i in enumerate(ids(30, 11))]
    write_provider(layout, "p", good)
    paths = [str(p) for p in sorted(layout.clean_dir(MEDIA, "p").rglob("part-*.parquet"))]
    tk = layout.takedowns_file(MEDIA)
    write_takedowns(layout, [("not-released", "taken_down")])
    assert verify.takedown_leaks(conn, paths, tk).passed
    write_takedowns(layout, [(good[3]["identifier"], "mature")])
    v = verify.takedown_leaks(conn, paths, tk)
    assert not v.passed and v.facts["leaked"] == 1 and v.rows == [[good[3]["identifier"], "mature"]]

    assert verify.invalid_licenses(compute_subsets(conn, layout, MEDIA, ["p"])).passed
    write_provider(layout, "q", [row("q", "b1", ("by", "9.9")), {**row("q", "b2"), "attribution": None}])
    v = verify.invalid_licenses(compute_subsets(conn, layout, MEDIA, ["p", "q"]))
    assert not v.passed and v.rows == [["by", "4.0", None, 11, 1], ["by", "9.9", None, 1, 0]]
    stats = compute_subsets(conn, layout, MEDIA, ["p"])
    card = render_card(IMAGE, stats, repo_id="openverse/x", release_date=date(2026, 11, 27))
    cf = layout.card_file(MEDIA)
    cf.parent.mkdir(parents=True)
    cf.write_text(card)
    view = verify.released_view(layout, stats, LocalTarget(str(tmp_path / "hub")), "x", dry_run=True)
    assert view.repo_root is None and len(view.data) == len(paths)
    v = verify.card_rows(conn, card, stats, view.files_for)
    assert v.passed and v.rows[0][:3] == ["all", "30", "30"]
    lying = card.replace("| 30 |", "| 31 |")
    assert not verify.card_rows(conn, lying, stats, view.files_for).passed
    assert not verify.card_rows(conn, card, stats, lambda globs: view.files_for(globs)[:1]).passed
    assert not verify.card_rows(conn, "no front matter", stats, view.files_for).passed


def test_subset_counts_are_cached_per_provider_and_equal_a_global_count(layout: DataLayout, conn):
    for k, p in enumerate(["a", "b", "c"]):
        rows = [row(p, i, LICENSES[(j + k) % 3]) for j, i in enumerate(ids(60 + k, k))]
        write_provider(layout, p, rows, [{**row(p, f"r{k}"), "reason": "invalid_url"}])
    paths = [str(f) for p in "abc" for f in sorted(layout.clean_dir(MEDIA, p).rglob("part-*.parquet"))]
    rel = conn.read_parquet(paths, filename=True)
    want_lp = rel.query(
        "t", "select license, provider, count(*), count(distinct filename) from t group by all order by all"
    ).fetchall()
    want_lv = rel.query(
        "t", "select license, license_version, license_jurisdiction, count(*) from t group by all order by all"
    ).fetchall()
    cold = compute_subsets(conn, layout, MEDIA, ["a", "b", "c"])
    assert [tuple(r.values()) for r in cold.by_license_provider] == want_lp
    assert [tuple(r.values())[:4] for r in cold.by_license_version] == want_lv
    assert cold.rejected_by_reason == {"invalid_url": 3} and cold.missing_providers == []
    assert compute_subsets(conn, layout, MEDIA, ["a", "never-cleaned"]).missing_providers == ["never-cleaned"]
    for f in layout.clean_dir(MEDIA, "a").rglob("part-*.parquet"):
        corrupt_keeping_stat(f)  # a's counts now come from the cache, or the next call fails
    write_provider(layout, "c", [row("c", "only")])
    warm = compute_subsets(conn, layout, MEDIA, ["a", "b", "c"])
    assert warm.rows == 60 + 61 + 1 and warm.rejected_by_reason == {"invalid_url": 2}


def test_a_changed_provider_reindexes_only_its_changed_shards(layout: DataLayout, conn, tmp_path: Path):
    target = LocalTarget(str(tmp_path / "hub"))
    rows = [row("p", i, LICENSES[k % 3]) for k, i in enumerate(ids(300, 21))]
    write_provider(layout, "p", rows)
    write_takedowns(layout, [])
    before = compute_subsets(conn, layout, MEDIA, ["p"])
    prepare_changes(layout, MEDIA, ["p"], target, "r")
    ReleaseFiles(layout, MEDIA).promote(target)
    edited = [{**r, "title": "edited"} if r["license"] == "by" and k < 30 else r for k, r in enumerate(rows)]
    write_provider(layout, "p", edited)  # the by/ shard changes; cc0/ and by-sa/ come out byte-identical
    for folder in ("cc0", "by-sa"):
        for f in (layout.clean_dir(MEDIA, "p") / license_folder(folder)).glob("*.parquet"):
            corrupt_keeping_stat(f)
    after = compute_subsets(conn, layout, MEDIA, ["p"])  # counts too come from the unchanged shards' cache
    assert after.by_license_provider == before.by_license_provider and after.rows == 300
    changelog, book = prepare_changes(layout, MEDIA, ["p"], target, "r")
    assert book.segments_built == 1 and book.reused == 2
    assert changelog.by_provider == {"p": {"added": 0, "removed": 0, "changed": 10}}


def test_an_index_from_before_segments_is_migrated_once(layout: DataLayout, conn, tmp_path: Path):
    target = LocalTarget(str(tmp_path / "hub"))
    rows = [row("p", i, LICENSES[k % 3]) for k, i in enumerate(ids(80, 31))] + [row("q", i) for i in ids(20, 32)]
    for p in ("p", "q"):
        write_provider(layout, p, [r for r in rows if r["provider"] == p])
    write_takedowns(layout, [])
    prev_full = scratch_index(conn, layout, ["p", "q"])  # what releases before segments saved (md5 row hashes)
    legacy = layout.release_legacy_index(MEDIA, target.key)
    legacy.parent.mkdir(parents=True)
    pq.write_table(prev_full, legacy)
    write_provider(layout, "p", [{**r, "license": "cc0"} if k < 4 else r for k, r in enumerate(rows[1:80])])
    cur_full = scratch_index(conn, layout, ["p", "q"])
    want_removals, want_by_provider = scratch_diff(conn, layout, prev_full, cur_full, ["p", "q"])
    changelog, _ = prepare_changes(layout, MEDIA, ["p", "q"], target, "r")
    assert pq.read_table(ReleaseFiles(layout, MEDIA).removals).equals(want_removals)
    assert set(want_removals["reason"].to_pylist()) == {"deleted", "relicensed"}
    # removals are exact; changed rows cannot be compared across hash formats, and the changelog says so
    assert {p: c["removed"] for p, c in changelog.by_provider.items()} == {
        p: c["removed"] for p, c in want_by_provider.items()
    }
    assert "not counted" in changelog.note


def test_identifier_ranges_cover_every_string_once():
    from openverse_dataset.release.changes import identifier_ranges

    assert identifier_ranges(10) == [(None, None)]
    ranges = identifier_ranges(5_600_000, 250_000)
    assert len(ranges) == 23
    rnd = random.Random(3)
    probes = ["", "0", "0000", "ffff", "fffff", "Z", "~", "a-1"] + [
        str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(500)
    ]
    for s in probes:
        hits = [(lo, hi) for lo, hi in ranges if (lo is None or s >= lo) and (hi is None or s < hi)]
        assert len(hits) == 1, s
    sizes = [sum(1 for s in probes[8:] if (lo is None or s >= lo) and (hi is None or s < hi)) for lo, hi in ranges]
    assert max(sizes) < 3 * 500 / 23  # even over uuids


def test_segment_sorted_one_range_at_a_time_equals_one_sort(tmp_path: Path, monkeypatch, conn):
    """A segment sorted range by range is the same file as one sorted whole, in identifier order, with each row's
    hash of the whole row, and leaves no scratch file beside it (ids that are not uuids fall in the open ends,
    a NULL one in the last range)."""
    from openverse_dataset.release import changes

    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2_500)] + ["", "ZZ", "zz", "~", "0", "ffff-", None]
    rng.shuffle(ids)  # a clean shard is in (created_on, identifier) order, not identifier order
    rows = [row("p", i, LICENSES[n % 3], title=f"t{n}") for n, i in enumerate(ids)]
    shard = tmp_path / "shard.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), shard, row_group_size=700)
    monkeypatch.setattr(changes, "SEGMENT_BATCH_ROWS", 300)
    built = {}
    for per_range in (10**9, 200):  # one range; ~13 ranges
        monkeypatch.setattr(changes, "SEGMENT_SORT_ROWS", per_range)
        dest = tmp_path / str(per_range) / "seg.parquet"
        assert changes.write_segment(conn, [shard], dest) == len(ids)
        assert [f.name for f in dest.parent.iterdir()] == ["seg.parquet"]
        built[per_range] = dest.read_bytes()
    assert built[200] == built[10**9]
    seg = pq.read_table(tmp_path / "200" / "seg.parquet")
    assert seg["identifier"].to_pylist() == [*sorted((i for i in ids if i is not None), key=str.encode), None]
    assert {
        r.num_rows for r in (pq.ParquetFile(tmp_path / "200" / "seg.parquet").read_row_group(i) for i in range(8))
    } == {300}
    want = dict(conn.sql(f"select identifier, hash(t)::varchar from read_parquet('{shard}') t").fetchall())
    assert dict(zip(seg["identifier"].to_pylist(), seg["row_hash"].to_pylist(), strict=True)) == want


def _spills_in_staging(connect, layout: DataLayout, tmp_path: Path) -> None:
    """Held to 64 MB, a join bigger than that spills into the data dir's staging, never into `./.tmp`, and the
    spill folder is gone once the connection closes."""
    with connect() as c:
        assert c.sql("select current_setting('memory_limit')").fetchall()[0][0] == "61.0 MiB"
        spill = Path(c.sql("select current_setting('temp_directory')").fetchall()[0][0])
        assert layout.staging_area() in spill.parents
        c.execute(
            "create table a as select (i * 7919 % 4000037)::varchar || repeat('x', 40) k from range(3000000) t(i)"
        )
        assert c.sql("select count(*) from a x join a y using (k)").fetchall()[0][0] == 3_000_000
        assert any(spill.iterdir())  # it did spill (140 MB of table and join under a 64 MB limit), and there
    assert not spill.exists()
    assert not (tmp_path / ".tmp").exists()


def test_bookkeeping_connection_spills_inside_the_data_dir_and_cleans_up(tmp_path: Path, monkeypatch):
    from openverse_dataset.release.changes import bookkeeping_connection

    layout = DataLayout(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    _spills_in_staging(lambda: bookkeeping_connection(layout, limit="64MB"), layout, tmp_path)


def test_duckdb_resource_of_subsets_and_checks_spills_inside_the_data_dir(tmp_path: Path, monkeypatch):
    """The resource the subsets step and the release checks use: bounded (256 MB), spilling in the data dir."""
    from openverse_dataset.defs.resources import build_resources

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENVERSE_DATA_DIR", str(tmp_path / "data"))
    assert build_resources()["duckdb"].memory_limit == "256MB"
    resource = build_resources()["duckdb"].model_copy(update={"memory_limit": "64MB"})
    _spills_in_staging(resource.get_connection, DataLayout(tmp_path / "data"), tmp_path)
