"""Openverse's cleaning rules, each exercised by a real sample row, plus the bad inputs real data brings."""

from __future__ import annotations

import json

import polars as pl
import pytest

from openverse_dataset import licenses as lic
from openverse_dataset.media import AUDIO, IMAGE
from openverse_dataset.transform.clean import REJECT_REASONS, REPAIRS, clean_lazy, decode_tags, unescape_bytes

NO_TAKEDOWNS = pl.LazyFrame(schema={"identifier": pl.String, "reason": pl.String})


def clean(df: pl.DataFrame, media=IMAGE, takedowns: pl.LazyFrame = NO_TAKEDOWNS) -> pl.DataFrame:
    return clean_lazy(df.lazy(), media, takedowns).collect()


def row(out: pl.DataFrame, identifier: str) -> dict:
    return out.filter(pl.col("identifier") == identifier).to_dicts()[0]


@pytest.fixture(scope="module")
def image_clean(image_raw) -> pl.DataFrame:
    return clean(image_raw)


def test_every_row_is_kept_or_has_a_known_reason(image_raw, image_clean):
    assert image_clean.height == image_raw.height  # nothing vanishes inside the rules
    reasons = set(image_clean["_reject"].drop_nulls())
    assert reasons <= set(REJECT_REASONS)
    assert {c.removeprefix("_fix_") for c in image_clean.columns if c.startswith("_fix_")} == set(REPAIRS)


def test_url_without_scheme_gets_https(image_raw, image_clean):
    ident = "2a799b10-8779-4cf7-a393-45503b128382"
    before = row(image_raw, ident)["foreign_landing_url"]
    after = row(image_clean, ident)
    assert not before.startswith("http")
    assert after["foreign_landing_url"] == "https://" + before
    assert after["_fix_url_scheme_added"]


def test_machine_tags_below_accuracy_are_dropped(image_raw, image_clean):
    ident = "4e870275-3638-4d7d-84cb-8e550ad72aad"
    raw_tags = json.loads(row(image_raw, ident)["tags"])
    low = {t["name"] for t in raw_tags if t.get("accuracy") is not None and float(t["accuracy"]) < 0.9}
    high = {t["name"] for t in raw_tags if t.get("accuracy") is not None and float(t["accuracy"]) >= 0.9}
    kept = {t["name"] for t in row(image_clean, ident)["tags"] or []}
    assert low and not (low & kept)
    assert high - {"no person"} <= kept


def test_denylisted_and_colon_tags_are_dropped(image_clean):
    names = {t["name"].lower() for t in row(image_clean, "74454cfd-489d-4c7a-bdda-d7eef06d6d2b")["tags"] or []}
    assert "no person" not in names
    names = {t["name"] for t in row(image_clean, "4e1dc168-dc21-4091-bbd7-263f3cd6f576")["tags"] or []}
    assert not any(":" in n or "=" in n for n in names)
    assert all(":" not in t["name"] for tags in image_clean["tags"].drop_nulls() for t in tags)


def test_tag_names_are_trimmed(image_clean):
    names = [t["name"] for t in row(image_clean, "8ea61a87-4a86-4e89-8270-6929959a47b6")["tags"]]
    assert "Rural settlement" in names and all(n == n.strip() for n in names)


def test_escaped_bytes_in_tags_are_decoded(image_clean):
    r = row(image_clean, "5378c4d3-3edd-424a-acea-cb99b6a5a4f7")
    assert "mazuelodemuñó" in [t["name"] for t in r["tags"]]
    assert r["_fix_tag_unicode_repaired"]
    assert unescape_bytes("ni\\xc3\\xb1os") == "niños"  # UTF-8 byte runs decode as UTF-8


def test_upper_case_license_is_normalised(image_clean):
    r = row(image_clean, "4c1bf289-0408-4eba-9bbd-3298d386ff33")
    assert (r["license"], r["license_version"]) == ("cc0", "1.0")
    assert r["_fix_license_normalised"]


