"""Where every stage keeps its files under the data directory, how names become safe path segments, and how a
finished folder replaces the one readers use.

Provider names come from the catalog, so they are untrusted: each becomes one percent-encoded path segment
(`/`, `..`, NUL and friends cannot survive), bounded in length (long names keep a readable prefix plus a hash),
and every path is checked to stay under the data directory.

Swaps are crash-safe. Work is written in a staging folder (`.staging/<kind>/<id>`, owned by a live process
through a lock on `<id>.lock`), and switched in with one atomic directory exchange (Linux `renameat2`
`RENAME_EXCHANGE`), so a reader sees the old folder or the new one, never none and never a mix. Folders that
belong together (clean + rejects) are switched as one transaction: a journal written before the first exchange
lets the next run finish a switch a kill interrupted. Staging left by a dead process is removed by the next
one. Swaps are serialised by a lock per staging area.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

STAGING = ".staging"
SEGMENT_MAX_BYTES = 120  # well under NAME_MAX (255) even with a suffix; the Hub and S3 keys accept it too
HASH_CHARS = 16  # 64 bits of sha256: a collision among a catalog's few thousand providers is not a concern
HASH_MARK = "+"  # `quote` always encodes `+`, so only a shortened segment contains one
ORPHAN_AGE_SECONDS = 60.0  # an unlocked lock file being created is left alone until it is this old


log = logging.getLogger(__name__)
SHARD_MANIFEST = "_shards.json"  # not matched by the shard globs (`part-*.parquet`)


# A slice of a big provider is a "unit" named `provider + SLICE_SEP + tag`. NUL never occurs in a provider name
# (discovery refuses it: Dagster forbids it in partition keys), so a unit name never equals a provider's. Units are
# only ever built from a provider's slice plan (catalog/slices.py), never parsed out of untrusted input.
SLICE_SEP = "\0"


def slice_unit(provider: str, tag: str) -> str:
    """The unit name of one slice of `provider` (paths of its raw, clean, rejects, changes and state)."""
    return f"{provider}{SLICE_SEP}{tag}"


def _split_unit(unit: str) -> tuple[str, str | None]:
    provider, sep, tag = unit.partition(SLICE_SEP)
    return provider, (tag if sep else None)


class UnsafePathError(ValueError):
    """A computed path would leave the data directory."""


class MissingInputError(FileNotFoundError):
    """A step's input folder is absent: the step refuses rather than producing an empty output."""


def segment(name: str) -> str:
    """Encode an untrusted name as exactly one safe, bounded path segment.

    Short names are reversible with `unsegment`. A name whose encoding exceeds `SEGMENT_MAX_BYTES` becomes a
    readable prefix plus `+` and a hash of the whole name; its name is in the data itself (the `provider`
    column of every file in the folder).
    """
    if not name:
        raise UnsafePathError("empty name cannot be a path segment")
    enc = quote(name, safe="")  # encodes '/', '%', '\\', '+', control characters, spaces, '*', '?', '[' ...
    if enc.startswith("."):  # '.', '..' and hidden names
        enc = "%2E" + enc[1:]
    if len(enc) <= SEGMENT_MAX_BYTES:
        return enc
    budget = SEGMENT_MAX_BYTES - HASH_CHARS - len(HASH_MARK)
    prefix = ""
    for ch in name:  # whole characters only: the prefix stays decodable
        piece = quote(ch, safe="")
        if not prefix and piece == ".":
            piece = "%2E"
        if len(prefix) + len(piece) > budget:
            break
        prefix += piece
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{prefix}{HASH_MARK}{digest}"


def unsegment(seg: str) -> str:
    """The name a segment encodes (a shortened segment's name is read from the data: ValueError here)."""
    if HASH_MARK in seg:
        raise ValueError(f"{seg!r} is a shortened name: read the provider column of its files")
    return unquote(seg)


