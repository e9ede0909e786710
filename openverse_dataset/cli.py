"""`openverse-dataset`: seed a catalog, build releases. Thin: it runs the same Dagster jobs the UI runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openverse_dataset.deadruns import process_tags
from openverse_dataset.media import MEDIA_TYPES

console = Console(stderr=True)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _seed(args: argparse.Namespace) -> int:
    from openverse_dataset.catalog.connect import redact
    from openverse_dataset.catalog.seed import seed_catalog

    inserted = seed_catalog(args.url, args.api_url)
    for media, n in inserted.items():
        console.print(f"{media}: {n:,} rows inserted into {redact(args.url)}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    """`prepare-catalog`: create (or with --print, only print) the indexes change detection needs."""
    from openverse_dataset.catalog.connect import redact
    from openverse_dataset.catalog.prepare import catalog_sql, prepare_catalog

    media = args.media or list(MEDIA_TYPES)
    if args.print:  # for a DBA: the whole idempotent script, nothing connected to or changed
        for stmt in catalog_sql(media):
            print(f"{stmt};")
        return 0
    url = args.url or os.environ.get("OPENVERSE_CATALOG_URL")
    if not url:
        console.print("[bold red]error:[/bold red] give --url URL (or set OPENVERSE_CATALOG_URL)")
        return 2
    console.print(f"preparing {redact(url)} (CONCURRENTLY: ingestion keeps writing; a big table takes a while)")
    done = prepare_catalog(url, media, echo=lambda stmt: print(f"{stmt};", flush=True))
    for d in done:
        what = "already present" if d.action == "present" else f"{d.action} in {d.seconds:.1f}s"
        console.print(f"  {d.index.describe()}: {what}")
    return 0


def _instance(stack: ExitStack):
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        from openverse_dataset.deadruns import fail_dead_runs

        instance = stack.enter_context(dg.DagsterInstance.get())
        for run_id in fail_dead_runs(instance):  # a killed build must not hold a pool slot forever
            console.print(f"[yellow]run {run_id} had died with its process: marked failed, its pool slots freed")
        return instance
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="openverse-dagster-"))
    console.print(f"[dim]DAGSTER_HOME is not set: using a temporary instance in {tmp}[/dim]")
    return stack.enter_context(dg.DagsterInstance.local_temp(tmp, overrides={"telemetry": {"enabled": False}}))


def _failed_steps(result) -> list[str]:
    out = []
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            while err is not None and err.cause is not None:  # the user's error, not Dagster's wrapper
                err = err.cause
            out.append(f"{ev.step_key}: {err.message.strip() if err else 'failed'}")
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            data = ev.event_specific_data
            if not data.passed:
                out.append(f"check {data.asset_check_key.asset_key.to_user_string()}:{data.check_name} failed")
    return out


def _publish_config(media: str, verbose: bool, dry_run: bool) -> dict | None:
    """Run config of the publish job: quiet logs unless verbose, and the release's dry-run switch."""
    config: dict = {} if verbose else dict(QUIET_LOGS)
    if dry_run:
        config["ops"] = {f"{media}__release": {"config": {"dry_run": True}}}
    return config or None


