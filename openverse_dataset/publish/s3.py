"""Raw and cleaned Parquet dumps to an S3 bucket (requester pays), with a manifest consumers can verify.

Layout under `s3://<bucket>/<prefix>/<media>/`: `raw/<provider>/part-*.parquet` as extracted (every catalog row,
including ones the release leaves out, except works taken down, deleted or marked sensitive: those never leave
the data directory), `clean/<license>/<provider>/part-*.parquet` as published on the Hub, and
`manifest.json` listing every object with rows, bytes and sha256. Each object carries its sha256 as user metadata,
so an unchanged shard is skipped (one HEAD, no upload); big shards go up in multipart. The manifest is written
last, so a consumer who reads it sees only objects that are complete.

Every S3 call has a connect and read timeout (`OPENVERSE_S3_TIMEOUT`) and a bounded number of attempts
(`OPENVERSE_S3_MAX_ATTEMPTS`, botocore's standard retry mode: the only retry layer), so a stalled endpoint fails
the dump in about attempts x timeout (plus backoff) with one line naming the fix, never hangs it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from openverse_dataset import licenses as lic
from openverse_dataset.layout import DataLayout, segment
from openverse_dataset.parquet import ShardWriter, writer_options
from openverse_dataset.shards import ShardHashes

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024
SHA_META = "sha256"


DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_ATTEMPTS = 3


class S3DumpError(RuntimeError):
    """The bucket did not answer in time or could not be reached; the message is one line with the fix."""


def _env_number(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        number = float(raw)
    except ValueError:
        raise S3DumpError(f"{name} must be a number, got {raw[:40]!r}") from None
    if number < minimum:
        raise S3DumpError(f"{name} must be at least {minimum:g}, got {raw[:40]!r}")
    return number


def client_config() -> Config:
    """Timeouts and retries for every S3 call, from the settings.

    botocore's defaults are 60 s connect and read timeouts with 5 legacy-mode attempts, and dagster-aws's
    `S3Resource` sets only the attempts: a bucket endpoint that accepts and never answers held a dump for minutes
    per call. Here both are explicit, in the standard retry mode (throttling and transient errors, with backoff).
    """
    timeout = _env_number("OPENVERSE_S3_TIMEOUT", DEFAULT_TIMEOUT_S, minimum=0.1)
    attempts = int(_env_number("OPENVERSE_S3_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, minimum=1))
    return Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},  # max_attempts would count retries only
    )


def make_client(
    *,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    profile_name: str | None = None,
    use_ssl: bool = True,
    verify: bool | str | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
):
    """An S3 client with `client_config()`; credentials, region and endpoint as boto3 resolves them (AWS_*)."""
    session = boto3.session.Session(profile_name=profile_name)
    return session.client(
        "s3",
        region_name=region_name,
        endpoint_url=endpoint_url,
        use_ssl=use_ssl,
        verify=verify,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        aws_session_token=aws_session_token,
        config=client_config(),
    )


@dataclass(frozen=True)
class DumpFile:
    """One shard to dump: its key under the media prefix, local path, and what it is."""

    key: str
    path: Path
    kind: str  # raw | clean
    provider: str


@dataclass
class DumpResult:
    manifest_key: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    bytes_total: int = 0
    multipart: list[str] = field(default_factory=list)
    manifest: list[dict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _takedown_ids(layout: DataLayout, media: str) -> pa.Array:
    path = layout.takedowns_file(media)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: materialize {media}/takedowns before dumping raw shards")
    return pq.read_table(path, columns=["identifier"])["identifier"].combine_chunks()


def without_takedowns(shard: Path, takedowns: pa.Array, out_dir: Path) -> Path:
    """The shard itself when no row is taken down, else a filtered copy (same writer, deterministic)."""
    ids = pq.read_table(shard, columns=["identifier"])["identifier"]
    if not pc.any(pc.is_in(ids, value_set=takedowns)).as_py():
        return shard
    pf = pq.ParquetFile(shard)
    staging = out_dir / f".{shard.stem}"
    shutil.rmtree(staging, ignore_errors=True)
    writer = ShardWriter(staging, pf.schema_arrow, shard_bytes=2**62)
    for batch in pf.iter_batches(batch_size=50_000):
        writer.write(batch.filter(pc.invert(pc.is_in(batch["identifier"], value_set=takedowns))))
    writer.write(pf.schema_arrow.empty_table())
    shards = writer.close()
    target = out_dir / shard.name
    if shards:
        os.replace(staging / shards[0].name, target)
    else:
        pq.write_table(pf.schema_arrow.empty_table(), target, **writer_options(pf.schema_arrow))
    shutil.rmtree(staging, ignore_errors=True)
    return target


def dump_files(layout: DataLayout, media: str, providers: list[str]) -> list[DumpFile]:
    """Every raw and cleaned shard of `providers`, with its key (provider names as safe path segments).

    Raw shards holding a work in the takedown snapshot are replaced by filtered copies under
    `dumps/<media>/<provider>/`: a takedown must not leave through the dump either.
    """
    out: list[DumpFile] = []
    takedowns = _takedown_ids(layout, media)
    for p in providers:
        filtered_dir = layout.dump_dir(media, p)
        for shard in sorted(layout.raw_dir(media, p).glob("part-*.parquet")):
            filtered_dir.mkdir(parents=True, exist_ok=True)
            out.append(
                DumpFile(f"raw/{segment(p)}/{shard.name}", without_takedowns(shard, takedowns, filtered_dir), "raw", p)
            )
        for shard in sorted(layout.clean_dir(media, p).glob("*/part-*.parquet")):
            folder = lic.LICENSES[lic.slug_for_folder(shard.parent.name)].config_name
            out.append(DumpFile(f"clean/{folder}/{segment(p)}/{shard.name}", shard, "clean", p))
    return out


def _remote_sha(client, bucket: str, key: str) -> str | None:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get(SHA_META)


def upload_dump(
    client,
    bucket: str,
    prefix: str,
    media: str,
    files: list[DumpFile],
    *,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    multipart_chunk: int = MULTIPART_CHUNK,
) -> DumpResult:
    """Upload what changed (by sha256), then the manifest; returns what was sent and skipped.

    An endpoint that does not answer (timeouts, refused connections, after the client's own retries) raises
    `S3DumpError` with one line; S3's own refusals (`ClientError`: no such bucket, access denied) pass through.
    """
    try:
        return _upload_dump(
            client,
            bucket,
            prefix,
            media,
            files,
            multipart_threshold=multipart_threshold,
            multipart_chunk=multipart_chunk,
        )
    except BotoCoreError as exc:
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "?")
        raise S3DumpError(
            f"S3 dump to s3://{bucket} at {endpoint} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; "
            "check AWS_ENDPOINT_URL and the network, or raise OPENVERSE_S3_TIMEOUT / OPENVERSE_S3_MAX_ATTEMPTS"
        ) from None


def _upload_dump(
    client,
    bucket: str,
    prefix: str,
    media: str,
    files: list[DumpFile],
    *,
    multipart_threshold: int,
    multipart_chunk: int,
) -> DumpResult:
    base = "/".join(x for x in (prefix.strip("/"), media) if x)
    result = DumpResult(manifest_key=f"{base}/manifest.json")
    config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunk)
    hashes = ShardHashes()  # recorded when each shard was written: an unchanged shard is not read again
    for f in files:
        key = f"{base}/{f.key}"
        sha = hashes.sha256(f.path)
        size = f.path.stat().st_size
        result.bytes_total += size
        result.manifest.append(
            {
                "path": f.key,
                "kind": f.kind,
                "provider": f.provider,
                "rows": pq.read_metadata(f.path).num_rows,
                "bytes": size,
                "sha256": sha,
            }
        )
        if _remote_sha(client, bucket, key) == sha:
            result.skipped.append(key)
            continue
        client.upload_file(
            str(f.path),
            bucket,
            key,
            ExtraArgs={"Metadata": {SHA_META: sha}, "ContentType": "application/vnd.apache.parquet"},
            Config=config,
        )
        result.uploaded.append(key)
        result.bytes_uploaded += size
        if size >= multipart_threshold:
            result.multipart.append(key)
    manifest = json.dumps({"media": media, "files": result.manifest}, indent=1, sort_keys=True).encode()
    client.put_object(Bucket=bucket, Key=result.manifest_key, Body=manifest, ContentType="application/json")
    # Objects no longer in the manifest (a provider that shrank, a shard that vanished) could hold works taken
    # down since: delete them once the new manifest is in place.
    current = {f"{base}/{f.key}" for f in files}
    for kind in ("raw", "clean"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{base}/{kind}/"):
            for obj in page.get("Contents", []):
                if obj["Key"] not in current:
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
                    result.deleted.append(obj["Key"])
    return result


def result_dict(result: DumpResult) -> dict:
    return asdict(result)
