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
    assert row.count(" | ") == 2  # provider | rows | share: the provider's `|` did not add a column


# -- the card, CITATION.cff and croissant.json as a consumer meets them -------------------------------------------

# The Hub dataset card template's sections that apply to this dataset (level-2 and level-3 headings).
CARD_SECTIONS = [
    "## Dataset Details",
    "### Dataset Description",
    "### Dataset Sources",
    "## Load it",
    "### Pin a release",
    "## Uses",
    "### Direct Use",
    "### Out-of-Scope Use",
    "## Dataset Structure",
    "### Data Instances",
    "## Rows per provider",
    "## Dataset Creation",
    "### Curation Rationale",
    "### Source Data",
    "#### Data Collection and Processing",
    "#### Who are the source data producers?",
    "### Annotations",
    "## Personal and Sensitive Information",
    "## Bias, Risks, and Limitations",
    "### Recommendations",
    "## Fetching the media politely",
    "## Citation",
    "## Dataset Card Contact",
]


def _data_glob(release: Path) -> str:
    return str(release / "data" / "*" / "*" / "*.parquet")


def _render_html(card: str) -> str:
    from markdown_it import MarkdownIt

    # as the Hub renders a card: HTML on, tables on
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(card.split("---", 2)[2])


def _code_block(card: str, lang: str) -> str:
    return card.split(f"```{lang}\n", 1)[1].split("\n```", 1)[0]


