"""Shared fixtures: demo rows as polars frames, an isolated environment, throwaway PostgreSQL databases
(an empty one, and the production-shaped catalog + API pair built from Openverse's own DDL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from openverse_dataset.catalog.seed import demo_rows
from openverse_dataset.media import AUDIO, IMAGE, MediaType
from openverse_dataset_tests.upstream import UpstreamCatalog

PG_ADMIN_URL = os.environ.get("OPENVERSE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def raw_frame(media: MediaType) -> pl.DataFrame:
    """The shipped sample rows as a raw-extract frame (JSON columns as text, as the extract writes them)."""
    import json

    rows = []
    for r in demo_rows(media):
        for c in media.json_columns:
            if r[c] is not None:
                r[c] = json.dumps(r[c])
        rows.append(r)
    import pyarrow as pa

    return pl.from_arrow(pa.Table.from_pylist(rows, schema=media.raw_schema))


@pytest.fixture(scope="session")
def image_raw() -> pl.DataFrame:
    return raw_frame(IMAGE)


@pytest.fixture(scope="session")
def audio_raw() -> pl.DataFrame:
    return raw_frame(AUDIO)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean OPENVERSE_* environment with the data directory in tmp_path; returns the data directory."""
    for k in list(os.environ):
        if k.startswith("OPENVERSE_") or k == "DAGSTER_HOME":
            monkeypatch.delenv(k, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("OPENVERSE_DATA_DIR", str(data))
    monkeypatch.setenv("OPENVERSE_RELEASE_DATE", "2026-11-27")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets.config

    # datasets reads HF_HOME once at import: give each test its own cache so no test sees another's tables
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-home" / "datasets")
    return data


@contextmanager
def scratch_database(prefix: str = "openverse_test") -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 with a random name, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of the test's own (e.g. for Dagster's storage), dropped afterwards."""
    with scratch_database() as url:
        yield url


@pytest.fixture
def upstream_catalog() -> Iterator[UpstreamCatalog]:
    """Openverse's production shape: a catalog database from its upstream DDL and a separate API database.

    `.catalog_url` / `.api_url`; `.seed_demo()`, `.insert_media()`, `.move_to_deleted()`, `.take_down()`,
    `.mark_sensitive()`, `.add_source()`; `.configure(monkeypatch)` sets OPENVERSE_CATALOG_URL and
    OPENVERSE_API_DB_URL. Only the indexes Openverse has; `prepare-catalog` is the one way to add more.
    """
    with scratch_database("openverse_catalog") as catalog_url, scratch_database("openverse_api") as api_url:
        cat = UpstreamCatalog(catalog_url, api_url).create()
        try:
            yield cat
        finally:
            cat.dispose()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port (boto3 reaches it via endpoint_url / AWS_ENDPOINT_URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