def test_impossible_cc0_version_is_corrected(image_raw, image_clean):
    ident = "9628c101-57c2-4c79-90fd-ed52185e7450"
    assert row(image_raw, ident)["license_version"] == "3"
    r = row(image_clean, ident)
    assert r["license_version"] == "1.0" and r["_fix_license_version_corrected"]
    assert r["license_url"] == "https://creativecommons.org/publicdomain/zero/1.0/"


def test_version_without_unported_form_taken_from_license_url(image_clean):
    r = row(image_clean, "6598d19b-cb1e-4f89-bde0-fc507dd2bab8")  # eol: by 2.1 (ports only) + URL by/2.0/
    assert (r["license"], r["license_version"]) == ("by", "2.0")
    assert r["_fix_license_version_from_url"]


def test_port_from_catalog_license_url(image_clean):
    r = row(image_clean, "bae0c6a8-7a85-4bbd-a7f5-cddc2d5802c1")  # by-nc-nd whose URL says by-nd-nc/2.0/jp/
    assert (r["license"], r["license_version"], r["license_jurisdiction"]) == ("by-nc-nd", "2.0", "jp")
    assert r["license_url"] == "https://creativecommons.org/licenses/by-nd-nc/2.0/jp/"
    assert "CC BY-NC-ND 2.0 JP" in r["attribution"]


def test_filetype_normalised_and_taken_from_url(image_raw, image_clean):
    assert row(image_raw, "63776385-cf55-4572-8dfd-bd1607b53af8")["filetype"] == "JPG"
    assert row(image_clean, "63776385-cf55-4572-8dfd-bd1607b53af8")["filetype"] == "jpg"
    kept = image_clean.filter(pl.col("_reject").is_null())
    from_url = kept.filter(pl.col("_fix_filetype_from_url"))
    assert from_url.height > 1000 and set(from_url["filetype"]) <= IMAGE.filetypes


def test_removed_from_source_is_rejected(image_clean):
    assert row(image_clean, "4f70f6bc-605a-4043-9385-d84b249dd3ad")["_reject"] == "removed_from_source"


def test_attribution_matches_python_reference_for_every_kept_row(image_clean):
    kept = image_clean.filter(pl.col("_reject").is_null())
    assert kept.height > 1300
    for r in kept.iter_rows(named=True):
        want = lic.attribution(
            r["title"], r["creator"], r["license"], r["license_version"], r["license_jurisdiction"], r["license_url"]
        )
        assert r["attribution"] == want
        assert lic.is_valid(r["license"], r["license_version"], r["license_jurisdiction"])


def test_audio_sample_cleans(audio_raw):
    out = clean(audio_raw, AUDIO)
    kept = out.filter(pl.col("_reject").is_null())
    assert kept.height == audio_raw.height
    assert set(kept["license"]) == {"by-nc-sa", "by-nc-nd", "by-sa", "sampling+", "nc-sampling+"}
    assert kept.filter(pl.col("license") == "sampling+")["attribution"][0].endswith(
        "CC Sampling+ 1.0. To view a copy of this license, visit https://creativecommons.org/licenses/sampling+/1.0/."
    )
    assert kept["genres"].drop_nulls().len() > 0


def test_takedowns_are_rejected_with_their_reason(image_raw):
    ids = image_raw.filter(~pl.col("removed_from_source"))["identifier"].head(3).to_list()
    tk = pl.LazyFrame({"identifier": ids, "reason": ["taken_down", "deleted_in_catalog", "mature"]})
    out = clean(image_raw, takedowns=tk)
    assert [row(out, i)["_reject"] for i in ids] == ["taken_down", "deleted_in_catalog", "mature"]


# --- bad input -------------------------------------------------------------------------------------------


def one_bad_row(image_raw: pl.DataFrame, **changes) -> dict:
    base = image_raw.filter(~pl.col("removed_from_source") & (pl.col("provider") == "wikimedia")).head(1)
    bad = base.with_columns(**{k: pl.lit(v, dtype=base.schema[k]) for k, v in changes.items()})
    return clean(bad).to_dicts()[0]


