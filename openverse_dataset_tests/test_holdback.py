"""Plain-logic tests: what a release holds back, per-provider freshness, where the takedown sensor resumes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openverse_dataset.catalog.snapshot_marks import earliest, mark_from_json, mark_to_json
from openverse_dataset.catalog.watermarks import TakedownMark
from openverse_dataset.freshness import assess
from openverse_dataset.release.holdback import KEPT_NONE, KEPT_PREVIOUS, HoldbackReport, ProviderState, decide

T = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_a_failing_provider_keeps_its_previous_rows_and_a_never_refreshed_one_is_absent():
    report = decide(
        [
            ProviderState("met", cleaned=True),
            ProviderState("flickr", cleaned=True, failed=True, failure="InjectedFault: boom", failed_at="t"),
            ProviderState("newmuseum", cleaned=False, failed=True, failure="timeout"),
            ProviderState("pending", cleaned=False),
        ]
    )
    assert report.released == ["flickr", "met"]
    held = {h.provider: h for h in report.held_back}
    assert held["flickr"].kept == KEPT_PREVIOUS and "InjectedFault: boom" in held["flickr"].reason
    assert held["newmuseum"].kept == KEPT_NONE
    assert held["pending"].reason == "not refreshed yet"
    assert HoldbackReport.from_json(report.to_json()) == report
    card = "\n".join(report.card_lines())
    assert "## Providers held back" in card and "| flickr | previous release's rows, unchanged |" in card
    assert decide([ProviderState("met", cleaned=True)]).card_lines() == []


def test_freshness_is_per_provider_and_stale_only_after_the_grace_period():
    fresh = f"{(T - timedelta(hours=1)).isoformat()}|-"
    moved = f"{(T - timedelta(hours=3)).isoformat()}|-"
    recent = f"{(T - timedelta(minutes=5)).isoformat()}|-"
    old = f"{(T - timedelta(hours=5)).isoformat()}|-"
    report = assess(
        catalog_tokens={"met": fresh, "flickr": moved, "eol": recent, "newmuseum": fresh},
        recorded_tokens={"met": fresh, "flickr": old, "eol": fresh},
        last_refresh={"met": T - timedelta(hours=1), "flickr": T - timedelta(hours=4), "eol": T - timedelta(hours=1)},
        partitions=["met", "flickr", "eol"],
        now=T,
        grace=timedelta(hours=2),
    )
    assert report.stale == ["flickr"]  # eol changed 5 minutes ago, newmuseum 1 hour ago: catching up
    assert report.behind == ["eol", "flickr", "newmuseum"]
    rows = {r[0]: r for r in report.rows()}
    assert rows["met"][1] == "current" and rows["eol"][1] == "catching up"
    assert rows["flickr"][4] == "2.0h" and rows["newmuseum"][1] == "never refreshed"


def test_the_takedown_sensor_resumes_from_the_oldest_snapshot_any_clean_partition_used():
    a = TakedownMark(T, T - timedelta(days=1), None)
    b = TakedownMark(T - timedelta(hours=2), T, T)
    assert mark_from_json(mark_to_json(a)) == a
    assert earliest([a, b]) == TakedownMark(T - timedelta(hours=2), T - timedelta(days=1), None)
