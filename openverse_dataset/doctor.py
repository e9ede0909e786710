"""`openverse-dataset doctor`: every precondition of a build or a publish, checked in seconds, each with its fix.

Each check is one row: what was checked, ok/warn/fail/skip, what was found, and (when not ok) what to do. `build`
and `publish` run the cheap subset (no index inspection) before starting any job, so a typo in a URL, a missing
token or a read-only data dir stops them in one line instead of half-way through a run. Every message masks
passwords and tokens; every connection has a short timeout, so an unreachable host answers in seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from openverse_dataset.catalog.connect import make_engine, redact, scrub
from openverse_dataset.catalog.schema import API_DELETED_TABLES, API_MATURE_TABLES, DELETED_TABLES, MEDIA_TABLES
from openverse_dataset.media import MEDIA_TYPES
from openverse_dataset.settings import value

Status = Literal["ok", "warn", "fail", "skip"]
CONNECT_TIMEOUT_S = 5
DEFAULT_MARGIN_MB = 1024
CONTENT_PROVIDER = "content_provider"


@dataclass
class Check:
    """One row of the doctor's table."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        """The row as one line: what failed, why, and what to do."""
        return f"{self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")


@dataclass
class Config:
    """What the checks look at, read from the environment (see settings.py)."""

    data_dir: Path
    catalog_url: str | None  # None: the demo catalog in the data dir
    api_url: str | None  # None: same database as the catalog
    target: str
    s3_bucket: str | None
    media: list[str] = field(default_factory=lambda: list(MEDIA_TYPES))

    @classmethod
    def from_env(cls, media: Sequence[str] | None = None) -> Config:
        data_dir = Path(value("OPENVERSE_DATA_DIR") or ".openverse")
        return cls(
            data_dir=data_dir,
            catalog_url=value("OPENVERSE_CATALOG_URL"),
            api_url=value("OPENVERSE_API_DB_URL"),
            target=value("OPENVERSE_PUBLISH_TARGET") or f"local:{data_dir / 'hub'}",
            s3_bucket=value("OPENVERSE_S3_BUCKET"),
            media=list(media or MEDIA_TYPES),
        )

    @property
    def demo(self) -> bool:
        return self.catalog_url is None

    def shown_catalog(self) -> str:
        return redact(self.catalog_url) if self.catalog_url else f"demo catalog {self.data_dir / 'demo-catalog.sqlite'}"


# -- data directory -------------------------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def needed_free_bytes(data_dir: Path) -> int:
    """What the next build needs free: OPENVERSE_MIN_FREE_MB, else the data now held in raw/ and clean/ (a refresh
    stages a partition's new shards beside the old ones) plus a margin."""
    raw = value("OPENVERSE_MIN_FREE_MB")
    if raw is not None:
        try:
            return int(float(raw) * 2**20)
        except ValueError:
            pass
    held = sum(_tree_bytes(data_dir / sub) for sub in ("raw", "clean") if (data_dir / sub).is_dir())
    return held + DEFAULT_MARGIN_MB * 2**20


def check_data_dir(data_dir: Path) -> list[Check]:
    """Writable (create a file, remove it) and with enough free space for the next build."""
    where = data_dir.absolute()
    fix_dir = "set OPENVERSE_DATA_DIR to a writable folder (or fix the permissions of {})"
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".doctor-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        return [
            Check("data dir", "fail", f"{where} is not writable ({cause})", fix_dir.format(_existing_ancestor(where))),
            Check("free space", "skip", "data dir not writable"),
        ]
    out = [Check("data dir", "ok", f"{where} is writable")]
    free = shutil.disk_usage(where).free
    need = needed_free_bytes(where)
    if free < need:
        out.append(
            Check(
                "free space",
                "fail",
                f"{_mib(free)} free under {where}, the next build needs {_mib(need)}",
                "free space there, or set OPENVERSE_DATA_DIR to a bigger volume (OPENVERSE_MIN_FREE_MB sets the need)",
            )
        )
    else:
        out.append(Check("free space", "ok", f"{_mib(free)} free (the next build needs about {_mib(need)})"))
    return out


