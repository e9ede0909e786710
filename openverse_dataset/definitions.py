"""The Definitions of the code location: everything under `defs/` is autoloaded, nothing else lives here.

`load_from_defs_folder` finds the project's configuration beside the package: `openverse_dataset/dg.toml`
ships inside the wheel (package data), so an installed package with no source tree loads exactly as a checkout
does, with no fallback. It repeats pyproject.toml's `[tool.dg.project]` (a test keeps the two equal).
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
