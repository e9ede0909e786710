"""What changed since the previous release: the removals file and the card's changelog.

Consumers must learn what was *removed* (takedowns, deletions), not only what was added, so every release
carries `removals.parquet`: the identifiers that were in the previous release and are not in this one (or that
left a config because their license changed), each with a reason class. The reason comes from this run's
rejects (`rejects/<media>/<provider>/`) and the takedown snapshot, which say why each identifier was not
published.

The previous release is known from an *index* (identifier, provider, license, row hash) saved after each
successful publish, per target, under `$DATA_DIR/releases/<media>/`. A local target without an index is indexed
from its own files; a Hub target without one (first publish from this machine) gets an empty removals file
and a changelog that says the comparison was not possible.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from openverse_dataset.layout import DataLayout, segment
from openverse_dataset.parquet import writer_options

INDEX_SCHEMA = pa.schema(
    [("identifier", pa.string()), ("provider", pa.string()), ("license", pa.string()), ("row_hash", pa.string())]
)
REMOVALS_SCHEMA = pa.schema(
    [
        ("identifier", pa.string()),
        ("provider", pa.string()),
        ("license", pa.string()),  # the license it had in the previous release
        ("reason", pa.string()),  # deleted | taken_down | removed_from_source | relicensed | rejected
        ("detail", pa.string()),  # the reject reason code, or the new license
        ("new_license", pa.string()),  # only for `relicensed`
    ]
)
REASON_CLASSES: dict[str, str] = {
    "deleted": "deleted from the catalog (deleted_<media>, e.g. a dead link) or no longer in it",
    "taken_down": "taken down or de-indexed by Openverse (api_deleted<media>, confirmed or provider-marked mature)",
    "removed_from_source": "the provider removed the work (removed_from_source)",
    "relicensed": "still published, but its license changed, so it left the configs of its old license",
    "rejected": "no longer passes a cleaning rule (see `detail`)",
}
_REASON_SQL = """
case
  when r.reason in ('taken_down', 'mature', 'mature_by_provider') then 'taken_down'
  when r.reason = 'deleted_in_catalog' then 'deleted'
  when r.reason = 'removed_from_source' then 'removed_from_source'
  when r.reason is null then 'deleted'
  else 'rejected'
end
"""


def releases_dir(layout: DataLayout, media: str) -> Path:
    """Release bookkeeping of one media type: indexes per target, the pending removals, changelog, plan."""
    return layout.root / "releases" / segment(media)


def target_key(target: str) -> str:
    """A short folder name for a publish target (`local:/abs/dir`, `hf:namespace`)."""
    kind = target.partition(":")[0]
    return f"{kind}-{hashlib.sha256(target.encode()).hexdigest()[:16]}"


@dataclass
class ReleaseFiles:
    """Where the pending release's bookkeeping lives (written by the card step, used by the release step)."""

    root: Path

    @property
    def next_index(self) -> Path:
        return self.root / "next-index.parquet"

    @property
    def removals(self) -> Path:
        return self.root / "removals.parquet"

    @property
    def changelog(self) -> Path:
        return self.root / "changelog.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    def index(self, target: str) -> Path:
        """The index of what `target` holds since its last successful publish."""
        return self.root / target_key(target) / "index.parquet"

    def promote(self, target: str) -> None:
        """After a successful publish: the pending index becomes the target's previous release."""
        dest = self.index(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(self.next_index, tmp)
        os.replace(tmp, dest)


@dataclass
class Changelog:
    """Added / removed / changed per provider, and removals by reason class."""

    previous: bool  # whether a previous release was known
    by_provider: dict[str, dict[str, int]] = field(default_factory=dict)
    removed_by_reason: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def totals(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for counts in self.by_provider.values():
            for k in out:
                out[k] += counts.get(k, 0)
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Changelog:
        return cls(**json.loads(text))


def write_index(conn: duckdb.DuckDBPyConnection, paths: list[str], dest: Path) -> int:
    """(identifier, provider, license, row hash) of every row in `paths`, sorted: the release as a set."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if paths:
        table = conn.sql(
            "select identifier, provider, license, md5(t::varchar) as row_hash "
            f"from read_parquet({_list(paths)}) t order by identifier"
        ).to_arrow_table()
        table = table.cast(INDEX_SCHEMA)
    else:
        table = INDEX_SCHEMA.empty_table()
    _write(table, dest)
    return table.num_rows


def _list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _write(table: pa.Table, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    pq.write_table(table, tmp, **writer_options(table.schema))
    os.replace(tmp, dest)


def diff_releases(
    conn: duckdb.DuckDBPyConnection,
    previous_index: Path | None,
    next_index: Path,
    reason_files: list[str],
    removals_dest: Path,
) -> Changelog:
    """Write the removals file (previous minus next, plus license changes) and return the changelog.

    `reason_files` are Parquet files with (identifier, reason): this run's rejects and the takedown snapshot.
    """
    if previous_index is None or not previous_index.exists():
        _write(REMOVALS_SCHEMA.empty_table(), removals_dest)
        counts = conn.sql(
            f"select provider, count(*) from read_parquet('{next_index}') group by all order by all"
        ).fetchall()
        return Changelog(
            previous=False,
            by_provider={p: {"added": n, "removed": 0, "changed": 0} for p, n in counts},
            note="no previous release known for this target: every row counts as added",
        )
    conn.execute(f"create or replace temp view prev as select * from read_parquet('{previous_index}')")
    conn.execute(f"create or replace temp view cur as select * from read_parquet('{next_index}')")
    if reason_files:
        conn.execute(
            "create or replace temp view reasons as select identifier, min(reason) as reason from "
            f"read_parquet({_list(reason_files)}, union_by_name=true) group by identifier"
        )
    else:
        conn.execute("create or replace temp view reasons as select ''::varchar identifier, ''::varchar reason limit 0")
    removals = conn.sql(
        f"""
        select p.identifier, p.provider, p.license, {_REASON_SQL} as reason,
               coalesce(r.reason, 'not_in_catalog') as detail, null::varchar as new_license
        from prev p anti join cur c using (identifier) left join reasons r using (identifier)
        union all
        select p.identifier, p.provider, p.license, 'relicensed', 'now ' || c.license, c.license
        from prev p join cur c using (identifier) where p.license <> c.license
        order by provider, identifier
        """
    ).to_arrow_table()
    _write(removals.cast(REMOVALS_SCHEMA), removals_dest)
    rows = conn.sql(
        """
        select provider, 'added' as k, count(*) from cur anti join prev using (identifier) group by all
        union all
        select provider, 'removed', count(*) from prev anti join cur using (identifier) group by all
        union all
        select c.provider, 'changed', count(*) from cur c join prev p using (identifier)
          where c.row_hash <> p.row_hash group by all
        """
    ).fetchall()
    by_provider: dict[str, dict[str, int]] = {}
    for provider, k, n in rows:
        by_provider.setdefault(provider, {"added": 0, "removed": 0, "changed": 0})[k] = int(n)
    reasons = pq.read_table(removals_dest, columns=["reason"]).column("reason").to_pylist()
    by_reason: dict[str, int] = {}
    for r in reasons:
        by_reason[r] = by_reason.get(r, 0) + 1
    return Changelog(
        previous=True,
        by_provider=dict(sorted(by_provider.items())),
        removed_by_reason=dict(sorted(by_reason.items())),
    )
