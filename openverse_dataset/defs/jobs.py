"""Named jobs for the maintainers' common actions (visible in the UI; the CLI runs the same jobs)."""

import dagster as dg

from openverse_dataset.defs.common import PROVIDER_PARTITIONS, SLICE_PARTITIONS, key
from openverse_dataset.media import MEDIA_TYPES


def discover_job_name() -> str:
    return "discover_providers"


def refresh_job_name(media: str) -> str:
    return f"{media}_refresh_provider"


def publish_job_name(media: str) -> str:
    return f"{media}_publish_release"


def refresh_slice_job_name(media: str) -> str:
    return f"{media}_refresh_slice"


def refresh_and_publish_job_name(media: str) -> str:
    return f"{media}_refresh_provider_and_publish"


def _build_jobs() -> list:
    out = [
        dg.define_asset_job(
            discover_job_name(),
            selection=dg.AssetSelection.assets(*[key(m, s) for m in MEDIA_TYPES for s in ("providers", "takedowns")]),
            description="Discover providers (new partitions) and snapshot takedowns for every media type.",
        )
    ]
    for m in MEDIA_TYPES:
        out.append(
            dg.define_asset_job(
                refresh_job_name(m),
                selection=dg.AssetSelection.assets(key(m, "raw"), key(m, "clean"), key(m, "rejects")),
                partitions_def=PROVIDER_PARTITIONS[m],
                description=f"Refresh one {m} provider: extract from the catalog, then clean (and rejects).",
            )
        )
        out.append(
            dg.define_asset_job(
                refresh_slice_job_name(m),
                selection=dg.AssetSelection.assets(key(m, "slice")),
                partitions_def=SLICE_PARTITIONS[m],
                description=f"Refresh one slice of a big {m} provider (extract and clean its identifier range); "
                "the provider's refresh run then assembles its slices.",
            )
        )
        out.append(
            dg.define_asset_job(
                publish_job_name(m),
                selection=dg.AssetSelection.assets(key(m, "subsets"), key(m, "card"), key(m, "release")),
                description=f"Build the {m} license subsets and card from cleaned data and publish the release.",
            )
        )
        # Partitioned and unpartitioned assets in one job: the run takes one provider key; raw/clean run for
        # that provider, subsets/card/release (unpartitioned) then span every provider's current cleaned files,
        # and the blocking checks on subsets still stop the card and release.
        out.append(
            dg.define_asset_job(
                refresh_and_publish_job_name(m),
                selection=dg.AssetSelection.assets(
                    *[key(m, s) for s in ("raw", "clean", "rejects", "subsets", "card", "release")]
                ),
                partitions_def=PROVIDER_PARTITIONS[m],
                description=f"Refresh one {m} provider end to end: extract, clean, recount the subsets, rewrite the "
                "card and publish the release (which holds every provider's current cleaned files).",
            )
        )
    return out


# Built once: sensors target these same objects (two definitions of one job name would conflict).
JOBS = {j.name: j for j in _build_jobs()}


def jobs() -> list:
    return list(JOBS.values())


@dg.definitions
def defs() -> dg.Definitions:
    # Every chain is linear (raw -> clean, subsets -> card -> release, each with its checks), so a step per
    # process buys no parallelism and costs an interpreter start per step (7 in a publish run): runs execute
    # their steps in one process. Parallelism comes from runs (one per provider partition), capped by the
    # instance's run queue and pools.
    return dg.Definitions(jobs=jobs(), executor=dg.in_process_executor)
