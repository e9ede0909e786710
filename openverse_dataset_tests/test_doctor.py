"""`openverse-dataset doctor` on production-shaped systems: a catalog and an API database from Openverse's own
DDL, the fake Hub served on loopback, moto's S3 server (plus the request-payment endpoint it lacks, s3payer.py).
Healthy, every row is ok and the exit code 0; broken (an index missing, a table missing, a bad token, a bucket
that is not requester-pays), each broken row fails with its fix and the exit code is 1. Run through the real CLI
in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from openverse_dataset.catalog.prepare import prepare_catalog
from openverse_dataset_tests.fakehub import FakeHub, serve
from openverse_dataset_tests.s3payer import with_request_payment

pytestmark = pytest.mark.postgres

CLI = Path(sys.executable).parent / "openverse-dataset"
TOKEN = "hf_doctor_test_token"
ROWS = (
    "data dir",
    "free space",
    "catalog",
    "catalog tables",
    "catalog indexes",
    "API database",
    "API tables",
    "content_provider",
    "publish target",
    "S3 bucket",
)


def _doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "doctor"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _rows(stdout: str) -> dict[str, str]:
    """check name -> status, read from the printed table (rows start with the check's name)."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 2 and cells[0] in ROWS:
            out[cells[0]] = cells[1]
    return out


@pytest.fixture
def s3_url(moto_url):
    with with_request_payment(moto_url) as url:
        yield url


@pytest.fixture
def system(upstream_catalog, s3_url, tmp_path):
    """Environment of a healthy deployment: real-DDL catalog with the demo rows and the prepared indexes, the
    fake Hub with a write token of an `openverse` member, a requester-pays bucket."""
    upstream_catalog.seed_demo()
    prepare_catalog(upstream_catalog.catalog_url)
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_url, **keys)
    bucket = f"doctor-{tmp_path.name[-20:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_request_payment(Bucket=bucket, RequestPaymentConfiguration={"Payer": "Requester"})
    hub = FakeHub(token=TOKEN, user="maintainer", orgs={"openverse": "write"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENVERSE_", "DAGSTER_", "HF_", "AWS_"))}
    env.update(
        OPENVERSE_CATALOG_URL=upstream_catalog.catalog_url,
        OPENVERSE_API_DB_URL=upstream_catalog.api_url,
        OPENVERSE_DATA_DIR=str(tmp_path / "data"),
        OPENVERSE_PUBLISH_TARGET="hf:openverse",
        OPENVERSE_S3_BUCKET=bucket,
        HF_TOKEN=TOKEN,
        HF_HOME=str(tmp_path / "hf-home"),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_url,
        COLUMNS="250",
    )
    with serve(hub) as endpoint:
        env["HF_ENDPOINT"] = endpoint
        yield {"env": env, "catalog": upstream_catalog, "s3": s3, "bucket": bucket, "hub": hub, "cwd": tmp_path}


def test_doctor_on_a_healthy_deployment(system):
    r = _doctor(system["env"], system["cwd"])
    rows = _rows(r.stdout)
    assert rows == dict.fromkeys(ROWS, "ok"), r.stdout + r.stderr
    assert r.returncode == 0
    assert TOKEN not in r.stdout + r.stderr
    requests = system["hub"].requests
    assert "whoami-v2" in {q["url"].rsplit("/", 1)[-1] for q in requests}
    assert {q["method"] for q in requests} == {"GET"}  # the doctor reads, never writes


def test_doctor_on_a_broken_deployment(system):
    cat = system["catalog"]
    cat.execute("DROP INDEX audio_provider_updated_on_idx")  # what prepare-catalog created
    cat.execute("DROP TABLE api_matureimage", db="api")
    system["s3"].put_bucket_request_payment(
        Bucket=system["bucket"], RequestPaymentConfiguration={"Payer": "BucketOwner"}
    )
    env = dict(system["env"], HF_TOKEN="hf_expired_token")
    r = _doctor(env, system["cwd"])
    rows = _rows(r.stdout)
    assert r.returncode == 1, r.stdout + r.stderr
    broken = {k for k, v in rows.items() if v == "fail"}
    assert broken == {"catalog indexes", "API tables", "publish target", "S3 bucket"}, r.stdout
    text = " ".join(r.stdout.split())
    assert "openverse-dataset prepare-catalog" in text
    assert "api_matureimage" in text and "OPENVERSE_API_DB_URL" in text
    assert "HTTP 401" in text and "set HF_TOKEN" in text
    assert "Payer=Requester" in text
    assert "hf_expired_token" not in r.stdout + r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1  # the summary line


def test_doctor_on_a_catalog_without_tables(system, pg_url):
    env = dict(system["env"], OPENVERSE_CATALOG_URL=pg_url)
    r = _doctor(env, system["cwd"])
    rows = _rows(r.stdout)
    assert r.returncode == 1
    assert rows["catalog"] == "ok" and rows["catalog tables"] == "fail"
    assert "openverse-dataset seed-catalog --url" in " ".join(r.stdout.split())
