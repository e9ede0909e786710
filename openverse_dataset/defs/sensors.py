"""Sensors that keep releases current without anyone clicking, and tell someone when they cannot.

- `<media>_stale_providers`: one watermark query for all providers. The catalog is the source of truth of the
  provider set: new providers become partitions and are refreshed in the same tick; providers gone from the
  catalog lose their partition and a release without them is requested. Refreshes only providers whose
  watermark differs from the one their last raw materialization recorded, and reports per-provider freshness.
- `<media>_takedowns`: sees new entries in `api_deleted<media>`, `api_mature<media>`, `deleted_<media>`, and
  sources newly hidden (or unhidden) in the API's `content_provider`, and re-cleans only the affected providers
  (with a fresh takedown snapshot), so the next release drops them (or brings them back). Its first tick
  resumes from the takedown snapshot the clean step used, so no entry falls in between.
- `openverse_automation`: Dagster's declarative automation (subsets -> card -> release follow clean).
- `alert_on_run_failure` / `alert_on_check_failure`: post to `OPENVERSE_ALERT_WEBHOOK_URL` (or log) once a
  run has failed for good (after its retries), or a check starts failing.

Intervals can be shortened through the environment (the end-to-end test does): see `interval()`.
"""

import json
import os
import time

import dagster as dg

from openverse_dataset.alerting import Alert, send_alert
from openverse_dataset.catalog.prepare import MissingIndexes
from openverse_dataset.catalog.providers import partition_key_problem
from openverse_dataset.catalog.slices import provider_of_key, round_finished
from openverse_dataset.catalog.snapshot_marks import earliest, mark_from_json, mark_to_json
from openverse_dataset.catalog.takedowns import hidden_sources
from openverse_dataset.catalog.watermarks import catalog_watermarks, takedown_mark, takedowns_since
from openverse_dataset.defs.common import (
    PROVIDER_PARTITIONS,
    SLICE_PARTITIONS,
    key,
    latest_partition_metadata,
    recorded_watermarks,
)
from openverse_dataset.defs.freshness import evaluation, freshness_report
from openverse_dataset.defs.jobs import JOBS, publish_job_name, refresh_job_name, refresh_slice_job_name
from openverse_dataset.defs.resources import CatalogResource
from openverse_dataset.defs.status import root_error
from openverse_dataset.defs.tags import CATALOG_CHANGE_TAG, REFRESH_TAKEDOWNS_TAG, SLICE_OF_TAG
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.release.holdback import first_line

FRESHNESS_REPORT_SECONDS = 3600  # the freshness check is re-reported at least hourly, and whenever it changes


def interval(name: str, default: int) -> int:
    """`OPENVERSE_<NAME>_INTERVAL_SECONDS` or the default: sensor intervals, shortened by tests and drills."""
    text = os.environ.get(f"OPENVERSE_{name.upper()}_INTERVAL_SECONDS", "").strip()
    return max(1, int(text)) if text else default


def retry_tags() -> dict[str, str]:
    """Runs the sensors request are retried on failure (`OPENVERSE_RUN_MAX_RETRIES`, default 2), then alerted."""
    return {"dagster/max_retries": os.environ.get("OPENVERSE_RUN_MAX_RETRIES", "2").strip() or "2"}


def apply_takedowns_job_name(media: str) -> str:
    return f"{media}_apply_takedowns"


def _load_cursor(text: str | None) -> dict:
    data = json.loads(text) if text else {}
    if "requested" not in data:  # cursor of an earlier version: provider -> requested token
        data = {"requested": data}
    return data