def is_shortened(seg: str) -> bool:
    """Whether `segment` shortened the name (prefix + hash) rather than only encoding it."""
    return HASH_MARK in seg


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

    def _unit_dir(self, stage: str, media: str, unit: str) -> Path:
        """A provider's folder of one stage, or a slice's (`slices/<stage>/<media>/<provider>/<tag>`)."""
        provider, tag = _split_unit(unit)
        if tag is None:
            return self._inside(stage, media, segment(provider))
        return self._inside("slices", stage, media, segment(provider), segment(tag))

    def raw_dir(self, media: str, provider: str) -> Path:
        """A provider's raw shards (a sliced provider's: links to its slices' shards, in slice order)."""
        return self._unit_dir("raw", media, provider)

    def clean_dir(self, media: str, provider: str) -> Path:
        return self._unit_dir("clean", media, provider)

    def rejects_dir(self, media: str, provider: str) -> Path:
        return self._unit_dir("rejects", media, provider)

    def slices_dir(self, stage: str, media: str, provider: str) -> Path:
        """Every slice folder of one provider for one stage (raw, clean, rejects, changes, state/<stage>)."""
        return self._inside("slices", stage, media, segment(provider))

    def slice_plan_file(self, media: str, provider: str) -> Path:
        """How a big provider is split into slices (catalog/slices.py): the source of truth for its units."""
        return self._inside("state", "slice-plans", media, f"{segment(provider)}.json")

    def unit_lock_file(self, media: str, unit: str) -> Path:
        """Held (flock) while one unit's raw or clean folders change: a slice's own run and its provider's run
        may reach the same slice at once, and take turns on it."""
        name, tag = _split_unit(unit)
        if tag is None:
            return self._inside("state", "locks", media, f"{segment(name)}.lock")
        return self._inside("state", "locks", media, segment(name), f"{segment(tag)}.lock")

    def dump_dir(self, media: str, provider: str) -> Path:
        """Raw shards filtered of takedowns for the S3 dump (only those that needed filtering)."""
        return self._inside("dumps", media, segment(provider))

    def changes_dir(self, media: str, provider: str) -> Path:
        """What the last incremental raw refresh changed (rows read, identifiers removed): the clean step's input."""
        return self._unit_dir("changes", media, provider)

    def state_file(self, stage: str, media: str, provider: str) -> Path:
        """A partition's (or slice's) refresh state for one stage (watermarks, versions, last full rebuild)."""
        name, tag = _split_unit(provider)
        if tag is None:
            return self._inside("state", stage, media, f"{segment(name)}.json")
        return self._inside("slices", f"state-{stage}", media, segment(name), f"{segment(tag)}.json")

    def takedowns_file(self, media: str) -> Path:
        return self._inside("takedowns", f"{media}.parquet")

    def takedown_snapshots_dir(self, media: str) -> Path:
        """Takedown snapshots clean states still refer to, by sha256 (`takedown_snapshot`)."""
        return self._inside("state", "takedown-snapshots", segment(media))

    def takedown_snapshot(self, media: str, sha256: str) -> Path:
        """The takedown snapshot with this sha256, as a clean read it: the next incremental clean compares the
        current snapshot with it to recheck only the works whose takedown status moved."""
        return self._inside("state", "takedown-snapshots", segment(media), f"{segment(sha256)}.parquet")

    def clean_state_files(self, media: str) -> list[Path]:
        """Every partition's and slice's clean state (`state_file("clean", ...)`) of one media type."""
        return sorted(
            [
                *self._inside("state", "clean", media).glob("*.json"),
                *self._inside("slices", "state-clean", media).glob("*/*.json"),
            ]
        )

    def takedowns_mark_file(self, media: str) -> Path:
        """The takedown tables' mark when the snapshot in `takedowns_file` was taken (where the fast path resumes)."""
        return self._inside("takedowns", f"{media}.mark.json")

    def providers_file(self, media: str) -> Path:
        return self._inside("providers", f"{media}.json")

    def subsets_file(self, media: str) -> Path:
        return self._inside("subsets", f"{media}.json")

    def holdback_file(self, media: str) -> Path:
        """Which providers the pending release holds back and why (written by subsets, read by card/release)."""
        return self._inside("subsets", f"{media}.holdback.json")

    def card_file(self, media: str) -> Path:
        return self._inside("cards", media, "README.md")

    def staging_area(self) -> Path:
        return self._inside(STAGING)

    def releases_dir(self, media: str) -> Path:
        """Release bookkeeping of one media type: pending index, removals, changelog, plan, per-target indexes."""
        return self._inside("releases", segment(media))

    def release_next_index(self, media: str) -> Path:
        """The pending release's index (which segment holds each provider), written by the card step."""
        return self._inside("releases", segment(media), "next-index.json")

    def release_removals(self, media: str) -> Path:
        return self._inside("releases", segment(media), "removals.parquet")

    def release_changelog(self, media: str) -> Path:
        return self._inside("releases", segment(media), "changelog.json")

    def release_plan(self, media: str) -> Path:
        """The last release's (or dry run's) plan and where it went."""
        return self._inside("releases", segment(media), "plan.json")

    def release_segments_root(self, media: str) -> Path:
        return self._inside("releases", segment(media), "segments")

    def release_segment(self, media: str, provider: str, version: str, suffix: str = ".parquet") -> Path:
        """One provider's index segment (or cached stats) for one cleaned data version, reused while it holds."""
        return self._inside("releases", segment(media), "segments", segment(provider), segment(version) + suffix)

    def release_targets_root(self, media: str) -> Path:
        return self._inside("releases", segment(media), "targets")

    def release_target_index(self, media: str, target_key: str) -> Path:
        """What one publish target holds since its last successful publish (its index)."""
        return self._inside("releases", segment(media), "targets", segment(target_key), "index.json")

    def release_legacy_index(self, media: str, target_key: str) -> Path:
        """Where releases before per-provider segments kept a target's index (read once, to migrate)."""
        return self._inside("releases", segment(media), segment(target_key), "index.parquet")

    @staticmethod
    def shard_manifest(folder: Path) -> Path:
        """The sidecar of a shard folder (clean or rejects, staged or in place): each shard's size and sha256."""
        return Path(folder) / SHARD_MANIFEST

    def staging_dir(self, kind: str) -> Path:
        """A fresh folder name for work in progress, owned by this process; swapped into place when complete.

        Finishes any switch a killed process left half done and removes staging nobody owns any more first.
        The folder itself is not created (writers create it).
        """
        self.recover()
        return new_staging(self.staging_area(), kind)

    def recover(self) -> None:
        """Finish interrupted switches and remove dead processes' staging (cheap when there is none)."""
        recover_area(self.staging_area())

    def require_dir(self, path: Path, what: str) -> Path:
        """`path` when it is a folder; MissingInputError otherwise (never treat a missing input as empty)."""
        if not path.is_dir():
            raise MissingInputError(
                f"{what} is missing ({path}): materialize it first; refusing to write an empty output"
            )
        return path

    def demo_catalog(self) -> Path:
        return self._inside("demo-catalog.sqlite")

    def log_file(self, name: str) -> Path:
        """Details of one CLI command's failures (tracebacks, Dagster's errors), named by command and time."""
        return self._inside("logs", f"{segment(name)}.log")

    def local_repo_dir(self, target_root: Path, repo_name: str) -> Path:
        """A dataset repository folder under a local publish target (which may be outside the data dir)."""
        base = Path(target_root).resolve()
        p = (base / segment(repo_name)).resolve()
        if base not in p.parents:
            raise UnsafePathError(f"repository {repo_name!r} escapes {base}")
        return p


