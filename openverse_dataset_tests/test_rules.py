"""The rule registry and what is derived from it; hidden sources from the API database, end to end."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openverse_dataset import licenses as lic
from openverse_dataset.media import IMAGE
from openverse_dataset.transform import rules as R
from openverse_dataset.transform.clean import (
    DERIVED,
    FIX_COLUMNS,
    REJECT_REASONS,
    REMOVAL_CLASSES,
    REPAIRS,
    RULES,
    clean_lazy,
    cleaning_summary,
    reason_priority_sql,
    removal_class_sql,
)

NO_TAKEDOWNS = pl.LazyFrame(schema={"identifier": pl.String, "reason": pl.String})


def test_every_table_is_derived_from_the_one_list_of_rules():
    rejects = [r for r in RULES if r.action == "reject"]
    assert list(REJECT_REASONS) == [r.name for r in sorted(rejects, key=lambda r: r.priority)]
    assert len({r.priority for r in rejects}) == len(rejects)  # a strict order: one reason per row
    assert set(REPAIRS) == {r.name for r in RULES if r.action == "repair"}
    assert [f"_fix_{n}" for n in REPAIRS] == FIX_COLUMNS
    assert {r.removal for r in rejects} <= set(REMOVAL_CLASSES)
    assert R.removal_classes(RULES)["source_hidden"] == "source_hidden"
    assert DERIVED["license_url"] == ["license", "license_version", "meta_data"]
    assert {"title", "creator", "attribution", "filetype", "tags"} <= set(DERIVED)
    assert "HTML markup removed from titles and creators" in cleaning_summary()
    with pytest.raises(ValueError, match="removal class"):
        R.Rule("x", "reject", 1, "meaning", lambda ctx: pl.lit(True))


def test_hidden_sources_are_rejected_after_takedowns(image_raw):
    live = image_raw.filter(~pl.col("removed_from_source"))
    geo = live.filter(pl.col("provider") == "geographorguk")
    sub = live.filter(pl.col("provider") == "wikimedia").head(2).with_columns(pl.lit("nasa").alias("source"))
    other = live.filter(pl.col("provider") == "eol").head(5)
    frame = pl.concat([geo, sub, other])
    tk = pl.LazyFrame({"identifier": [geo["identifier"][0]], "reason": ["taken_down"]})
    out = clean_lazy(frame.lazy(), IMAGE, tk, hidden_sources=["geographorguk", "nasa"]).collect()
    reasons = dict(zip(out["identifier"], out["_reject"], strict=True))
    assert reasons[geo["identifier"][0]] == "taken_down"  # a takedown is counted as one, whatever else holds
    assert all(reasons[i] == "source_hidden" for i in geo["identifier"][1:])
    assert all(reasons[i] == "source_hidden" for i in sub["identifier"])  # a sub-source of a provider
    assert all(reasons[i] is None for i in other["identifier"])
    assert clean_lazy(frame.lazy(), IMAGE, NO_TAKEDOWNS).collect()["_reject"].null_count() == frame.height


def test_a_work_both_taken_down_and_deleted_gets_the_clean_steps_reason_and_class(tmp_path):
    """The clean step counts it as taken_down; the removals' SQL (release/changes.py) must pick the same."""
    ident = "00000000-0000-4000-8000-000000000001"
    tk = tmp_path / "tk.parquet"
    pq.write_table(pa.table({"identifier": [ident, ident], "reason": ["deleted_in_catalog", "taken_down"]}), tk)
    row = pl.DataFrame(schema=pl.Schema(IMAGE.raw_schema)).clear(1).with_columns(identifier=pl.lit(ident))
    assert clean_lazy(row.lazy(), IMAGE, pl.scan_parquet(tk)).collect()["_reject"].to_list() == ["taken_down"]
    got = duckdb.sql(
        f"select reason, {removal_class_sql('reason')} as class from (select identifier, "
        f"arg_min(reason, {reason_priority_sql('reason')}) as reason from read_parquet('{tk}') group by identifier)"
    ).fetchall()
    assert got == [("taken_down", "taken_down")]
    assert duckdb.sql(f"select {removal_class_sql('null')}").fetchall() == [("deleted",)]


def test_duplicate_rejects_carry_raw_values_like_every_other(image_raw, tmp_path):
    from openverse_dataset.layout import DataLayout
    from openverse_dataset.parquet import write_batches
    from openverse_dataset.transform.partition import clean_partition

    base = image_raw.filter(~pl.col("removed_from_source") & (pl.col("provider") == "wikimedia")).head(3)
    twin = base.head(1).with_columns(
        pl.lit("ffffffff-0000-0000-0000-000000000000").alias("identifier"), pl.lit(" BY-SA ").alias("license")
    )
    raw = pl.concat([base, twin]).sort("identifier")
    layout = DataLayout(tmp_path)
    write_batches(
        layout.raw_dir("image", "wikimedia"), IMAGE.raw_schema, raw.to_arrow().cast(IMAGE.raw_schema).to_batches()
    )
    r = clean_partition(layout, IMAGE, "wikimedia", batch_rows=2)
    assert r.rejected["duplicate"] == 1
    rej = pl.read_parquet(layout.rejects_dir("image", "wikimedia") / "*.parquet")
    assert rej.select("identifier", "reason", "raw_license").rows() == [
        ("ffffffff-0000-0000-0000-000000000000", "duplicate", " BY-SA ")
    ]
    assert r.by_source == {"wikimedia": 4}


