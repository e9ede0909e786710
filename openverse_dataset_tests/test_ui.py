"""The maintainer's view, proven in a real browser: `dagster dev` on the demo catalog, driven by Chromium.

One `openverse-dataset build` fills a fresh instance, then the UI must show both media chains with every stage,
launch a partition run from the Materialize dialog, and show the numbers a maintainer decides with (row counts,
rejects by reason, the rendered card). Screenshots go to `artifacts/ui/`; `UPDATE_SCREENSHOTS=1` also refreshes
`docs/lineage.png` (the README's picture). See `shared/docs/ui-testing.md` for why things are done this way.
"""

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from openverse_dataset_tests.procs import dagster_dev, free_port, gql, wait_loaded

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
# No background traffic: the machine (and CI) may only talk to loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MEDIA = ["image", "audio"]
# Every stage of a chain and what it depends on: a stage or an edge that disappears fails the test.
STAGES = {
    "providers": [],
    "takedowns": [],
    "raw": ["providers"],
    "clean": ["raw", "takedowns"],
    "rejects": ["raw", "takedowns"],
    "subsets": ["clean", "providers"],
    "card": ["subsets"],
    "release": ["card", "clean"],
}
# The metadata a maintainer decides with, per stage (the latest materialization must carry all of it).
KEY_METADATA = {
    "providers": ["dagster/row_count", "rows_by_provider", "catalog_rows", "new_providers", "refused_providers"],
    "takedowns": ["dagster/row_count", "by_reason", "seconds"],
    "raw": [
        "dagster/row_count",
        "dagster/column_schema",
        "bytes",
        "shards",
        "seconds",
        "rows_per_second",
        "snapshot_rows",
        "watermark_updated_on",
    ],
    "clean": [
        "dagster/row_count",
        "dagster/column_schema",
        "dagster/column_lineage",
        "rows_rejected",
        "rejected_by_reason",
        "repairs_by_rule",
        "repairs",
        "bytes",
        "seconds",
        "preview",
    ],
    "rejects": ["dagster/row_count", "dagster/column_schema", "rejected_by_reason"],
    "subsets": ["dagster/row_count", "configs", "rows_by_license", "rows_by_provider", "rows_rejected", "seconds"],
    "card": ["card", "bytes"],
    "release": ["dagster/row_count", "plan", "files", "bytes"],
}
UI_PROVIDER = ("audio", "jamendo")  # the partition the test materializes from the UI (the smallest chain)


@dataclass
class DagsterUI:
    url: str
    home: Path
    data: Path
    browser: Any  # playwright's Browser

    def gql(self, query: str, variables: dict | None = None) -> dict:
        return gql(self.url, query, variables)


