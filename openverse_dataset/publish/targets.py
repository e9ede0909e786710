"""Publish targets behind one interface, registered by scheme: `local:DIR` and `hf:NAMESPACE`.

Everything that depends on where a release goes (planning, publishing, the repository id the card names, which
files a reader of the target sees, the first-release fallback of the previous index, a cheap configuration
check) is a method of the target's class, so callers never compare the target's kind as a string. A new target
is one subclass with `@register`.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from openverse_dataset.layout import unsegment
from openverse_dataset.publish.local import publish_local, repo_dir
from openverse_dataset.publish.plan import Plan
from openverse_dataset.release.tree import TreeFile


class UnknownTargetError(ValueError):
    """A publish target string names no registered scheme (or no location)."""


@dataclass
class Published:
    """What a publish (or a dry run) did: the plan and where the repository is."""

    plan: Plan
    repository: str  # a folder, or the repository's URL
    remote: bool  # whether `repository` is a URL (else a local folder)
    tag: str | None = None
    commit: str | None = None
    commits: int = 0

    @property
    def tag_url(self) -> str | None:
        return f"{self.repository}/tree/{self.tag}" if self.remote and self.tag else None

    def record(self) -> dict:
        """The part of `plan.json` that says where the release went."""
        return {"repository": self.repository, "tag": self.tag, "commit": self.commit, "commits": self.commits}


class Target(ABC):
    """One place releases go. Subclasses set `scheme` and `usage` and are registered with `@register`."""

    scheme: ClassVar[str]
    usage: ClassVar[str]  # e.g. "local:DIR", for error messages

    def __init__(self, location: str) -> None:
        self.location = location

    @property
    def label(self) -> str:
        """`scheme:location`, as configured (normalised): shown in metadata and plans."""
        return f"{self.scheme}:{self.location}"

    @property
    def key(self) -> str:
        """A short folder name for this target's bookkeeping (its previous index)."""
        return f"{self.scheme}-{hashlib.sha256(self.label.encode()).hexdigest()[:16]}"

    @abstractmethod
    def repo_id(self, repo_name: str) -> str:
        """The `namespace/name` a user passes to `load_dataset` (the card shows it)."""

    @abstractmethod
    def where(self, repo_name: str) -> str:
        """Where a repository of this target is, for summaries (a folder or `hf:namespace`)."""

    @abstractmethod
    def plan(self, files: list[TreeFile], repo_name: str) -> Plan:
        """What publishing `files` would add, replace, delete and keep, against what the target holds now."""

    @abstractmethod
    def publish(self, files: list[TreeFile], repo_name: str, *, tag: str, dry_run: bool = False) -> Published:
        """Publish `files` atomically as `repo_name` (dry run: plan only, change nothing)."""

    def released_dir(self, repo_name: str) -> Path | None:
        """A local folder holding exactly what readers of the target see, or None (then read the release tree)."""
        return None

    def own_release_files(self, repo_name: str) -> dict[str, list[Path]]:
        """The data files the target holds, per provider folder, readable locally: how a target with no recorded
        index is compared with (the previous index's fallback). Empty when the target is remote."""
        return {}

    def access_problems(self) -> list[str]:
        """Problems only the network shows (the Hub: token valid, may write to the namespace), one line each with
        the fix; empty when none or when the target has no remote side. For `doctor` and the CLI's preflight."""
        return []

    @abstractmethod
    def check(self) -> list[str]:
        """Problems with this target's configuration, one line each with the fix; empty when ready. Cheap: no
        network, no writes (for `doctor` and for failing early)."""


TARGETS: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    """Make a target class available under its scheme."""
    TARGETS[cls.scheme] = cls
    return cls


def resolve_target(spec: str) -> Target:
    """The target a `scheme:location` string names; an unknown scheme or an empty location is a clear error."""
    scheme, sep, where = spec.partition(":")
    cls = TARGETS.get(scheme) if sep else None
    usages = " or ".join(c.usage for c in TARGETS.values())
    if cls is None:
        raise UnknownTargetError(f"unknown publish target {spec!r}: OPENVERSE_PUBLISH_TARGET must be {usages}")
    if not where:
        raise UnknownTargetError(f"publish target {spec!r} names no location: use {cls.usage}")
    return cls(where)


@register
class LocalTarget(Target):
    """A folder per dataset repository, laid out exactly as on the Hub, swapped in whole at each release."""

    scheme = "local"
    usage = "local:DIR"

    def __init__(self, location: str) -> None:
        super().__init__(str(Path(location).resolve()))

    def repo_dir(self, repo_name: str) -> Path:
        return repo_dir(Path(self.location), repo_name)

    def repo_id(self, repo_name: str) -> str:
        return f"openverse/{repo_name}"

    def where(self, repo_name: str) -> str:
        return str(self.repo_dir(repo_name))

    def plan(self, files: list[TreeFile], repo_name: str) -> Plan:
        return self.publish(files, repo_name, tag="", dry_run=True).plan

    def publish(self, files: list[TreeFile], repo_name: str, *, tag: str, dry_run: bool = False) -> Published:
        plan = publish_local(files, Path(self.location), repo_name, dry_run=dry_run)
        return Published(plan, str(self.repo_dir(repo_name)), remote=False)

    def released_dir(self, repo_name: str) -> Path | None:
        return self.repo_dir(repo_name)

    def own_release_files(self, repo_name: str) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for p in sorted(self.repo_dir(repo_name).glob("data/*/*/*.parquet")):
            out.setdefault(unsegment(p.parent.name), []).append(p)
        return out

    def check(self) -> list[str]:
        base = Path(self.location)
        existing = next((p for p in (base, *base.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            return [
                f"publish target {self.label}: {existing} is not a folder; point OPENVERSE_PUBLISH_TARGET elsewhere"
            ]
        if not os.access(existing, os.W_OK):
            return [f"publish target {self.label}: {existing} is not writable; fix its permissions or pick another DIR"]
        return []


@register
class HubTarget(Target):
    """Dataset repositories `NAMESPACE/<repo name>` on the Hugging Face Hub (token from HF_TOKEN)."""

    scheme = "hf"
    usage = "hf:NAMESPACE"

    def repo_id(self, repo_name: str) -> str:
        return f"{self.location}/{repo_name}"

    def where(self, repo_name: str) -> str:
        return self.label

    def plan(self, files: list[TreeFile], repo_name: str) -> Plan:
        return self.publish(files, repo_name, tag="", dry_run=True).plan

    def publish(self, files: list[TreeFile], repo_name: str, *, tag: str, dry_run: bool = False) -> Published:
        from openverse_dataset.publish.hub import publish_hub

        res = publish_hub(files, self.location, repo_name, tag=tag, dry_run=dry_run)
        return Published(res.plan, res.url, remote=True, tag=res.tag, commit=res.commit, commits=res.commits)

    def access_problems(self) -> list[str]:
        from openverse_dataset.publish.hub import hub_access_problems

        return [f"publish target {self.label}: {p}" for p in hub_access_problems(self.location)]

    def check(self) -> list[str]:
        problems = []
        if not self.location or "/" in self.location:
            problems.append(f"publish target {self.label}: hf:NAMESPACE must name one user or organisation")
        if not os.environ.get("HF_TOKEN", "").strip():
            problems.append(f"publish target {self.label}: HF_TOKEN is not set; export a write token as HF_TOKEN")
        return problems
