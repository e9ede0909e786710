"""Per-provider freshness as an asset check on each `raw` asset: which provider partitions are stale, and by how much.

The stale-provider sensor reports it (it already holds the catalog's watermarks each tick), so the UI's check
tab lists stale providers without a run; it can also be executed from the UI. The release's own freshness stays
asset-level (`FreshnessPolicy` on `release`).
"""

from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg

from openverse_dataset.catalog.prepare import MissingIndexes
from openverse_dataset.catalog.watermarks import Watermark, catalog_watermarks
from openverse_dataset.defs.common import PROVIDER_PARTITIONS, key, md_table, recorded_watermarks
from openverse_dataset.defs.resources import CatalogResource
from openverse_dataset.defs.status import last_refresh_times
from openverse_dataset.freshness import FreshnessReport, assess, grace_period, human
from openverse_dataset.media import MEDIA_TYPES, MediaType

CHECK_NAME = "providers_fresh"


def freshness_report(instance: dg.DagsterInstance, media: MediaType, marks: Mapping[str, Watermark]) -> FreshnessReport:
    partitions = instance.get_dynamic_partitions(PROVIDER_PARTITIONS[media.name].name)
    return assess(
        {p: w.token for p, w in marks.items()},
        recorded_watermarks(instance, media),
        last_refresh_times(instance, media, list(partitions)),
        partitions,
        datetime.now(UTC),
        grace_period(),
    )


def report_fields(report: FreshnessReport) -> dict:
    """passed / severity / metadata of the check, shared by the check function and the sensor's report."""
    stale = report.stale
    return {
        "passed": not stale,
        "severity": dg.AssetCheckSeverity.WARN,
        "metadata": {
            "stale_providers": ", ".join(stale) or "(none)",
            "stale": len(stale),
            "behind": len(report.behind),
            "providers": len(report.providers),
            "stale_after": human(report.grace),
            "by_provider": md_table(
                ["provider", "state", "last successful refresh", "age", "behind the catalog by"],
                report.rows() or [["(none)", "", "", "", ""]],
            ),
        },
    }


def evaluation(media: MediaType, report: FreshnessReport) -> dg.AssetCheckEvaluation:
    """The check result as a runless event (what the sensor reports)."""
    fields = report_fields(report)
    return dg.AssetCheckEvaluation(
        asset_key=key(media, "raw"),
        check_name=CHECK_NAME,
        passed=fields["passed"],
        severity=fields["severity"],
        metadata=fields["metadata"],
    )


def freshness_check(media: MediaType) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key(media, "raw"),
        name=CHECK_NAME,
        description="Per provider partition: the age of its last successful refresh and whether the catalog's "
        "watermark moved since (behind). Warns when a provider has been behind for longer than "
        "OPENVERSE_PROVIDER_STALE_AFTER_MINUTES (default 6 h). Reported by the stale-provider sensor.",
    )
    def _check(context: dg.AssetCheckExecutionContext, catalog: CatalogResource) -> dg.AssetCheckResult:
        try:
            marks = catalog_watermarks(catalog.catalog_url(), media)
        except MissingIndexes as exc:  # judging freshness would scan the catalog: say so, do not fail the run
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"not_judged": str(exc)}
            )
        return dg.AssetCheckResult(**report_fields(freshness_report(context.instance, media, marks)))

    return _check


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(asset_checks=[freshness_check(m) for m in MEDIA_TYPES.values()])
