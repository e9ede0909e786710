"""Runs whose process died (kill -9, OOM, a lost machine) are marked failed, so the pool slots they hold free.

A run killed mid-step never reports its end: it stays `STARTED` and keeps its `catalog_db` (or `publish`) pool
slot, so every later step of that pool waits forever. The daemon's run monitoring (dagster.yaml) catches it when
the run launcher can check a worker's health (ECS in production); runs executed in the CLI's own process have no
launcher to ask, so they carry their host and process id as tags, and the CLI checks them when it starts.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module before it needs Dagster
    import dagster as dg

HOST_TAG = "openverse/host"
PID_TAG = "openverse/pid"
PID_START_TAG = "openverse/pid_start"  # the process's start time (clock ticks after boot): pids are reused


def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat ("" where there is no /proc, or no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # the command name may contain spaces and ')'


def process_tags() -> dict[str, str]:
    """Tags naming this process, for the runs it executes in process."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: _start_ticks(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return not start or not os.path.exists(f"/proc/{pid}") or _start_ticks(pid) == start


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark this host's in-progress runs whose process is gone as failed and free their pool slots.

    Also frees slots still held by runs that already finished (what the daemon does after
    `free_slots_after_run_end_seconds`, for instances run without a daemon). Returns the failed runs' ids.
    """
    import dagster as dg

    host = socket.gethostname()
    live = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    failed: list[str] = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=live, tags={HOST_TAG: host})):
        run = record.dagster_run
        try:
            pid = int(run.tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if _alive(pid, run.tags.get(PID_START_TAG, "")):
            continue
        instance.report_run_failed(run, f"process {pid} on {host} died without ending the run (found at CLI start)")
        failed.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            for record in instance.get_run_records(filters=dg.RunsFilter(run_ids=list(holders))):
                if record.dagster_run.is_finished:
                    storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
    return failed
