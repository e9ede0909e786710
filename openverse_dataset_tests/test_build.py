"""End to end: `openverse-dataset build` on SQLite and PostgreSQL catalogs, then `load_dataset` per config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
import yaml

from openverse_dataset.cli import main
from openverse_dataset.layout import segment
from openverse_dataset.release.subsets import SubsetStats

REPOS = ("openverse-images", "openverse-audio")


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def front_matter(repo: Path) -> dict:
    return yaml.safe_load((repo / "README.md").read_text().split("---", 2)[1])


def test_demo_build_loads_with_datasets_and_counts_match_card(env: Path, capsys):
    from datasets import load_dataset

    assert main(["build"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "openverse-images" in out
    for repo_name, media in zip(REPOS, ("image", "audio"), strict=True):
        repo = env / "hub" / repo_name
        card = (repo / "README.md").read_text()
        stats = SubsetStats.from_json((env / "subsets" / f"{media}.json").read_text())
        fm = front_matter(repo)
        assert [c["config_name"] for c in fm["configs"] if c.get("default")] == ["all"]
        for cfg in fm["configs"]:
            ds = load_dataset(str(repo), cfg["config_name"], split="train")
            want = stats.config(cfg["config_name"]).rows
            assert ds.num_rows == want, cfg["config_name"]
            assert f"| {want:,} |" in card
            slugs = set(ds.unique("license"))
            assert slugs == set(stats.config(cfg["config_name"]).slugs)
        assert fm["pretty_name"] and fm["task_categories"] and fm["size_categories"] and fm["license"]
    # the demo takedowns never reach the release
    images = pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")
    for gone in ("b6acf35f-86cd-4184-88b1-67803413e115", "1560b5a3-dbf3-4663-a2bd-886f6b2b5787"):
        assert gone not in images["identifier"].to_list()
    assert images["identifier"].n_unique() == images.height
    assert images.height == 1373 and images["attribution"].null_count() == 0
    rejects = pl.read_parquet(env / "rejects" / "image" / "*" / "*.parquet")
    assert images.height + rejects.height == 1899  # every sample row is either published or rejected


def test_building_twice_gives_byte_identical_parquet(env: Path):
    assert main(["build", "--media", "audio"]) == 0
    first = tree_digest(env)
    assert main(["build", "--media", "audio"]) == 0
    assert tree_digest(env) == first and len(first) > 5


@pytest.mark.postgres
def test_postgres_build_matches_sqlite_build(env: Path, upstream_catalog, monkeypatch, tmp_path):
    """The demo rows in Openverse's real catalog and API databases build the same release as the SQLite demo."""
    assert main(["build"]) == 0
    sqlite_data = env
    upstream_catalog.seed_demo()
    assert upstream_catalog.scalar("select count(*) from image") == 1899
    pg_data = tmp_path / "pg-data"
    monkeypatch.setenv("OPENVERSE_DATA_DIR", str(pg_data))
    upstream_catalog.configure(monkeypatch)
    assert main(["build"]) == 0
    for repo in REPOS:
        a, b = sqlite_data / "hub" / repo, pg_data / "hub" / repo
        assert sorted(tree_digest(a)) == sorted(tree_digest(b))  # same files in the same places
        for rel in tree_digest(a):
            ta, tb = pl.read_parquet(a / rel), pl.read_parquet(b / rel)
            json_cols = [c for c in ("meta_data", "audio_set", "alt_files") if c in ta.columns]
            assert ta.drop(json_cols).equals(tb.drop(json_cols)), rel
            for c in json_cols:  # jsonb normalises key order and spacing: compare the parsed values
                pa_, pb_ = ta[c].to_list(), tb[c].to_list()
                assert [json.loads(x) if x else x for x in pa_] == [json.loads(x) if x else x for x in pb_]
    meta = json.loads((pg_data / "providers" / "image.json").read_text())
    assert len(meta["providers"]) == 12


def test_hostile_provider_names_stay_inside_the_data_dir(env: Path, tmp_path: Path):
    from openverse_dataset.defs.resources import build_resources

    url = build_resources()["catalog"].catalog_url()  # seeds the demo catalog under the data dir
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("update image set provider = '../../escape' where provider = 'europeana'"))
        conn.execute(sa.text("update image set provider = 'a/b' where provider = 'phylopic'"))
        conn.execute(sa.text("update image set provider = 'bad' || char(10) || 'name' where provider = 'mccordmuseum'"))
    before = {p for p in tmp_path.rglob("*")}
    code = main(["build", "--media", "image"])
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(env in p.parents or p == env for p in created)
    assert code == 0
    repo = env / "hub" / "openverse-images"
    names = {p.parent.name for p in (repo / "data").rglob("*.parquet")}
    assert {segment("../../escape"), "a%2Fb"} <= names
    assert all("/" not in n and not n.startswith(".") for n in names)
    providers = json.loads((env / "providers" / "image.json").read_text())
    assert "bad\nname" in providers["refused"]  # reported, not silently skipped
    df = pl.read_parquet(repo / "data" / "*" / "*" / "*.parquet")
    assert {"../../escape", "a/b"} <= set(df["provider"])


def test_unknown_provider_fails_with_a_clear_message(env: Path, capsys):
    assert main(["build", "--media", "audio", "--provider", "nope"]) == 1
    assert "unknown provider(s) 'nope'" in capsys.readouterr().err  # one line on stderr, before any job
