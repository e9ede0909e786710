"""The production install: a wheel installed into a fresh virtualenv outside the repository loads the code
location and runs a partition, with the Dockerfile's own steps (Docker itself cannot run here or in CI).

Fast and offline: the wheel is built without build isolation from the test venv's setuptools, installed with
`--no-deps --no-index`, and the fresh venv reaches its dependencies through a `.pth` line naming the test venv's
site-packages (a plain path line: the editable install's finder there is not activated, so the only
`openverse_dataset` the fresh venv can import is the installed wheel).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from openverse_dataset_tests.procs import assert_stopped, free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def _copies(stage: str | None = None) -> list[tuple[list[str], str]]:
    """The Dockerfile's `COPY src... dest` lines from the build context (not `--from`), optionally of one stage."""
    out, current = [], None
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "FROM":
            current = words[3] if len(words) > 3 and words[2].upper() == "AS" else None
        elif words[0] == "COPY" and not any(w.startswith("--from") for w in words) and stage in (None, current):
            out.append((words[1:-1], words[-1]))
    return out


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The wheel built from the Dockerfile's build context and installed into a fresh venv; its python and env."""
    root = tmp_path_factory.mktemp("wheel-install")
    src = root / "src"
    src.mkdir()
    for sources, _ in _copies("wheel"):  # exactly what the image's wheel stage sees
        for name in sources:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(path, src / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENVERSE_", "DAGSTER_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf-home"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = [sys.executable, "-m", "pip"]
    wheel_cmd = [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist")]
    _run([*wheel_cmd, "."], src, env)
    (wheel,) = (root / "dist").glob("openverse_dataset-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], root, env)
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "zz_test_venv_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    app = root / "app"  # the image's WORKDIR: the workspace files and nothing else
    app.mkdir()
    shutil.copy(REPO / "workspace.yaml", app / "workspace-local.yaml")
    shutil.copy(REPO / "deploy" / "workspace.yaml", app / "workspace.yaml")
    shutil.rmtree(src)  # no source tree left anywhere near the install
    return {"root": root, "venv": venv, "python": python, "app": app, "env": env, "purelib": purelib}


def test_dockerfile_copies_files_that_exist_and_installs_the_wheel():
    copies = _copies()
    assert copies, "the Dockerfile copies nothing"
    for sources, _ in copies:
        for name in sources:
            assert (REPO / name).exists(), f"the Dockerfile copies {name}, which is not in the repository"
    text = DOCKERFILE.read_text()
    assert re.search(r"pip wheel .*--no-deps", text) and re.search(r"pip install .*\.whl", text)
    assert "dagster definitions validate" in text  # the image build fails when the code location does not load


def test_packaged_dg_config_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]
    packaged = tomllib.loads((REPO / "openverse_dataset" / "dg.toml").read_text())
    assert packaged == pyproject, "openverse_dataset/dg.toml must repeat pyproject.toml's [tool.dg]"


def test_installed_wheel_imports_from_the_venv_not_the_source_tree(installed):
    out = _run(
        [str(installed["python"]), "-c", "import openverse_dataset; print(openverse_dataset.__file__)"],
        installed["app"],
        installed["env"],
    ).stdout.strip()
    location = Path(out).resolve()
    assert installed["purelib"] in location.parents, location
    assert not any((p / "pyproject.toml").exists() for p in location.parents)
    assert (location.parent / "dg.toml").exists()  # the packaged project config (package data)
    assert (location.parent / "catalog" / "demo" / "audio.csv.gz").exists()


def test_installed_wheel_validates_and_reports_its_version(installed):
    env = dict(installed["env"])  # the Dockerfile validates with an ephemeral instance (env -u DAGSTER_HOME)
    proc = _run(
        [str(installed["python"]), "-m", "dagster", "definitions", "validate", "-w", "workspace-local.yaml"],
        installed["app"],
        env,
    )
    out = proc.stdout + proc.stderr
    assert "Validation successful for code location openverse_dataset." in out, out[-3000:]
    assert "pyproject.toml" not in out and "deprecat" not in out.lower(), out[-3000:]
    version = _run([str(installed["venv"] / "bin" / "openverse-dataset"), "--version"], installed["app"], env)
    assert version.stdout.strip() == "openverse-dataset 0.1.0"


def test_installed_wheel_runs_one_partition(installed):
    env = dict(installed["env"], OPENVERSE_DATA_DIR=str(installed["root"] / "data"))
    cli = str(installed["venv"] / "bin" / "openverse-dataset")
    _run([cli, "build", "--media", "audio", "--provider", "jamendo"], installed["app"], env)
    release = installed["root"] / "data" / "hub" / "openverse-audio"
    assert (release / "README.md").exists()
    assert list((release / "data").rglob("*.parquet")), "the release holds no Parquet"
    assert not (installed["app"] / ".openverse").exists()  # nothing written outside the data directory


def test_production_workspace_loads_from_the_code_server(installed):
    """The image's default command (the code server) and the production workspace the webserver/daemon use."""
    port = free_port()
    env = dict(installed["env"], DAGSTER_CODE_SERVER_HOST="127.0.0.1", DAGSTER_CODE_SERVER_PORT=str(port))
    log_path = installed["root"] / "code-server.log"
    image_cmd = _image_command()
    assert image_cmd[:3] == ["dagster", "code-server", "start"]
    local = {"0.0.0.0": "127.0.0.1", "4000": str(port)}  # loopback and a free port instead of the container's
    cmd = [str(installed["python"]), "-m", *(local.get(w, w) for w in image_cmd)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=installed["app"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            validate = [str(installed["python"]), "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"]
            out = ""
            for _ in range(60):  # the code server takes a few seconds to load
                p = subprocess.run(validate, cwd=installed["app"], env=env, capture_output=True, text=True, timeout=120)
                out = p.stdout + p.stderr
                if p.returncode == 0:
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
            assert "Validation successful for code location openverse_dataset." in out, out[-3000:]
        finally:
            assert_stopped(proc)


def _image_command() -> list[str]:
    """The Dockerfile's CMD as a list."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)
    return json.loads(cmd)
