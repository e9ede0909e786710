"""Shared wiring facts: asset keys, partitions, owners and the metadata helpers every stage uses."""

from collections.abc import Mapping

import dagster as dg
import pyarrow as pa

from openverse_dataset.media import COLUMN_DOCS, MEDIA_TYPES, MediaType

OWNERS = ["team:openverse"]
CATALOG_POOL = "catalog_db"  # serialises reads of the catalog database (limit set in dagster.yaml)
PUBLISH_POOL = "publish"  # one release at a time per target

PROVIDER_PARTITIONS: dict[str, dg.DynamicPartitionsDefinition] = {
    m: dg.DynamicPartitionsDefinition(name=f"{m}_providers") for m in MEDIA_TYPES
}


def key(media: MediaType | str, stage: str) -> dg.AssetKey:
    """`image/raw`, `audio/clean`, ...: one asset key prefix per media type."""
    return dg.AssetKey([media if isinstance(media, str) else media.name, stage])


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """A `dagster/column_schema` value with each column's meaning."""
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=COLUMN_DOCS.get(f.name)) for f in schema]
    )


def md_table(header: list[str], rows: list[list]) -> dg.MetadataValue:
    """A markdown table for the UI."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
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
