"""Shard sidecars: each shard's sha256, recorded once when its folder is written, never recomputed after.

A release needs every published file's sha256 (the publish plan compares them with the target) and a version of
each provider's cleaned data (the release index is kept per provider and reused while that version holds).
Hashing every shard at every release costs as much as reading the whole catalog; so the writer of a shard folder
(the clean step, before it swaps the folder into place) calls `record_shards`, which writes `_shards.json`
(path, size, mtime, sha256 per shard) next to the shards. `shard_records` reads it back and checks each file's
size and mtime against it: a shard rewritten without a new sidecar, or a folder written before sidecars
existed, is hashed again (and counted in `ShardRecords.rehashed`), so a stale sidecar can cost time, never a
wrong hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from openverse_dataset.layout import DataLayout, release_staging, replace_dirs
from openverse_dataset.parquet import sha256_file

SIDECAR_FORMAT = 1
CLEAN_GLOB = "*/part-*.parquet"  # clean/<media>/<provider>/<license>/part-*.parquet
REJECTS_GLOB = "part-*.parquet"  # rejects/<media>/<provider>/part-*.parquet


def file_sizes(folder: Path, glob: str) -> dict[str, int]:
    """Path (relative to `folder`) -> size of the files `glob` matches: a stat, to tell whether a folder still
    holds exactly what a state recorded, without reading it."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.glob(glob))}


@dataclass(frozen=True)
class ShardRecord:
    """One shard as its writer left it."""

    path: str  # relative to the folder, POSIX
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class ShardRecords:
    """The shards of one folder with their sha256s, and how many had to be hashed now (0 when the sidecar held)."""

    folder: Path
    records: list[ShardRecord] = field(default_factory=list)
    rehashed: int = 0

    def by_path(self) -> dict[str, ShardRecord]:
        return {r.path: r for r in self.records}

    def version(self) -> str:
        """A content version of the folder: changes exactly when a shard's bytes, name or the set of shards do."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.path}\0{r.size}\0{r.sha256}\n".encode())
        return h.hexdigest()[:32]


def _record(folder: Path, path: Path, sha256: str | None = None, known: ShardRecord | None = None) -> ShardRecord:
    st = path.stat()
    if sha256 is None and known is not None and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
        sha256 = known.sha256  # the same file, linked: its hash was recorded when it was written
    return ShardRecord(path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns, sha256 or sha256_file(path))


def _write_sidecar(folder: Path, records: list[ShardRecord]) -> None:
    dest = DataLayout.shard_manifest(folder)
    body = {"format": SIDECAR_FORMAT, "shards": [r.__dict__ for r in records]}
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, dest)


def record_shards(folder: Path, pattern: str = CLEAN_GLOB, known: dict[str, ShardRecord] | None = None) -> ShardRecords:
    """Hash the shards `folder` holds now and write its sidecar: the writer calls this once, right after writing.

    Call it on the staging folder before it is swapped into place (renames keep size and mtime), e.g. in the
    clean step: `record_shards(clean_staging)` and `record_shards(rej_staging, REJECTS_GLOB)`. `known`: records of
    files a merge linked from the previous folder (by their path here), taken as they are while size and mtime
    still match: only the shards written now are hashed.
    """
    folder = Path(folder)
    known = known or {}
    records = [
        _record(folder, p, known=known.get(p.relative_to(folder).as_posix())) for p in sorted(folder.glob(pattern))
    ]
    if folder.exists():
        _write_sidecar(folder, records)
    rehashed = sum(1 for r in records if known.get(r.path) is None or known[r.path].sha256 != r.sha256)
    return ShardRecords(folder, records, rehashed=rehashed)


def install_clean_output(
    clean_staging: Path, rej_staging: Path, clean_dir: Path, rej_dir: Path, known: dict[str, ShardRecord] | None = None
) -> None:
    """Record both staged folders' shards, then switch them into place as one transaction.

    Every writer of a clean output (full clean, incremental clean, benchmarks and tests that stage one) goes
    through here, so the sidecars always exist and the removal reasons always match the kept rows, even across
    a kill between the two switches.
    """
    record_shards(clean_staging, known=known)  # each shard's sha256, once: releases read it instead of re-hashing
    record_shards(rej_staging, REJECTS_GLOB)
    replace_dirs([(clean_staging, clean_dir), (rej_staging, rej_dir)])


def shard_records(folder: Path, pattern: str = CLEAN_GLOB) -> ShardRecords:
    """The shards of `folder` with their sha256s, from the sidecar where it still matches the files.

    Reads no shard byte when the sidecar is current; otherwise hashes only the shards it does not vouch for
    (and rewrites it, so the next release reads none). A folder that does not exist has no shards.
    """
    folder = Path(folder)
    side = DataLayout.shard_manifest(folder)
    known: dict[str, dict] = {}
    if side.exists():
        try:
            body = json.loads(side.read_text())
            if body.get("format") == SIDECAR_FORMAT:
                known = {s["path"]: s for s in body["shards"]}
        except (OSError, ValueError, KeyError, TypeError):
            known = {}  # unreadable sidecar: hash everything below, then rewrite it
    out = ShardRecords(folder)
    for p in sorted(folder.glob(pattern)):
        rel = p.relative_to(folder).as_posix()
        st = p.stat()
        s = known.get(rel)
        if s is not None and s.get("size") == st.st_size and s.get("mtime_ns") == st.st_mtime_ns:
            out.records.append(ShardRecord(rel, st.st_size, st.st_mtime_ns, s["sha256"]))
        else:
            out.records.append(_record(folder, p))
            out.rehashed += 1
    if out.rehashed or len(known) != len(out.records):
        with contextlib.suppress(OSError):  # a read-only data directory still releases; the next run hashes again
            _write_sidecar(folder, out.records)
    return out


class ShardHashes:
    """sha256 of any shard file, from the sidecar of the folder it belongs to when that still vouches for it
    (clean shards sit one folder below their sidecar, raw and rejects shards next to it); hashed otherwise."""

    def __init__(self) -> None:
        self._sidecars: dict[Path, dict[str, dict]] = {}

    def _known(self, folder: Path) -> dict[str, dict]:
        if folder not in self._sidecars:
            side = DataLayout.shard_manifest(folder)
            try:
                body = json.loads(side.read_text()) if side.exists() else {}
                shards = body.get("shards", []) if body.get("format") == SIDECAR_FORMAT else []
                self._sidecars[folder] = {s["path"]: s for s in shards}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._sidecars[folder] = {}
        return self._sidecars[folder]

    def sha256(self, path: Path) -> str:
        path = Path(path)
        st = path.stat()
        for folder in (path.parent, path.parent.parent):
            s = self._known(folder).get(path.relative_to(folder).as_posix())
            if s is not None and s.get("size") == st.st_size and s.get("mtime_ns") == st.st_mtime_ns:
                return s["sha256"]
        return sha256_file(path)


def _linked_name(rel: str, prefix: str) -> str:
    """`<license>/part-00003.parquet` of slice `07` -> `<license>/part-07-00003.parquet` (sorted: slice order)."""
    head, _, name = rel.rpartition("/")
    name = f"part-{prefix}-{name.removeprefix('part-')}"
    return f"{head}/{name}" if head else name


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same inode: same size and mtime, so the sidecar entry still vouches for it
    except OSError:
        import shutil

        shutil.copy2(src, dst)


def assemble_folder(
    layout: DataLayout,
    parts: list[tuple[object, Path]],
    dest: Path,
    pattern: str,
    *,
    sidecar: bool = True,
) -> None:
    """Make `dest` hold every part folder's shards, in part order (see `assemble_folders`)."""
    assemble_folders(layout, [(parts, dest, pattern, sidecar)])


