"""`dagster dev` in the repo root, as the README says, with and without DAGSTER_HOME: the code location loads.

Each run starts the real `dagster dev` (webserver, daemon, code server) on a free loopback port, waits for the
code location to report LOADED over GraphQL, checks the instance took the repository's dagster.yaml, and stops
the whole process group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from openverse_dataset_tests.procs import assert_stopped, free_port, gql, wait_loaded

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENVERSE_", "DAGSTER_"))}
    env.update(OPENVERSE_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return env


def _temp_homes() -> set[Path]:
    return set(REPO.glob(".tmp_dagster_home_*"))


@pytest.mark.parametrize("with_home", [False, True], ids=["no-DAGSTER_HOME", "DAGSTER_HOME"])
def test_dagster_dev_loads_the_code_location_from_the_repo_root(tmp_path, with_home):
    home = None
    if with_home:
        home = tmp_path / "home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # as the README says
    before = _temp_homes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "dagster-dev.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=_env(tmp_path, home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so it (and only it) can be stopped as a whole
        )
        try:
            entries = wait_loaded(url, proc, log_path)
            assert [e["name"] for e in entries] == ["openverse_dataset"]
            info = gql(url, "{ instance { info } }")["instance"]["info"]
            assert "max_concurrent_runs: 2" in info  # the repository's dagster.yaml configured the instance
            if home is not None:
                assert str(home) in info
            jobs = gql(
                url,
                "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }",
            )["repositoriesOrError"]["nodes"][0]["jobs"]
            assert "audio_refresh_provider" in {j["name"] for j in jobs}
            loaded_log = log_path.read_text()  # what it printed while starting (stopping may race a sensor tick)
            assert "Traceback" not in loaded_log, loaded_log[-3000:]
        finally:
            assert_stopped(proc)
            for leftover in _temp_homes() - before:  # only after a SIGKILL; a clean stop removes its folder
                shutil.rmtree(leftover, ignore_errors=True)
    if not with_home:
        assert _temp_homes() == before, "dagster dev left its temporary instance folder in the repo root"
