"""Per-provider freshness: how long since each provider's last successful refresh, and is it behind the catalog?

An asset-level freshness policy reads the newest materialization of *any* partition, so one fresh provider keeps
it green while every other is stale. This judges each provider partition on its own: it is *behind* when the
catalog's watermark for it (newest `updated_on`, newest `deleted_on`) differs from the one its last successful
raw extract recorded, and *stale* when it has been behind for longer than a grace period (long enough for the
stale-provider sensor to notice and a refresh to finish). Plain data in, plain data out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

GRACE_ENV = "OPENVERSE_PROVIDER_STALE_AFTER_MINUTES"
DEFAULT_GRACE = timedelta(hours=6)


def grace_period() -> timedelta:
    """`OPENVERSE_PROVIDER_STALE_AFTER_MINUTES`, or 6 hours: a Flickr-sized extract fits, a stuck one does not."""
    text = os.environ.get(GRACE_ENV, "").strip()
    return timedelta(minutes=float(text)) if text else DEFAULT_GRACE


def _token_times(token: str | None) -> tuple[datetime | None, datetime | None]:
    if not token:
        return None, None
    parts = token.split("|")
    out = [datetime.fromisoformat(p) if p and p != "-" else None for p in [*parts[:2], "-", "-"][:2]]
    return out[0], out[1]


@dataclass(frozen=True)
class ProviderFreshness:
    provider: str
    catalog_token: str | None  # the catalog's watermark now (None: the provider left the catalog)
    recorded_token: str | None  # what its last successful raw extract read (None: never extracted)
    last_refresh: datetime | None  # when that extract materialized

    @property
    def behind(self) -> bool:
        return self.catalog_token is not None and self.catalog_token != self.recorded_token

    def behind_since(self) -> datetime | None:
        """When the newest change not yet extracted happened (bounded below by the last refresh)."""
        if not self.behind:
            return None
        times = [t for t in _token_times(self.catalog_token) if t is not None]
        since = max(times) if times else None
        if since is not None and self.last_refresh is not None:
            since = max(since, self.last_refresh)
        return since

    def stale(self, now: datetime, grace: timedelta) -> bool:
        if not self.behind:
            return False
        since = self.behind_since()
        return since is None or now - since > grace

    def lag(self) -> timedelta | None:
        """How far the extracted data trails the catalog's newest update (the watermark difference)."""
        cat, _ = _token_times(self.catalog_token)
        rec, _ = _token_times(self.recorded_token)
        if cat is None or rec is None:
            return None
        return max(cat - rec, timedelta(0))


@dataclass(frozen=True)
class FreshnessReport:
    providers: list[ProviderFreshness]
    now: datetime
    grace: timedelta

    @property
    def stale(self) -> list[str]:
        return [p.provider for p in self.providers if p.stale(self.now, self.grace)]

    @property
    def behind(self) -> list[str]:
        return [p.provider for p in self.providers if p.behind]

    def rows(self) -> list[list[str]]:
        """One table row per provider: state, age of the last refresh, how far it trails the catalog."""
        out = []
        for p in self.providers:
            state = "stale" if p.stale(self.now, self.grace) else "catching up" if p.behind else "current"
            if p.recorded_token is None:
                state = "stale (never refreshed)" if state == "stale" else "never refreshed"
            out.append(
                [
                    p.provider,
                    state,
                    p.last_refresh.isoformat(timespec="seconds") if p.last_refresh else "-",
                    human(self.now - p.last_refresh) if p.last_refresh else "-",
                    human(p.lag()) if p.lag() is not None else "-",
                ]
            )
        return out


def assess(
    catalog_tokens: Mapping[str, str],
    recorded_tokens: Mapping[str, str],
    last_refresh: Mapping[str, datetime],
    partitions: Iterable[str],
    now: datetime,
    grace: timedelta,
) -> FreshnessReport:
    """Freshness of every provider partition (and of catalog providers not yet partitions)."""
    names = sorted(set(partitions) | set(catalog_tokens))
    return FreshnessReport(
        [ProviderFreshness(p, catalog_tokens.get(p), recorded_tokens.get(p), last_refresh.get(p)) for p in names],
        now,
        grace,
    )


def human(delta: timedelta | None) -> str:
    """A duration at a glance: 42s, 7m, 3.5h, 2.0d."""
    if delta is None:
        return "-"
    s = delta.total_seconds()
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"
