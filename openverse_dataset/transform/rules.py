"""The shape of a cleaning rule, and the tables every consumer derives from the list of rules.

A rule is one declared unit: its name, whether it repairs a value or rejects the row, its priority, the polars
expression that says when it applies, what it means (the text the card and the UI show), the columns it
derives and the raw columns they come from (the UI's column lineage), and for a reject the removal class a
consumer sees in `removals.parquet`. `transform/clean.py` declares the list; the reason table, repair table,
priority order, removal classes, the card's sentence on cleaning and the column lineage are all read from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from openverse_dataset.media import MediaType
from openverse_dataset.transform.optout import NO_OPT_OUTS, OptOuts

Action = Literal["reject", "repair", "derive"]

# Why an identifier left the release, as consumers read it in removals.parquet (`reason`).
REMOVAL_CLASSES: dict[str, str] = {
    "taken_down": "taken down or de-indexed by Openverse (api_deleted<media>, confirmed or provider-marked mature)",
    "deleted": "deleted from the catalog (deleted_<media>, e.g. a dead link) or no longer in it",
    "source_hidden": "its source is hidden by Openverse's API (content_provider.filter_content)",
    "removed_from_source": "the provider removed the work (removed_from_source)",
    "opted_out": "its creator opted out (the project's opt-out list: creator URL, landing-URL prefix or domain)",
    "relicensed": "still published, but its license changed, so it left the configs of its old license",
    "rejected": "no longer passes a cleaning rule (see `detail`)",
}
NOT_IN_CATALOG = "deleted"  # the class of an identifier that is simply gone from the catalog


@dataclass(frozen=True)
class RuleContext:
    """What a rule's expression may depend on besides the row: the media type, the API's hidden sources and the
    creators' opt-out list."""

    media: MediaType
    hidden_sources: tuple[str, ...] = ()
    opt_outs: OptOuts = NO_OPT_OUTS


@dataclass(frozen=True)
class Rule:
    """One cleaning rule.

    `when` is the condition over the staged frame (raw columns, `_raw_*` copies and the `_*` intermediates
    `clean_lazy` computes once per row); for a repair it is the `_fix_<name>` flag, for a reject the row's
    reason when no rule of higher priority (lower number) matched.
    """

    name: str
    action: Action
    priority: int
    meaning: str
    when: Callable[[RuleContext], pl.Expr] | None = None
    derives: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output column -> raw columns it reads
    removal: str | None = None  # rejects: the removal class
    summary: str = ""  # repairs: the short phrase the card's sentence on cleaning uses

    def __post_init__(self) -> None:
        if self.action == "reject" and self.removal not in REMOVAL_CLASSES:
            raise ValueError(f"reject rule {self.name!r} needs a removal class from {sorted(REMOVAL_CLASSES)}")


def rejects(rules: Sequence[Rule]) -> list[Rule]:
    """Reject rules in priority order: the first that matches names the row's reason."""
    return sorted((r for r in rules if r.action == "reject"), key=lambda r: r.priority)


def repairs(rules: Sequence[Rule]) -> list[Rule]:
    return sorted((r for r in rules if r.action == "repair"), key=lambda r: r.priority)


def reason_table(rules: Sequence[Rule]) -> dict[str, str]:
    """Reject reason -> meaning, in priority order."""
    return {r.name: r.meaning for r in rejects(rules)}


def repair_table(rules: Sequence[Rule]) -> dict[str, str]:
    return {r.name: r.meaning for r in repairs(rules)}


def removal_classes(rules: Sequence[Rule]) -> dict[str, str]:
    """Reject reason -> removal class."""
    return {r.name: r.removal for r in rejects(rules) if r.removal}


def lineage(rules: Sequence[Rule]) -> dict[str, list[str]]:
    """Output column -> the raw columns it is derived from, over every rule that derives it."""
    out: dict[str, list[str]] = {}
    for r in sorted(rules, key=lambda r: (r.action, r.priority)):
        for col, reads in r.derives.items():
            out.setdefault(col, [])
            out[col] += [c for c in reads if c not in out[col]]
    return out


def reject_expr(rules: Sequence[Rule], ctx: RuleContext) -> pl.Expr:
    """The reason of the first matching reject rule (priority order), null when the row is kept."""
    chain = None
    for r in rejects(rules):
        if r.when is None:
            continue  # applied outside the row expressions (the cross-chunk dedupe)
        cond = r.when(ctx).fill_null(False)
        chain = pl.when(cond).then(pl.lit(r.name)) if chain is None else chain.when(cond).then(pl.lit(r.name))
    return pl.lit(None, dtype=pl.String) if chain is None else chain.otherwise(pl.lit(None, dtype=pl.String))


def removal_class_sql(rules: Sequence[Rule], column: str) -> str:
    """A SQL `case` mapping a reject reason in `column` to its removal class (null reason: gone from the catalog)."""
    whens = "\n".join(f"  when {column} = '{name}' then '{cls}'" for name, cls in removal_classes(rules).items())
    return f"case\n  when {column} is null then '{NOT_IN_CATALOG}'\n{whens}\n  else 'rejected'\nend"


def priority_sql(rules: Sequence[Rule], column: str) -> str:
    """A SQL `case` giving a reject reason's priority: `arg_min(reason, priority)` picks the reason that wins."""
    whens = " ".join(f"when '{r.name}' then {r.priority}" for r in rejects(rules))
    return f"case {column} {whens} else 1000000 end"
