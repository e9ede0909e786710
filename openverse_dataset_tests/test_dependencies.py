"""Every third-party module the package imports comes from a dependency `pyproject.toml` declares.

The tests run in the `[dev]` environment, where pandas and datasets pull in numpy, and the wheel test reuses that
environment: `parquet.py`'s `import numpy` went undeclared for a day and the README's first command
(`pip install -e .` then `build`) failed on a fresh machine with ModuleNotFoundError. This test reads the
imports instead of relying on what happens to be installed.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "openverse_dataset"
# Modules the package imports from the library a declared dependency is built on (its config and error types),
# which that dependency always installs: counted as that dependency.
VIA = {
    "botocore": "boto3",  # botocore.config.Config, botocore.exceptions: boto3's own configuration and errors
    "httpx2": "huggingface-hub",  # the transport huggingface_hub 2.x raises through (publish/hub.py)
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_canonical(re.match(r"[A-Za-z0-9_.-]+", d).group(0)) for d in deps}


def _imports() -> dict[str, str]:
    """Top-level module -> one file importing it, for every absolute import anywhere in the package."""
    out: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                out.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return out


def _undeclared(declared: set[str]) -> list[str]:
    owners = md.packages_distributions()
    missing = []
    for module, where in sorted(_imports().items()):
        if module in sys.stdlib_module_names or module == "openverse_dataset":
            continue
        dists = {_canonical(d) for d in owners.get(module, [])}
        if module in VIA:
            dists.add(_canonical(VIA[module]))
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; from {sorted(dists) or 'no installed distribution'})")
    return missing


def test_every_third_party_import_is_a_declared_dependency():
    missing = _undeclared(_declared())
    assert not missing, "imports not covered by pyproject.toml's dependencies: " + "; ".join(missing)


def test_the_check_sees_an_undeclared_import():
    """With numpy taken out of the declared set (as it was), the check names it and where it is imported."""
    missing = _undeclared(_declared() - {"numpy"})
    assert missing == ["numpy (imported in openverse_dataset/parquet.py; from ['numpy'])"]
