"""Publishing to the Hub with the real `huggingface_hub` client against the in-process fake Hub (fakehub.py).

Nothing leaves the process: the client's HTTP layer is an `httpx2.MockTransport`, hf_xet is off, and the fake
refuses any host but `hub.test`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from huggingface_hub import DatasetCard, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import _http

from openverse_dataset.cli import main
from openverse_dataset.parquet import sha256_file
from openverse_dataset.publish.hub import ConcurrentChangeError, HubConfigError, HubPublisher, make_api, publish_hub
from openverse_dataset.release.tree import TreeFile
from openverse_dataset_tests.fakehub import ENDPOINT, Crash, FakeHub, validate_card

TOKEN = "hf_fake_secret_token_0123456789"
REPO = "testorg/openverse-audio"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    fake = FakeHub(token=TOKEN, orgs={"testorg": "write"})  # whoami: the token may write to testorg
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", ENDPOINT)
    caplog.set_level(logging.DEBUG)
    _http.set_client_factory(fake.client)
    yield fake
    _http.set_client_factory(_http.default_client_factory)
    # no request carried another token, every API write carried ours, and no log line holds it
    auths = {r["authorization"] for r in fake.requests}
    assert auths <= {None, f"Bearer {TOKEN}"}, auths
    writes = [r for r in fake.requests if r["method"] == "POST" and "/api/" in r["url"]]
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in writes)
    assert all(TOKEN not in rec.getMessage() for rec in caplog.records)


def tree(tmp: Path, contents: dict[str, bytes]) -> list[TreeFile]:
    out = []
    for path, data in sorted(contents.items()):
        src = tmp / "src" / path.replace("/", "__")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        out.append(TreeFile(path, str(src), len(data), sha256_file(src)))
    return out


CARD = (
    b"---\nlicense: cc-by-4.0\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n"
    b"    path: data/*/*/*.parquet\n  default: true\n---\n# t\n"
)


def release(tmp: Path, version: int, changed: set[str] = frozenset()) -> list[TreeFile]:
    files = {
        f"data/by/p{i}/part-00000.parquet": f"p{i} v{version if f'p{i}' in changed else 1}".encode() * 50
        for i in range(4)
    }
    files["README.md"] = CARD + f"release {version}\n".encode()
    return tree(tmp / f"v{version}", files)


def publisher(**kw) -> HubPublisher:
    return HubPublisher(make_api(TOKEN), REPO, backoff=0.001, sleep=lambda s: None, **kw)


def main_files(fake: FakeHub) -> dict[str, bytes]:
    repo = fake.repos[REPO]
    return {p: repo.read(p) for p in repo.tree("main")}


def test_publish_is_one_commit_tagged_and_uploads_only_changes(hub: FakeHub, tmp_path: Path):
    first = publisher().publish(release(tmp_path, 1), tag="2026.11.27")
    assert first.commits == 1 and first.tag == "2026.11.27" and hub.commits_made == 1
    assert first.plan.summary() == {"add": 5, "replace": 0, "delete": 0, "keep": 0}
    assert len(hub.uploads) == 4  # the four parquet files through LFS; the card rides in the commit
    assert hub.repos[REPO].tags["2026.11.27"] == first.commit
    v2 = release(tmp_path, 2, changed={"p1"})
    dry = publisher().publish(v2, tag="2026.11.28", dry_run=True)
    assert dry.plan.replace == ["README.md", "data/by/p1/part-00000.parquet"] and len(dry.plan.keep) == 3
    assert hub.commits_made == 1 and len(hub.uploads) == 4  # a dry run changes nothing
    second = publisher().publish(v2, tag="2026.11.28")
    assert second.plan.summary() == dry.plan.summary() and second.commits == 1
    assert [n for _, n in hub.uploads[4:]] == [len(b"p1 v2") * 50]  # only the changed file was sent
    assert main_files(hub)["data/by/p1/part-00000.parquet"] == b"p1 v2" * 50
    # same content again: nothing to do, no commit, the tag already names this commit
    again = publisher().publish(release(tmp_path / "again", 2, changed={"p1"}), tag="2026.11.28")
    assert not again.plan.changes and again.commits == 0 and hub.commits_made == 2
    assert again.tag == "2026.11.28"


def test_failed_publish_leaves_main_on_previous_release_and_rerun_completes(hub: FakeHub, tmp_path: Path):
    publisher().publish(release(tmp_path, 1), tag="2026.11.27")
    before_head, before = hub.repos[REPO].branches["main"], main_files(hub)
    v2 = release(tmp_path, 2, changed={"p0", "p1", "p2", "p3"})
    hub.crash_after_uploads(2)
    with pytest.raises(Exception) as err:
        publisher().publish(v2, tag="2026.11.28")
    assert isinstance(err.value, Crash) or isinstance(err.value.__cause__, Crash)
    assert hub.repos[REPO].branches["main"] == before_head and main_files(hub) == before
    sent_before_crash = {oid for oid, _ in hub.uploads[4:]}
    assert 1 <= len(sent_before_crash) < 4
    hub.faults.clear()
    done = publisher().publish(v2, tag="2026.11.28")
    assert done.commits == 1 and hub.commits_made == 2
    oids = [oid for oid, _ in hub.uploads[4:]]
    assert len(oids) == len(set(oids)) == 4  # finished files were not uploaded again
    assert all(main_files(hub)[f"data/by/p{i}/part-00000.parquet"] == f"p{i} v2".encode() * 50 for i in range(4))


def test_moved_main_is_detected_not_overwritten(hub: FakeHub, tmp_path: Path):
    publisher().publish(release(tmp_path, 1), tag="2026.11.27")
    hub.on_first("POST", "/preupload/", lambda: hub.external_commit(REPO, "NOTES.md", b"maintainer note"))
    v2 = release(tmp_path, 2, changed={"p3"})
    with pytest.raises(ConcurrentChangeError, match="moved"):
        publisher().publish(v2, tag="2026.11.28")
    now = main_files(hub)
    assert now["NOTES.md"] == b"maintainer note" and now["data/by/p3/part-00000.parquet"] == b"p3 v1" * 50
    assert any(r["url"].endswith("/commit/main") for r in hub.requests)  # the commit was tried and refused (412)
    done = publisher().publish(v2, tag="2026.11.28")  # re-planned against the new head
    now = main_files(hub)
    assert now["NOTES.md"] == b"maintainer note" and now["data/by/p3/part-00000.parquet"] == b"p3 v2" * 50
    assert "NOTES.md" not in done.plan.delete  # files the release does not own are left alone


def test_rate_limits_and_server_errors_are_retried_with_backoff(hub: FakeHub, tmp_path: Path):
    waits: list[float] = []
    hub.fail("GET", "/revision/", 503, times=2)  # repo info: a call the client itself does not retry
    hub.fail("POST", "/commit/", 429, times=1, retry_after="7")
    p = HubPublisher(make_api(TOKEN), REPO, backoff=0.5, sleep=waits.append)
    res = p.publish(release(tmp_path, 1), tag="2026.11.27")
    assert res.commits == 1 and hub.commits_made == 1
    assert waits[-1] == 7.0  # Retry-After honoured
    assert len(waits) == 3 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0  # exponential, jittered


@pytest.mark.parametrize(
    ("method", "failing"),
    [("GET", "/revision/main"), ("GET", "/tree/"), ("POST", "/preupload/main"), ("POST", "/commit/main")],
)
def test_persistent_server_errors_are_retried_by_one_layer_only(hub: FakeHub, tmp_path: Path, method, failing):
    """Each call is tried 1 + retries times, not (1 + retries) x 6 (huggingface_hub's own http_backoff nested in
    ours made 42 requests and slept 1+2+4+8+8 s inside every one of our attempts)."""
    import time

    publisher().publish(release(tmp_path, 1), tag="2026.11.27")  # the repository exists; now one call breaks
    hub.requests.clear()
    hub.fail(method, failing, 500, times=10**6)
    waits: list[float] = []
    p = HubPublisher(make_api(TOKEN), REPO, retries=3, backoff=0.01, sleep=waits.append)
    start = time.monotonic()
    with pytest.raises(HfHubHTTPError) as info:
        p.publish(release(tmp_path, 2, changed={"p0"}), tag="2026.11.28")
    elapsed = time.monotonic() - start
    assert info.value.response.status_code == 500
    tries = [r for r in hub.requests if r["method"] == method and failing in r["url"]]
    assert len(tries) == 1 + 3, len(tries)  # one retry layer
    assert len(waits) == 3  # and only its own, injectable sleeps: none inside the client
    assert elapsed < 10, elapsed  # the client's nested sleeps alone were 23 s per attempt
    assert hub.repos[REPO].tags == {"2026.11.27": hub.repos[REPO].branches["main"]}  # nothing half-released


def test_bad_card_fails_before_any_upload_and_token_is_required(hub: FakeHub, tmp_path: Path, monkeypatch):
    bad = CARD.replace(b"  default: true\n", b"  default: true\n- config_name: all\n  data_files: []\n")
    assert validate_card(bad.decode())
    files = tree(tmp_path, {"README.md": bad, "data/by/x/part-00000.parquet": b"x" * 100})
    with pytest.raises(ValueError, match="config_name"):
        publisher().publish(files, tag="2026.11.27")
    assert not hub.uploads and hub.commits_made == 0
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubConfigError, match="HF_TOKEN"):
        publish_hub(files, "testorg", "openverse-audio", tag="2026.11.27")


def test_wrong_token_error_does_not_leak_it(hub: FakeHub, tmp_path: Path, caplog):
    hub.token = "hf_the_right_one"
    with pytest.raises(Exception) as err:
        publisher().publish(release(tmp_path, 1), tag="2026.11.27")
    assert "401" in str(err.value) and TOKEN not in str(err.value)
    hub.token = TOKEN  # the fixture's own checks run against the configured token


def split_audio_providers(catalog_url: str) -> None:
    """The demo audio catalog has one provider: move 40 rows to a second one so a release has two."""
    with sa.create_engine(catalog_url).begin() as conn:
        conn.execute(
            sa.text(
                "update audio set provider = 'ccmixter', source = 'ccmixter' where identifier in "
                "(select identifier from audio order by identifier limit 40)"
            )
        )


def test_second_release_uploads_only_the_changed_provider(env: Path, hub: FakeHub, monkeypatch, capsys):
    from openverse_dataset.defs.resources import build_resources

    monkeypatch.setenv("OPENVERSE_PUBLISH_TARGET", "hf:testorg")
    url = build_resources()["catalog"].catalog_url()
    split_audio_providers(url)
    assert main(["build", "--media", "audio"]) == 0
    repo = hub.repos[REPO]
    first_files = main_files(hub)
    assert repo.tags == {"2026.11.27": repo.branches["main"]} and hub.commits_made == 1
    assert {p.split("/")[2] for p in first_files if p.startswith("data/")} == {"ccmixter", "jamendo"}
    card = DatasetCard(first_files["README.md"].decode())  # huggingface_hub's own parsing
    assert card.data.configs and not validate_card(first_files["README.md"].decode())
    first_uploads = len(hub.uploads)
    assert first_uploads == sum(p.endswith(".parquet") for p in first_files)

    # the catalog changes for ccmixter only: one title edited, one row gone, one taken down
    with sa.create_engine(url).begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.text("select identifier from audio where provider = 'ccmixter' order by identifier limit 3")
            )
        ]
        conn.execute(sa.text("update audio set title = 'Renamed' where identifier = :i"), {"i": ids[0]})
        conn.execute(sa.text("delete from audio where identifier = :i"), {"i": ids[1]})
        conn.execute(
            sa.text(
                "insert into api_deletedaudio (identifier, created_on, updated_on) "
                "values (:i, current_timestamp, current_timestamp)"
            ),
            {"i": ids[2]},
        )
    monkeypatch.setenv("OPENVERSE_RELEASE_DATE", "2026-12-04")
    requests_before = len(hub.requests)
    assert main(["build", "--media", "audio", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would change (dry run)" in out
    assert not [r for r in hub.requests[requests_before:] if r["method"] in ("PUT", "POST")]  # read-only
    plan = json.loads((env / "releases" / "audio" / "plan.json").read_text())["plan"]
    changed = plan["add"] + plan["replace"] + plan["delete"]
    assert "README.md" in plan["replace"] and "removals.parquet" in plan["replace"]
    data_changed = [p for p in changed if p.startswith("data/")]
    assert data_changed and all(p.split("/")[2] == "ccmixter" for p in data_changed)
    assert any(p.split("/")[2] == "jamendo" for p in plan["keep"])

    assert main(["publish", "--media", "audio"]) == 0
    out = capsys.readouterr().out
    assert "changed" in out and "2026.12.04" in out
    assert hub.commits_made == 2 and set(repo.tags) == {"2026.11.27", "2026.12.04"}
    second = main_files(hub)
    sent = {oid for oid, _ in hub.uploads[first_uploads:]}
    by_oid = {repo.tree("main")[p].sha256: p for p in second if repo.tree("main")[p].sha256}
    assert {by_oid[o] for o in sent} == {p for p in plan["add"] + plan["replace"] if p.endswith(".parquet")}
    for p, data in first_files.items():
        if "/jamendo/" in p:
            assert second[p] == data
    print(  # the numbers the report quotes (visible with -s)
        f"MEASURE first: {first_uploads} files {sum(n for _, n in hub.uploads[:first_uploads]):,} B; "
        f"second: {len(hub.uploads) - first_uploads} files {sum(n for _, n in hub.uploads[first_uploads:]):,} B; "
        f"plan {json.dumps({k: len(v) for k, v in plan.items() if k != 'bytes'})} commits {hub.commits_made}"
    )
    removals = pl.read_parquet(second["removals.parquet"])
    reasons = dict(zip(removals["identifier"].to_list(), removals["reason"].to_list(), strict=True))
    assert reasons == {ids[1]: "deleted", ids[2]: "taken_down"}
    text = second["README.md"].decode()
    assert "## Changes since the previous release" in text and "| ccmixter | 0 | 2 | 1 |" in text
    assert "jamendo |" not in text.split("## Changes since the previous release")[1].split("## Rows per provider")[0]
    DatasetCard(text)


@pytest.mark.live
@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("OPENVERSE_HF_TEST_NAMESPACE")),
    reason="live Hub test: set HF_TOKEN and OPENVERSE_HF_TEST_NAMESPACE (a throwaway namespace) to run it",
)
def test_live_hub_round_trip(tmp_path: Path):  # pragma: no cover - opt-in
    namespace = os.environ["OPENVERSE_HF_TEST_NAMESPACE"]
    files = release(tmp_path, 1)
    res = publish_hub(files, namespace, "openverse-dataset-live-test", tag="2026.11.27", backoff=2.0)
    assert res.commit
    again = publish_hub(files, namespace, "openverse-dataset-live-test", tag="2026.11.27")
    assert not again.plan.changes and again.commits == 0
