"""The Definitions of the code location: everything under `defs/` is autoloaded, nothing else lives here."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    try:
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    except Exception as exc:  # installed without pyproject.toml (non-editable): load the module directly
        if "pyproject.toml" not in str(exc) and "dg.toml" not in str(exc):
            raise
        import warnings

        from dagster.components import load_defs

        import openverse_dataset.defs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_defs(openverse_dataset.defs)
