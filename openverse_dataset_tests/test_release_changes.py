"""The local target's second release: same layout plus removals file, changelog, dry-run plan; still loads."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import sqlalchemy as sa
import yaml

from openverse_dataset.cli import main
from openverse_dataset_tests.test_publish_hub import split_audio_providers


def test_local_second_release_has_removals_changelog_and_loads(env: Path, capsys):
    from datasets import load_dataset

    from openverse_dataset.defs.resources import build_resources

    url = build_resources()["catalog"].catalog_url()
    split_audio_providers(url)
    assert main(["build", "--media", "audio"]) == 0
    repo = env / "hub" / "openverse-audio"
    assert pl.read_parquet(repo / "removals.parquet").height == 0
    with sa.create_engine(url).begin() as conn:
        gone = conn.execute(sa.text("select identifier from audio where provider = 'ccmixter' limit 1")).scalar()
        conn.execute(sa.text("update audio set removed_from_source = true where identifier = :i"), {"i": gone})
    capsys.readouterr()
    assert main(["build", "--media", "audio", "--provider", "ccmixter", "--dry-run"]) == 0
    assert "would change (dry run)" in capsys.readouterr().out
    assert pl.read_parquet(repo / "removals.parquet").height == 0  # the dry run left the release alone
    plan = json.loads((env / "releases" / "audio" / "plan.json").read_text())["plan"]
    assert {p.split("/")[2] for p in plan["replace"] if p.startswith("data/")} == {"ccmixter"}
    assert main(["publish", "--media", "audio"]) == 0
    removals = pl.read_parquet(repo / "removals.parquet")
    assert removals.select("identifier", "reason", "detail").rows() == [
        (gone, "removed_from_source", "removed_from_source")
    ]
    card = (repo / "README.md").read_text()
    assert "| ccmixter | 0 | 1 | 0 |" in card and "removed_from_source | 1 |" in card
    front = yaml.safe_load(card.split("---", 2)[1])
    for cfg in front["configs"][:2]:
        ds = load_dataset(str(repo), cfg["config_name"], split="train")
        assert gone not in ds["identifier"] and ds.num_rows > 0
