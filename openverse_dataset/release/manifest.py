"""`manifest.json`: what a release holds, so a consumer can check a download against it (`openverse-dataset verify`).

The manifest lists every file of the release (path, size, sha256, rows for Parquet files) and the rows per
config, per license and per provider. Shard sha256s come from the sidecars the clean step wrote
(`openverse_dataset.shards`, via `release.tree.release_files`): building a manifest never re-hashes an unchanged
shard; rows per file come from each Parquet footer (a few KiB read per file, not its data).

`verify_folder` checks a folder (a local release, or a Hub snapshot downloaded by `verify_hub`) against its
manifest and against the configs' license promises as the code defines them (`licenses.all_configs()`), not as
the manifest states them: a `commercial` config holding a non-commercial row is a problem even when the
manifest was edited to match. The release's asset check calls the same function.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from openverse_dataset import licenses as lic
from openverse_dataset.parquet import sha256_file
from openverse_dataset.release.subsets import SubsetStats
from openverse_dataset.release.tree import TreeFile, materialize_tree, release_files

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# files a repository may hold that no release lists (the Hub's own, and huggingface_hub's download cache)
UNLISTED_OK = (".gitattributes", MANIFEST, ".cache/*")


def parquet_rows(path: Path | str) -> int:
    """Rows of one Parquet file, from its footer only."""
    return pq.ParquetFile(path).metadata.num_rows


def build_manifest(files: list[TreeFile], stats: SubsetStats, *, release: str, repo_id: str) -> dict:
    """The manifest of a release made of `files` (every file but the manifest itself) with the counts `stats`."""
    entries = []
    for f in sorted(files, key=lambda f: f.path):
        if f.path == MANIFEST:
            continue
        e: dict = {"path": f.path, "size": f.size, "sha256": f.sha256}
        if f.path.endswith(".parquet"):
            e["rows"] = parquet_rows(f.source)
        entries.append(e)
    return {
        "format": MANIFEST_FORMAT,
        "dataset": repo_id,
        "media": stats.media,
        "release": release,
        "rows": stats.rows,
        "files": entries,
        "configs": {c.name: {"rows": c.rows, "licenses": c.slugs, "data_files": c.patterns} for c in stats.configs},
        "licenses": stats.rows_by_license(),
        "providers": stats.rows_by_provider(),
    }


def write_manifest(path: Path, manifest: dict) -> None:
    """Write `manifest` atomically (a new file: the released copy may be a link of the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class VerifyResult:
    """Problems found (one line each; empty = the folder is the release its manifest describes) and what was read."""

    problems: list[str]
    files: int
    rows: int
    hashed: int

    @property
    def ok(self) -> bool:
        return not self.problems


Digest = Callable[[Path], str]


def _matches(path: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def verify_folder(folder: Path, digest: Digest = sha256_file) -> VerifyResult:
    """Check `folder` against its `manifest.json`: every listed file present with its size, sha256 and rows; no
    unlisted data file; rows per config and license as stated; each config's rows only of licenses the config
    promises (no NC row in `commercial`, no ND row in `modification`, ...). `digest` computes a file's sha256
    (the release check passes one that reuses the shard sidecars)."""
    folder = Path(folder)
    problems: list[str] = []
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = manifest["files"]
        configs = manifest["configs"]
    except FileNotFoundError:
        return VerifyResult([f"{MANIFEST}: missing in {folder}"], 0, 0, 0)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return VerifyResult([f"{MANIFEST}: unreadable ({exc})"], 0, 0, 0)
    if manifest.get("format") != MANIFEST_FORMAT:
        problems.append(f"{MANIFEST}: format {manifest.get('format')!r}, this verifier reads {MANIFEST_FORMAT}")
    hashed, good_parquet = 0, []
    rows_of: dict[str, int] = {}
    for e in listed:
        p = folder / e["path"]
        if not p.is_file():
            problems.append(f"{e['path']}: missing")
            continue
        size = p.stat().st_size
        if size != e["size"]:
            problems.append(f"{e['path']}: size {size:,} bytes, manifest says {e['size']:,}")
            continue
        hashed += 1
        sha = digest(p)
        if sha != e["sha256"]:
            problems.append(f"{e['path']}: sha256 {sha[:16]}..., manifest says {e['sha256'][:16]}...")
        if "rows" in e:
            try:
                rows_of[e["path"]] = n = parquet_rows(p)
            except Exception as exc:  # a corrupt footer is a problem to report, not a crash
                problems.append(f"{e['path']}: not a readable Parquet file ({str(exc).splitlines()[0]})")
                continue
            if n != e["rows"]:
                problems.append(f"{e['path']}: {n:,} rows, manifest says {e['rows']:,}")
            good_parquet.append(e["path"])
    names = {e["path"] for e in listed}
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for rel in on_disk:
        if rel not in names and not _matches(rel, list(UNLISTED_OK)):
            problems.append(f"{rel}: not listed in {MANIFEST}")
    try:
        problems += _check_configs(folder, configs, good_parquet, rows_of, manifest.get("licenses", {}))
    except duckdb.Error as exc:  # a file whose footer reads but whose pages do not: a problem, not a crash
        problems.append(f"configs: not checked, a data file is unreadable ({str(exc).splitlines()[0]})")
    return VerifyResult(problems, len(listed), sum(rows_of.values()), hashed)


def _check_configs(
    folder: Path, configs: dict, parquet: list[str], rows_of: dict[str, int], licenses: dict[str, int]
) -> list[str]:
    problems: list[str] = []
    known = {c.name: c for c in lic.all_configs()}
    conn = duckdb.connect()
    try:
        for name, cfg in sorted(configs.items()):
            files = [p for p in parquet if _matches(p, cfg["data_files"])]
            n = sum(rows_of[p] for p in files)
            if n != cfg["rows"]:
                problems.append(f"config {name}: its files hold {n:,} rows, manifest says {cfg['rows']:,}")
            promise = known.get(name)
            if promise is None:
                problems.append(f"config {name}: not a config this project defines")
                continue
            if not files:
                continue
            allowed = set(promise.slugs)
            paths = [str(folder / p) for p in files]
            bad = conn.execute(
                "select license, count(*), min(filename) from read_parquet(?, filename = true) "
                "where license is null or not list_contains(?, license) group by 1 order by 1",
                [paths, sorted(allowed)],
            ).fetchall()
            for slug, count, example in bad:
                why = _why_not(slug, name)
                where = Path(example).relative_to(folder).as_posix()
                problems.append(f"config {name}: {count:,} row(s) with license {slug!r} ({why}), e.g. in {where}")
        if parquet and licenses:
            data = [str(folder / p) for p in parquet if p.startswith("data/")]
            got = dict(conn.execute("select license, count(*) from read_parquet(?) group by 1", [data]).fetchall())
            for slug in sorted(set(got) | set(licenses), key=str):
                if got.get(slug, 0) != licenses.get(slug, 0):
                    problems.append(
                        f"license {slug}: {got.get(slug, 0):,} rows in the data files, "
                        f"manifest says {licenses.get(slug, 0):,}"
                    )
    finally:
        conn.close()
    return problems


def _why_not(slug: str | None, config: str) -> str:
    info = lic.LICENSES.get(slug) if slug else None
    if info is None:
        return "not a known license"
    if config.startswith("commercial") and not info.commercial:
        return "does not allow commercial use"
    if "modification" in config and not info.modification:
        return "does not allow adaptations"
    return f"not one of the licenses `{config}` promises"


def verify_hub(
    repo_id: str, revision: str | None = None, *, endpoint: str | None = None, token: str | None = None
) -> VerifyResult:
    """Download `repo_id` at `revision` (a release tag such as `2026.12.01`; default: main) with huggingface_hub's
    `snapshot_download` into a temporary folder, and verify it."""
    from huggingface_hub import snapshot_download

    with tempfile.TemporaryDirectory(prefix="openverse-verify-") as tmp:
        local = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, local_dir=tmp, endpoint=endpoint, token=token
        )
        return verify_folder(Path(local))


def sidecar_digest(files: list[TreeFile]) -> Digest:
    """A `Digest` that takes the sha256 the shard sidecars recorded for a file that is still the same inode,
    size and mtime as the shard it was linked from (a released hard link), and hashes anything else."""
    known: dict[tuple[int, int, int, int], str] = {}
    for f in files:
        try:
            st = os.stat(f.source)
        except OSError:
            continue
        known[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = f.sha256

    def digest(path: Path) -> str:
        st = path.stat()
        return known.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)) or sha256_file(path)

    return digest


def write_release_manifest(
    layout, stats: SubsetStats, card_path: Path, removals: Path, *, release: str, repo_id: str
) -> dict:
    """Build and write the manifest beside the card, over every other file of the release (sidecar sha256s)."""
    files = release_files(layout, stats, card_path, removals)
    manifest = build_manifest(files, stats, release=release, repo_id=repo_id)
    write_manifest(card_path.with_name(MANIFEST), manifest)
    return manifest


def verify_release(layout, stats: SubsetStats, card_path: Path, removals: Path, folder: Path | None) -> VerifyResult:
    """The release check: `folder` (the released repository) or, when the target has none (the Hub), the local
    release tree laid out as links in a scratch folder, verified against the manifest with sidecar sha256s."""
    files = release_files(layout, stats, card_path, removals)
    if folder is not None:
        return verify_folder(folder, sidecar_digest(files))
    scratch = layout.root / ".checks"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="manifest-", dir=scratch) as tmp:
        materialize_tree(files, Path(tmp))
        return verify_folder(Path(tmp), sidecar_digest(files))
