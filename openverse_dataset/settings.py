"""Every environment variable the project reads, with its default and meaning, declared once.

All configuration is environment variables (resources, CLI, doctor), so this one list feeds `--help`,
`.env.example` (a test keeps the file equal to `env_example()`), the README's table (a test checks every name is
there) and the doctor's header. Secrets are marked so nothing that prints settings ever shows their values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import sqlalchemy as sa

from openverse_dataset.catalog.connect import redact


@dataclass(frozen=True)
class Setting:
    name: str
    default: str  # what applies when the variable is unset, in words
    meaning: str
    example: str = ""  # a value for .env.example
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "OPENVERSE_CATALOG_URL",
        "the SQLite demo catalog $OPENVERSE_DATA_DIR/demo-catalog.sqlite",
        "SQLAlchemy URL of the Openverse catalog (media and deleted_<media> tables)",
        "postgresql://deploy:PASSWORD@catalog-replica:5432/openledger",
        secret=True,
    ),
    Setting(
        "OPENVERSE_API_DB_URL",
        "OPENVERSE_CATALOG_URL",
        "SQLAlchemy URL of the API database (api_deleted<media>, api_mature<media>, content_provider)",
        "postgresql://deploy:PASSWORD@api-db:5432/openledger",
        secret=True,
    ),
    Setting("OPENVERSE_DATA_DIR", "./.openverse", "all working files (raw, clean, rejects, cards, logs)", "/data"),
    Setting(
        "OPENVERSE_PUBLISH_TARGET",
        "local:$OPENVERSE_DATA_DIR/hub",
        "where releases go: local:DIR or hf:NAMESPACE",
        "hf:openverse",
    ),
    Setting("HF_TOKEN", "none", "Hub write token for hf: targets (never logged)", "hf_xxx", secret=True),
    Setting("HF_ENDPOINT", "https://huggingface.co", "Hub endpoint", "https://huggingface.co"),
    Setting(
        "OPENVERSE_S3_BUCKET",
        "none (no S3 dumps)",
        "requester-pays bucket of the S3 dumps (AWS credentials, region, endpoint: the standard AWS_* variables)",
        "openverse-dumps",
    ),
    Setting("OPENVERSE_S3_PREFIX", "openverse", "key prefix of the S3 dumps", "openverse"),
    Setting("OPENVERSE_RELEASE_DATE", "today (UTC)", "date (YYYY-MM-DD) the card and release tag carry", "2026-11-27"),
    Setting(
        "OPENVERSE_HUB_TIMEOUT",
        "120",
        "seconds each Hub read/write may take before it fails (connecting: at most 15 s)",
        "120",
    ),
    Setting(
        "OPENVERSE_S3_TIMEOUT",
        "60",
        "seconds an S3 connect or read may take before the call fails (then retried, see OPENVERSE_S3_MAX_ATTEMPTS)",
        "60",
    ),
    Setting(
        "OPENVERSE_S3_MAX_ATTEMPTS",
        "3",
        "attempts per S3 call, first included (botocore's standard retry mode; the only retry layer for S3)",
        "3",
    ),
    Setting(
        "OPENVERSE_CATALOG_CONNECT_TIMEOUT",
        "15",
        "seconds connecting to the catalog or API database may take (libpq connect_timeout; a URL's own wins)",
        "15",
    ),
    Setting(
        "OPENVERSE_RUN_MAX_RETRIES",
        "2",
        "how often a sensor-requested run is retried after a failure before the alert is sent",
        "2",
    ),
    Setting(
        "OPENVERSE_FULL_REBUILD_DAYS",
        "7",
        "re-read a provider partition whole when its last full rebuild is this many days old (0: always)",
        "7",
    ),
    Setting(
        "OPENVERSE_PARTITION_MAX_ROWS",
        "25000000",
        "most rows one unit of extract/clean work (and one catalog snapshot) holds; bigger providers are split "
        "into identifier-range slices (docs/scale.md)",
        "25000000",
    ),
    Setting(
        "OPENVERSE_SLICE_WORKERS",
        "1",
        "processes that extract or clean a split provider's slices at once, each on its own catalog snapshot "
        "(count them in the catalog's load: a run holds up to this many connections)",
        "4",
    ),
    Setting(
        "OPENVERSE_REFRESH_OVERLAP_MINUTES",
        "10",
        "an incremental refresh re-reads rows stamped this long before its watermark",
        "10",
    ),
    Setting(
        "OPENVERSE_MIN_FREE_MB",
        "the data dir's current raw+clean size plus 1024",
        "free space (MiB) a build needs in the data dir; doctor and build check it",
        "20480",
    ),
    Setting(
        "OPENVERSE_OPT_OUT_LIST",
        "none (no opt-outs honoured beyond Openverse's own takedowns)",
        "creators' opt-out list: a file path or an http(s) URL, one `creator|prefix|domain VALUE` a line "
        "(README: Opt-outs); matching rows are rejected as opted_out",
        "/etc/openverse/opt-outs.txt",
    ),
    Setting(
        "DAGSTER_HOME", "a temporary instance", "Dagster instance folder (copy dagster.yaml there)", "/opt/dagster"
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}


def value(name: str) -> str | None:
    """The variable's value, or None when unset or blank."""
    raw = os.environ.get(name, "").strip()
    return raw or None


def secrets() -> list[str]:
    """The secret values the environment holds now: URL passwords and tokens."""
    out = []
    for s in SETTINGS:
        v = value(s.name)
        if not (s.secret and v):
            continue
        if "://" in v:
            try:
                password = sa.engine.make_url(v).password
            except Exception:  # not a URL: the whole value is the secret
                password = v
            if password:
                out.append(str(password))
        else:
            out.append(v)
    return out


def scrub_secrets(text: str) -> str:
    """`text` with every secret of the environment masked (for anything printed or written to a log)."""
    for secret in secrets():
        text = text.replace(secret, "***")
    return text


def shown(name: str) -> str:
    """What may be printed of a variable: its value (passwords masked), `set`/`unset` for a token."""
    v = value(name)
    if v is None:
        return f"unset (default: {BY_NAME[name].default})" if name in BY_NAME else "unset"
    if name.endswith("_URL") and "://" in v:
        return redact(v)
    return "set" if BY_NAME.get(name, Setting(name, "", "")).secret else v


def help_epilog() -> str:
    """The `--help` section listing every variable with its default."""
    width = max(len(s.name) for s in SETTINGS)
    lines = ["environment variables (all configuration):"]
    for s in SETTINGS:
        lines.append(f"  {s.name:<{width}}  {s.meaning}")
        lines.append(f"  {'':<{width}}  default: {s.default}")
    return "\n".join(lines)


def env_example() -> str:
    """The text of `.env.example`: every variable, commented out, with its meaning and default."""
    out = [
        "# openverse-dataset configuration: every setting is an environment variable (generated from",
        "# openverse_dataset/settings.py; `openverse-dataset --help` lists the same). Uncomment what you change.",
    ]
    for s in SETTINGS:
        out += ["", f"# {s.meaning} (default: {s.default})", f"# {s.name}={s.example}"]
    return "\n".join(out) + "\n"