# -- staging ownership ----------------------------------------------------------------------------------------
_OWNED: dict[str, int] = {}  # staging path -> fd holding its lock (this process owns it)
_PINNED: set[str] = set()  # staging paths a committed, unfinished switch needs (left for recovery)
CRASH_ENV = "OPENVERSE_CRASH_AT"


def crash_point(name: str) -> None:
    """Die at once (SIGKILL, as `kill -9` would) when `OPENVERSE_CRASH_AT` names this point: crash tests only.

    Points: `extract` (mid-extract), `clean` (mid-clean), `swap-journaled` (switch committed, nothing moved),
    `swap-between` (between the folders of one switch), `release` (release staged, not switched).
    """
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), 9)


def new_staging(area: Path, kind: str) -> Path:
    """`area/<kind>/<id>`: a staging folder name owned by this process until `release_staging`.

    Ownership is a `flock` on `<id>.lock`, held open: when the process dies, the kernel drops the lock and the
    next run knows the folder is garbage. The lock file is locked under a temporary name, then renamed, so a
    cleaner never sees an unlocked lock file of a live owner.
    """
    folder = Path(area) / kind
    folder.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp = folder / f"{name}.lock.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(tmp, folder / f"{name}.lock")
    path = folder / name
    _OWNED[str(path)] = fd
    return path