def test_unknown_license_is_rejected(image_raw):
    assert one_bad_row(image_raw, license="gpl")["_reject"] == "unknown_license"
    assert one_bad_row(image_raw, license=None)["_reject"] == "unknown_license"


def test_retired_license_is_rejected_as_not_served(image_raw):
    assert (
        one_bad_row(image_raw, license="nc", license_version="1.0", meta_data=None)["_reject"] == "license_not_served"
    )


def test_invalid_version_is_rejected(image_raw):
    r = one_bad_row(image_raw, license="by", license_version="5.0", meta_data=None)
    assert r["_reject"] == "invalid_license_version"
    r = one_bad_row(image_raw, license="by", license_version=None, meta_data=None)
    assert r["_reject"] == "missing_license_version"


def test_null_and_garbage_urls_are_rejected(image_raw):
    assert one_bad_row(image_raw, url=None)["_reject"] == "missing_url"
    assert one_bad_row(image_raw, url="   ")["_reject"] == "missing_url"
    assert one_bad_row(image_raw, url="not a url")["_reject"] == "invalid_url"
    assert one_bad_row(image_raw, url="ftp://example.org/a.jpg")["_reject"] == "invalid_url"


def test_bad_secondary_url_is_nulled_not_rejected(image_raw):
    r = one_bad_row(image_raw, thumbnail="javascript:alert(1)")
    assert r["_reject"] is None and r["thumbnail"] is None and r["_fix_url_dropped"]


@pytest.mark.parametrize("bad", ["\x01", "\t", "\n", "\r", "\x1f", "\x7f", "\x1b[31m"])
def test_control_characters_reject_the_media_url_and_drop_a_secondary_one(image_raw, bad):
    r = one_bad_row(image_raw, url=f"https://example.org/a{bad}b.jpg")
    assert r["_reject"] == "url_control_characters"
    for col in ("foreign_landing_url", "creator_url", "thumbnail"):
        r = one_bad_row(image_raw, **{col: f"https://example.org/a{bad}b"})
        assert r["_reject"] is None and r[col] is None and r["_fix_url_dropped"], col


def test_spaces_in_urls_are_percent_encoded_and_counted(image_raw):
    r = one_bad_row(image_raw, url="https://example.org/my photo 1.jpg", creator_url="example.org/a b?q=c d")
    assert r["_reject"] is None and r["_fix_url_spaces_encoded"]
    assert r["url"] == "https://example.org/my%20photo%201.jpg"
    assert r["creator_url"] == "https://example.org/a%20b?q=c%20d" and r["_fix_url_scheme_added"]
    r = one_bad_row(image_raw, url="  https://example.org/a.jpg\t")  # surrounding whitespace: trimmed
    assert r["_reject"] is None and r["url"] == "https://example.org/a.jpg" and not r["_fix_url_spaces_encoded"]
    assert r["_fix_url_whitespace_trimmed"]  # changed, so counted
    assert not one_bad_row(image_raw, url="https://example.org/a.jpg")["_fix_url_whitespace_trimmed"]
    assert one_bad_row(image_raw, url="https://exa mple.org/a.jpg")["_reject"] == "invalid_url"  # not a host


@pytest.mark.parametrize(
    "scheme",
    [
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "ftp://example.org/a",
        "file:///etc/passwd",
        "mailto:a@example.org",
    ],
)
def test_non_http_schemes_reject_the_media_url_and_drop_a_secondary_one(image_raw, scheme):
    assert one_bad_row(image_raw, url=scheme)["_reject"] == "invalid_url"
    r = one_bad_row(image_raw, creator_url=scheme, foreign_landing_url=scheme)
    assert r["_reject"] is None and r["creator_url"] is None and r["foreign_landing_url"] is None
    assert r["_fix_url_dropped"]


