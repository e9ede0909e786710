"""S3 dumps against moto's standalone server on loopback, through boto3 and dagster-aws's S3Resource."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster_aws.s3 import S3Resource

from openverse_dataset.defs.dumps import s3_dump_asset
from openverse_dataset.defs.resources import DataDirResource
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import AUDIO
from openverse_dataset.parquet import sha256_file
from openverse_dataset.publish.s3 import dump_files, upload_dump

BUCKET = "openverse-dumps"
MB = 1024 * 1024


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=moto_url)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_request_payment(Bucket=BUCKET, RequestPaymentConfiguration={"Payer": "Requester"})
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return client


def write_shard(path: Path, rows: int, payload_bytes: int = 16, prefix: str = "id") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"identifier": [f"{prefix}-{i}" for i in range(rows)], "blob": [os.urandom(payload_bytes) for _ in range(rows)]}
    )
    pq.write_table(table, path, compression="none")


def fake_data(root: Path) -> DataLayout:
    layout = DataLayout(root)
    write_shard(layout.raw_dir("audio", "jamendo") / "part-00000.parquet", 10)
    big = layout.raw_dir("audio", "jamendo") / "part-00001.parquet"
    write_shard(big, 6 * 64, payload_bytes=16 * 1024, prefix="big")  # ~6 MB
    write_shard(layout.clean_dir("audio", "jamendo") / "by-sa" / "part-00000.parquet", 7)
    write_shard(layout.raw_dir("audio", "../odd") / "part-00000.parquet", 3)
    tk = layout.takedowns_file("audio")
    tk.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"identifier": ["id-2", "elsewhere"], "reason": ["taken_down", "mature"]}), tk)
    pf = layout.providers_file("audio")
    pf.parent.mkdir(parents=True, exist_ok=True)
    pf.write_text(json.dumps({"providers": ["jamendo", "../odd"]}))
    return layout


def test_upload_skip_unchanged_multipart_and_manifest(s3, tmp_path: Path):
    layout = fake_data(tmp_path)
    files = dump_files(layout, "audio", ["jamendo", "../odd"])
    assert [f.key for f in files] == [
        "raw/jamendo/part-00000.parquet",
        "raw/jamendo/part-00001.parquet",
        "clean/by-sa/jamendo/part-00000.parquet",
        "raw/%2E.%2Fodd/part-00000.parquet",
    ]
    first = upload_dump(s3, BUCKET, "dumps/v1", "audio", files, multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    assert len(first.uploaded) == 4 and not first.skipped
    assert first.multipart == ["dumps/v1/audio/raw/jamendo/part-00001.parquet"]
    big = s3.head_object(Bucket=BUCKET, Key=first.multipart[0])
    assert big["ETag"].strip('"').endswith("-2")  # two parts: a multipart upload
    # consumers read with RequestPayer=requester (the bucket is requester-pays)
    body = s3.get_object(Bucket=BUCKET, Key="dumps/v1/audio/manifest.json", RequestPayer="requester")["Body"].read()
    manifest = {m["path"]: m for m in json.loads(body)["files"]}
    for f in files:
        m = manifest[f.key]
        assert m["sha256"] == sha256_file(f.path) and m["bytes"] == f.path.stat().st_size
        assert m["rows"] == pq.read_metadata(f.path).num_rows
    assert manifest["raw/jamendo/part-00001.parquet"]["rows"] == 384
    # a taken-down work never leaves through the dump: the shard holding it is sent filtered
    sent = s3.get_object(Bucket=BUCKET, Key="dumps/v1/audio/raw/jamendo/part-00000.parquet")["Body"].read()
    (tmp_path / "sent.parquet").write_bytes(sent)
    ids = pq.read_table(tmp_path / "sent.parquet")["identifier"].to_pylist()
    assert "id-2" not in ids and len(ids) == 9 and manifest["raw/jamendo/part-00000.parquet"]["rows"] == 9
    assert files[1].path == layout.raw_dir("audio", "jamendo") / "part-00001.parquet"  # untouched shards as is
    data = s3.get_object(Bucket=BUCKET, Key="dumps/v1/audio/clean/by-sa/jamendo/part-00000.parquet")["Body"].read()
    assert data == files[2].path.read_bytes()

    again = upload_dump(s3, BUCKET, "dumps/v1", "audio", files, multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    assert not again.uploaded and len(again.skipped) == 4 and again.bytes_uploaded == 0

    write_shard(files[0].path, 11)  # one shard changes
    third = upload_dump(s3, BUCKET, "dumps/v1", "audio", files, multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    assert third.uploaded == ["dumps/v1/audio/raw/jamendo/part-00000.parquet"] and len(third.skipped) == 3
    assert third.deleted == []

    # a shard that is gone locally is removed from the bucket (it may hold works taken down since)
    fourth = upload_dump(s3, BUCKET, "dumps/v1", "audio", [f for f in files if f.key != files[1].key])
    assert fourth.deleted == ["dumps/v1/audio/raw/jamendo/part-00001.parquet"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="dumps/v1/audio/")["Contents"]}
    assert "dumps/v1/audio/raw/jamendo/part-00001.parquet" not in keys and len(keys) == 4


def test_s3_dump_asset_through_s3resource(s3, moto_url: str, tmp_path: Path, monkeypatch):
    layout = fake_data(tmp_path)
    monkeypatch.setenv("OPENVERSE_S3_BUCKET", BUCKET)
    monkeypatch.setenv("OPENVERSE_S3_PREFIX", "openverse")
    resources = {"data_dir": DataDirResource(path=str(layout.root)), "s3": S3Resource(endpoint_url=moto_url)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("audio_providers", ["jamendo", "../odd"])  # the provider set
        res = dg.materialize([s3_dump_asset(AUDIO)], resources=resources, instance=instance)
        assert res.success
        meta = res.asset_materializations_for_node("audio__s3_dump")[0].metadata
        assert meta["uploaded"].value == 4 and meta["skipped_unchanged"].value == 0
        assert meta["rows_raw"].value == 9 + 384 + 2 and meta["rows_clean"].value == 7
        res = dg.materialize([s3_dump_asset(AUDIO)], resources=resources, instance=instance)
        meta = res.asset_materializations_for_node("audio__s3_dump")[0].metadata
        assert meta["uploaded"].value == 0 and meta["skipped_unchanged"].value == 4
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="openverse/audio/")["Contents"]}
    assert "openverse/audio/manifest.json" in keys and len(keys) == 5
