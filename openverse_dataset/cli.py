"""`openverse-dataset`: seed a catalog, check a deployment, build and publish releases.

Thin: it runs the same Dagster jobs the UI runs. Operators read it, so: `build` and `publish` check their
preconditions (doctor's cheap checks) before any job starts; an expected failure is one line on stderr naming
what failed, why, and the fix; Dagster's own logs and tracebacks appear only with `-v`, otherwise in a log file
under the data directory whose path is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openverse_dataset.deadruns import process_tags
from openverse_dataset.media import MEDIA_TYPES
from openverse_dataset.settings import help_epilog, scrub_secrets

console = Console(stderr=True)
# Without -v Dagster's console logger stays silent: failures are summarised in one line each, details go to a file.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class Stop(Exception):
    """A precondition failed: the lines (what, why, fix) are printed and the command exits 1; no job ran."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def err(line: str) -> None:
    """One plain line on stderr (no markup, no wrapping: an operator's terminal and a log show the same)."""
    print(line, file=sys.stderr, flush=True)


def _log_path(data_dir: Path, command: str) -> Path | None:
    """A fresh log file under the data directory for one command's details; None when it cannot be written."""
    from openverse_dataset.layout import DataLayout

    try:
        path = DataLayout(data_dir).log_file(f"{command}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path
    except OSError:
        return None


def _write_details(data_dir: Path, command: str, text: str) -> str:
    """Write failure details to a log file; the hint to print: its path, or `-v` when nothing can be written."""
    path = _log_path(data_dir, command)
    if path is not None:
        try:
            path.write_text(scrub_secrets(text))
            return f"details: {path} (or re-run with -v)"
        except OSError:  # a full disk: the details cannot be kept, -v shows them
            path.unlink(missing_ok=True)
    return "details: re-run with -v"


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
    Console().print(f"[dim]DAGSTER_HOME is not set: using a temporary instance in {tmp}[/dim]", soft_wrap=True)
    return stack.enter_context(dg.DagsterInstance.local_temp(tmp, overrides={"telemetry": {"enabled": False}}))


def _root_error(err_info):
    """The user's error inside Dagster's wrappers."""
    while err_info is not None and err_info.cause is not None:
        err_info = err_info.cause
    return err_info


def _failed_steps(result, details: list[str] | None = None) -> list[str]:
    """One line per failed step or failed check; full errors (with stacks) appended to `details`."""
    out = []
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            error = ev.event_specific_data.error
            root = _root_error(error)
            message = root.message.strip().splitlines()[0] if root and root.message.strip() else "failed"
            out.append(f"{ev.step_key}: {scrub_secrets(message)}")
            if details is not None and error is not None:
                details.append(f"== {ev.step_key} ==\n{error.to_string()}")
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


def preflight(cfg, providers: Sequence[str] | None = None, *, catalog: bool = True) -> None:
    """Doctor's cheap checks, before any job: raise `Stop` with one line per blocking problem."""
    from openverse_dataset.doctor import blocking, check_providers, run_checks

    checks = run_checks(cfg, full=False, catalog=catalog, s3=False)
    failed = blocking(checks)
    if not failed and providers:
        failed = blocking(check_providers(cfg, providers))
    if failed:
        lines = [f"error: {c.line()}" for c in failed[:2]]
        if len(failed) > 2:
            lines.append(f"error: {len(failed) - 2} more problem(s): run openverse-dataset doctor")
        raise Stop([scrub_secrets(x) for x in lines])


def _header(cfg) -> None:
    Console().print(f"catalog: {cfg.shown_catalog()}   data: {cfg.data_dir.absolute()}", soft_wrap=True)


def build(
    media_names: Sequence[str], providers: Sequence[str] | None, verbose: bool = False, dry_run: bool = False
) -> int:
    """Check, discover, refresh the changed (or the named) provider partitions, publish; print a summary."""
    from openverse_dataset.doctor import Config

    cfg = Config.from_env(media_names)
    preflight(cfg, providers)
    from openverse_dataset.catalog.refresh import providers_to_refresh, save_takedown_mark
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.defs.common import key, recorded_watermarks
    from openverse_dataset.defs.jobs import discover_job_name, refresh_job_name
    from openverse_dataset.defs.resources import CatalogResource, build_resources

    defs = load_defs()
    resources = build_resources()
    layout = resources["data_dir"].layout
    run_config = None if verbose else QUIET_LOGS
    failures: list[str] = []
    details: list[str] = []
    summary: dict[str, dict] = {}
    start = time.perf_counter()
    _header(cfg)
    with ExitStack() as stack:
        instance = _instance(stack)
        for media in media_names:
            r = defs.resolve_job_def(discover_job_name()).execute_in_process(
                instance=instance,
                asset_selection=[key(media, "providers"), key(media, "takedowns")],
                raise_on_error=False,
                run_config=run_config,
                tags=process_tags(),
            )
            if not r.success:
                failures += [f"{media} discovery: {f}" for f in _failed_steps(r, details)] or [
                    f"{media} discovery failed"
                ]
                continue
            found = json.loads(layout.providers_file(media).read_text())["providers"]
            wanted = [p for p in providers if p in found] if providers else found
            mark = None
            if not providers:  # refresh only what changed (the sensors' rule); --provider forces the named ones
                cat = CatalogResource(  # the same settings as the runs' resource, with the URLs' values
                    url=cfg.catalog_url, api_url=cfg.api_url, data_dir=str(layout.root)
                )
                why, mark = providers_to_refresh(
                    cat.catalog_url(),
                    cat.takedown_url(),
                    MEDIA_TYPES[media],
                    found,
                    recorded_watermarks(instance, MEDIA_TYPES[media]),
                    layout,
                )
                wanted = [p for p in found if p in why]
                if mark is None and wanted:
                    console.print(f"[yellow]{media}: {why[wanted[0]]}; refreshing every provider[/yellow]")
                Console().print(f"{media}: {len(wanted)} of {len(found)} providers changed since the last build")
            refresh = defs.resolve_job_def(refresh_job_name(media))
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[current]}"),
                TimeElapsedColumn(),
                console=console,
                disable=not console.is_terminal,  # a log (CI, cron) gets the summary, not bar redraws
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
                        failures += [f"{media}/{p}: {f}" for f in _failed_steps(r, details)] or [f"{media}/{p} failed"]
                    bar.advance(task)
                    if _fatal(failures):
                        break
            if _fatal(failures):  # every further step would fail the same way: stop, publish nothing
                break
            if mark is not None and not any(f.startswith(f"{media}/") for f in failures):
                save_takedown_mark(layout, MEDIA_TYPES[media], mark)
            failures += _run_publish(defs, instance, media, verbose, dry_run, details)
            summary[media] = _media_summary(layout, media, resources)
            plan_file = layout.release_plan(media)
            if plan_file.exists():
                _print_plan(Console(), media, json.loads(plan_file.read_text()))
    _print_summary(summary, failures, time.perf_counter() - start)
    if failures:
        _report_failures(cfg, "build", failures, details)
    return 1 if failures else 0