@pytest.mark.parametrize("tags", ['[{"name": "x"', '{"a": 1}', "not json"])
def test_malformed_tags_json_is_counted_not_fatal(image_raw, tags):
    r = one_bad_row(image_raw, tags=tags)
    assert r["_reject"] is None and r["tags"] is None and r["_fix_tags_unparseable"]


def test_tags_that_are_not_objects_are_filtered_and_counted(image_raw):
    r = one_bad_row(image_raw, tags="[1, 2]")
    assert r["tags"] is None and r["_tags_dropped"] == 2 and r["_fix_tags_filtered"]


def test_tags_decoder_handles_odd_shapes():
    s = pl.Series(['[{"name": 5}, {"name": "ok", "accuracy": "0.95"}]', "{}", "null", None, "[]"])
    out = decode_tags(s).struct.field("tags").to_list()
    assert out[0] == [
        {"name": None, "provider": None, "accuracy": None},
        {"name": "ok", "provider": None, "accuracy": 0.95},
    ]
    assert out[1:4] == [None, None, None]
    assert not out[4]


def test_integers_at_the_int_limit_mean_missing(image_raw):
    r = one_bad_row(image_raw, width=2_147_483_647, height=-5, filesize=10)
    assert (r["width"], r["height"], r["filesize"]) == (None, None, 10)
    assert r["_fix_integer_out_of_range"]


def test_unknown_category_is_dropped(image_raw):
    r = one_bad_row(image_raw, category="Selfie")
    assert r["category"] is None and r["_fix_category_dropped"]
    assert one_bad_row(image_raw, category="Illustration")["category"] == "illustration"


def test_duplicates_of_the_natural_key_keep_the_first(image_raw):
    base = image_raw.filter(~pl.col("removed_from_source") & (pl.col("provider") == "wikimedia")).head(2)
    dup = base.head(1).with_columns(pl.lit("ffffffff-0000-0000-0000-000000000000").alias("identifier"))
    out = clean(pl.concat([base, dup]).sort("identifier"))
    assert out["_reject"].to_list().count("duplicate") == 1
    assert row(out, "ffffffff-0000-0000-0000-000000000000")["_reject"] == "duplicate"


def test_a_rejected_row_does_not_make_a_valid_one_a_duplicate(image_raw):
    base = image_raw.filter(~pl.col("removed_from_source") & (pl.col("provider") == "wikimedia")).head(1)
    twin = base.with_columns(
        pl.lit("00000000-0000-0000-0000-000000000000").alias("identifier"), pl.lit("gpl").alias("license")
    )
    out = clean(pl.concat([twin, base]))
    assert out["_reject"].to_list() == ["unknown_license", None]


def test_chunked_clean_step_equals_whole_partition_rules(image_raw, tmp_path):
    """The clean step works chunk by chunk; its output (and cross-chunk dedupe) equals the whole-frame rules."""
    import pyarrow.parquet as pq

    from openverse_dataset.layout import DataLayout
    from openverse_dataset.parquet import write_batches
    from openverse_dataset.transform.clean import output_columns
    from openverse_dataset.transform.partition import clean_partition

    flickr = image_raw.filter(pl.col("provider") == "flickr")
    kept_ok = flickr.filter(~pl.col("removed_from_source"))
    twins = kept_ok.head(3).with_columns(  # duplicates whose first copy sits in another chunk
        pl.format("ffffffff-0000-0000-0000-00000000000{}", pl.int_range(3).cast(pl.String)).alias("identifier")
    )
    raw = pl.concat([flickr, twins]).sort("identifier")
    layout = DataLayout(tmp_path)
    batches = raw.to_arrow().cast(IMAGE.raw_schema).to_batches()
    write_batches(layout.raw_dir("image", "flickr"), IMAGE.raw_schema, batches, row_group_rows=128)
    tk = tmp_path / "tk.parquet"
    pq.write_table(pl.DataFrame({"identifier": [kept_ok["identifier"][5]], "reason": ["taken_down"]}).to_arrow(), tk)
    r = clean_partition(layout, IMAGE, "flickr", takedowns=tk, batch_rows=100)
    want = clean(raw, takedowns=pl.scan_parquet(tk))
    got = pl.read_parquet(layout.clean_dir("image", "flickr") / "*" / "*.parquet").sort("identifier")
    expected = want.filter(pl.col("_reject").is_null()).select(output_columns(IMAGE)).sort("identifier")
    assert got.height == expected.height == r.kept
    assert got.select("identifier", "license", "attribution").equals(
        expected.select("identifier", "license", "attribution")
    )
    assert r.rejected["duplicate"] == 3 and r.rejected["taken_down"] == 1
    rejects = pl.read_parquet(layout.rejects_dir("image", "flickr") / "*.parquet")
    assert sorted(rejects.filter(pl.col("reason") == "duplicate")["identifier"]) == twins["identifier"].to_list()
    assert r.kept + r.rejected_total == raw.height


