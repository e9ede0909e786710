"""The dataset repository as files: which cleaned shard goes where, plus the card, with a content manifest."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from openverse_dataset import licenses as lic
from openverse_dataset.layout import DataLayout
from openverse_dataset.parquet import sha256_file
from openverse_dataset.release.subsets import SubsetStats, release_path
from openverse_dataset.shards import shard_records

CARD = "README.md"
REMOVALS = "removals.parquet"  # identifiers in the previous release and not in this one, with a reason
# written beside the card by the card step (release/croissant.py, release/card.py, release/manifest.py)
COMPANIONS = ("CITATION.cff", "croissant.json", "manifest.json")


@dataclass(frozen=True)
class TreeFile:
    """One file of a release: its path in the repository, where its bytes are now, size and sha256."""

    path: str
    source: str
    size: int
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


def release_files(
    layout: DataLayout, stats: SubsetStats, card_path: Path | None, removals_path: Path | None = None
) -> list[TreeFile]:
    """Every file of the release, sorted by repository path: data shards, the card and the files written beside
    it (`COMPANIONS`), the removals file. `card_path=None`: the data shards (and removals) only, as the card step
    needs them before it writes the card.

    Shard sha256s come from the sidecars their writer left (`openverse_dataset.shards`): an unchanged shard is
    never read again. Only the card and the removals file, new at every release and small, are hashed here.
    """
    out: list[TreeFile] = []
    for provider in stats.providers:
        shards = shard_records(layout.clean_dir(stats.media, provider))
        for r in shards.records:
            shard = shards.folder / r.path
            slug = lic.slug_for_folder(shard.parent.name)
            out.append(TreeFile(release_path(slug, provider, shard.name), str(shard), r.size, r.sha256))
    if card_path is not None:
        out.append(TreeFile(CARD, str(card_path), card_path.stat().st_size, sha256_file(card_path)))
        for name in COMPANIONS:
            if (p := card_path.with_name(name)).exists():
                out.append(TreeFile(name, str(p), p.stat().st_size, sha256_file(p)))
    if removals_path is not None:
        out.append(TreeFile(REMOVALS, str(removals_path), removals_path.stat().st_size, sha256_file(removals_path)))
    return sorted(out, key=lambda f: f.path)


def materialize_tree(files: list[TreeFile], dest: Path) -> None:
    """Lay the files out under `dest` (hard links when on the same filesystem, copies otherwise).

    Only data shards are linked: they are written once, in staging, and never changed in place. The card and
    the removals file are rewritten by every build (dry runs included), so the release gets its own copy.
    """
    for f in files:
        target = dest / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not f.path.startswith("data/"):
            shutil.copyfile(f.source, target)
            continue
        try:
            os.link(f.source, target)
        except OSError:
            shutil.copyfile(f.source, target)
