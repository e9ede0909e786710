"""What the instance knows about each provider partition: last successful refresh, latest failure.

Read by the subsets step (which providers a release holds back), the stale-provider sensor (per-provider
freshness) and the alerts. A handful of event-log queries whatever the partition count, plus one run lookup per
*failed* provider.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.partition_status_cache import AssetPartitionStatus

from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import MediaType
from openverse_dataset.release.holdback import ProviderState, first_line


def last_refresh_times(instance: dg.DagsterInstance, media: MediaType, partitions: list[str]) -> dict[str, datetime]:
    """provider -> time of its latest successful raw materialization (two queries)."""
    ids = instance.get_latest_storage_id_by_partition(
        key(media, "raw"), dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key(media, "raw"), storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {r.partition_key: datetime.fromtimestamp(r.timestamp, UTC) for r in records if r.partition_key}


def root_error(error) -> str:
    """The first line of the innermost cause of a Dagster error (the user's exception, not Dagster's wrapper)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return first_line(getattr(error, "message", "") or "")


def latest_failure(instance: dg.DagsterInstance, media: MediaType, provider: str) -> tuple[str, str, str]:
    """(first line of the error, ISO time, run id) of the provider's latest failed run, or empty strings."""
    runs = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": provider}, statuses=[dg.DagsterRunStatus.FAILURE]), limit=10
    )
    ours = {key(media, "raw"), key(media, "clean")}

    def mine(run: dg.DagsterRun) -> bool:  # provider names may repeat across media types
        return bool(ours & set(run.asset_selection or ())) or run.job_name.startswith(f"{media.name}_")

    rec = next((r for r in runs if mine(r.dagster_run)), None)
    if rec is None:
        return "", "", ""
    message = ""
    for ev in instance.all_logs(rec.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = ev.dagster_event.step_failure_data if ev.dagster_event else None
        if data and data.error:
            message = root_error(data.error)
            break
    when = (rec.end_time and datetime.fromtimestamp(rec.end_time, UTC).isoformat(timespec="seconds")) or ""
    return message, when, rec.dagster_run.run_id


def provider_states(instance: dg.DagsterInstance, media: MediaType, layout: DataLayout) -> list[ProviderState]:
    """Every current provider partition's state: cleaned files present, latest refresh failed or running."""
    pdef = PROVIDER_PARTITIONS[media.name]
    partitions = sorted(instance.get_dynamic_partitions(pdef.name))
    status: dict[str, set] = {p: set() for p in partitions}
    for stage in ("raw", "clean"):
        by_partition = instance.get_status_by_partition(key(media, stage), partitions, pdef) or {}
        for p, s in by_partition.items():
            if s is not None:
                status[p].add(s)
    out = []
    for p in partitions:
        failed = AssetPartitionStatus.FAILED in status[p]
        failure, when, run_id = latest_failure(instance, media, p) if failed else ("", "", "")
        out.append(
            ProviderState(
                provider=p,
                cleaned=layout.clean_dir(media.name, p).exists(),  # swapped in only by a successful clean
                failed=failed,
                in_progress=AssetPartitionStatus.IN_PROGRESS in status[p],
                failure=failure,
                failed_at=when,
                run_id=run_id,
            )
        )
    return out
