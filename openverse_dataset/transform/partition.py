"""Run the cleaning rules over one provider partition's files, streaming, in bounded memory.

scan raw shards -> `clean_lazy` -> batches from polars' streaming engine -> kept rows split by license into
`clean/<media>/<provider>/<license>/part-*.parquet`, rejects into `rejects/<media>/<provider>/`. Both folders
are swapped into place only when complete.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from openverse_dataset import licenses as lic
from openverse_dataset.layout import DataLayout, replace_dir
from openverse_dataset.media import MediaType
from openverse_dataset.parquet import DEFAULT_ROW_GROUP_ROWS, DEFAULT_SHARD_BYTES, ShardInfo, ShardWriter
from openverse_dataset.transform.clean import (
    FIX_COLUMNS,
    REJECT_COLUMNS,
    clean_lazy,
    output_columns,
    reject_frame,
)

BATCH_ROWS = 50_000
# Plain `string`/`list` Arrow types (not large_*): what the Hub's viewer and most readers expect.
ARROW_COMPAT = pl.CompatLevel.oldest()
TAKEDOWN_SCHEMA = {"identifier": pl.String, "reason": pl.String}


@dataclass
class CleanResult:
    """What the clean step kept, rejected (by reason) and repaired (by rule) for one partition."""

    media: str
    provider: str
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)
    tags_dropped: int = 0
    by_license: Counter = field(default_factory=Counter)
    shards: dict[str, list[ShardInfo]] = field(default_factory=dict)
    preview: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for shards in self.shards.values() for s in shards)


def clean_schema(media: MediaType) -> pa.Schema:
    """Arrow schema of cleaned files (from the polars output types, so writers and readers agree)."""
    raw = pl.DataFrame(schema=pl.Schema(media.raw_schema))
    out = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA)).select(output_columns(media))
    return out.collect().to_arrow(compat_level=ARROW_COMPAT).schema


def reject_schema(media: MediaType) -> pa.Schema:
    raw = pl.DataFrame(schema=pl.Schema(media.raw_schema))
    out = clean_lazy(raw.lazy(), media, pl.LazyFrame(schema=TAKEDOWN_SCHEMA))
    return reject_frame(out.collect()).to_arrow(compat_level=ARROW_COMPAT).schema


def license_folder(slug: str) -> str:
    """Folder of a license inside a clean partition and in the release (`data/<license>/<provider>/`)."""
    return lic.LICENSES[slug].config_name


def clean_partition(
    layout: DataLayout,
    media: MediaType,
    provider: str,
    *,
    takedowns: Path | None = None,
    batch_rows: int = BATCH_ROWS,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    progress=None,
) -> CleanResult:
    """Clean one provider partition from its raw shards; returns counts for metadata and logs."""
    start = time.perf_counter()
    result = CleanResult(media=media.name, provider=provider)
    raw_files = sorted(layout.raw_dir(media.name, provider).glob("part-*.parquet"))
    cols = output_columns(media)
    schema = clean_schema(media)
    rej_schema = reject_schema(media)
    if raw_files:
        raw = pl.scan_parquet(raw_files, schema=pl.Schema(media.raw_schema))
    else:
        raw = pl.LazyFrame(schema=pl.Schema(media.raw_schema))
    if takedowns is not None and takedowns.exists():
        tk = pl.scan_parquet(takedowns)
    else:
        tk = pl.LazyFrame(schema=TAKEDOWN_SCHEMA)
    plan = clean_lazy(raw, media, tk)

    clean_staging = layout.staging_dir(f"clean-{media.name}")
    rej_staging = layout.staging_dir(f"rejects-{media.name}")
    clean_staging.mkdir(parents=True)
    rej_staging.mkdir(parents=True)
    writers: dict[str, ShardWriter] = {}
    rejects = ShardWriter(rej_staging, rej_schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows)
    try:
        for batch in plan.collect_batches(chunk_size=batch_rows, maintain_order=True):
            result.rows_in += batch.height
            fixes = batch.select([pl.col(c).sum() for c in FIX_COLUMNS] + [pl.col("_tags_dropped").sum()]).row(0)
            for name, n in zip([*FIX_COLUMNS, "_tags_dropped"], fixes, strict=True):
                if name == "_tags_dropped":
                    result.tags_dropped += int(n or 0)
                elif n:
                    result.repairs[name.removeprefix("_fix_")] += int(n)
            kept = batch.filter(pl.col("_reject").is_null()).select(cols)
            bad = batch.filter(pl.col("_reject").is_not_null())
            if bad.height:
                result.rejected.update(dict(bad["_reject"].value_counts().iter_rows()))
                rejects.write(
                    reject_frame(bad).select(REJECT_COLUMNS).to_arrow(compat_level=ARROW_COMPAT).cast(rej_schema)
                )
            if kept.height:
                result.kept += kept.height
                if len(result.preview) < 5:
                    result.preview += kept.head(5 - len(result.preview)).to_dicts()
                for (slug,), part in kept.partition_by("license", as_dict=True, maintain_order=True).items():
                    folder = license_folder(slug)
                    if folder not in writers:
                        writers[folder] = ShardWriter(
                            clean_staging / folder, schema, shard_bytes=shard_bytes, row_group_rows=row_group_rows
                        )
                    writers[folder].write(part.to_arrow(compat_level=ARROW_COMPAT).cast(schema))
                    result.by_license[slug] += part.height
            if progress:
                progress(result.rows_in, time.perf_counter() - start)
        for folder, w in sorted(writers.items()):
            result.shards[folder] = w.close()
        rejects.close()
        replace_dir(clean_staging, layout.clean_dir(media.name, provider))
        replace_dir(rej_staging, layout.rejects_dir(media.name, provider))
    except BaseException:
        for w in [*writers.values(), rejects]:
            w.abort()
        shutil.rmtree(clean_staging, ignore_errors=True)
        shutil.rmtree(rej_staging, ignore_errors=True)
        raise
    result.seconds = time.perf_counter() - start
    return result
