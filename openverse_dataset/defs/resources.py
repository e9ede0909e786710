"""Resources, declared once: the catalog databases, the data directory, the publish target, DuckDB.

Configuration comes from the environment (documented in the README). Values that may hold secrets (database
URLs with passwords) are passed as `dg.EnvVar`, so the UI and run config show the variable's name, never its
value.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from openverse_dataset.catalog.connect import redact
from openverse_dataset.catalog.seed import seed_catalog
from openverse_dataset.layout import DataLayout
from openverse_dataset.publish.targets import Target, resolve_target
from openverse_dataset.release.changes import bookkeeping_connection

DEFAULT_DATA_DIR = ".openverse"


def _env(name: str) -> dg.EnvVar | None:
    """The variable as an EnvVar when set, so resources resolve it at run time and never print it."""
    return dg.EnvVar(name) if os.environ.get(name) else None


class DataDirResource(dg.ConfigurableResource):
    """All working files (raw, clean, rejects, cards, demo catalog, local hub) live under this folder."""

    path: str = DEFAULT_DATA_DIR

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.path))


class CatalogResource(dg.ConfigurableResource):
    """The Openverse catalog (media and deleted_<media> tables) and the API database (takedown tables).

    With no URL configured, the embedded SQLite demo catalog under the data directory is used, seeded from the
    real sample rows shipped with the package on first use.
    """

    url: str | None = None
    api_url: str | None = None
    data_dir: str = DEFAULT_DATA_DIR

    @property
    def is_demo(self) -> bool:
        return not self.url

    def catalog_url(self) -> str:
        """The catalog's SQLAlchemy URL (seeds the demo catalog on first use)."""
        if self.url:
            # an EnvVar not yet resolved by Dagster (a resource used outside a run) names its variable: read it
            return self.url.get_value() or "" if isinstance(self.url, dg.EnvVar) else self.url
        path = DataLayout(Path(self.data_dir)).demo_catalog()
        url = f"sqlite:///{path}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "w") as lock:  # parallel runs seed once
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    tmp = path.with_suffix(".seeding")
                    tmp.unlink(missing_ok=True)
                    seed_catalog(f"sqlite:///{tmp}")
                    os.replace(tmp, path)
        return url

    def takedown_url(self) -> str:
        """Where the api_* takedown tables live (defaults to the catalog)."""
        if isinstance(self.api_url, dg.EnvVar):
            return self.api_url.get_value() or self.catalog_url()
        return self.api_url or self.catalog_url()

    def display(self) -> str:
        """The catalog URL with any password masked, for metadata and logs."""
        return redact(self.catalog_url())


class DataDirDuckDB(DuckDBResource):
    """DuckDB for the subsets and the release checks: held to `memory_limit`, spilling inside the data dir.

    An in-memory DuckDB may take 80% of RAM and spills into `./.tmp` (the working directory, outside the data
    dir); each connection here gets its own spill folder in the data dir's staging area, removed after.
    """

    data_dir: str = DEFAULT_DATA_DIR
    memory_limit: str = "256MB"

    @contextmanager
    def get_connection(self) -> Iterator:
        # an in-memory database only (`database` stays ":memory:"): the same bounded connection as the bookkeeping
        with bookkeeping_connection(DataLayout(Path(self.data_dir)), self.memory_limit, self.connection_config) as c:
            yield c


class PublishTargetResource(dg.ConfigurableResource):
    """Where releases go: `local:DIR` (a folder per dataset repository, laid out as on the Hub) or `hf:NAMESPACE`."""

    target: str | None = None
    data_dir: str = DEFAULT_DATA_DIR

    def get(self) -> Target:
        """The configured target (see publish/targets.py); an unknown scheme is a clear one-line error."""
        return resolve_target(self.target or f"local:{Path(self.data_dir) / 'hub'}")

    def resolved(self) -> tuple[str, str]:
        """(scheme, location), e.g. ("local", "/abs/dir"): prefer `get()`, whose methods replace kind checks."""
        t = self.get()
        return t.scheme, t.location


def build_resources() -> dict:
    """The resources every asset uses, configured from the environment."""
    data_dir = os.environ.get("OPENVERSE_DATA_DIR") or DEFAULT_DATA_DIR
    return {
        "data_dir": DataDirResource(path=data_dir),
        "catalog": CatalogResource(
            url=_env("OPENVERSE_CATALOG_URL"), api_url=_env("OPENVERSE_API_DB_URL"), data_dir=data_dir
        ),
        "publish_target": PublishTargetResource(target=os.environ.get("OPENVERSE_PUBLISH_TARGET"), data_dir=data_dir),
        "duckdb": DataDirDuckDB(database=":memory:", data_dir=data_dir),
    }


def catalog_kind() -> str:
    """The asset kind of the configured catalog, known at definition time."""
    url = os.environ.get("OPENVERSE_CATALOG_URL") or "sqlite://"
    return "postgres" if url.startswith("postgres") else url.split(":", 1)[0].split("+", 1)[0]


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