def build(
    media_names: Sequence[str], providers: Sequence[str] | None, verbose: bool = False, dry_run: bool = False
) -> int:
    """Discover, refresh every (or the named) provider partition, publish; print a summary. 0 on success."""
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.defs.common import key
    from openverse_dataset.defs.jobs import discover_job_name, refresh_job_name
    from openverse_dataset.defs.resources import build_resources

    defs = load_defs()
    resources = build_resources()
    layout = resources["data_dir"].layout
    run_config = None if verbose else QUIET_LOGS
    failures: list[str] = []
    summary: dict[str, dict] = {}
    start = time.perf_counter()
    with ExitStack() as stack:
        instance = _instance(stack)
        console.print(f"catalog: {resources['catalog'].display()}   data: {layout.root}")
        for media in media_names:
            r = defs.resolve_job_def(discover_job_name()).execute_in_process(
                instance=instance,
                asset_selection=[key(media, "providers"), key(media, "takedowns")],
                raise_on_error=False,
                run_config=run_config,
                tags=process_tags(),
            )
            if not r.success:
                failures += [f"{media} discovery: {f}" for f in _failed_steps(r)] or [f"{media} discovery failed"]
                continue
            found = json.loads(layout.providers_file(media).read_text())["providers"]
            wanted = list(providers) if providers else found
            unknown = [p for p in wanted if p not in found]
            if unknown:
                failures.append(
                    f"{media}: unknown provider(s) {', '.join(map(repr, unknown))}; the catalog has: {', '.join(found)}"
                )
                wanted = [p for p in wanted if p in found]
            refresh = defs.resolve_job_def(refresh_job_name(media))
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[current]}"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(f"{media} providers", total=len(wanted), current="")
                for p in wanted:
                    bar.update(task, current=p)
                    r = refresh.execute_in_process(
                        instance=instance,
                        partition_key=p,
                        raise_on_error=False,
                        run_config=run_config,
                        tags=process_tags(),
                    )
                    if not r.success:
                        failures += [f"{media}/{p}: {f}" for f in _failed_steps(r)] or [f"{media}/{p} failed"]
                    bar.advance(task)
            failures += _run_publish(defs, instance, media, verbose, dry_run)
            summary[media] = _media_summary(layout, media, resources)
            plan_file = layout.root / "releases" / media / "plan.json"
            if dry_run and plan_file.exists():
                _print_plan(Console(), media, json.loads(plan_file.read_text()))
    _print_summary(summary, failures, time.perf_counter() - start)
    return 1 if failures else 0


def _run_publish(defs, instance, media: str, verbose: bool, dry_run: bool) -> list[str]:
    from openverse_dataset.defs.jobs import publish_job_name

    r = defs.resolve_job_def(publish_job_name(media)).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=_publish_config(media, verbose, dry_run),
        tags=process_tags(),
    )
    problems = _failed_steps(r)
    if not r.success or problems:
        return [f"{media} publish: {f}" for f in problems] or [f"{media} publish failed"]
    return []


def publish(media_names: Sequence[str], verbose: bool = False, dry_run: bool = False) -> int:
    """Publish (or with `dry_run`, only plan) the releases from the cleaned data already built; print the plan."""
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.defs.resources import build_resources

    defs = load_defs()
    layout = build_resources()["data_dir"].layout
    failures: list[str] = []
    out = Console()
    with ExitStack() as stack:
        instance = _instance(stack)
        for media in media_names:
            if not layout.providers_file(media).exists():
                failures.append(f"{media}: nothing built yet (run `openverse-dataset build --media {media}` first)")
                continue
            failures += _run_publish(defs, instance, media, verbose, dry_run)
            plan_file = layout.release_plan(media)
            if plan_file.exists():
                _print_plan(out, media, json.loads(plan_file.read_text()))
    for f in failures:
        out.print(f"[bold red]FAILED[/bold red] {f}", soft_wrap=True)
    return 1 if failures else 0


def _print_plan(out: Console, media: str, record: dict) -> None:
    plan = record["plan"]
    verb = "would change (dry run)" if record["dry_run"] else "changed"
    out.print(f"[bold]{media}[/bold] -> {record['target']}: {verb}", soft_wrap=True)
    if record.get("repository"):
        out.print(f"  repository: {record['repository']}", soft_wrap=True)
    if record.get("tag"):
        out.print(f"  tag: {record['tag']}  commit: {record.get('commit')}", soft_wrap=True)
    t = Table(show_edge=False)
    for col, just in (("action", "left"), ("files", "right"), ("bytes", "right")):
        t.add_column(col, justify=just)
    for action in ("add", "replace", "delete", "keep"):
        t.add_row(action, str(len(plan[action])), f"{plan['bytes'][action]:,}")
    out.print(t)
    for action in ("add", "replace", "delete"):
        for path in plan[action]:
            out.print(f"  {action:<7} {path}", soft_wrap=True)


