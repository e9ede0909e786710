"""Every environment variable the package reads is declared once (settings.py) and shown everywhere an operator
looks: `--help` (with its default), `.env.example` and the README's configuration table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from openverse_dataset.settings import SETTINGS, env_example

REPO = Path(__file__).resolve().parents[1]
# Read by libraries, documented by them (AWS_* by boto3), or process plumbing rather than configuration.
NOT_SETTINGS = {"ARROW_DEFAULT_MEMORY_POOL", "AWS_REGION", "AWS_DEFAULT_REGION", "COLUMNS"}


def _names_read_by_the_package() -> set[str]:
    pattern = re.compile(r"""(?:environ\.get|getenv|environ\[|EnvVar|value|_env)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
    names = set()
    for path in (REPO / "openverse_dataset").rglob("*.py"):
        names |= set(pattern.findall(path.read_text()))
    return names - NOT_SETTINGS


def test_every_variable_the_package_reads_is_declared():
    declared = {s.name for s in SETTINGS}
    read = _names_read_by_the_package()
    assert {"OPENVERSE_CATALOG_URL", "HF_TOKEN", "OPENVERSE_DATA_DIR"} <= read  # the scan finds them at all
    assert read <= declared, f"read but not in settings.SETTINGS: {sorted(read - declared)}"


def test_help_lists_every_variable_with_its_default():
    out = subprocess.run(
        [sys.executable, "-m", "openverse_dataset.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for s in SETTINGS:
        assert s.name in out
        assert f"default: {s.default}" in " ".join(out.split())


def test_env_example_is_generated_from_the_settings():
    assert (REPO / ".env.example").read_text() == env_example(), "regenerate .env.example from settings.env_example()"
    for s in SETTINGS:
        assert f"# {s.name}=" in env_example()


def test_readme_documents_every_variable():
    readme = (REPO / "README.md").read_text()
    for s in SETTINGS:
        assert f"`{s.name}`" in readme, s.name


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "openverse_dataset.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert re.fullmatch(r"openverse-dataset \d+\.\d+\.\d+\S*\n", out.stdout)


def test_launchpad_rejects_a_typo_in_a_fixed_choice_config():
    import dagster as dg

    from openverse_dataset.definitions import defs

    job = defs().resolve_job_def("audio_refresh_provider")

    def config(method: str) -> dict:
        return {"ops": {"audio__raw": {"config": {"method": method}}}}

    assert dg.validate_run_config(job, config("adbc"))
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum"):
        dg.validate_run_config(job, config("adcb"))
