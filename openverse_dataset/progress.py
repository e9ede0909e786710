"""Progress of long byte-crunching work (hashing, uploading), reported to whoever listens.

Hashing and uploading happen deep inside assets; the CLI runs those assets in its own process and wants a live
display, the UI needs none. So the work calls `report(...)` (a no-op unless someone listens) and the CLI listens
for the duration of a job with `listening(fn)`. Nothing here knows about Dagster or a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

HASHING = "hashing"
UPLOADING = "uploading"


@dataclass(frozen=True)
class Step:
    """`files`/`nbytes` just done in `stage`; `total_files`/`total_bytes` when the stage announces what is ahead."""

    stage: str
    files: int = 0
    nbytes: int = 0
    total_files: int | None = None
    total_bytes: int | None = None


Listener = Callable[[Step], None]
_listeners: list[Listener] = []


def report(
    stage: str, *, files: int = 0, nbytes: int = 0, total_files: int | None = None, total_bytes: int | None = None
) -> None:
    """Tell the listeners (if any) that work of `stage` progressed; cheap when nobody listens."""
    if _listeners:
        step = Step(stage, files, nbytes, total_files, total_bytes)
        for fn in list(_listeners):
            fn(step)


@contextmanager
def listening(fn: Listener) -> Iterator[None]:
    """Receive every `report` made while the block runs."""
    _listeners.append(fn)
    try:
        yield
    finally:
        _listeners.remove(fn)
