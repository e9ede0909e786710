"""The local publish target: each dataset repository as a folder laid out exactly as on the Hub.

A release is assembled in a staging folder beside the repository folder and swapped in whole, so a reader
(or `load_dataset`) sees the previous release or the new one, never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path

from openverse_dataset.layout import (
    STAGING,
    crash_point,
    new_staging,
    recover_area,
    release_staging,
    replace_dir,
    segment,
)
from openverse_dataset.parquet import sha256_file
from openverse_dataset.publish.plan import Plan, make_plan
from openverse_dataset.release.tree import TreeFile, materialize_tree


def remote_tree(repo_dir: Path, files: list[TreeFile] = ()) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) of what the target holds now.

    A file that is a hard link of the release file at the same path (same inode: what the previous publish left
    for every unchanged shard) has that file's sha256, recorded when the shard was written; only other files are
    read and hashed.
    """
    if not repo_dir.exists():
        return {}
    mine = {f.path: f for f in files}
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(repo_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(repo_dir).as_posix()
        st = p.stat()
        f = mine.get(rel)
        if f is not None and f.size == st.st_size and _same_file(p, f.source):
            out[rel] = (st.st_size, f.sha256)
        else:
            out[rel] = (st.st_size, sha256_file(p))
    return out


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def repo_dir(target_root: Path, repo_name: str) -> Path:
    return Path(target_root).resolve() / segment(repo_name)


def publish_local(files: list[TreeFile], target_root: Path, repo_name: str, *, dry_run: bool = False) -> Plan:
    """Write the release as `target_root/<repo name>/`, replacing the previous one as a whole."""
    dest = repo_dir(target_root, repo_name)
    plan = make_plan(files, remote_tree(dest, files))
    if dry_run:
        return plan
    area = dest.parent / STAGING  # beside the repositories: same filesystem, so the switch is one exchange
    recover_area(area)
    staging = new_staging(area, "release")
    try:
        materialize_tree(files, staging)
        crash_point("release")
        replace_dir(staging, dest)
    finally:
        release_staging(staging)
    return plan