def stale_sensor(media: MediaType) -> dg.SensorDefinition:
    pdef = PROVIDER_PARTITIONS[media.name]

    @dg.sensor(
        name=f"{media.name}_stale_providers",
        jobs=[
            JOBS[refresh_job_name(media.name)],
            JOBS[publish_job_name(media.name)],
            JOBS[refresh_slice_job_name(media.name)],
        ],
        minimum_interval_seconds=interval("stale_sensor", 300),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps the {media.name} provider partitions equal to the catalog's providers (new ones are "
        "added and refreshed in the same tick; gone ones are removed and a release without them is requested), "
        "refreshes only providers whose catalog watermark (newest updated_on, newest deleted_on) moved since "
        "their last raw extract (a provider split into slices: one run per slice, then the provider's run to "
        "assemble them), and reports per-provider freshness (check `providers_fresh`).",
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
        cursor = _load_cursor(context.cursor)
        requested: dict[str, str] = cursor["requested"]
        rounds: dict[str, dict] = cursor.setdefault("slicing", {})  # provider -> its round of slice runs
        valid = {p: wm for p, wm in marks.items() if not partition_key_problem(p)}  # others: the providers asset
        new, runs = [], []
        runs += _finished_rounds(context, media, rounds, set(valid))
        slice_keys = set(context.instance.get_dynamic_partitions(SLICE_PARTITIONS[media.name].name))
        for provider, wm in valid.items():
            if provider not in known:
                new.append(provider)
            if recorded.get(provider) == wm.token or requested.get(provider) == wm.token or provider in rounds:
                continue  # up to date, or its refresh is already requested (or its slices are running)
            # The provider's slice partitions: kept equal to its plan by its raw run (the sensor reads no file).
            units = sorted(k for k in slice_keys if provider_of_key(k) == provider) if provider in known else []
            if units:
                # A big provider: its slices first, each a run of its own; its run follows when they are done.
                runs += _slice_runs(media, provider, units, wm.token)
                rounds[provider] = {"token": wm.token, "slices": len(units), "at": time.time()}
                requested[provider] = wm.token
                continue
            trigger = "new provider" if provider not in known else "catalog changed"
            runs.append(provider_run(media, provider, wm.token, trigger))
            requested[provider] = wm.token
        gone = sorted(known - set(valid))
        partition_requests = [pdef.build_add_request(new)] if new else []
        if gone and not valid:
            context.log.warning(f"the catalog lists no {media.name} provider: not removing {len(gone)} partitions")
            gone = []
        if gone:
            partition_requests.append(pdef.build_delete_request(gone))
            for p in gone:
                requested.pop(p, None)
                rounds.pop(p, None)
            gone_slices = sorted(k for k in slice_keys if provider_of_key(k) in set(gone))
            if gone_slices:
                partition_requests.append(SLICE_PARTITIONS[media.name].build_delete_request(gone_slices))
            runs.append(
                dg.RunRequest(
                    job_name=publish_job_name(media.name),
                    run_key=f"removed:{','.join(gone)}@{int(time.time())}",
                    tags={"openverse/trigger": f"providers left the catalog: {', '.join(gone)}", **retry_tags()},
                )
            )
        # Per-provider freshness, reported when it changes (and at least hourly) as the providers_fresh check.
        events = []
        report = freshness_report(context.instance, media, valid)
        digest = json.dumps([report.stale, report.behind, sorted(known | set(new))])
        last = cursor.get("freshness", {})
        if last.get("digest") != digest or time.time() - last.get("at", 0) > FRESHNESS_REPORT_SECONDS:
            events.append(evaluation(media, report))
            cursor["freshness"] = {"digest": digest, "at": time.time()}
        context.log.info(
            f"{len(marks)} providers checked in {time.monotonic() - start:.2f}s: {len(new)} new, "
            f"{len(gone)} gone, {len(runs)} runs requested, stale: {', '.join(report.stale) or 'none'}"
        )
        return dg.SensorResult(
            dynamic_partitions_requests=partition_requests,
            run_requests=runs,
            cursor=json.dumps(cursor, sort_keys=True),
            asset_events=events,
            skip_reason=None if runs else f"all {len(marks)} providers are up to date",
        )

    return _sensor


def _slice_runs(media: MediaType, provider: str, keys: list[str], token: str) -> list[dg.RunRequest]:
    """One run per slice of a changed big provider, all tagged with the change they answer."""
    return [
        dg.RunRequest(
            job_name=refresh_slice_job_name(media.name),
            partition_key=k,
            run_key=f"{k}@{token}",
            tags={
                CATALOG_CHANGE_TAG: token,
                SLICE_OF_TAG: provider,
                "openverse/trigger": f"catalog changed: slice {k} of {len(keys)}",
                **retry_tags(),
            },
        )
        for k in keys
    ]


def _finished_rounds(
    context: dg.SensorEvaluationContext, media: MediaType, rounds: dict[str, dict], valid: set[str]
) -> list[dg.RunRequest]:
    """The provider runs of rounds whose slice runs have all finished (a failed slice is redone by that run).

    Removes those rounds (and rounds of providers gone from the catalog) from `rounds`.
    """
    out = []
    for provider, r in sorted(rounds.items()):
        if provider not in valid:
            del rounds[provider]
            continue
        records = context.instance.get_run_records(
            dg.RunsFilter(
                job_name=refresh_slice_job_name(media.name),
                tags={CATALOG_CHANGE_TAG: r["token"], SLICE_OF_TAG: provider},
            )
        )
        latest: dict[str, bool] = {}  # partition -> finished, for the newest attempt (retries are new runs)
        for rec in sorted(records, key=lambda rec: rec.create_timestamp):
            run = rec.dagster_run
            retrying = run.status == dg.DagsterRunStatus.FAILURE and int(
                run.tags.get("dagster/retry_number", "0")
            ) < int(run.tags.get("dagster/max_retries", "0") or 0)
            latest[run.tags.get("dagster/partition", run.run_id)] = run.is_finished and not retrying
        if not round_finished(list(latest.values()), r["slices"], time.time() - r["at"]):
            continue
        del rounds[provider]
        trigger = f"catalog changed: assembling {r['slices']} slices after their runs"
        out.append(provider_run(media, provider, r["token"], trigger, {CATALOG_CHANGE_TAG: r["token"]}))
    return out


def provider_run(
    media: MediaType, provider: str, token: str, trigger: str, tags: dict[str, str] | None = None
) -> dg.RunRequest:
    """The refresh run of one provider for the catalog change `token` (one run per provider and change)."""
    return dg.RunRequest(
        job_name=refresh_job_name(media.name),
        partition_key=provider,
        run_key=f"{provider}@{token}",
        tags={**(tags or {}), "openverse/trigger": trigger, **retry_tags()},
    )


def resume_mark(context: dg.SensorEvaluationContext, media: MediaType, current):
    """Where the first tick resumes: the oldest takedown mark any current clean partition was built with."""
    partitions = context.instance.get_dynamic_partitions(PROVIDER_PARTITIONS[media.name].name)
    meta = latest_partition_metadata(context.instance, key(media, "clean"), list(partitions))
    marks = []
    for m in meta.values():
        text = m.get("takedown_mark")
        if text is not None and text.value:
            marks.append(mark_from_json(text.value))
    if not marks:
        return None if not meta else current  # nothing cleaned yet / cleaned before marks were recorded
    return earliest(marks)


def takedown_sensor(media: MediaType, apply_job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{media.name}_takedowns",
        jobs=[apply_job],
        minimum_interval_seconds=interval("takedown_sensor", 120),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Fast path for takedowns: new rows in {media.api_deleted_table}, {media.api_mature_table} "
        f"or {media.deleted_table} re-clean only the affected providers against a fresh takedown snapshot, "
        "so the next release drops them. Starts from the snapshot the clean step used.",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
        cat, api = catalog.catalog_url(), catalog.takedown_url()
        try:
            mark = takedown_mark(cat, api, media)
        except MissingIndexes as exc:  # never scan the catalog silently: say what is missing and what to run
            context.log.warning(str(exc))
            return dg.SensorResult(skip_reason=str(exc))
        hidden = list(hidden_sources(api) or ())
        state = json.loads(context.cursor) if context.cursor else None
        if state is not None:
            previous = mark_from_json(context.cursor)
            flipped = set(hidden) ^ set(state.get("hidden_sources", hidden))  # sources hidden or unhidden since
        else:
            previous = resume_mark(context, media, mark)
            if previous is None:
                return dg.SensorResult(skip_reason="no provider cleaned yet: nothing released to fast-path")
            context.log.info(f"first tick: resuming from the clean step's takedown snapshot {previous.token}")
            flipped = set()
        # A generation per change seen: run keys stay unique even when a source is hidden, unhidden, hidden again.
        generation = int((state or {}).get("generation", 0))
        cursor = json.dumps({**json.loads(mark_to_json(mark)), "hidden_sources": hidden, "generation": generation + 1})
        if previous.token == mark.token and not flipped:
            return dg.SensorResult(cursor=None if state else cursor, skip_reason="no new takedowns")
        affected = takedowns_since(cat, api, media, previous, mark) if previous.token != mark.token else {}
        known = set(context.instance.get_dynamic_partitions(PROVIDER_PARTITIONS[media.name].name))
        for provider in _providers_of_sources(context.instance, media, sorted(known), flipped):
            affected.setdefault(provider, set()).update(f"source {s}" for s in flipped)
        token = mark.token + (f"|changes={generation}" if flipped else "")
        runs = [
            dg.RunRequest(
                partition_key=provider,
                run_key=f"takedowns:{provider}@{token}",
                tags={REFRESH_TAKEDOWNS_TAG: "true", "openverse/trigger": f"{len(ids)} new takedowns", **retry_tags()},
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


def apply_takedowns_job(media: MediaType):
    return dg.define_asset_job(
        apply_takedowns_job_name(media.name),
        selection=dg.AssetSelection.assets(key(media, "clean"), key(media, "rejects")),
        partitions_def=PROVIDER_PARTITIONS[media.name],
        description=f"Re-clean one {media.name} provider against a fresh takedown snapshot (no re-extract).",
    )


def run_failure_alert(run: dg.DagsterRun, error: str) -> Alert | None:
    """The alert for a failed run, or None while a retry is still coming (`dagster/max_retries`)."""
    attempt = int(run.tags.get("dagster/retry_number", "0"))
    allowed = int(run.tags.get("dagster/max_retries", "0") or 0)
    if attempt < allowed:
        return None
    partition = run.tags.get("dagster/partition")
    job = run.job_name
    if job.startswith("__") and run.asset_selection:  # an automation run: name what it materializes
        job = "automation run of " + ", ".join(sorted(k.to_user_string() for k in run.asset_selection))
    what = job + (f" for provider {partition}" if partition else "")
    lines = [f"error: {error or 'see the run logs'}", f"run: {run.run_id} (attempt {attempt + 1} of {allowed + 1})"]
    if partition:
        lines.append(f"{partition} is held back: the next release keeps its previous rows until a refresh succeeds")
    if trigger := run.tags.get("openverse/trigger"):
        lines.append(f"trigger: {trigger}")
    return Alert(f"openverse-dataset: {what} failed", tuple(lines))


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval("alert_sensor", 30),
    description="Posts an alert (OPENVERSE_ALERT_WEBHOOK_URL, Slack-compatible; unset: log only) when a run has "
    "failed for good: runs requested by the sensors are first retried (dagster/max_retries).",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    errors = [
        f"{ev.step_key}: {root_error(ev.step_failure_data.error)}"
        for ev in context.get_step_failure_events()
        if ev.step_failure_data and ev.step_failure_data.error
    ]
    alert = run_failure_alert(context.dagster_run, "; ".join(errors) or first_line(context.failure_event.message or ""))
    if alert is None:
        context.log.info(f"run {context.dagster_run.run_id} failed; a retry follows, no alert yet")
        return
    send_alert(alert, logger=context.log)


@dg.sensor(
    name="alert_on_check_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval("alert_sensor", 30),
    description="Posts an alert when an asset check of severity ERROR starts failing (a takedown leak, an invalid "
    "license, a card that disagrees with its files), once per failing streak; warnings (stale providers) are "
    "logged and shown in the UI; logs when a check passes again.",
)
def alert_on_check_failure(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    storage = context.instance.event_log_storage
    cursor = json.loads(context.cursor) if context.cursor else None
    if cursor is None:  # first tick: alert from now on, not on history
        return dg.SensorResult(cursor=json.dumps({"after": storage.get_maximum_record_id() or 0, "failing": []}))
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor["after"]),
        limit=500,
        ascending=True,
    )
    failing = set(cursor["failing"])
    for rec in records:
        ev = rec.event_log_entry.dagster_event
        data = ev.event_specific_data if ev else None
        if data is None:
            continue
        name = f"{data.asset_key.to_user_string()}:{data.check_name}"
        if data.passed:
            if name in failing:
                context.log.info(f"check {name} passes again")
            failing.discard(name)
        elif name not in failing:
            failing.add(name)
            if data.severity != dg.AssetCheckSeverity.ERROR:  # warnings (stale providers) show in the UI only
                context.log.warning(f"check {name} warns: see the check in the UI")
                cursor["after"] = rec.storage_id
                continue
            detail = ", ".join(
                f"{k}={v.value}" for k, v in data.metadata.items() if k in {"stale_providers", "leaked", "invalid"}
            )
            send_alert(
                Alert(
                    f"openverse-dataset: check {name} failed ({data.severity.value})",
                    (detail or "see the check in the UI",),
                ),
                logger=context.log,
            )
        cursor["after"] = rec.storage_id
    cursor["failing"] = sorted(failing)
    return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=None if records else "no new check results")


@dg.definitions
def defs() -> dg.Definitions:
    sensors, jobs = [], []
    for m in MEDIA_TYPES.values():
        job = apply_takedowns_job(m)
        jobs.append(job)
        sensors += [stale_sensor(m), takedown_sensor(m, job)]
    sensors += [
        dg.AutomationConditionSensorDefinition(
            "openverse_automation",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval("automation", 30),
            description="Evaluates the assets' automation conditions: subsets, card and release follow clean "
            "(a provider partition missing or failed does not block them), and the release also runs weekly.",
        ),
        alert_on_run_failure,
        alert_on_check_failure,
    ]
    return dg.Definitions(sensors=sensors, jobs=jobs)
