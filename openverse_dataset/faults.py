"""Fault injection for drills and the end-to-end test: make one provider's extract fail, by configuration.

`OPENVERSE_FAULT_FILE` names a JSON file such as `{"extract": ["smithsonian"]}`; while the file lists a provider,
its extract raises `InjectedFault` before reading the catalog. The file is read at each extract, so a drill can
start and stop a fault without restarting anything. Unset (production), this costs one environment lookup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FAULT_FILE_ENV = "OPENVERSE_FAULT_FILE"


class InjectedFault(RuntimeError):
    """A failure requested through `OPENVERSE_FAULT_FILE` (never raised unless that variable is set)."""


def _faults() -> dict:
    """The fault file's contents ({} when unset, missing or unreadable): read at each call, so a drill can start
    and stop a fault without restarting anything."""
    path = os.environ.get(FAULT_FILE_ENV)
    if not path or not Path(path).is_file():
        return {}
    try:
        faults = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return faults if isinstance(faults, dict) else {}


def injected(stage: str, provider: str) -> bool:
    """Whether the fault file asks `stage` (e.g. "extract") of `provider` to fail."""
    return provider in (_faults().get(stage) or [])


def raise_if_injected(stage: str, provider: str) -> None:
    """Raise `InjectedFault` when the fault file lists `provider` under `stage`."""
    if injected(stage, provider):
        raise InjectedFault(f"injected {stage} fault for provider {provider!r} ({FAULT_FILE_ENV})")


def delay_if_injected(stage: str, provider: str) -> float:
    """Sleep as long as the fault file asks `stage` of `provider` to be slow (`{"slow_extract": {"flickr": 5}}`):
    a slow catalog, for drills and for the test that slice runs go side by side. Returns the seconds slept."""
    import time

    try:
        seconds = float((_faults().get(f"slow_{stage}") or {}).get(provider, 0))
    except (ValueError, TypeError, AttributeError):
        return 0.0
    time.sleep(max(0.0, seconds))
    return seconds
