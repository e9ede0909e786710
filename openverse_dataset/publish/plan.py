"""A release plan: which repository paths a release adds, replaces, deletes or keeps, and their bytes.

Both targets (local folder, Hub repository) plan the same way from the same inputs, the release tree
(path, size, sha256) and what the target holds now, so a dry run shows exactly what a publish would do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from openverse_dataset.release.tree import TreeFile

ACTIONS = ("add", "replace", "delete", "keep")


@dataclass
class Plan:
    """What a release changes in the target: paths per action, and bytes."""

    add: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))

    def summary(self) -> dict[str, int]:
        """Files per action."""
        return {k: len(getattr(self, k)) for k in ACTIONS}

    @property
    def changes(self) -> bool:
        return bool(self.add or self.replace or self.delete)

    @property
    def upload_files(self) -> list[str]:
        return sorted(self.add + self.replace)

    @property
    def upload_bytes(self) -> int:
        return self.bytes["add"] + self.bytes["replace"]

    def to_dict(self) -> dict:
        return {**asdict(self), "files": self.summary()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def table_rows(self) -> list[list]:
        """[action, files, bytes] per action, for the UI and the CLI."""
        return [[k, n, f"{self.bytes[k]:,}"] for k, n in self.summary().items()]


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
    for path, (size, _) in sorted(remote.items()):
        if path not in local:
            plan.delete.append(path)
            plan.bytes["delete"] += size
    return plan


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's bytes: how the Hub identifies a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
