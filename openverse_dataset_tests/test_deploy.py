"""The production instance configuration: a real Dagster instance on PostgreSQL runs a sensor tick and a run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

from openverse_dataset.definitions import defs as load_defs
from openverse_dataset.defs.resources import build_resources

DEPLOY = Path(__file__).parents[1] / "deploy" / "dagster.yaml"

pytestmark = pytest.mark.postgres


def test_production_config_is_valid_for_dagster_and_dagster_aws(monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u:p@db:5432/dagster")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", "logs")
    cfg = yaml.safe_load(DEPLOY.read_text())
    assert process_config(dagster_instance_config_schema(), cfg).success
    assert process_config(EcsRunLauncher.config_type(), cfg["run_launcher"]["config"]).success
    assert process_config(S3ComputeLogManager.config_type(), cfg["compute_logs"]["config"]).success
    assert cfg["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}  # no credential in the file
    assert cfg["telemetry"]["enabled"] is False


def test_production_instance_runs_a_sensor_tick_and_a_partition(env, pg_url, upstream_catalog, tmp_path, monkeypatch):
    """Dagster's storage in one database, the catalog and the API database as production has them."""
    upstream_catalog.seed_demo(["audio"])
    upstream_catalog.prepare()
    upstream_catalog.configure(monkeypatch)
    cfg = yaml.safe_load(DEPLOY.read_text())
    cfg.pop("run_launcher")  # ECS cannot be reached from here: the default launcher stands in
    cfg.pop("compute_logs")  # S3 likewise: local compute logs
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # dagster-postgres needs psycopg2 (its NOTIFY is not valid under psycopg 3, which SQLAlchemy 2.1 defaults to)
    monkeypatch.setenv(
        "DAGSTER_PG_URL", sa.engine.make_url(pg_url).set(drivername="postgresql+psycopg2").render_as_string(False)
    )
    defs = load_defs()
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        sensor = defs.resolve_sensor_def("audio_stale_providers")
        result = sensor(dg.build_sensor_context(instance=instance, resources=build_resources()))
        assert [r.partition_key for r in result.run_requests] == ["jamendo"]
        for req in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        run = defs.resolve_job_def("audio_refresh_provider").execute_in_process(
            instance=instance, partition_key="jamendo", tags=result.run_requests[0].tags
        )
        assert run.success
        stored = instance.get_run_by_id(run.run_id)
        assert stored is not None and stored.tags["dagster/partition"] == "jamendo"
        ev = instance.get_latest_materialization_event(dg.AssetKey(["audio", "clean"]))
        assert ev.asset_materialization.metadata["dagster/row_count"].value == 99
        again = sensor(dg.build_sensor_context(instance=instance, resources=build_resources()))
        assert again.run_requests == []  # the PostgreSQL event log holds the recorded watermark