def test_tags_decoded_in_slices_equal_one_pass(monkeypatch):
    """Slices bound the JSON decoder's memory; a slice it rejects falls back alone, with the same values."""
    import openverse_dataset.transform.clean as clean_mod

    values = [
        '[{"name": "a", "accuracy": 0.99}]',
        '[{"name": "b", "accuracy": "0.5"}]',
        '[{"name": "x"',  # rejected by polars: the fast path fails for its slice
        None,
        "{}",
        '[{"name": "caf\\\\xc3\\\\xa9"}]',
        '[{"name": 7}, {"name": "ok"}]',
        "[]",
        '[{"name": "z", "provider": "clarifai"}]',
    ]
    s = pl.Series(values)
    one_pass = decode_tags(s).to_list()
    for rows in (1, 2, 4):
        monkeypatch.setattr(clean_mod, "JSON_SLICE_ROWS", rows)
        assert decode_tags(s).to_list() == one_pass
    assert one_pass[2] == {"tags": None, "malformed": True, "unicode": False}
    assert one_pass[5]["tags"][0]["name"] == "café" and one_pass[5]["unicode"]
    assert one_pass[1]["tags"][0]["accuracy"] == 0.5


def test_failed_clean_leaves_previous_output_and_no_spool(image_raw, tmp_path):
    """A clean that dies mid-partition keeps the last good output and leaves no partial or spooled file."""
    from openverse_dataset.layout import DataLayout
    from openverse_dataset.parquet import write_batches
    from openverse_dataset.transform.partition import clean_partition

    flickr = image_raw.filter(pl.col("provider") == "flickr").sort("identifier")
    layout = DataLayout(tmp_path)
    write_batches(
        layout.raw_dir("image", "flickr"), IMAGE.raw_schema, flickr.to_arrow().cast(IMAGE.raw_schema).to_batches()
    )
    clean_partition(layout, IMAGE, "flickr", batch_rows=200)
    out = layout.clean_dir("image", "flickr")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")}
    assert len({p.parent for p in before}) > 1  # several license folders were spooled and written

    def die(rows: int, seconds: float) -> None:
        if rows > 400:
            raise RuntimeError("killed mid-partition")

    with pytest.raises(RuntimeError, match="killed"):
        clean_partition(layout, IMAGE, "flickr", batch_rows=200, progress=die)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")} == before
    # the swap lock file stays by design (it holds no data); anything else would be a leftover
    leftovers = [p for p in (tmp_path / ".staging").rglob("*") if p.is_file() and p.name != ".swap.lock"]
    assert leftovers == []
    again = clean_partition(layout, IMAGE, "flickr", batch_rows=200)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.parquet")} == before
    assert again.kept == sum(len(pl.read_parquet(out / p)) for p in before)