def release_staging(path: Path) -> None:
    """Remove a staging folder (or what a swap left in it) and give up its ownership.

    A folder a committed but unfinished switch still needs is kept for the next run's recovery.
    """
    if str(path) not in _PINNED:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(Path(f"{path}.old"), ignore_errors=True)
    fd = _OWNED.pop(str(path), None)
    lock = Path(f"{path}.lock")
    if fd is not None:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _owner_alive(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def _old_enough(path: Path, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > ORPHAN_AGE_SECONDS
    except FileNotFoundError:
        return False


def _remove_orphans(area: Path) -> int:
    """Remove staging entries whose owner is dead; the number removed."""
    removed = 0
    now = time.time()
    for kind in sorted(p for p in area.iterdir() if p.is_dir()) if area.is_dir() else []:
        for entry in sorted(kind.iterdir()):
            ident = entry.name.split(".", 1)[0]
            if str(kind / ident) in _OWNED:
                continue
            lock = kind / f"{ident}.lock"
            if entry.name.endswith(".lock.tmp"):
                if _old_enough(entry, now) and not _owner_alive(entry):
                    entry.unlink(missing_ok=True)
                    removed += 1
                continue
            if _owner_alive(lock):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    return removed


# -- swaps ------------------------------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _libc_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False when the platform or filesystem cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextmanager
def swap_lock(area: Path) -> Iterator[None]:
    """Serialise switches (and their recovery) within one staging area, across processes."""
    area = Path(area)
    area.mkdir(parents=True, exist_ok=True)
    fd = os.open(area / ".swap.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _area_of(staged: Path) -> Path:
    for parent in Path(staged).parents:
        if parent.name == STAGING:
            return parent
    raise UnsafePathError(f"{staged} is not a staging folder (made by new_staging / DataLayout.staging_dir)")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ino(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def _switch(staged: Path, final: Path, ino: int) -> None:
    """Put the folder whose inode is `ino` (now at `staged`) at `final`; idempotent, so recovery can redo it."""
    if _ino(final) == ino:
        return  # done before a kill
    if _ino(staged) != ino:
        raise RuntimeError(f"interrupted switch of {final} cannot be finished: {staged} is gone")
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(staged, final)
    elif not exchange(staged, final):
        # No atomic exchange here: the folder is briefly absent (recovery restores it after a kill).
        os.rename(final, Path(f"{staged}.old"))
        os.rename(staged, final)
    _fsync_dir(final.parent)


def replace_dirs(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Switch completed staging folders into place as one transaction: readers see old or new, never none.

    A journal naming the folders is written first: from then on the switch is committed, and a kill part-way
    is finished by the next run (`recover_area`). After the switch each staging name holds the previous folder,
    which is removed.
    """
    pairs = [(Path(s), Path(f)) for s, f in pairs]
    area = _area_of(pairs[0][0])
    for staged, _ in pairs:
        if not staged.is_dir():
            raise MissingInputError(f"staging folder {staged} is missing: nothing to switch in")
    with swap_lock(area):
        recover_journals(area)
        entries = [[str(s), str(f), os.lstat(s).st_ino] for s, f in pairs]
        journal = area / f"journal-{uuid.uuid4().hex}.json"
        tmp = journal.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(entries, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, journal)
        _fsync_dir(area)
        crash_point("swap-journaled")
        try:
            for i, (s, f, ino) in enumerate(entries):
                if i:
                    crash_point("swap-between")
                _switch(Path(s), Path(f), ino)
        except BaseException:
            # Committed: the journal must find its folders, so the next run can finish the switch.
            _PINNED.update(str(s) for s, _ in pairs)
            raise
        journal.unlink()
    for staged, _ in pairs:
        release_staging(staged)


def replace_dir(staged: Path, final: Path) -> None:
    """Switch one completed staging folder into place (see `replace_dirs`)."""
    replace_dirs([(staged, final)])


def recover_journals(area: Path) -> int:
    """Finish the switches whose journal survived a kill (caller holds the swap lock); how many."""
    done = 0
    for journal in sorted(Path(area).glob("journal-*.json")):
        try:
            entries = json.loads(journal.read_text())
        except (OSError, ValueError):
            journal.unlink(missing_ok=True)  # never completed writing: the switch had not started
            continue
        try:
            for s, f, ino in entries:
                _switch(Path(s), Path(f), int(ino))
        except RuntimeError as exc:  # someone removed the folders by hand: nothing left to finish
            log.warning("dropping journal %s: %s", journal.name, exc)
        journal.unlink()
        done += 1
    for tmp in Path(area).glob("journal-*.tmp"):
        tmp.unlink(missing_ok=True)
    return done


def recover_area(area: Path) -> None:
    """Finish interrupted switches, then remove staging whose owner died (`.staging` of a layout or target)."""
    area = Path(area)
    if not area.is_dir():
        return
    with swap_lock(area):
        recover_journals(area)
        _remove_orphans(area)