def _mib(n: int) -> str:
    """Bytes for a person: KiB below 1 MiB, else MiB."""
    return f"{n / 2**10:,.0f} KiB" if n < 2**20 else f"{n / 2**20:,.0f} MiB"


def first_line(text: str, limit: int = 300) -> str:
    """The first line of an error message, shortened: drivers append SQL and parameters on the next lines."""
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- databases ------------------------------------------------------------------------------------------------
def _engine(url: str) -> sa.Engine:
    """An engine that gives up connecting after a few seconds (an unreachable host must not hang the doctor)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        url = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)}).render_as_string(False)
    return make_engine(url)


def _db_cause(exc: BaseException, url: str) -> str:
    """The first line of a driver's error, with the password removed."""
    orig = getattr(exc, "orig", None) or exc
    return scrub(first_line(str(orig)) or type(orig).__name__, url)


def _connect(name: str, var: str, url: str) -> tuple[sa.Engine | None, Check]:
    """Open and probe a database; the check says what went wrong and that `var` is the thing to fix."""
    try:
        engine = _engine(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        return None, Check(name, "fail", f"{var} is not a database URL ({type(exc).__name__})", f"check {var}")
    except sa.exc.NoSuchModuleError as exc:
        return None, Check(name, "fail", f"{var} names a driver that is not installed ({exc})", f"check {var}")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            version = conn.dialect.server_version_info
    except Exception as exc:
        engine.dispose()
        return None, Check(name, "fail", f"cannot connect to {redact(url)}: {_db_cause(exc, url)}", f"check {var}")
    shown_version = ".".join(map(str, version[:2])) if version else ""
    return engine, Check(name, "ok", f"{redact(url)} ({engine.dialect.name} {shown_version})".replace(" )", ")"))


def _missing_columns(inspector, table: sa.Table, present: set[str]) -> list[str] | None:
    """Columns the project reads that `table` lacks (None when the table itself is missing)."""
    if table.name not in present:
        return None
    have = {c["name"] for c in inspector.get_columns(table.name)}
    return [c.name for c in table.columns if c.name not in have]


def check_tables(engine: sa.Engine, name: str, tables: Iterable[sa.Table], fix_missing: str, fix_columns: str) -> Check:
    """Every table present with every column the project reads."""
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names())
    missing_tables, missing_cols = [], []
    for t in tables:
        cols = _missing_columns(inspector, t, present)
        if cols is None:
            missing_tables.append(t.name)
        elif cols:
            missing_cols.append(f"{t.name}.{', '.join(cols)}")
    if missing_tables:
        return Check(name, "fail", f"missing table(s) {', '.join(missing_tables)}", fix_missing)
    if missing_cols:
        return Check(name, "fail", f"missing column(s) {'; '.join(missing_cols)}", fix_columns)
    return Check(name, "ok", f"{len(list(present))} tables; every table and column the project reads is there")


def catalog_tables(media: Iterable[str]) -> list[sa.Table]:
    return [t for m in media for t in (MEDIA_TABLES[m], DELETED_TABLES[m])]


def api_tables(media: Iterable[str]) -> list[sa.Table]:
    return [t for m in media for t in (API_DELETED_TABLES[m], API_MATURE_TABLES[m])]


def check_indexes(engine: sa.Engine, media: Iterable[str], url: str) -> Check:
    """The indexes freshness needs (catalog/prepare.py declares them; `prepare-catalog` creates them)."""
    try:
        from openverse_dataset.catalog.prepare import missing_indexes
    except ImportError:
        return Check("catalog indexes", "skip", "this build has no index declarations (catalog/prepare.py)")
    missing = [i for m in media for i in missing_indexes(engine, m)]
    if missing:
        return Check(
            "catalog indexes",
            "fail",
            f"missing {', '.join(i.describe() for i in missing)}: every freshness check would scan the table",
            f"run openverse-dataset prepare-catalog --url '{redact(url)}'",
        )
    return Check("catalog indexes", "ok", "every index freshness needs is there")