def _report_failures(cfg, command: str, failures: list[str], details: list[str]) -> None:
    """At most three lines on stderr: the first failures, and where the details are."""
    shown = failures[:2]
    for f in shown:
        err(f"error: {_hint(f)}")
    more = f" ({len(failures) - len(shown)} more failure(s))" if len(failures) > len(shown) else ""
    err(_write_details(cfg.data_dir, command, "\n".join([*failures, "", *details])) + more)


HINTS = (
    ("No space left on device", "free space under OPENVERSE_DATA_DIR or point it at a bigger volume"),
    ("Read-only file system", "set OPENVERSE_DATA_DIR to a writable folder"),
    ("Permission denied", "set OPENVERSE_DATA_DIR to a writable folder (or fix its permissions)"),
    ("HF_TOKEN", "set HF_TOKEN"),
)


FATAL = ("No space left on device", "Read-only file system")


def _fatal(failures: list[str]) -> bool:
    """Whether a failure means the machine cannot continue (a full or read-only disk), whatever the partition."""
    return any(needle in f for f in failures for needle in FATAL)


def _hint(failure: str) -> str:
    """A failure line with the fix appended when its cause is one operators can act on."""
    for needle, fix in HINTS:
        if needle in failure and "fix:" not in failure:
            return f"{failure}; fix: {fix}"
    return failure


@contextmanager
def _byte_progress(label: str):
    """Show hashing and uploading as they happen (files and bytes per stage); on a non-terminal, one summary line
    per stage at the end instead of redraws."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from openverse_dataset import progress

    done: dict[str, list[int]] = {}  # stage -> [files, bytes]
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    tasks: dict[str, int] = {}

    def listen(step) -> None:
        files_bytes = done.setdefault(step.stage, [0, 0])
        files_bytes[0] += step.files
        files_bytes[1] += step.nbytes
        if step.stage not in tasks:
            tasks[step.stage] = bar.add_task(f"{label} {step.stage}", total=None, files="0")
        task = tasks[step.stage]
        if step.total_bytes is not None:
            bar.update(task, total=step.total_bytes)
        total_files = f"/{step.total_files}" if step.total_files is not None else ""
        bar.update(task, advance=step.nbytes, files=f"{files_bytes[0]}{total_files}")

    start = time.perf_counter()
    with bar, progress.listening(listen):
        yield
    if done:
        parts = [f"{stage} {n:,} files ({_bytes(b)})" for stage, (n, b) in done.items()]
        Console().print(f"{label}: {', '.join(parts)} in {time.perf_counter() - start:.1f}s", soft_wrap=True)


def _bytes(n: float) -> str:
    """Bytes for a person (B, KiB, MiB, GiB)."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _run_publish(defs, instance, media: str, verbose: bool, dry_run: bool, details: list[str]) -> list[str]:
    from openverse_dataset.defs.jobs import publish_job_name

    with _byte_progress(f"{media} release"):
        r = defs.resolve_job_def(publish_job_name(media)).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=_publish_config(media, verbose, dry_run),
            tags=process_tags(),
        )
    problems = _failed_steps(r, details)
    if not r.success or problems:
        return [f"{media} publish: {f}" for f in problems] or [f"{media} publish failed"]
    return []