def test_card_has_every_section_with_measured_facts(release: Path):
    import duckdb
    from datasets.utils.metadata import known_task_ids
    from huggingface_hub import DatasetCard

    text = (release / "README.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert [h for h in CARD_SECTIONS if h not in headings] == []
    card = DatasetCard(text)  # huggingface_hub's own parsing of the YAML
    data = card.data.to_dict()
    # titles are multilingual: English and Dutch (rijksmuseum) at least, never the old hard-coded [en] alone
    assert {"en", "nl"} <= set(data["language"]) and len(data["language"]) > 1
    assert all(len(code) == 2 and code.islower() for code in data["language"])
    assert data["multilinguality"] == ["multilingual"]
    # no labels: no classification task; every id on the Hub's list (datasets' copy predates text-to-audio)
    assert not any("classification" in t for t in data["task_categories"])
    assert set(data["task_categories"]) <= set(known_task_ids) | {"text-to-audio"}
    assert data["size_categories"] == ["1K<n<10K"]
    # shares measured on the data: the demo's 1,373 rows are all in the sample; recompute them independently
    con = duckdb.connect()
    rows, creators, geo = con.execute(
        "select count(*), count(*) filter (where trim(coalesce(creator, '')) <> ''), "
        "count(*) filter (where list_has_any(json_keys(meta_data::json), ['latitude', 'longitude'])) "
        "from read_parquet(?)",
        [_data_glob(release)],
    ).fetchone()
    assert rows == 1373 and 0 < geo < creators < rows
    assert f"sample of {rows:,} of the {rows:,} rows" in text
    assert f"**{100 * creators / rows:.1f}%** of rows name a creator" in text
    assert f"**{100 * geo / rows:.1f}%** of rows carry a location" in text
    flickr = con.execute(
        "select count(*) from read_parquet(?) where provider = 'flickr'", [_data_glob(release)]
    ).fetchone()[0]
    assert f"flickr alone holds {flickr:,} of {rows:,} rows" in text
    assert "not measured here" in text  # link rot: said, not invented
    # pinning, polite fetching, citation
    assert 'revision="2026.11.27"' in text
    assert "img2dataset --url_list" in text and "--user_agent_token" in text and "--thread_count 4" in text
    bib = _code_block(text, "bibtex")
    assert bib.startswith("@misc{openverse_image_2026_11_27,") and bib.count("{") == bib.count("}")
    assert "year         = {2026}" in bib
    # the example row is a real row of the release, and its JSON parses back to it
    import json

    example = json.loads(_code_block(text, "json"))
    got = con.execute(
        "select title, creator, license from read_parquet(?) where identifier = ?",
        [_data_glob(release), example["identifier"]],
    ).fetchone()
    assert got == (example["title"], example["creator"], example["license"])


def test_citation_cff_is_valid(release: Path):
    import yaml

    cff = yaml.safe_load((release / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "dataset"
    assert cff["title"].startswith("Openverse images") and cff["authors"] == [{"name": "Openverse contributors"}]
    assert str(cff["version"]) == "2026.11.27" and str(cff["date-released"]) == "2026-11-27"
    assert cff["url"].endswith("/openverse-images") and cff["message"]


def test_croissant_validates_and_loads_records(release: Path):
    import json

    import duckdb
    import mlcroissant as mlc
    import yaml

    path = release / "croissant.json"
    ds = mlc.Dataset(jsonld=str(path))  # raises ValidationError on any error
    issues = ds.metadata.ctx.issues
    assert not issues.errors and not issues.warnings, issues.report()
    doc = json.loads(path.read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    for key in (
        "rai:dataCollection",
        "rai:dataCollectionType",
        "rai:personalSensitiveInformation",
        "rai:dataBiases",
        "rai:dataLimitations",
        "rai:dataUseCases",
        "rai:dataReleaseMaintenancePlan",
    ):
        assert doc[key], key
    assert "Report" in doc["rai:personalSensitiveInformation"] and "opt-out" in doc["rai:personalSensitiveInformation"]
    # one RecordSet per config, its fields the Parquet schema's columns; license per row as fields
    fm = yaml.safe_load((release / "README.md").read_text().split("---", 2)[1])
    assert [r["name"] for r in doc["recordSet"]] == [c["config_name"] for c in fm["configs"]]
    columns = pq.read_schema(_shard(release, "cc0")).names
    for rs in doc["recordSet"]:
        assert [f["name"] for f in rs["field"]] == columns
    assert {"license", "license_version", "license_url", "attribution"} <= set(columns)
    # records load through mlcroissant from the released files, and are the cc0 rows
    records = []
    for rec in ds.records("cc0"):
        records.append(rec)
        if len(records) == 3:
            break
    assert len(records) == 3 and {r["cc0/license"] for r in records} == {b"cc0"}
    ids = [r["cc0/identifier"].decode() for r in records]
    found = (
        duckdb.connect()
        .execute(
            "select count(*) from read_parquet(?) where list_contains(?, identifier)",
            [str(release / "data" / "cc0" / "*" / "*.parquet"), ids],
        )
        .fetchone()[0]
    )
    assert found == 3


def test_card_croissant_and_citation_are_reproducible_from_the_release(release: Path):
    """The facts come from the release's own files, deterministically: measuring again gives the same bytes."""
    from datetime import date

    from openverse_dataset.media import IMAGE
    from openverse_dataset.release.card import citation_cff
    from openverse_dataset.release.croissant import build_croissant, croissant_json
    from openverse_dataset.release.facts import DataFile, measure, schema_of
    from openverse_dataset.release.subsets import SubsetStats

    stats = SubsetStats.from_json((release.parent.parent / "subsets" / "image.json").read_text())
    files = [DataFile(p.relative_to(release).as_posix(), str(p)) for p in sorted(release.glob("data/*/*/*.parquet"))]
    facts = measure(list(reversed(files)), stats.rows)  # file order given does not matter
    assert facts == measure(files, stats.rows)
    day = date(2026, 11, 27)
    doc = build_croissant(IMAGE, stats, schema_of(files), facts, repo_id="openverse/openverse-images", release_date=day)
    assert croissant_json(doc) == (release / "croissant.json").read_text()
    cff = citation_cff(IMAGE, stats, repo_id="openverse/openverse-images", release_date=day)
    assert cff == (release / "CITATION.cff").read_text()
    m = __import__("json").loads((release / MANIFEST).read_text())
    assert {"CITATION.cff", "croissant.json", "README.md"} <= {e["path"] for e in m["files"]}


def test_card_example_row_and_tables_inert_with_hostile_catalog_values(release: Path, tmp_path: Path):
    """Hostile values planted in a release's rows (title, creator, provider, meta_data) reach the card only as
    text: no tag in the rendered HTML, no extra table column, no broken code fence; the example row's JSON still
    parses back to the planted values."""
    import json
    from datetime import date

    from openverse_dataset.media import IMAGE
    from openverse_dataset.release.card import render_card
    from openverse_dataset.release.facts import DataFile, measure
    from openverse_dataset.release.subsets import ConfigStats, SubsetStats

    evil = "a|b<img src=x onerror=alert(1)>"
    fence = "```\n<script>alert(2)</script>\n```"
    t = pq.read_table(_shard(release, "by"))
    n = t.num_rows
    for col, value in (
        ("title", f"{evil} Het {fence} portret"),
        ("creator", f"<b>{evil}</b> & co"),
        ("provider", evil),
        ("meta_data", json.dumps({"description": f"<iframe src=//x>{evil}</iframe>", "latitude": 1.5})),
    ):
        i = t.schema.get_field_index(col)
        t = t.set_column(i, t.schema.field(i), pa.array([value] * n, t.schema.field(i).type))
    shard = tmp_path / "data" / "by" / "evil" / "part-00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(t, shard)
    facts = measure([DataFile("data/by/evil/part-00000.parquet", str(shard))], n)
    assert facts.with_geolocation == n and facts.example["provider"] == evil
    stats = SubsetStats(
        media="image",
        providers=[evil],
        missing_providers=[],
        rows=n,
        by_license_provider=[{"license": "by", "provider": evil, "rows": n, "files": 1}],
        by_license_version=[{"license": "by", "license_version": "4.0", "license_jurisdiction": None, "rows": n}],
        configs=[ConfigStats("all", "every work", ["by"], ["data/*/*/*.parquet"], n, True)],
    )
    card = render_card(IMAGE, stats, repo_id="o/r", release_date=date(2026, 12, 1), facts=facts)
    html = _render_html(card)
    for tag in ("<img", "<script", "<iframe", "<b>"):
        assert tag not in html, tag
    assert "&lt;img src=x" in html
    assert json.loads(_code_block(card, "json"))["title"] == f"{evil} Het {fence} portret"
    row = next(line for line in card.splitlines() if line.startswith("| a") and "img src" in line)
    assert row.count(" | ") == 2  # provider | rows | share: the provider's `|` did not add a column
    assert f"{esc_text(evil)} alone holds" in card


def esc_text(value: str) -> str:
    from openverse_dataset.release.card import esc

    return esc(value)


@pytest.mark.parametrize("n", [0, 1, 7, 64, 65, 300])
def test_facts_head_reads_the_same_rows_as_a_sliced_row_group(tmp_path: Path, n: int):
    """The sample reads the first n rows of a group page by page: exactly the rows a whole-group read sliced."""
    from openverse_dataset.release.facts import _head

    rows = 200
    table = pa.table(
        {
            "identifier": [f"{i:04d}" for i in range(rows)],
            "title": [None if i % 13 == 0 else "t" * (i % 50) for i in range(rows)],
            "tags": [[{"name": f"x{i}"}] if i % 3 else None for i in range(rows)],
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=64, data_page_size=512)  # several pages per group
    pf = pq.ParquetFile(path)
    for group in range(pf.num_row_groups):
        assert _head(pf, group, n).equals(pf.read_row_group(group).slice(0, n))
        cols = ["title", "identifier"]
        assert _head(pf, group, n, cols).equals(pf.read_row_group(group, columns=cols).slice(0, n))