def assemble_folders(layout: DataLayout, jobs: list[tuple[list[tuple[object, Path]], Path, str, bool]]) -> None:
    """Build each `dest` from its parts' shards (hard links, renamed `part-<slice>-<n>`), switched in as one.

    A part is `(slice, folder)` with `slice.index` and `slice.count` (catalog/slices.py): a sliced provider's
    folder is its slices' files in slice order, so readers of one folder per provider (the release, the S3
    dump) need not know about slices. Sidecars are composed from the parts' (no shard byte is read when they
    hold), so the release hashes nothing again.
    """
    pairs: list[tuple[Path, Path]] = []
    try:
        for parts, dest, pattern, with_sidecar in jobs:
            staging = layout.staging_dir("assemble")
            pairs.append((staging, dest))
            staging.mkdir(parents=True)
            _fill(staging, parts, pattern, with_sidecar)
    except BaseException:
        for staging, _ in pairs:
            release_staging(staging)
        raise
    replace_dirs(pairs)


def _fill(staging: Path, parts: list[tuple[object, Path]], pattern: str, with_sidecar: bool) -> None:
    """Link the parts' shards into `staging` under slice-prefixed names; compose the sidecar."""
    records: list[ShardRecord] = []
    for part, folder in parts:
        width = len(str(part.count - 1))
        prefix = f"{part.index:0{width}d}"
        found = shard_records(folder, pattern) if with_sidecar else None
        for p in sorted(Path(folder).glob(pattern)):
            rel = _linked_name(p.relative_to(folder).as_posix(), prefix)
            _link(p, staging / rel)
        if found is not None:
            for r in found.records:
                st = (staging / _linked_name(r.path, prefix)).stat()
                records.append(ShardRecord(_linked_name(r.path, prefix), st.st_size, st.st_mtime_ns, r.sha256))
    if with_sidecar:
        _write_sidecar(staging, sorted(records, key=lambda r: r.path))
