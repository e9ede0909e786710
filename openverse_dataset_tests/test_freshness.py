"""Keeping releases fresh: stale-partition and takedown sensors and automation, on real catalog changes."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from openverse_dataset.definitions import defs as load_defs
from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key
from openverse_dataset.defs.resources import build_resources
from openverse_dataset.defs.tags import REFRESH_TAKEDOWNS_TAG

pytestmark = pytest.mark.postgres


def tick(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None):
    """Evaluate a sensor as the daemon would, and apply its partition requests to the instance."""
    result = defs.resolve_sensor_def(name)(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources())
    )
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def run_requests(defs, instance, requests, job_name) -> None:
    job = defs.resolve_job_def(job_name)
    for r in requests:
        assert job.execute_in_process(instance=instance, partition_key=r.partition_key, tags=r.tags).success


def test_sensors_refresh_only_what_changed(env, upstream_catalog, monkeypatch):
    upstream_catalog.seed_demo()
    upstream_catalog.prepare()  # the indexes change detection needs (the sensors skip without them)
    upstream_catalog.configure(monkeypatch)
    defs = load_defs()
    engine = upstream_catalog.catalog
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("discover_providers").execute_in_process(instance=instance).success
        # first tick: every provider is new to the raw asset -> all requested once
        first = tick(defs, "image_stale_providers", instance, None)
        assert len(first.run_requests) == 12
        run_requests(defs, instance, first.run_requests, "image_refresh_provider")

        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        # nothing changed -> nothing requested
        quiet = tick(defs, "image_stale_providers", instance, first.cursor)
        assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []

        # one provider's rows change -> only that provider
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "update image set title = title || ' (edited)', updated_on = now() "
                    "where provider = 'eol' and identifier = (select identifier from image "
                    "where provider = 'eol' order by identifier limit 1)"
                )
            )
        changed = tick(defs, "image_stale_providers", instance, quiet.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["eol"]
        # requested but not yet run: the next tick does not ask again
        assert tick(defs, "image_stale_providers", instance, changed.cursor).run_requests == []
        run_requests(defs, instance, changed.run_requests, "image_refresh_provider")
        assert tick(defs, "image_stale_providers", instance, changed.cursor).run_requests == []

        # automation: eol's clean changed -> subsets, card and release follow; nothing is re-extracted
        follow = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
        assert follow.get_num_requested(key("image", "subsets")) == 1
        assert follow.get_num_requested(key("image", "raw")) == 0
        assert follow.get_num_requested(key("audio", "subsets")) == 0

        # a new provider -> its partition appears and its run is requested in the same tick
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "insert into image (identifier, created_on, updated_on, provider, source, foreign_identifier, url, "
                    "license, license_version, removed_from_source, title) values (gen_random_uuid(), now(), now(), "
                    "'newmuseum', 'newmuseum', 'n1', 'https://newmuseum.example/1.jpg', 'cc0', '1.0', false, 'New')"
                )
            )
        added = tick(defs, "image_stale_providers", instance, changed.cursor)
        assert [r.partition_key for r in added.run_requests] == ["newmuseum"]
        assert "newmuseum" in instance.get_dynamic_partitions(PROVIDER_PARTITIONS["image"].name)
        run_requests(defs, instance, added.run_requests, "image_refresh_provider")


def test_takedown_fast_path_recleans_only_the_affected_provider(env, upstream_catalog, monkeypatch):
    upstream_catalog.seed_demo()
    upstream_catalog.prepare()
    upstream_catalog.configure(monkeypatch)  # the takedown tables live in the separate API database
    defs = load_defs()
    engine = upstream_catalog.catalog
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("discover_providers").execute_in_process(instance=instance).success
        for p in instance.get_dynamic_partitions("image_providers"):
            assert (
                defs.resolve_job_def("image_refresh_provider")
                .execute_in_process(instance=instance, partition_key=p)
                .success
            )
        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success
        first = tick(defs, "image_takedowns", instance, None)
        assert first.run_requests == []  # the first tick only records where the tables are

        with engine.connect() as conn:
            victim = conn.scalar(
                sa.text(
                    "select identifier::text from image where provider = 'rijksmuseum' "
                    "and not removed_from_source order by identifier limit 1"
                )
            )
        released = pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")
        assert victim in released["identifier"].to_list()
        upstream_catalog.take_down("image", [victim])

        second = tick(defs, "image_takedowns", instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["rijksmuseum"]
        assert second.run_requests[0].tags[REFRESH_TAKEDOWNS_TAG] == "true"
        run_requests(defs, instance, second.run_requests, "image_apply_takedowns")
        assert tick(defs, "image_takedowns", instance, second.cursor).run_requests == []

        result = defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["release_has_no_takedowns"] and checks["no_takedowns_in_subsets"]
        released = pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")
        assert victim not in released["identifier"].to_list()
        raw_runs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key("image", "raw")), limit=100)
        assert len(raw_runs.records) == 12  # the fast path re-cleaned without re-extracting