def _env(home: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENVERSE_") and k != "DAGSTER_HOME"}
    env.update(
        DAGSTER_HOME=str(home),
        OPENVERSE_DATA_DIR=str(data),
        OPENVERSE_RELEASE_DATE="2026-11-27",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(data.parent / "hf-home"),
    )
    return env


def _build(env: dict[str, str]) -> None:
    """`openverse-dataset build` into the test's instance (in this process: no second interpreter start-up)."""
    from openverse_dataset.cli import main

    with mock.patch.dict(os.environ, env, clear=True):
        assert main(["build"]) == 0, "openverse-dataset build failed (its summary is in the captured output)"


def _stop_sensors(server: DagsterUI) -> list[str]:
    """Stop the sensors (automation would otherwise publish again after the UI's run and compete for the CPU)."""
    repos = server.gql(
        "{ repositoriesOrError { ... on RepositoryConnection {"
        " nodes { sensors { name sensorState { id status } } } } } }"
    )["repositoriesOrError"]["nodes"]
    stopped = []
    for sensor in (s for r in repos for s in r["sensors"]):
        if sensor["sensorState"]["status"] == "RUNNING":
            server.gql(
                "mutation($id: String!) { stopSensor(id: $id) { __typename } }", {"id": sensor["sensorState"]["id"]}
            )
            stopped.append(sensor["name"])
    return stopped


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    """The demo built into a fresh instance, served by `dagster dev` on a free loopback port, with Chromium
    started while the server loads; everything it started is stopped afterwards, pass or fail."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("dagster-ui")
    home, data = root / "home", root / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = _env(home, data)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    _build(env)
    print(f"build: {time.monotonic() - start:.1f}s")

    port = free_port()
    log_path = ARTIFACTS / "dagster-dev.log"
    with ExitStack() as stack:
        proc = dagster_dev(stack, env, log_path, port)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        server = DagsterUI(f"http://127.0.0.1:{port}", home, data, browser)
        wait_loaded(server.url, proc, log_path)
        print(f"dagster dev loaded: {time.monotonic() - start:.1f}s; stopped sensors: {_stop_sensors(server)}")
        server.gql("mutation { setNuxSeen }")  # the "Join the community" modal would block every click
        yield server


@pytest.fixture
def page(ui: DagsterUI):
    context = ui.browser.new_context(viewport={"width": 1600, "height": 1100}, base_url=ui.url)
    # Open both groups on the global lineage page (what "Expand all groups" / Alt+E stores).
    groups = ",".join(f"global@global:{m}" for m in sorted(MEDIA))
    context.add_init_script(
        "localStorage.setItem('asset-graph-open-graph-nodes-global-__GLOBAL__', "
        f"JSON.stringify({{expanded: '{groups}'}}));"
    )
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        context.close()


def latest_metadata(ui: DagsterUI, media: str, stage: str) -> tuple[dict, dict]:
    """(metadata label -> entry, materialization) of the asset's latest materialization, via GraphQL."""
    data = ui.gql(
        """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
            assetMaterializations(limit: 1) { partition runId metadataEntries { label __typename
              ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr } } } } } }""",
        {"path": [media, stage]},
    )
    mats = data["assetOrError"]["assetMaterializations"]
    assert mats, f"{media}/{stage} was never materialized"
    return {e["label"]: e for e in mats[0]["metadataEntries"]}, mats[0]


def test_graph_and_metadata_are_complete(ui: DagsterUI) -> None:
    """Every stage of both chains is in the UI's graph with its edges, group, kinds, owners, description, and
    its latest materialization carries the metadata a maintainer decides with."""
    nodes = ui.gql(
        "{ assetNodes { assetKey { path } dependencyKeys { path } groupName kinds description owners {"
        " ... on TeamAssetOwner { team } ... on UserAssetOwner { email } } } }"
    )["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    for media in MEDIA:
        for stage, deps in STAGES.items():
            node = by_key.get(f"{media}/{stage}")
            assert node, f"{media}/{stage} is missing from the graph"
            assert {f"{media}/{d}" for d in deps} <= {"/".join(d["path"]) for d in node["dependencyKeys"]}
            assert node["groupName"] == media and node["kinds"] and node["owners"], node
            assert len(node["description"] or "") > 60, f"{media}/{stage} needs a description a newcomer understands"
            md, _ = latest_metadata(ui, media, stage)
            missing = [k for k in KEY_METADATA[stage] if k not in md]
            assert not missing, f"{media}/{stage} materialization lacks {missing}"
    repos = ui.gql("{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }")
    jobs = {j["name"] for r in repos["repositoriesOrError"]["nodes"] for j in r["jobs"]}
    for media in MEDIA:  # the maintainers' common actions, by name
        wanted = {f"{media}_refresh_provider", f"{media}_publish_release", f"{media}_refresh_provider_and_publish"}
        assert wanted <= jobs, wanted - jobs
    assert "discover_providers" in jobs
    providers, _ = latest_metadata(ui, "image", "providers")
    assert "flickr" in providers["rows_by_provider"]["mdStr"] and providers["catalog_rows"]["intValue"] > 0
    subsets, _ = latest_metadata(ui, "image", "subsets")
    assert "| commercial |" in subsets["configs"]["mdStr"] and "wikimedia" in subsets["rows_by_provider"]["mdStr"]


def _graph_clip(page) -> dict:
    """The part of the page the two chains occupy (the README's picture, without empty canvas)."""
    boxes = [b for b in (n.bounding_box() for n in page.locator("svg foreignObject").all()) if b]
    boxes = [b for b in boxes if b["width"] < 1400]  # not the canvas-sized wrappers
    x0, y0 = min(b["x"] for b in boxes) - 24, min(b["y"] for b in boxes) - 24
    x1, y1 = max(b["x"] + b["width"] for b in boxes) + 24, max(b["y"] + b["height"] for b in boxes) + 24
    return {"x": max(x0, 0), "y": max(y0, 0), "width": x1 - max(x0, 0), "height": y1 - max(y0, 0)}


def test_lineage_page_shows_both_media_chains(ui: DagsterUI, page) -> None:
    page.set_viewport_size({"width": 1600, "height": 1800})  # tall enough that both chains fit
    page.goto("/asset-groups")
    nodes = page.locator("svg foreignObject")
    nodes.filter(has_text="release").first.wait_for()
    page.wait_for_timeout(1500)  # let the layout settle before the screenshot
    page.screenshot(path=ARTIFACTS / "lineage.png", clip=_graph_clip(page))
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(ARTIFACTS / "lineage.png", REPO / "docs" / "lineage.png")
    texts = [t.strip() for t in nodes.all_text_contents()]
    for media in MEDIA:
        assert media in texts, f"group {media} is not on the lineage page"
    for stage in STAGES:
        assert texts.count(stage) == len(MEDIA), f"stage {stage!r} appears {texts.count(stage)}x, not once per media"


def test_materialize_one_provider_partition_from_the_ui(ui: DagsterUI, page) -> None:
    media, provider = UI_PROVIDER
    page.goto(f"/assets/{media}/clean")
    page.get_by_role("button", name="Materialize…").click()
    # clean and rejects are one multi-asset: the UI asks to confirm materializing rejects too.
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Launch runs to materialize").wait_for()
    page.get_by_text("Select a partition or create one").click()
    page.locator("[data-radix-popper-content-wrapper]").get_by_role("menuitem").filter(has_text=provider).click()
    page.keyboard.press("Escape")
    page.get_by_text("1 partition").first.wait_for()
    page.screenshot(path=ARTIFACTS / "materialize-dialog.png")
    page.get_by_role("button", name="Launch 1 run").click()
    page.get_by_text("Launched run").wait_for()
    href = page.locator("a[href^='/runs/']").filter(has_text="View").first.get_attribute("href")
    run_id = href.split("/runs/", 1)[1].split("?", 1)[0]

    deadline = time.monotonic() + 90
    while True:
        run = ui.gql(
            """query($id: ID!) { runOrError(runId: $id) { ... on Run { status tags { key value }
                assetMaterializations { assetKey { path } partition } } } }""",
            {"id": run_id},
        )["runOrError"]
        if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert run["status"] == "SUCCESS", run
    assert {"key": "dagster/partition", "value": provider} in run["tags"]
    done = {("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]}
    assert {(f"{media}/clean", provider), (f"{media}/rejects", provider)} <= done
    page.goto(f"/runs/{run_id}")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=ARTIFACTS / "run.png")


def test_clean_page_shows_row_count_and_rejects_by_reason(ui: DagsterUI, page) -> None:
    media, provider = UI_PROVIDER
    md, mat = latest_metadata(ui, media, "clean")
    rows = md["dagster/row_count"]["intValue"]
    assert rows > 0 and mat["partition"] == provider
    page.goto(f"/assets/{media}/clean")
    page.get_by_text("Row count", exact=True).first.wait_for()
    assert re.search(rf"Row count\s+{rows:,}\b", page.inner_text("body")), f"overview does not show {rows:,} rows"
    page.screenshot(path=ARTIFACTS / "clean-overview.png")

    page.goto(f"/assets/{media}/clean?view=events")
    row = page.locator("tr").filter(has=page.locator("td", has_text="rejected_by_reason")).first
    table = row.locator("table")
    table.wait_for()
    header = [t.strip() for t in table.locator("th").all_text_contents()]
    assert header[:2] == ["reason", "rows"], header
    cells = [[c.strip() for c in r.locator("td").all_text_contents()] for r in table.locator("tbody tr").all()]
    assert cells and all(c[0] and c[1].replace(",", "").isdigit() for c in cells), cells
    rejected = md["rows_rejected"]["intValue"]
    assert sum(int(c[1].replace(",", "")) for c in cells) == rejected
    if "taken_down" in table.inner_text():  # the meaning column survives the UI's HTML rendering
        assert "api_deleted<media>" in table.inner_text()
    page.locator("td", has_text="repairs_by_rule").first.wait_for()
    page.screenshot(path=ARTIFACTS / "clean-events.png", full_page=True)


def test_card_page_shows_the_rendered_card(ui: DagsterUI, page) -> None:
    page.goto("/assets/image/card?view=events")
    row = page.locator("tr").filter(has=page.locator("td", has_text="card")).first
    row.wait_for()
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    # Rendered, not raw: real headings and tables from the card body, the front matter as a YAML block.
    dialog.get_by_role("heading", name="Openverse images").wait_for()
    for heading in ["Configs (license subsets)", "Rows per provider", "What each license allows"]:
        assert dialog.get_by_role("heading", name=heading).count() == 1, heading
    assert dialog.locator("table").count() >= 3
    assert "configs:" in dialog.locator("pre").first.inner_text()
    dialog.get_by_role("heading", name="Rows per provider").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "card.png")


def test_provider_contributions_are_visible(ui: DagsterUI, page) -> None:
    """The providers page answers "how many rows did each provider contribute" without opening partitions."""
    page.goto("/assets/image/providers?view=events")
    row = page.locator("tr").filter(has=page.locator("td", has_text="rows_by_provider")).first
    table = row.locator("table")
    table.wait_for()
    header = [t.strip() for t in table.locator("th").all_text_contents()]
    assert header == [
        "provider",
        "rows in catalog",
        "last extracted",
        "last published",
        "last rejected",
        "changed since extract",
    ]
    flickr = [
        c.strip() for c in table.locator("tbody tr").filter(has_text="flickr").first.locator("td").all_text_contents()
    ]
    assert flickr[0] == "flickr" and int(flickr[1].replace(",", "")) > 0, flickr
    page.screenshot(path=ARTIFACTS / "providers.png", full_page=True)