def _register_built_providers(instance, layout, media: str) -> None:
    """Give the instance the provider partitions the last build discovered.

    The release reads its provider set from the dynamic partitions; `publish` on a fresh (temporary) instance
    would otherwise release no provider at all.
    """
    from openverse_dataset.defs.common import PROVIDER_PARTITIONS

    found = json.loads(layout.providers_file(media).read_text())["providers"]
    name = PROVIDER_PARTITIONS[media].name
    missing = sorted(set(found) - set(instance.get_dynamic_partitions(name)))
    if missing:
        instance.add_dynamic_partitions(name, missing)


def publish(media_names: Sequence[str], verbose: bool = False, dry_run: bool = False) -> int:
    """Publish (or with `dry_run`, only plan) the releases from the cleaned data already built; print the plan."""
    from openverse_dataset.doctor import Config

    cfg = Config.from_env(media_names)
    from openverse_dataset.layout import DataLayout

    layout = DataLayout(cfg.data_dir)
    unbuilt = [m for m in media_names if not layout.providers_file(m).exists()]
    if unbuilt:
        raise Stop([f"error: {m}: nothing built yet; fix: run openverse-dataset build --media {m}" for m in unbuilt])
    preflight(cfg)
    from openverse_dataset.definitions import defs as load_defs

    defs = load_defs()
    failures: list[str] = []
    details: list[str] = []
    out = Console()
    with ExitStack() as stack:
        instance = _instance(stack)
        for media in media_names:
            _register_built_providers(instance, layout, media)
            failures += _run_publish(defs, instance, media, verbose, dry_run, details)
            plan_file = layout.release_plan(media)
            if plan_file.exists():
                _print_plan(out, media, json.loads(plan_file.read_text()))
    if failures:
        _report_failures(cfg, "publish", failures, details)
    return 1 if failures else 0


def doctor(media_names: Sequence[str]) -> int:
    """Every check as a table with the fix of each failing row; 1 when any blocks a build or a publish."""
    from openverse_dataset.doctor import Config, blocking, run_checks

    cfg = Config.from_env(media_names)
    checks = run_checks(cfg)
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160  # a log or a pipe: no 80-column wrap
    out = Console(width=wide)
    t = Table(show_edge=False, title=f"openverse-dataset {_version()} doctor", title_justify="left")
    for col in ("check", "status", "found", "fix"):
        t.add_column(col, overflow="fold")
    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    for c in checks:
        t.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", _plain(c.detail), _plain(c.fix))
    out.print(t)
    failed = blocking(checks)
    if failed:
        err(f"doctor: {len(failed)} blocking problem(s): {', '.join(c.name for c in failed)}")
        return 1
    return 0


def _plain(text: str) -> str:
    """Text shown verbatim inside a rich table (brackets are not markup)."""
    from rich.markup import escape

    return escape(scrub_secrets(text))


PLAN_PATHS_SHOWN = 10  # per action; plan.json lists them all
PLAN_JSON = "plan.json"


def _print_plan(out: Console, media: str, record: dict) -> None:
    """The publish plan at a glance: files and bytes added, replaced, deleted and kept, and the first paths."""
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
        for path in plan[action][:PLAN_PATHS_SHOWN]:
            out.print(f"  {action:<7} {path}", soft_wrap=True)
        if len(plan[action]) > PLAN_PATHS_SHOWN:
            more = len(plan[action]) - PLAN_PATHS_SHOWN
            out.print(f"  {action:<7} ... {more:,} more (see {PLAN_JSON})", soft_wrap=True)


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


