"""Raw dumps to a requester-pays S3 bucket, per media type: the second delivery channel besides the Hub.

Configured by `OPENVERSE_S3_BUCKET` / `OPENVERSE_S3_PREFIX`; credentials, region and endpoint come from the
standard AWS settings (`AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...) through
dagster-aws's `S3Resource`; the client is made with this project's timeouts and retries
(`publish.s3.client_config`: OPENVERSE_S3_TIMEOUT, OPENVERSE_S3_MAX_ATTEMPTS), which `S3Resource.get_client` lacks.
"""

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from openverse_dataset.defs.common import OWNERS, key, md_table
from openverse_dataset.defs.release import current_providers
from openverse_dataset.defs.resources import DataDirResource
from openverse_dataset.media import MEDIA_TYPES, MediaType
from openverse_dataset.publish.s3 import dump_files, make_client, upload_dump


class S3DumpConfig(dg.Config):
    """Where the dump goes (defaults from OPENVERSE_S3_BUCKET / OPENVERSE_S3_PREFIX)."""

    bucket: str = ""
    prefix: str = ""


def s3_client(s3: S3Resource):
    """The resource's client settings (region, endpoint, profile, credentials) with our timeouts and retries."""
    return make_client(
        region_name=s3.region_name,
        endpoint_url=s3.endpoint_url,
        profile_name=s3.profile_name,
        use_ssl=s3.use_ssl,
        verify=s3.verify,
        aws_access_key_id=s3.aws_access_key_id,
        aws_secret_access_key=s3.aws_secret_access_key,
        aws_session_token=s3.aws_session_token,
    )


def s3_dump_asset(media: MediaType) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(media, "s3_dump"),
        deps=[key(media, "raw"), key(media, "clean"), key(media, "providers"), key(media, "takedowns")],
        group_name=media.name,
        kinds={"s3", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            f"The {media.name} raw and cleaned Parquet shards of every provider in a requester-pays S3 bucket "
            "(OPENVERSE_S3_BUCKET/OPENVERSE_S3_PREFIX), with a manifest.json listing path, rows, bytes and "
            "sha256 per object. Objects whose sha256 is already there are skipped; big shards use multipart. "
            "For consumers who want every catalog row (raw, minus taken-down, deleted and sensitive works, which "
            "never leave the data directory) or the whole dump without the Hub."
        ),
    )
    def _dump(
        context: dg.AssetExecutionContext, config: S3DumpConfig, data_dir: DataDirResource, s3: S3Resource
    ) -> dg.MaterializeResult:
        bucket = config.bucket or os.environ.get("OPENVERSE_S3_BUCKET", "")
        prefix = config.prefix or os.environ.get("OPENVERSE_S3_PREFIX", "openverse")
        if not bucket:
            raise ValueError("set OPENVERSE_S3_BUCKET (and optionally OPENVERSE_S3_PREFIX) to dump to S3")
        files = dump_files(data_dir.layout, media.name, current_providers(context.instance, media))
        res = upload_dump(s3_client(s3), bucket, prefix, media.name, files)
        context.log.info(f"s3://{bucket}: {len(res.uploaded)} uploaded, {len(res.skipped)} unchanged")
        rows = {"raw": 0, "clean": 0}
        for m in res.manifest:
            rows[m["kind"]] += m["rows"]
        return dg.MaterializeResult(
            metadata={
                "manifest": dg.MetadataValue.url(f"s3://{bucket}/{res.manifest_key}"),
                "objects": len(files),
                "uploaded": len(res.uploaded),
                "skipped_unchanged": len(res.skipped),
                "deleted_stale": len(res.deleted),
                "multipart": len(res.multipart),
                "bytes_uploaded": res.bytes_uploaded,
                "bytes_total": res.bytes_total,
                "rows_raw": rows["raw"],
                "rows_clean": rows["clean"],
                "uploads": md_table(["key"], [[k] for k in res.uploaded[:100]] or [["(none)"]]),
            }
        )

    return _dump


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[s3_dump_asset(m) for m in MEDIA_TYPES.values()],
        resources={"s3": S3Resource(region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))},
        jobs=[
            dg.define_asset_job(
                f"{m}_s3_dump",
                selection=dg.AssetSelection.assets(key(m, "s3_dump")),
                description=f"Upload the {m} raw and cleaned shards and their manifest to the S3 bucket.",
            )
            for m in MEDIA_TYPES
        ],
    )
