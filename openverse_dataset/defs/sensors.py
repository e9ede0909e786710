"""Sensors that keep releases current without anyone clicking.

- `<media>_stale_providers`: one watermark query for all providers; requests a refresh (raw -> clean) only for
  providers whose watermark differs from the one their last raw materialization recorded, and adds new
  providers as partitions in the same tick.
- `<media>_takedowns`: sees new entries in `api_deleted<media>`, `api_mature<media>`, `deleted_<media>`, and
  sources newly hidden (or unhidden) in the API's `content_provider`, and re-cleans only the affected providers
  (with a fresh takedown snapshot), so the next release drops them (or brings them back).
- `openverse_automation`: Dagster's declarative automation (subsets -> card -> release follow clean), running
  by default in a fresh deployment.
Downstream of clean, the assets' automation conditions take over.
"""

import json
import time
from datetime import datetime

import dagster as dg

from openverse_dataset.catalog.prepare import MissingIndexes
from openverse_dataset.catalog.providers import partition_key_problem
from openverse_dataset.catalog.takedowns import hidden_sources
from openverse_dataset.catalog.watermarks import TakedownMark, catalog_watermarks, takedown_mark, takedowns_since
from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key, latest_partition_metadata, recorded_watermarks
from openverse_dataset.defs.jobs import refresh_job_name
from openverse_dataset.defs.resources import CatalogResource
from openverse_dataset.defs.tags import REFRESH_TAKEDOWNS_TAG
from openverse_dataset.media import MEDIA_TYPES, MediaType

RETRIES = {"dagster/max_retries": "2"}


def apply_takedowns_job_name(media: str) -> str:
    return f"{media}_apply_takedowns"


