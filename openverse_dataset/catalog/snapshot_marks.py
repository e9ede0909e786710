"""Takedown snapshots that know where they stand: the exclusion tables' mark is recorded with each snapshot.

The takedown sensor fast-paths entries newer than its cursor. Its first tick must start from the snapshot the
clean step actually used, not from "now": an entry committed between that snapshot and the first tick would
otherwise never be fast-pathed (it would wait for the provider's next regular refresh). So the mark is read
*before* the snapshot (anything committed later is newer than the mark and is seen by the sensor; anything
earlier is in the snapshot), written next to it, and the clean step records the mark of the file it read.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from openverse_dataset.catalog.prepare import MissingIndexes
from openverse_dataset.catalog.takedowns import TakedownSnapshot, snapshot_takedowns
from openverse_dataset.catalog.watermarks import TakedownMark, takedown_mark
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import MediaType


def mark_to_json(m: TakedownMark) -> str:
    return json.dumps({k: (v.isoformat() if v else None) for k, v in vars(m).items()}, sort_keys=True)


def mark_from_json(text: str) -> TakedownMark:
    """The mark of `mark_to_json` (other keys, e.g. more state in a sensor cursor, are ignored)."""
    d = json.loads(text)
    return TakedownMark(
        **{k: datetime.fromisoformat(d[k]) if d.get(k) else None for k in ("api_deleted", "api_mature", "deleted")}
    )


def snapshot_with_mark(
    catalog_url: str, api_url: str, media: MediaType, layout: DataLayout
) -> tuple[TakedownSnapshot, TakedownMark | None]:
    """Take the takedown snapshot and record, next to it, the mark read just before it.

    On a catalog without `prepare-catalog`'s indexes the mark cannot be read cheaply: the snapshot is taken
    without one (the takedown sensor skips on such a catalog anyway).
    """
    dest = layout.takedowns_mark_file(media.name)
    try:
        mark = takedown_mark(catalog_url, api_url, media)
    except MissingIndexes:
        dest.unlink(missing_ok=True)  # an old mark must not describe the new snapshot
        return snapshot_takedowns(catalog_url, api_url, media, layout), None
    snap = snapshot_takedowns(catalog_url, api_url, media, layout)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(mark_to_json(mark))
    os.replace(tmp, dest)  # after the snapshot: a reader may see an older mark (re-checks more), never a newer one
    return snap, mark


def snapshot_mark(layout: DataLayout, media: MediaType) -> TakedownMark | None:
    """The mark of the current snapshot file (read it *before* reading the snapshot), or None if unknown."""
    path = layout.takedowns_mark_file(media.name)
    try:
        return mark_from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def earliest(known: list[TakedownMark]) -> TakedownMark:
    """Field by field, the oldest of several marks (a table with no entries then counts as the oldest)."""

    def oldest(field: str) -> datetime | None:
        values = [getattr(m, field) for m in known]
        return None if any(v is None for v in values) else min(values)

    return TakedownMark(oldest("api_deleted"), oldest("api_mature"), oldest("deleted"))
