"""Automation releases what is ready: a missing or failing provider partition holds back only itself."""

from __future__ import annotations

import json

import dagster as dg

from openverse_dataset.definitions import defs as load_defs
from openverse_dataset.defs.common import key
from openverse_dataset.release.holdback import KEPT_NONE, KEPT_PREVIOUS, HoldbackReport


def test_a_failed_and_a_missing_partition_do_not_block_the_release(env, tmp_path, monkeypatch):
    faults = tmp_path / "faults.json"
    monkeypatch.setenv("OPENVERSE_FAULT_FILE", str(faults))
    defs = load_defs()
    refresh = defs.resolve_job_def("image_refresh_provider")
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("discover_providers").execute_in_process(instance=instance).success
        for p in ("eol", "phylopic"):
            assert refresh.execute_in_process(instance=instance, partition_key=p).success
        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        # phylopic's next extract fails; eol refreshes; ten providers were never refreshed at all
        faults.write_text(json.dumps({"extract": ["phylopic"]}))
        failed = refresh.execute_in_process(instance=instance, partition_key="phylopic", raise_on_error=False)
        assert not failed.success
        assert refresh.execute_in_process(instance=instance, partition_key="eol").success

        # eager() would wait for the ten missing partitions forever; the release goes ahead
        follow = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
        assert follow.get_num_requested(key("image", "subsets")) == 1
        assert follow.get_num_requested(key("image", "release")) == 1
        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success

    report = HoldbackReport.from_json((env / "subsets" / "image.holdback.json").read_text())
    assert report.released == ["eol", "phylopic"]
    held = {h.provider: h for h in report.held_back}
    assert held["phylopic"].kept == KEPT_PREVIOUS and "injected extract fault" in held["phylopic"].reason
    assert held["flickr"].kept == KEPT_NONE and held["flickr"].reason == "not refreshed yet"
    card = (env / "hub" / "openverse-images" / "README.md").read_text()
    assert "## Providers held back" in card and "| phylopic | previous release's rows, unchanged |" in card