def _verify(args: argparse.Namespace) -> int:
    """`verify`: check a downloaded release (folder) or a Hub repository at a tag against its manifest.json."""
    from pathlib import Path

    from openverse_dataset.release.manifest import verify_folder, verify_hub

    where = Path(args.target)
    if where.is_dir():
        if args.revision:
            console.print("[bold red]error:[/bold red] --revision is for a Hub repository, not a local folder")
            return 2
        res = verify_folder(where)
    elif args.target.count("/") == 1 and not where.exists():
        from huggingface_hub.errors import HfHubHTTPError

        try:
            res = verify_hub(args.target, args.revision)
        except HfHubHTTPError as exc:  # repository or revision not found, no access: one line, no traceback
            console.print(f"[bold red]error:[/bold red] {args.target}: {str(exc).splitlines()[0]}")
            return 2
    else:
        what = "is neither a folder nor a Hub repository id (owner/name)"
        console.print(f"[bold red]error:[/bold red] {args.target} {what}")
        return 2
    for p in res.problems:
        print(p)
    failed = f"[bold red]FAILED[/bold red]: {len(res.problems)} problem(s)"
    verdict = "[bold green]OK[/bold green]" if res.ok else failed
    console.print(f"{verdict} ({res.files} files, {res.rows:,} rows checked against manifest.json)")
    return 0 if res.ok else 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openverse-dataset")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openverse-dataset",
        description=__doc__,
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"openverse-dataset {_version()}")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "seed-catalog", parents=[verbose], help="create the catalog tables at URL and load the demo rows"
    )
    p.add_argument("--url", required=True, help="SQLAlchemy URL of the catalog database")
    p.add_argument("--api-url", help="SQLAlchemy URL of the API database (takedown tables); default: --url")
    p.set_defaults(fn=_seed)
    c = sub.add_parser(
        "prepare-catalog",
        parents=[verbose],
        help="create the indexes change detection needs on the catalog (idempotent)",
    )
    c.add_argument("--url", help="SQLAlchemy URL of the catalog (default: OPENVERSE_CATALOG_URL)")
    c.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to prepare (repeatable; default: all)"
    )
    c.add_argument("--print", action="store_true", help="only print the SQL (for a DBA); connect to nothing")
    c.set_defaults(fn=_prepare)
    b = sub.add_parser("build", parents=[verbose], help="discover providers, refresh partitions, publish the releases")
    b.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to build (repeatable; default: all)"
    )
    b.add_argument("--provider", action="append", help="only refresh these providers (repeatable)")
    b.add_argument("--dry-run", action="store_true", help="refresh locally, but only plan the release")
    b.set_defaults(fn=lambda a: build(a.media or list(MEDIA_TYPES), a.provider, a.verbose, a.dry_run))
    u = sub.add_parser("publish", parents=[verbose], help="publish the releases from the cleaned data already built")
    u.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to publish (repeatable; default: all)"
    )
    u.add_argument("--dry-run", action="store_true", help="print the plan (files and bytes per action), change nothing")
    u.set_defaults(fn=lambda a: publish(a.media or list(MEDIA_TYPES), a.verbose, a.dry_run))
    d = sub.add_parser(
        "doctor",
        parents=[verbose],
        help="check the catalog, API database, publish target, S3 bucket and data dir; print each fix",
    )
    d.add_argument(
        "--media", choices=sorted(MEDIA_TYPES), action="append", help="media type to check (repeatable; default: all)"
    )
    d.set_defaults(fn=lambda a: doctor(a.media or list(MEDIA_TYPES)))
    v = sub.add_parser("verify", help="check a release (local folder or Hub repo) against its manifest.json")
    v.add_argument("target", metavar="PATH_OR_REPO", help="a downloaded release folder, or a Hub dataset id owner/name")
    v.add_argument("--revision", help="Hub revision to check, e.g. a release tag 2026.12.01 (default: main)")
    v.set_defaults(fn=_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    with warnings.catch_warnings():
        if not verbose:  # Dagster's preview/deprecation notices are for developers, not in an operator's output
            warnings.simplefilter("ignore")
        try:
            return args.fn(args)
        except Stop as stop:
            for line in stop.lines:
                err(line)
            return 1
        except KeyboardInterrupt:
            err("interrupted")
            return 130
        except Exception as exc:  # one line and where the details are; the traceback only with -v
            if verbose:
                raise
            return _unexpected(exc, args.command)


def _unexpected(exc: Exception, command: str) -> int:
    """One line naming the error (secrets masked) and a log file holding its traceback."""
    from openverse_dataset.catalog.connect import CatalogError
    from openverse_dataset.doctor import Config, first_line

    message = scrub_secrets(first_line(str(exc), 400) or type(exc).__name__)
    expected = isinstance(exc, CatalogError | ValueError | FileNotFoundError | OSError)
    fix = "" if expected else "; fix: run openverse-dataset doctor"
    err(f"error: {_hint(message)}{fix}")
    tb = "".join(traceback.format_exception(exc))
    err(_write_details(Config.from_env().data_dir, command, tb))
    return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
