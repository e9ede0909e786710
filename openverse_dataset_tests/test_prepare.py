"""Change detection on Openverse's real catalog: `prepare-catalog`, and sensors that never scan silently."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from openverse_dataset.catalog.prepare import INDEXES, MissingIndexes, catalog_sql, missing_indexes, prepare_catalog
from openverse_dataset.catalog.providers import discover_providers
from openverse_dataset.catalog.watermarks import (
    TakedownMark,
    catalog_watermarks,
    takedown_mark,
    takedowns_since,
)
from openverse_dataset.cli import main
from openverse_dataset.definitions import defs as load_defs
from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key
from openverse_dataset.defs.resources import build_resources
from openverse_dataset.defs.tags import WATERMARK_TAG
from openverse_dataset.media import AUDIO, IMAGE, MEDIA_TYPES

pytestmark = pytest.mark.postgres
OURS = {i.table: i.name for m in INDEXES.values() for i in m}


def all_indexes(cat) -> dict[str, set[str]]:
    return {t: cat.indexes(t) for t in ("image", "deleted_image", "audio", "deleted_audio")}


def test_upstream_catalog_has_only_openverse_indexes_until_prepared(upstream_catalog):
    before = all_indexes(upstream_catalog)
    assert before["image"] == {"image_pkey", "image_identifier_key", "image_provider_fid_idx", "image_url_key"}
    assert before["deleted_image"] == {"deleted_image_identifier_key", "deleted_image_provider_fid_idx"}
    assert [i.name for i in missing_indexes(upstream_catalog.catalog, "image")] == [i.name for i in INDEXES["image"]]


def test_prepare_catalog_is_idempotent_and_print_changes_nothing(upstream_catalog, capsys, monkeypatch):
    monkeypatch.delenv("OPENVERSE_CATALOG_URL", raising=False)
    before = all_indexes(upstream_catalog)
    assert main(["prepare-catalog", "--url", upstream_catalog.catalog_url, "--print"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{s};" for s in catalog_sql()] and len(printed) == 4
    assert all(s.startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ") for s in printed)
    assert all_indexes(upstream_catalog) == before  # --print connects to nothing, creates nothing

    assert main(["prepare-catalog", "--url", upstream_catalog.catalog_url]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == printed  # each statement printed as it runs
    after = all_indexes(upstream_catalog)
    for table, name in OURS.items():
        assert after[table] == before[table] | {name}
    for m in MEDIA_TYPES:
        assert missing_indexes(upstream_catalog.catalog, m) == []

    assert main(["prepare-catalog", "--url", upstream_catalog.catalog_url]) == 0  # again: nothing to do
    again = capsys.readouterr()
    assert again.out == "" and again.err.count("already present") == 4
    assert all_indexes(upstream_catalog) == after


def test_an_equivalent_index_counts_and_an_invalid_one_is_rebuilt(upstream_catalog):
    # a DBA's own index on the same leading columns serves: nothing is created next to it
    upstream_catalog.execute("CREATE INDEX dba_image_recent ON image (provider, updated_on, identifier)")
    done = {d.index.name: d.action for d in prepare_catalog(upstream_catalog.catalog_url, ["image"])}
    assert done == {"image_provider_updated_on_idx": "present", "deleted_image_provider_deleted_on_idx": "created"}
    assert "image_provider_updated_on_idx" not in upstream_catalog.indexes("image")
    # an interrupted CONCURRENTLY build leaves an INVALID index: IF NOT EXISTS alone would keep it forever
    upstream_catalog.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'deleted_image_provider_deleted_on_idx'::regclass"
    )
    assert [i.name for i in missing_indexes(upstream_catalog.catalog, IMAGE)] == [
        "deleted_image_provider_deleted_on_idx"
    ]
    done = {d.index.name: d.action for d in prepare_catalog(upstream_catalog.catalog_url, ["image"])}
    assert done["deleted_image_provider_deleted_on_idx"] == "rebuilt"
    assert missing_indexes(upstream_catalog.catalog, IMAGE) == []


def test_watermarks_match_a_plain_scan(upstream_catalog):
    cat = upstream_catalog
    cat.seed_demo()
    cat.prepare()
    flickr = cat.scalar("select array_agg(identifier::text order by identifier) from image where provider = 'flickr'")
    late = datetime(2026, 6, 1, tzinfo=UTC)
    cat.move_to_deleted("image", flickr[:3], when=late)
    cat.execute("update image set updated_on = :t where identifier = cast(:i as uuid)", t=late, i=flickr[5])
    cat.insert_media(  # a row without provider is nobody's watermark
        "image",
        [
            {
                "created_on": late,
                "updated_on": late + timedelta(days=1),
                "url": "https://x.example/1.jpg",
                "license": "by",
                "removed_from_source": False,
                "foreign_identifier": "orphan",
            }
        ],
    )
    # one row stamped far in the future must not pin eol's watermark for good (connect.PG_SANE_TIMESTAMP)
    cat.execute(
        "update image set updated_on = '2999-01-01' where identifier = (select identifier from image "
        "where provider = 'eol' order by identifier limit 1)"
    )
    with cat.catalog.connect() as conn:
        want = {
            p: (u, d)
            for p, u, d in conn.execute(
                sa.text(
                    "select i.provider, max(i.updated_on) filter (where i.updated_on < '2100-01-01'), "
                    "(select max(deleted_on) from deleted_image d "
                    "where d.provider = i.provider) from image i where i.provider is not null group by i.provider"
                )
            )
        }
        want_deleted = conn.scalar(sa.text("select max(deleted_on) from deleted_image"))
    marks = catalog_watermarks(cat.catalog_url, IMAGE)
    assert {p: (w.max_updated_on, w.max_deleted_on) for p, w in marks.items()} == want
    assert marks["flickr"].max_updated_on == late and marks["flickr"].max_deleted_on == late
    assert discover_providers(cat.catalog_url, IMAGE).rows_without_provider == 1
    mark = takedown_mark(cat.catalog_url, cat.api_url, IMAGE)
    assert mark.deleted == want_deleted == late
    # rows deleted after the demo's deletion: exactly the three flickr rows, found per provider
    before = TakedownMark(mark.api_deleted, mark.api_mature, late - timedelta(days=1))
    assert takedowns_since(cat.catalog_url, cat.api_url, IMAGE, before, mark) == {"flickr": set(flickr[:3])}


def test_watermark_queries_use_the_prepared_indexes(upstream_catalog):
    cat = upstream_catalog
    cat.seed_demo(["image"])
    cat.prepare()
    from openverse_dataset.catalog.watermarks import _pg_newest_deletion_sql, _pg_sql

    with cat.catalog.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: make the planner show its index path
        for stmt in (_pg_sql(IMAGE, False), _pg_newest_deletion_sql(IMAGE)):
            plan = json.dumps(conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {stmt.text}")).scalar())
            assert "Seq Scan" not in plan
        plan = json.dumps(conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {_pg_sql(IMAGE, False).text}")).scalar())
        assert "image_provider_updated_on_idx" in plan and "deleted_image_provider_deleted_on_idx" in plan


def _tick(defs, name, instance, cursor=None):
    return defs.resolve_sensor_def(name)(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources())
    )


def test_unprepared_catalog_sensors_skip_naming_the_missing_indexes(env, upstream_catalog, monkeypatch):
    upstream_catalog.seed_demo()
    upstream_catalog.configure(monkeypatch)
    defs = load_defs()
    with dg.instance_for_test() as instance:
        for name in ("image_stale_providers", "audio_stale_providers", "image_takedowns"):
            result = _tick(defs, name, instance)
            assert result.run_requests == [] and not result.dynamic_partitions_requests
            reason = result.skip_reason.skip_message
            for index in INDEXES[name.split("_")[0]]:
                assert index.describe() in reason
            assert "openverse-dataset prepare-catalog --url " in reason
            assert upstream_catalog.catalog_url.split("@")[-1] in reason
        with pytest.raises(MissingIndexes):
            catalog_watermarks(upstream_catalog.catalog_url, AUDIO)


def test_prepared_catalog_sensor_sees_the_one_changed_provider(env, upstream_catalog, monkeypatch):
    upstream_catalog.seed_demo(["image"])
    upstream_catalog.configure(monkeypatch)
    assert main(["prepare-catalog"]) == 0  # the URL from OPENVERSE_CATALOG_URL
    defs = load_defs()
    with dg.instance_for_test() as instance:
        marks = catalog_watermarks(upstream_catalog.catalog_url, IMAGE)
        instance.add_dynamic_partitions(PROVIDER_PARTITIONS["image"].name, list(marks))
        for p, wm in marks.items():  # every provider extracted at its current watermark
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key("image", "raw"), partition=p, tags={WATERMARK_TAG: wm.token})
            )
        quiet = _tick(defs, "image_stale_providers", instance)
        assert quiet.run_requests == [] and "up to date" in quiet.skip_reason.skip_message
        victim = upstream_catalog.scalar("select identifier::text from image where provider = 'eol' limit 1")
        upstream_catalog.move_to_deleted("image", [victim])  # a deletion moves only the deleted_on watermark
        changed = _tick(defs, "image_stale_providers", instance, quiet.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["eol"]
