"""Alerts reach a Slack-compatible webhook (a loopback receiver here), never leak its URL, and wait for retries."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from openverse_dataset.alerting import WEBHOOK_ENV, Alert, send_alert
from openverse_dataset.defs.sensors import run_failure_alert
from openverse_dataset_tests.test_unattended import SECRET_PATH, Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def test_alert_is_posted_as_slack_json_and_the_url_never_logged(receiver, monkeypatch, caplog):
    monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
    caplog.set_level(logging.INFO)
    out = send_alert(Alert("openverse-dataset: image_refresh_provider failed", ("error: boom",)))
    assert out.outcome == "posted"
    [got] = receiver.received
    assert got["path"] == SECRET_PATH
    assert got["body"]["text"].startswith("*openverse-dataset: image_refresh_provider failed*")
    assert got["body"]["blocks"][0]["text"]["type"] == "mrkdwn"
    assert SECRET_PATH not in caplog.text and receiver.url not in caplog.text


def test_unset_webhook_logs_only_and_a_dead_one_fails_without_the_url(monkeypatch, caplog, receiver):
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    assert send_alert(Alert("x")).outcome == "logged"
    dead = receiver.url.rsplit(":", 1)[0] + ":9" + SECRET_PATH  # discard port on loopback: connection refused
    monkeypatch.setenv(WEBHOOK_ENV, dead)
    out = send_alert(Alert("y"))
    assert out.outcome == "failed" and SECRET_PATH not in out.detail
    assert SECRET_PATH not in caplog.text


def test_run_failure_alerts_only_after_the_last_retry():
    tags = {"dagster/max_retries": "1", "dagster/partition": "deviantart"}
    first = dg.DagsterRun(job_name="image_refresh_provider", run_id="r1", tags=tags)
    assert run_failure_alert(first, "raw: boom") is None  # a retry follows
    last = dg.DagsterRun(job_name="image_refresh_provider", run_id="r2", tags={**tags, "dagster/retry_number": "1"})
    alert = run_failure_alert(last, "raw: boom")
    assert alert is not None and "deviantart" in alert.title and "attempt 2 of 2" in alert.text()
    assert "held back" in alert.text()
    auto = dg.DagsterRun(
        job_name="__ASSET_JOB", run_id="r3", asset_selection=frozenset({dg.AssetKey(["image", "release"])})
    )
    assert run_failure_alert(auto, "check failed").title == "openverse-dataset: automation run of image/release failed"
