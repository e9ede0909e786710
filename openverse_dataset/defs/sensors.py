"""Sensors: discover new providers in the catalog and start their refresh without anyone clicking."""

import dagster as dg

from openverse_dataset.catalog.providers import discover_providers
from openverse_dataset.defs.common import PROVIDER_PARTITIONS
from openverse_dataset.defs.jobs import refresh_job_name
from openverse_dataset.defs.resources import CatalogResource
from openverse_dataset.media import MEDIA_TYPES, MediaType


def provider_sensor(media: MediaType) -> dg.SensorDefinition:
    pdef = PROVIDER_PARTITIONS[media.name]

    @dg.sensor(
        name=f"{media.name}_new_providers",
        job_name=refresh_job_name(media.name),
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Adds each new {media.name} provider found in the catalog as a partition and requests its "
        "refresh in the same tick (one cheap index scan per tick).",
    )
    def _sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
        found = discover_providers(catalog.catalog_url(), media)
        have = set(context.instance.get_dynamic_partitions(pdef.name))
        new = [p for p in found.providers if p not in have]
        if not new:
            return dg.SensorResult(skip_reason=f"no new providers among {len(found.providers)}")
        return dg.SensorResult(
            dynamic_partitions_requests=[pdef.build_add_request(new)],
            run_requests=[dg.RunRequest(partition_key=p, run_key=f"new-provider-{p}") for p in new],
        )

    return _sensor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[provider_sensor(m) for m in MEDIA_TYPES.values()])