def test_prefetched_reader_keeps_order_and_raises_its_errors():
    from openverse_dataset.transform.partition import _prefetched

    assert list(_prefetched(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise OSError("corrupt raw shard")

    got = []
    with pytest.raises(OSError, match="corrupt raw shard"):
        for item in _prefetched(broken()):
            got.append(item)
    assert got == [1]
    # A consumer that stops early never leaves the reader blocked: neither on an item nor on the end marker
    # (with [1, 2] the reader has put 2 and waits to put the end when the consumer stops).
    import threading
    import time

    for items in (range(1000), [1, 2]):
        early = _prefetched(iter(items))
        assert next(early) == items[0]
        time.sleep(0.3)
        closer = threading.Thread(target=early.close, daemon=True)
        closer.start()
        closer.join(timeout=5)
        assert not closer.is_alive(), f"closing the reader hung with {len(items)} items"


def test_the_incremental_duplicate_check_finds_what_the_whole_partition_check_finds(image_raw, tmp_path):
    """An incremental clean groups only rows whose foreign_identifier is among the rows cleaned now: the rows kept
    before held no duplicate, so every duplicate group holds one of them. Twins arriving with a smaller and a
    larger identifier than the kept row give the same files, rejects and counts as the whole-partition check."""
    import copy
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from openverse_dataset.layout import DataLayout
    from openverse_dataset.parquet import ORDER_KEY, ShardWriter, write_batches
    from openverse_dataset.transform.partition import (
        _drop_duplicates,
        clean_partition,
        clean_schema,
        license_folder,
        reject_schema,
    )

    flickr = image_raw.filter(pl.col("provider") == "flickr")
    layout = DataLayout(tmp_path)
    write_batches(
        layout.raw_dir("image", "flickr"), IMAGE.raw_schema, flickr.to_arrow().cast(IMAGE.raw_schema).to_batches()
    )
    before = clean_partition(layout, IMAGE, "flickr")
    assert before.rejected["duplicate"] == 0
    kept = pl.read_parquet(layout.clean_dir("image", "flickr") / "*" / "*.parquet").sort("identifier")
    twins = kept.head(2).with_columns(
        pl.Series("identifier", ["00000000-0000-0000-0000-000000000000", "ffffffff-0000-0000-0000-000000000000"])
    )
    # The twins' raw rows (duplicate rejects are projected from them) join the raw partition.
    raw_twins = flickr.join(
        kept.head(2).select("identifier", "foreign_identifier"), on=["identifier", "foreign_identifier"]
    )
    raw_twins = raw_twins.with_columns(twins["identifier"].alias("identifier"))
    raw_dir = tmp_path / "raw2"
    write_batches(
        raw_dir, IMAGE.raw_schema, pl.concat([flickr, raw_twins]).to_arrow().cast(IMAGE.raw_schema).to_batches()
    )
    raw_files = sorted(raw_dir.glob("part-*.parquet"))

    results = []
    for name, among in (("whole", None), ("incremental", twins["foreign_identifier"].to_arrow())):
        staging = tmp_path / name
        shutil.copytree(layout.clean_dir("image", "flickr"), staging)
        for (slug,), part in twins.partition_by("license", as_dict=True).items():
            extra = part.to_arrow().cast(clean_schema(IMAGE))
            pq.write_table(extra, staging / license_folder(slug) / "part-99999.parquet")
        result = copy.deepcopy(before)
        result.kept += twins.height
        dups: list[pa.Table] = []

        def new_writer(folder: str, root=None, staging=staging):
            return ShardWriter((root or staging) / folder, clean_schema(IMAGE), sorting=ORDER_KEY)

        _drop_duplicates(staging, result, dups, reject_schema(IMAGE), new_writer, raw_files, IMAGE, among)
        files = {p.relative_to(staging).as_posix(): p.read_bytes() for p in sorted(staging.rglob("*.parquet"))}
        results.append((files, pa.concat_tables(dups).to_pylist(), result.kept, dict(result.rejected)))
    whole, incremental = results
    assert whole == incremental
    # The first kept row gives way to its smaller twin; the larger twin gives way to the second kept row.
    assert whole[3]["duplicate"] == 2
    assert sorted(r["identifier"] for r in whole[1]) == [kept["identifier"][0], "ffffffff-0000-0000-0000-000000000000"]