# --- the API database, separate from the catalog, built from Openverse's own DDL --------------------------


def _released(env) -> pl.DataFrame:
    return pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")


@pytest.mark.postgres
def test_hidden_source_never_published_and_back_when_unhidden(env, upstream_catalog, monkeypatch):
    from openverse_dataset.catalog.takedowns import read_hidden_sources
    from openverse_dataset.definitions import defs as load_defs
    from openverse_dataset.layout import DataLayout
    from openverse_dataset_tests.conftest import raw_frame
    from openverse_dataset_tests.test_freshness import run_requests, tick

    upstream_catalog.seed_demo(["image"])
    upstream_catalog.prepare()  # the indexes change detection needs (the sensors skip without them)
    upstream_catalog.add_source("wikimedia", "Wikimedia Commons", "image")
    upstream_catalog.configure(monkeypatch)
    defs = load_defs()
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("discover_providers").execute_in_process(instance=instance).success
        for p in instance.get_dynamic_partitions("image_providers"):
            job = defs.resolve_job_def("image_refresh_provider")
            assert job.execute_in_process(instance=instance, partition_key=p).success
        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success
        assert (_released(env)["provider"] == "geographorguk").sum() == 300
        first = tick(defs, "image_takedowns", instance, None)

        # Openverse hides a source in its API database: the fast path re-cleans only the partition holding it
        upstream_catalog.add_source("geographorguk", "Geograph Britain and Ireland", "image", filter_content=True)
        # and one work is both taken down in the API and moved to deleted_image: one class everywhere
        victim = upstream_catalog.scalar(
            "select identifier::text from image where provider = 'wikimedia' and not removed_from_source "
            "and identifier not in (select identifier from deleted_image) order by identifier limit 1"
        )
        upstream_catalog.take_down("image", [victim])
        upstream_catalog.move_to_deleted("image", [victim])
        second = tick(defs, "image_takedowns", instance, first.cursor)
        assert sorted(r.partition_key for r in second.run_requests) == ["geographorguk", "wikimedia"]
        run_requests(defs, instance, second.run_requests, "image_apply_takedowns")
        assert tick(defs, "image_takedowns", instance, second.cursor).run_requests == []
        result = defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance)
        assert result.success
        tk = DataLayout(env).takedowns_file("image")
        assert read_hidden_sources(tk) == ("geographorguk",)

        released = _released(env).sort("identifier")
        assert (released["source"] == "geographorguk").sum() == 0
        # every other expected row is published, with the API's license_url and attribution
        raw = raw_frame(IMAGE)
        expected = clean_lazy(raw.lazy(), IMAGE, pl.scan_parquet(tk), hidden_sources=read_hidden_sources(tk)).collect()
        kept = expected.filter(pl.col("_reject").is_null()).sort("identifier")
        assert released["identifier"].to_list() == kept["identifier"].to_list()
        assert released.height == 1373 - 300 - 1 and victim not in released["identifier"].to_list()
        meta = {r["identifier"]: json.loads(r["meta_data"] or "{}") for r in raw.iter_rows(named=True)}
        for r in released.iter_rows(named=True):
            stored = meta[r["identifier"]].get("license_url")
            assert r["license_url"] == (stored or lic.license_url(r["license"], r["license_version"],
                                                                 r["license_jurisdiction"]))  # fmt: skip
            assert r["attribution"] == lic.attribution(
                r["title"], r["creator"], r["license"], r["license_version"], r["license_jurisdiction"],
                r["license_url"],
            )  # fmt: skip
        rejected = pl.read_parquet(env / "rejects" / "image" / "geographorguk" / "*.parquet")
        assert rejected["reason"].value_counts().rows() == [("source_hidden", 300)]
        card = (env / "hub" / "openverse-images" / "README.md").read_text()
        assert "source_hidden" in card
        removals = pl.read_parquet(env / "hub" / "openverse-images" / "removals.parquet")
        assert sorted(removals["reason"].value_counts().rows()) == [("source_hidden", 300), ("taken_down", 1)]
        assert removals.filter(pl.col("identifier") == victim)["detail"].to_list() == ["taken_down"]
        wiki = pl.read_parquet(env / "rejects" / "image" / "wikimedia" / "*.parquet")
        assert wiki.filter(pl.col("identifier") == victim)["reason"].to_list() == ["taken_down"]

        # unhidden: it comes back at its next refresh (the fast path sees the flip too)
        upstream_catalog.execute("update content_provider set filter_content = false", db="api")
        third = tick(defs, "image_takedowns", instance, second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["geographorguk"]
        run_requests(defs, instance, third.run_requests, "image_apply_takedowns")
        assert defs.resolve_job_def("image_publish_release").execute_in_process(instance=instance).success
        assert (_released(env)["source"] == "geographorguk").sum() == 300
