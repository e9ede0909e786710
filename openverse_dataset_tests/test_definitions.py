"""The Dagster graph: a snapshot of every asset spec (so graph changes are deliberate), sensors, a partition run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from openverse_dataset.definitions import defs as load_defs
from openverse_dataset.defs.common import PROVIDER_PARTITIONS
from openverse_dataset.defs.resources import build_resources

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"


def spec_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for k in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(k)
        out[k.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": node.partitions_def.name
            if isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
            else None,
            "owners": list(node.owners),
            "code_version": node.code_version,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return out


def test_every_asset_spec_matches_the_snapshot(env):
    snap = spec_snapshot(load_defs())
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    assert snap == json.loads(SNAPSHOT.read_text()), "graph changed: rerun with UPDATE_SNAPSHOTS=1 if deliberate"


def test_every_asset_and_check_is_described_for_a_newcomer(env):
    defs = load_defs()
    graph = defs.resolve_asset_graph()
    for k in graph.get_all_asset_keys():
        node = graph.get(k)
        assert node.description and len(node.description) > 60, k
        assert node.kinds and node.owners and node.group_name in {"image", "audio"}
    for ck in graph.asset_check_keys:
        assert graph.get_check_spec(ck).description, ck


def test_definitions_load_and_jobs_are_named(env):
    defs = load_defs()
    defs.validate_loadable(defs)
    names = {j.name for j in defs.resolve_all_job_defs()}
    assert {
        "discover_providers",
        "image_refresh_provider",
        "audio_refresh_provider",
        "image_publish_release",
        "audio_publish_release",
    } <= names


def test_provider_sensor_adds_partitions_and_requests_runs_once(env):
    defs = load_defs()
    sensor = defs.resolve_sensor_def("audio_stale_providers")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=build_resources())
        result = sensor(ctx)
        assert [r.partition_key for r in result.run_requests] == ["jamendo"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["jamendo"]
        instance.add_dynamic_partitions(PROVIDER_PARTITIONS["audio"].name, ["jamendo"])
        again = sensor(dg.build_sensor_context(instance=instance, resources=build_resources(), cursor=result.cursor))
        assert not again.run_requests and not again.dynamic_partitions_requests


def test_materialize_one_partition_like_the_ui(env):
    defs = load_defs()
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("discover_providers")
        assert job.execute_in_process(instance=instance).success
        assert "flickr" in instance.get_dynamic_partitions("image_providers")
        result = defs.resolve_job_def("image_refresh_provider").execute_in_process(
            instance=instance, partition_key="wikimedia"
        )
        assert result.success
        ev = instance.get_latest_materialization_event(dg.AssetKey(["image", "clean"]))
        md = ev.asset_materialization.metadata
        assert md["dagster/row_count"].value == 232
        assert "deleted_in_catalog" in md["rejected_by_reason"].value
        assert "dagster/column_schema" in md and "dagster/column_lineage" in md
        raw = instance.get_latest_materialization_event(dg.AssetKey(["image", "raw"])).asset_materialization
        assert raw.metadata["snapshot_rows"].value == 233 and raw.partition == "wikimedia"


@pytest.mark.parametrize("secret", ["hunter2-secret-pw"])
def test_database_password_never_reaches_metadata_or_errors(env, monkeypatch, secret):
    from openverse_dataset.cli import main

    monkeypatch.setenv("OPENVERSE_CATALOG_URL", f"postgresql://postgres:{secret}@127.0.0.1:1/nope")
    defs = load_defs()
    with dg.instance_for_test() as instance:
        r = defs.resolve_job_def("discover_providers").execute_in_process(instance=instance, raise_on_error=False)
        assert not r.success
        text = json.dumps([str(e) for e in r.all_events])
        assert secret not in text and "***" in text
    assert main(["build", "--media", "audio"]) == 1