def stale_sensor(media: MediaType) -> dg.SensorDefinition:
    pdef = PROVIDER_PARTITIONS[media.name]

    @dg.sensor(
        name=f"{media.name}_stale_providers",
        job_name=refresh_job_name(media.name),
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Refreshes only the {media.name} providers whose catalog watermark (newest updated_on, "
        "newest deleted_on) moved since their last raw extract; new providers become partitions and are "
        "refreshed in the same tick.",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
        start = time.monotonic()
        try:
            marks = catalog_watermarks(catalog.catalog_url(), media)
        except MissingIndexes as exc:  # never scan the catalog silently: say what is missing and what to run
            context.log.warning(str(exc))
            return dg.SensorResult(skip_reason=str(exc))
        known = set(context.instance.get_dynamic_partitions(pdef.name))
        recorded = recorded_watermarks(context.instance, media)
        requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        new, runs = [], []
        for provider, wm in marks.items():
            if partition_key_problem(provider):
                continue  # reported by the providers asset
            if provider not in known:
                new.append(provider)
            if recorded.get(provider) == wm.token or requested.get(provider) == wm.token:
                continue  # up to date, or its refresh is already requested
            runs.append(
                dg.RunRequest(
                    partition_key=provider,
                    run_key=f"{provider}@{wm.token}",
                    tags={
                        "openverse/trigger": "new provider" if provider not in known else "catalog changed",
                        **RETRIES,
                    },
                )
            )
            requested[provider] = wm.token
        context.log.info(
            f"{len(marks)} providers checked in {time.monotonic() - start:.2f}s: {len(new)} new, {len(runs)} to refresh"
        )
        return dg.SensorResult(
            dynamic_partitions_requests=[pdef.build_add_request(new)] if new else [],
            run_requests=runs,
            cursor=json.dumps(requested, sort_keys=True),
            skip_reason=None if runs or new else f"all {len(marks)} providers are up to date",
        )

    return _sensor


def takedown_sensor(media: MediaType, apply_job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{media.name}_takedowns",
        jobs=[apply_job],
        job_name=None,
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Fast path for takedowns: new rows in {media.api_deleted_table}, {media.api_mature_table} "
        f"or {media.deleted_table} re-clean only the affected providers against a fresh takedown snapshot, "
        "so the next release drops them.",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
        cat, api = catalog.catalog_url(), catalog.takedown_url()
        try:
            mark = takedown_mark(cat, api, media)
        except MissingIndexes as exc:  # never scan the catalog silently: say what is missing and what to run
            context.log.warning(str(exc))
            return dg.SensorResult(skip_reason=str(exc))
        hidden = list(hidden_sources(api) or ())
        state = json.loads(context.cursor) if context.cursor else {}
        # A generation per change seen: run keys stay unique even when a source is hidden, unhidden, hidden again.
        generation = int(state.pop("generation", 0))
        cursor = json.dumps({**_mark_json(mark), "hidden_sources": hidden, "generation": generation + 1})
        if not context.cursor:  # first tick: the builds so far applied everything up to now
            return dg.SensorResult(cursor=cursor, skip_reason="recorded the current mark")
        flipped = set(hidden) ^ set(state.pop("hidden_sources", hidden))  # sources hidden or unhidden since
        previous = _mark_from_json(state)
        if previous.token == mark.token and not flipped:
            return dg.SensorResult(skip_reason="no new takedowns")
        affected = takedowns_since(cat, api, media, previous, mark) if previous.token != mark.token else {}
        known = set(context.instance.get_dynamic_partitions(PROVIDER_PARTITIONS[media.name].name))
        for provider in _providers_of_sources(context.instance, media, sorted(known), flipped):
            affected.setdefault(provider, set()).update(f"source {s}" for s in flipped)
        token = mark.token + (f"|changes={generation}" if flipped else "")
        runs = [
            dg.RunRequest(
                partition_key=provider,
                run_key=f"takedowns:{provider}@{token}",
                tags={REFRESH_TAKEDOWNS_TAG: "true", "openverse/trigger": f"{len(ids)} new takedowns", **RETRIES},
            )
            for provider, ids in sorted(affected.items())
            if provider in known
        ]
        context.log.info(f"new takedowns affect {len(affected)} providers: {sorted(affected)}")
        return dg.SensorResult(run_requests=runs, cursor=cursor)

    return _sensor


def _providers_of_sources(instance: dg.DagsterInstance, media: MediaType, known: list[str], sources: set[str]):
    """Partitions holding any of `sources`: from the sources each partition's last clean recorded (no catalog
    scan: the catalog has no index on source), and a provider named like the source."""
    if not sources:
        return []
    meta = latest_partition_metadata(instance, key(media, "clean"), known)
    by_source = {p: (m.get("rows_by_source").value if m.get("rows_by_source") else {}) for p, m in meta.items()}
    return [p for p in known if p in sources or sources & set(by_source.get(p) or {})]


def _mark_json(m: TakedownMark) -> dict:
    return {k: (v.isoformat() if v else None) for k, v in vars(m).items()}


def _mark_from_json(d: dict) -> TakedownMark:
    return TakedownMark(**{k: datetime.fromisoformat(v) if v else None for k, v in d.items()})


def apply_takedowns_job(media: MediaType):
    return dg.define_asset_job(
        apply_takedowns_job_name(media.name),
        selection=dg.AssetSelection.assets(key(media, "clean"), key(media, "rejects")),
        partitions_def=PROVIDER_PARTITIONS[media.name],
        description=f"Re-clean one {media.name} provider against a fresh takedown snapshot (no re-extract).",
    )


@dg.definitions
def defs() -> dg.Definitions:
    sensors, jobs = [], []
    for m in MEDIA_TYPES.values():
        job = apply_takedowns_job(m)
        jobs.append(job)
        sensors += [stale_sensor(m), takedown_sensor(m, job)]
    sensors.append(
        dg.AutomationConditionSensorDefinition(
            "openverse_automation",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=30,
            description="Evaluates the assets' automation conditions: subsets, card and release follow clean, "
            "and the release also runs on its weekly cadence.",
        )
    )
    return dg.Definitions(sensors=sensors, jobs=jobs)
