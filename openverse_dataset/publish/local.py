"""The local publish target: each dataset repository as a folder laid out exactly as on the Hub.

A release is assembled in a staging folder beside the repository folder and swapped in whole, so a reader
(or `load_dataset`) sees the previous release or the new one, never a mix.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from openverse_dataset.layout import replace_dir, segment
from openverse_dataset.parquet import sha256_file
from openverse_dataset.release.tree import TreeFile, materialize_tree


@dataclass
class Plan:
    """What a release changes in the target: paths per action, and bytes."""

    add: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    bytes: dict[str, int] = field(default_factory=lambda: {"add": 0, "replace": 0, "delete": 0, "keep": 0})

    def summary(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("add", "replace", "delete", "keep")}


def remote_tree(repo_dir: Path) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) of what the target holds now."""
    if not repo_dir.exists():
        return {}
    return {
        p.relative_to(repo_dir).as_posix(): (p.stat().st_size, sha256_file(p))
        for p in sorted(repo_dir.rglob("*"))
        if p.is_file()
    }


def make_plan(files: list[TreeFile], remote: dict[str, tuple[int, str]]) -> Plan:
    """Compare the release with the target: add, replace, delete, keep (by size and sha256)."""
    plan = Plan()
    local = {f.path: f for f in files}
    for path, f in local.items():
        if path not in remote:
            plan.add.append(path)
            plan.bytes["add"] += f.size
        elif remote[path] != (f.size, f.sha256):
            plan.replace.append(path)
            plan.bytes["replace"] += f.size
        else:
            plan.keep.append(path)
            plan.bytes["keep"] += f.size
    for path, (size, _) in remote.items():
        if path not in local:
            plan.delete.append(path)
            plan.bytes["delete"] += size
    return plan


def repo_dir(target_root: Path, repo_name: str) -> Path:
    return Path(target_root).resolve() / segment(repo_name)


def publish_local(files: list[TreeFile], target_root: Path, repo_name: str, *, dry_run: bool = False) -> Plan:
    """Write the release as `target_root/<repo name>/`, replacing the previous one as a whole."""
    dest = repo_dir(target_root, repo_name)
    plan = make_plan(files, remote_tree(dest))
    if dry_run:
        return plan
    staging = dest.parent / f".staging-{segment(repo_name)}-{uuid.uuid4().hex}"
    try:
        materialize_tree(files, staging)
        replace_dir(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return plan
