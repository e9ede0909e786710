"""Shared wiring facts: asset keys, partitions, owners and the metadata helpers every stage uses."""

from collections.abc import Mapping

import dagster as dg
import pyarrow as pa

from openverse_dataset.catalog.slices import provider_of_key
from openverse_dataset.defs.tags import WATERMARK_TAG
from openverse_dataset.media import COLUMN_DOCS, MEDIA_TYPES, MediaType

OWNERS = ["team:openverse"]
CATALOG_POOL = "catalog_db"  # serialises reads of the catalog database (limit set in dagster.yaml)
PUBLISH_POOL = "publish"  # one release at a time per target

# Like `eager()` without "no dependency partition missing": a provider never refreshed, or whose first refresh
# failed, must not stop the release of every other provider (eager() would wait for it forever). Still waits
# while a dependency is being refreshed, so a release does not race the refresh it follows.
READY = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("ready (missing provider partitions do not block)")

PROVIDER_PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    m: dg.DynamicPartitionsDefinition(name=f"{m}_providers") for m in MEDIA_TYPES
}
# The slices of big providers (`flickr/3of8`), one partition each: registered by the provider's raw run from its
# slice plan, refreshed as runs of their own by the stale-provider sensor (defs/slices.py).
SLICE_PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    m: dg.DynamicPartitionsDefinition(name=f"{m}_slices") for m in MEDIA_TYPES
}


def sync_slice_partitions(instance: dg.DagsterInstance, media: MediaType, provider: str, units: list | None) -> None:
    """Make the provider's slice partitions (`<media>_slices`) those of its current plan: add new, drop old."""
    pdef = SLICE_PARTITIONS[media.name]
    have = set(instance.get_dynamic_partitions(pdef.name))
    want = {s.key for s in units or []}
    add = sorted(want - have)
    if add:
        instance.add_dynamic_partitions(pdef.name, add)
    for k in sorted(k for k in have - want if provider_of_key(k) == provider):
        instance.delete_dynamic_partition(pdef.name, k)


def key(media: MediaType | str, stage: str) -> dg.AssetKey:
    """`image/raw`, `audio/clean`, ...: one asset key prefix per media type."""
    return dg.AssetKey([media if isinstance(media, str) else media.name, stage])


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """A `dagster/column_schema` value with each column's meaning."""
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=COLUMN_DOCS.get(f.name)) for f in schema]
    )


def _cell(value: object) -> str:
    # The UI renders raw HTML inside markdown: `api_deleted<media>` would lose `<media>` as an unknown tag.
    return str(value).replace("<", "&lt;").replace(">", "&gt;")


def md_table(header: list[str], rows: list[list]) -> dg.MetadataValue:
    """A markdown table for the UI."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counts: Mapping[str, int], label: str, docs: Mapping[str, str] | None = None) -> dg.MetadataValue:
    """Markdown table of counts, largest first (with a meaning column when `docs` is given)."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if docs is None:
        return md_table([label, "rows"], [[k, f"{v:,}"] for k, v in items] or [["(none)", 0]])
    return md_table(
        [label, "rows", "meaning"], [[k, f"{v:,}", docs.get(k, "")] for k, v in items] or [["(none)", 0, ""]]
    )


def preview_md(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    """A few rows as a markdown table (long values shortened)."""

    def short(v) -> str:
        s = "" if v is None else str(v)
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= 60 else s[:57] + "..."

    return md_table(columns, [[short(r.get(c)) for c in columns] for r in rows] or [["(no rows)"] * len(columns)])


def card_md(text: str) -> dg.MetadataValue:
    """The card as the UI should render it: YAML front matter in a code block, then the markdown body.

    Rendered as plain markdown, the front matter would turn into a jumble of headings and lists; the Hub shows
    it as a table of fields, so the UI shows it verbatim.
    """
    if text.startswith("---\n"):
        front, sep, body = text[4:].partition("\n---\n")
        if sep:
            return dg.MetadataValue.md(f"```yaml\n{front}\n```\n\n{body}")
    return dg.MetadataValue.md(text)


def latest_partition_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, Mapping[str, dg.MetadataValue]]:
    """Metadata of the latest materialization of each partition (two queries, whatever the partition count).

    Lets an unpartitioned asset summarise what its partitioned neighbours last reported, per provider.
    """
    ids = instance.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    out = {}
    for rec in records:
        mat = rec.asset_materialization
        if mat is not None and mat.partition is not None:
            out[mat.partition] = mat.metadata
    return out


def metadata_int(metadata: Mapping[str, dg.MetadataValue] | None, name: str) -> int | None:
    """An integer metadata value, or None when the entry is absent."""
    value = (metadata or {}).get(name)
    return None if value is None else int(value.value)


def recorded_watermarks(instance: dg.DagsterInstance, media: MediaType) -> dict[str, str]:
    """provider -> watermark token of its latest raw materialization (one event-log query)."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key(media, "raw"), dg.DagsterEventType.ASSET_MATERIALIZATION, [WATERMARK_TAG]
    )
    return {p: t[WATERMARK_TAG] for p, t in tags.items() if WATERMARK_TAG in t}
