"""The dataset as its consumers meet it: manifest + `verify` (local folder and Hub snapshot), card, Croissant.

One demo image release is built per module (the build takes most of a minute); each test works on a copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openverse_dataset.cli import main
from openverse_dataset.release.manifest import MANIFEST, verify_folder

REPO = "openverse-images"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh demo image release (local target); yields the released repository folder (do not modify it)."""
    tmp = tmp_path_factory.mktemp("consumers")
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("OPENVERSE_") or k == "DAGSTER_HOME":
                mp.delenv(k, raising=False)
        mp.setenv("OPENVERSE_DATA_DIR", str(tmp / "data"))
        mp.setenv("OPENVERSE_RELEASE_DATE", "2026-11-27")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp / "hf-home"))
        # 0 = every check passed, release_matches_manifest (the same code as `verify`) included
        assert main(["build", "--media", "image"]) == 0
        yield tmp / "data" / "hub" / REPO


@pytest.fixture
def copy(release: Path, tmp_path: Path) -> Path:
    """A byte copy of the release (no hard links: tampering must not reach the module's release)."""
    dest = tmp_path / REPO
    shutil.copytree(release, dest, copy_function=shutil.copyfile)
    return dest


def _verify(folder: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["verify", str(folder), *extra])
    return rc, [line for line in capsys.readouterr().out.splitlines() if line]


def _shard(folder: Path, license_folder: str) -> Path:
    return sorted((folder / "data" / license_folder).glob("*/*.parquet"))[0]


def test_manifest_lists_every_file_with_rows_per_config_and_license(release: Path):
    import json

    m = json.loads((release / MANIFEST).read_text())
    on_disk = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert sorted(e["path"] for e in m["files"]) == [p for p in on_disk if p != MANIFEST]
    data = [e for e in m["files"] if e["path"].startswith("data/")]
    assert data and all(len(e["sha256"]) == 64 and e["size"] > 0 and e["rows"] > 0 for e in data)
    assert sum(e["rows"] for e in data) == m["rows"] == m["configs"]["all"]["rows"] == 1373
    assert sum(m["licenses"].values()) == sum(m["providers"].values()) == 1373
    assert m["release"] == "2026.11.27" and m["media"] == "image"
    assert m["configs"]["commercial"]["rows"] < m["rows"]


def test_verify_passes_on_fresh_release(copy: Path, capsys):
    rc, lines = _verify(copy, capsys)
    assert rc == 0 and lines == []


def test_verify_fails_on_flipped_byte(copy: Path, capsys):
    shard = _shard(copy, "by")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    rc, lines = _verify(copy, capsys)
    rel = shard.relative_to(copy).as_posix()
    assert rc == 1 and any(line.startswith(f"{rel}: sha256") for line in lines), lines


def test_verify_fails_on_missing_file(copy: Path, capsys):
    shard = _shard(copy, "cc0")
    shard.unlink()
    rc, lines = _verify(copy, capsys)
    rel = shard.relative_to(copy).as_posix()
    assert rc == 1 and f"{rel}: missing" in lines, lines


def test_verify_fails_on_nc_row_planted_in_commercial(copy: Path, capsys):
    import json

    shard = _shard(copy, "by")  # `by` is in `commercial`
    t = pq.read_table(shard)
    planted = t.slice(0, 1).set_column(t.schema.get_field_index("license"), "license", pa.array(["by-nc"]))
    pq.write_table(pa.concat_tables([t, planted.cast(t.schema)]), shard)
    # a tamperer who also fixes the manifest's size/sha256/rows is still caught by the config's promise
    m = json.loads((copy / MANIFEST).read_text())
    rel = shard.relative_to(copy).as_posix()
    from openverse_dataset.parquet import sha256_file

    for e in m["files"]:
        if e["path"] == rel:
            e.update(size=shard.stat().st_size, sha256=sha256_file(shard), rows=e["rows"] + 1)
    (copy / MANIFEST).write_text(json.dumps(m))
    rc, lines = _verify(copy, capsys)
    assert rc == 1
    assert any(
        line.startswith("config commercial: 1 row(s) with license 'by-nc' (does not allow commercial use)")
        for line in lines
    ), lines
    assert not any("sha256" in line for line in lines)


def test_verify_unlisted_data_file_and_no_manifest(copy: Path, capsys):
    extra = copy / "data" / "by" / "x" / "part-99999.parquet"
    extra.parent.mkdir()
    shutil.copyfile(_shard(copy, "by"), extra)
    problems = verify_folder(copy).problems
    assert "data/by/x/part-99999.parquet: not listed in manifest.json" in problems
    (copy / MANIFEST).unlink()
    rc, lines = _verify(copy, capsys)
    assert rc == 1 and lines == [f"{MANIFEST}: missing in {copy}"]


def test_verify_hub_snapshot_at_a_tag(copy: Path, capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import _http

    from openverse_dataset_tests.fakehub import ENDPOINT, FakeHub

    fake = FakeHub(token="hf_fake_token_consumers")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("HF_TOKEN", fake.token)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "ENDPOINT", ENDPOINT)  # both are read from HF_ENDPOINT at import
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")
    _http.set_client_factory(fake.client)
    try:
        api = HfApi(endpoint=ENDPOINT, token=fake.token)
        repo_id = f"testorg/{REPO}"
        api.create_repo(repo_id, repo_type="dataset")
        api.upload_folder(folder_path=str(copy), repo_id=repo_id, repo_type="dataset")
        api.create_tag(repo_id, tag="2026.11.27", repo_type="dataset")
        rc, lines = _verify(Path(repo_id), capsys, "--revision", "2026.11.27")
        assert rc == 0 and lines == [], lines
        # main moves on with a corrupted shard: main fails, the pinned tag still verifies
        shard = _shard(copy, "by").relative_to(copy).as_posix()
        fake.external_commit(repo_id, shard, b"not parquet")
        rc, lines = _verify(Path(repo_id), capsys)
        assert rc == 1 and any(line.startswith(f"{shard}: size") for line in lines), lines
        assert _verify(Path(repo_id), capsys, "--revision", "2026.11.27")[0] == 0
        assert {r["url"].split("/")[2] for r in fake.requests} == {"hub.test"}
    finally:
        _http.set_client_factory(_http.default_client_factory)


def test_card_escapes_catalog_values():
    from datetime import date

    from markdown_it import MarkdownIt

    from openverse_dataset.media import MEDIA_TYPES
    from openverse_dataset.release.card import render_card
    from openverse_dataset.release.subsets import ConfigStats, SubsetStats

    evil = "a|b<img src=x onerror=alert(1)>"
    stats = SubsetStats(
        media="image",
        providers=[evil],
        missing_providers=[],
        rows=3,
        by_license_provider=[{"license": "by", "provider": evil, "rows": 3, "files": 1}],
        by_license_version=[{"license": "by", "license_version": "4.0", "license_jurisdiction": None, "rows": 3}],
        configs=[ConfigStats("all", "every work", ["by"], ["data/*/*/*.parquet"], 3, True)],
    )
    card = render_card(MEDIA_TYPES["image"], stats, repo_id="o/r", release_date=date(2026, 12, 1))
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(card.split("---", 2)[2])
    assert "<img" not in html and "&lt;img src=x" in html
    row = next(line for line in card.splitlines() if "img src" in line)
    assert row.count(" | ") == 1  # the provider's `|` did not add a column