def check_catalog(cfg: Config, *, indexes: bool) -> list[Check]:
    """Catalog reachable, its tables and columns, (optionally) its indexes; then the API database."""
    if cfg.demo:
        from openverse_dataset.defs.resources import CatalogResource

        try:
            url = CatalogResource(data_dir=str(cfg.data_dir)).catalog_url()  # seeds the demo on first use
        except Exception as exc:
            detail = f"demo catalog: {first_line(str(exc))}"
            return [Check("catalog", "fail", detail, "set OPENVERSE_DATA_DIR to a writable folder with free space")]
    else:
        url = cfg.catalog_url
    engine, reach = _connect("catalog", "OPENVERSE_CATALOG_URL", url)
    out = [reach]
    if engine is None:
        out.append(Check("catalog tables", "skip", "catalog not reachable"))
    else:
        try:
            seed = f"run openverse-dataset seed-catalog --url '{redact(url)}' (a demo catalog), or point "
            seed += "OPENVERSE_CATALOG_URL at the Openverse catalog (openledger)"
            tables = check_tables(
                engine,
                "catalog tables",
                catalog_tables(cfg.media),
                seed,
                "point OPENVERSE_CATALOG_URL at the Openverse catalog (its schema differs)",
            )
            out.append(tables)
            if indexes and not tables.failed and engine.dialect.name == "postgresql":
                out.append(check_indexes(engine, cfg.media, url))
        finally:
            engine.dispose()
    if engine is None and cfg.api_url is None:
        return [*out, Check("API database", "skip", "same database as the catalog (OPENVERSE_API_DB_URL unset)")]
    out += check_api(cfg, url if cfg.api_url is None else cfg.api_url, same=cfg.api_url is None)
    return out


def check_api(cfg: Config, url: str, *, same: bool) -> list[Check]:
    """The API database: the takedown tables (blocking) and content_provider (the API's provider table)."""
    var = "OPENVERSE_CATALOG_URL" if same else "OPENVERSE_API_DB_URL"
    engine, reach = _connect("API database", var, url)
    if same and reach.status == "ok":
        reach.detail = f"the catalog's database (OPENVERSE_API_DB_URL unset): {reach.detail}"
    if engine is None:
        return [reach, Check("API tables", "skip", "API database not reachable")]
    try:
        tables = check_tables(
            engine,
            "API tables",
            api_tables(cfg.media),
            "set OPENVERSE_API_DB_URL to the API's database (it holds the takedown tables)",
            "set OPENVERSE_API_DB_URL to the API's database",
        )
        has_cp = CONTENT_PROVIDER in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    cp = (
        Check("content_provider", "ok", "the API's provider table is there")
        if has_cp
        else Check(
            "content_provider",
            "warn",
            "no content_provider table (the API's providers and their filter_content switch)",
            "set OPENVERSE_API_DB_URL to the API's database",
        )
    )
    return [reach, tables, cp]


def check_providers(cfg: Config, wanted: Sequence[str]) -> list[Check]:
    """Each requested provider exists in the catalog (before any job runs, so a typo publishes nothing)."""
    from openverse_dataset.catalog.providers import discover_providers

    url = cfg.catalog_url or f"sqlite:///{cfg.data_dir / 'demo-catalog.sqlite'}"
    out = []
    for m in cfg.media:
        try:
            found = discover_providers(url, MEDIA_TYPES[m]).providers
        except Exception as exc:
            out.append(Check(f"{m} providers", "fail", _db_cause(exc, url), "check OPENVERSE_CATALOG_URL"))
            continue
        unknown = [p for p in wanted if p not in found]
        if unknown:
            shown = ", ".join(found[:12]) + (", ..." if len(found) > 12 else "")
            out.append(
                Check(
                    f"{m} providers",
                    "fail",
                    f"unknown provider(s) {', '.join(map(repr, unknown))}",
                    f"pick from the catalog's {m} providers: {shown or '(none)'}",
                )
            )
        else:
            out.append(Check(f"{m} providers", "ok", ", ".join(wanted)))
    return out