def _media_summary(layout, media: str, resources: dict) -> dict:
    path = layout.subsets_file(media)
    if not path.exists():
        return {}
    from openverse_dataset.release.subsets import SubsetStats

    stats = SubsetStats.from_json(path.read_text())
    return {
        "release": resources["publish_target"].get().where(MEDIA_TYPES[media].repo_name),
        "rows": stats.rows,
        "providers": len(stats.providers),
        "configs": {c.name: c.rows for c in stats.configs},
        "rejected": stats.rejected_by_reason,
    }


def _print_summary(summary: dict[str, dict], failures: list[str], seconds: float) -> None:
    out = Console()
    for media, s in summary.items():
        if not s:
            continue
        out.print(f"[bold]{media}[/bold]: {s['rows']:,} rows from {s['providers']} providers")
        out.print(f"  release: {s['release']}", soft_wrap=True)
        t = Table(show_edge=False)
        t.add_column("config")
        t.add_column("rows", justify="right")
        for name, n in s["configs"].items():
            t.add_row(name, f"{n:,}")
        out.print(t)
        if s["rejected"]:
            out.print(
                "  not published: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s["rejected"].items())),
                soft_wrap=True,
            )
    if failures:
        out.print(f"[bold red]FAILED[/bold red] after {seconds:.1f}s:")
        for f in failures:
            out.print(f"  - {f}", soft_wrap=True)
    else:
        out.print(f"[bold green]OK[/bold green]: built {', '.join(summary) or 'nothing'} in {seconds:.1f}s")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openverse-dataset")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openverse-dataset", description=__doc__)
    parser.add_argument("--version", action="version", version=f"openverse-dataset {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("seed-catalog", help="create the catalog tables at URL and load the demo rows")
    p.add_argument("--url", required=True, help="SQLAlchemy URL of the catalog database")
    p.add_argument("--api-url", help="SQLAlchemy URL of the API database (takedown tables); default: --url")
    p.set_defaults(fn=_seed)
    c = sub.add_parser("prepare-catalog", help="create the indexes change detection needs on the catalog (idempotent)")
    c.add_argument("--url", help="SQLAlchemy URL of the catalog (default: OPENVERSE_CATALOG_URL)")
    c.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to prepare (repeatable; default: all)"
    )
    c.add_argument("--print", action="store_true", help="only print the SQL (for a DBA); connect to nothing")
    c.set_defaults(fn=_prepare)
    b = sub.add_parser("build", help="discover providers, refresh partitions, publish the releases")
    b.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to build (repeatable; default: all)"
    )
    b.add_argument("--provider", action="append", help="only refresh these providers (repeatable)")
    b.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own logs")
    b.add_argument("--dry-run", action="store_true", help="refresh locally, but only plan the release")
    b.set_defaults(fn=lambda a: build(a.media or list(MEDIA_TYPES), a.provider, a.verbose, a.dry_run))
    u = sub.add_parser("publish", help="publish the releases from the cleaned data already built")
    u.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to publish (repeatable; default: all)"
    )
    u.add_argument("--dry-run", action="store_true", help="print the plan (files and bytes per action), change nothing")
    u.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own logs")
    u.set_defaults(fn=lambda a: publish(a.media or list(MEDIA_TYPES), a.verbose, a.dry_run))
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as exc:  # a clear one-line error, never a traceback with a connection string
        from openverse_dataset.catalog.connect import CatalogError

        if isinstance(exc, CatalogError | ValueError | FileNotFoundError):  # HubConfigError is a ValueError
            console.print(f"[bold red]error:[/bold red] {exc}")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
