"""Engines for catalog URLs, and the rules that keep their passwords out of logs, metadata and errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa


class CatalogError(RuntimeError):
    """The catalog could not be read or written; the message never contains a password."""


def redact(url: str) -> str:
    """The URL with its password masked, for logs and metadata."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL we can parse: show nothing of it
        return "<unparseable database URL>"


def scrub(message: str, *urls: str | None) -> str:
    """Remove every password of `urls` from a message (driver errors may echo connection strings)."""
    for url in urls:
        if not url:
            continue
        try:
            pw = sa.engine.make_url(url).password
        except Exception:
            continue
        if pw:
            message = message.replace(str(pw), "***")
    return message[:2000]


# libpq settings for every catalog connection (SQLAlchemy/psycopg and ADBC alike): give up connecting after
# OPENVERSE_CATALOG_CONNECT_TIMEOUT seconds (15), and notice a peer that stopped answering (a stalled network, a
# failed-over replica) within ~2 minutes instead of waiting forever. No statement timeout: a Flickr-sized extract
# legitimately streams for an hour. A URL's own values win. Connections are not retried here: a run that fails
# is retried whole by Dagster's run retries (OPENVERSE_RUN_MAX_RETRIES), the one retry layer for the catalog.
PG_CONNECT_PARAMS = {
    "connect_timeout": "15",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "6",
    "tcp_user_timeout": "120000",  # ms of unacknowledged sends before the connection is dropped
}


def pg_connect_params() -> dict[str, str]:
    """PG_CONNECT_PARAMS with the connect timeout from OPENVERSE_CATALOG_CONNECT_TIMEOUT (whole seconds, >= 1:
    libpq reads 0 as "wait forever")."""
    raw = os.environ.get("OPENVERSE_CATALOG_CONNECT_TIMEOUT", "").strip()
    try:
        seconds = max(1, round(float(raw))) if raw else int(PG_CONNECT_PARAMS["connect_timeout"])
    except ValueError:
        raise CatalogError(f"OPENVERSE_CATALOG_CONNECT_TIMEOUT must be a number of seconds, got {raw[:40]!r}") from None
    return {**PG_CONNECT_PARAMS, "connect_timeout": str(seconds)}


def with_pg_timeouts(url: sa.engine.URL) -> sa.engine.URL:
    """`url` with the connection limits of `pg_connect_params()` added to its query (those it does not set)."""
    return url.update_query_dict({k: v for k, v in pg_connect_params().items() if k not in url.query})


def make_engine(url: str) -> sa.Engine:
    """An engine for a catalog URL; a SQLite file's folder is created so first use just works."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we ship
    if parsed.get_backend_name() == "postgresql":
        parsed = with_pg_timeouts(parsed)
    return sa.create_engine(parsed, pool_pre_ping=True)


@contextmanager
def catalog_engines(what: str, *urls: str) -> Iterator[tuple[sa.Engine, ...]]:
    """Engines for `urls`, disposed on exit; a driver error inside becomes one `CatalogError` line.

    Every catalog read wants the same three things: a short-lived engine, a message that says what failed and
    where, and no password in it (driver errors may echo connection strings). `what` names the operation and,
    where useful, the redacted URL.
    """
    engines = tuple(make_engine(u) for u in urls)
    try:
        yield engines
    except sa.exc.SQLAlchemyError as exc:
        raise CatalogError(f"{what} failed: {scrub(str(exc), *urls)}") from None
    finally:
        for engine in engines:
            engine.dispose()


# What a watermark may be: a timestamp Python can hold and not in the future. `infinity`, year 10000 and BC
# values cannot be read at all (psycopg raises), and one row stamped `2999-01-01` would pin the maximum for
# good, so no later edit of that provider would ever move its watermark again.
FUTURE_SLACK = timedelta(days=1)  # clock skew between this host and the database
PG_SANE_TIMESTAMP = "{col} >= '0001-01-01' AND {col} < statement_timestamp() + interval '1 day'"


def sane_max(col: sa.ColumnElement) -> sa.ColumnElement:
    """`max(col)` over the values a watermark may hold (see FUTURE_SLACK): never unreadable, never frozen."""
    low = sa.literal(datetime(1, 1, 1, tzinfo=UTC), sa.DateTime(timezone=True))
    high = sa.literal(datetime.now(UTC).replace(microsecond=0) + FUTURE_SLACK, sa.DateTime(timezone=True))
    return sa.func.max(col).filter(sa.and_(col >= low, col < high))


def as_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read from the catalog, aware and in UTC: PostgreSQL returns it aware, SQLite (where we store
    UTC) naive or as text."""
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