# -- publish target and S3 ------------------------------------------------------------------------------------
def check_target(cfg: Config, *, online: bool = True) -> list[Check]:
    """The publish target's configuration, then what only the network shows (the Hub: reachable, token valid,
    allowed to write to the namespace, via `whoami`)."""
    from openverse_dataset.publish.targets import UnknownTargetError, resolve_target

    try:
        target = resolve_target(cfg.target)
    except UnknownTargetError as exc:
        return [Check("publish target", "fail", str(exc), "check OPENVERSE_PUBLISH_TARGET")]
    problems = target.check()
    if not problems and online:
        problems = target.access_problems()
    if problems:
        detail, _, fix = problems[0].removeprefix("publish target ").rpartition("; ")
        return [Check("publish target", "fail", detail or fix, fix if detail else "check OPENVERSE_PUBLISH_TARGET")]
    return [Check("publish target", "ok", f"{target.label} ready")]


def check_s3(cfg: Config) -> list[Check]:
    """The dump bucket: reachable with the configured AWS credentials, and requester-pays."""
    if not cfg.s3_bucket:
        return [Check("S3 bucket", "skip", "OPENVERSE_S3_BUCKET unset: no S3 dumps")]
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = cfg.s3_bucket
    client = boto3.client(
        "s3",
        region_name=value("AWS_REGION") or value("AWS_DEFAULT_REGION"),
        config=BotoConfig(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=10, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=bucket)
        payer = client.get_bucket_request_payment(Bucket=bucket).get("Payer")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        fix = "check OPENVERSE_S3_BUCKET and the AWS credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID)"
        return [Check("S3 bucket", "fail", f"s3://{bucket}: {code}", fix)]
    except BotoCoreError as exc:
        return [Check("S3 bucket", "fail", f"s3://{bucket} unreachable: {exc}", "check AWS_ENDPOINT_URL / network")]
    if payer != "Requester":
        return [
            Check(
                "S3 bucket",
                "fail",
                f"s3://{bucket} is not requester-pays (Payer={payer})",
                f"aws s3api put-bucket-request-payment --bucket {bucket} "
                "--request-payment-configuration Payer=Requester",
            )
        ]
    return [Check("S3 bucket", "ok", f"s3://{bucket} reachable, requester pays")]


def check_opt_outs() -> list[Check]:
    """The creators' opt-out list reads and parses (a bad line or an unreachable URL would fail every clean)."""
    from openverse_dataset.transform import optout

    spec = value("OPENVERSE_OPT_OUT_LIST")
    if not spec:
        return [Check("opt-out list", "skip", "OPENVERSE_OPT_OUT_LIST unset: no creator opt-outs applied")]
    try:
        opt = optout.load(spec)
    except optout.OptOutError as exc:
        return [Check("opt-out list", "fail", str(exc), "correct the list or OPENVERSE_OPT_OUT_LIST")]
    return [Check("opt-out list", "ok", f"{opt.entries:,} entries (sha256 {(opt.sha256 or '')[:12]})")]


# -- entry points ---------------------------------------------------------------------------------------------
def run_checks(cfg: Config, *, full: bool = True, catalog: bool = True, s3: bool = True) -> list[Check]:
    """Every check (`full`), or the cheap ones `build`/`publish` run first (no index inspection)."""
    out = check_data_dir(cfg.data_dir)
    data_ok = not blocking(out)
    if catalog:
        if cfg.demo and not data_ok:
            out.append(Check("catalog", "skip", "the demo catalog lives in the data dir (see above)"))
        else:
            out += check_catalog(cfg, indexes=full)
    out += check_target(cfg)
    if catalog:
        out += check_opt_outs()
    if s3:
        out += check_s3(cfg)
    return out


def blocking(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.failed]
