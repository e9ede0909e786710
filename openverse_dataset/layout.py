"""Where every stage keeps its files under the data directory, and how names become safe path segments.

Provider names come from the catalog, so they are untrusted: each becomes one percent-encoded path segment
(`/`, `..`, NUL and friends cannot survive), and every path is checked to stay under the data directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote


class UnsafePathError(ValueError):
    """A computed path would leave the data directory."""


def segment(name: str) -> str:
    """Encode an untrusted name as exactly one safe path segment (reversible with `unsegment`)."""
    if not name:
        raise UnsafePathError("empty name cannot be a path segment")
    enc = quote(name, safe="")  # encodes '/', '%', '\\', control characters, spaces, '*', '?', '[' ...
    if enc.startswith("."):  # '.', '..' and hidden names
        enc = "%2E" + enc[1:]
    return enc


def unsegment(seg: str) -> str:
    """The name a segment encodes."""
    return unquote(seg)


@dataclass(frozen=True)
class DataLayout:
    """The data directory and the folders of each pipeline stage inside it."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def _inside(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts).resolve()
        if p != self.root and self.root not in p.parents:
            raise UnsafePathError(f"path {p} escapes the data directory {self.root}")
        return p

    def raw_dir(self, media: str, provider: str) -> Path:
        return self._inside("raw", media, segment(provider))

    def clean_dir(self, media: str, provider: str) -> Path:
        return self._inside("clean", media, segment(provider))

    def rejects_dir(self, media: str, provider: str) -> Path:
        return self._inside("rejects", media, segment(provider))

    def dump_dir(self, media: str, provider: str) -> Path:
        """Raw shards filtered of takedowns for the S3 dump (only those that needed filtering)."""
        return self._inside("dumps", media, segment(provider))

    def takedowns_file(self, media: str) -> Path:
        return self._inside("takedowns", f"{media}.parquet")

    def providers_file(self, media: str) -> Path:
        return self._inside("providers", f"{media}.json")

    def subsets_file(self, media: str) -> Path:
        return self._inside("subsets", f"{media}.json")

    def card_file(self, media: str) -> Path:
        return self._inside("cards", media, "README.md")

    def staging_dir(self, kind: str) -> Path:
        """A fresh folder for work in progress; renamed into place when complete."""
        return self._inside(".staging", kind, uuid.uuid4().hex)

    def demo_catalog(self) -> Path:
        return self._inside("demo-catalog.sqlite")

    def local_repo_dir(self, target_root: Path, repo_name: str) -> Path:
        """A dataset repository folder under a local publish target (which may be outside the data dir)."""
        base = Path(target_root).resolve()
        p = (base / segment(repo_name)).resolve()
        if base not in p.parents:
            raise UnsafePathError(f"repository {repo_name!r} escapes {base}")
        return p


def replace_dir(staged: Path, final: Path) -> None:
    """Swap a completed staging folder into place: readers see the old folder or the new, never a mix.

    Between the two renames the folder is briefly absent, which readers treat as "not materialized".
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    if final.exists():
        os.replace(final, trash)
    os.replace(staged, final)
    shutil.rmtree(trash, ignore_errors=True)
