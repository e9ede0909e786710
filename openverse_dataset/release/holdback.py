"""What a release holds for a provider whose refresh failed: its previous rows, unchanged, and a note saying so.

Policy (documented in the README, "Keeping it fresh"):
- A provider whose latest refresh (extract or clean) failed keeps the rows of its last successful refresh,
  which are the rows the previous release published for it (the clean step swaps its folder in only on
  success). Takedowns still apply to them: the takedown fast path re-cleans the kept raw extract.
- A provider that never had a successful refresh (a new provider whose first extract failed, or one still
  running) is absent from the release.
- Either way the release proceeds for every other provider, and the card and the release metadata list the
  providers held back and why, until a refresh succeeds.

Plain data in, plain data out: the Dagster side gathers each provider's state from the instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from openverse_dataset.release.card import esc  # provider names and reasons can carry catalog text

KEPT_PREVIOUS = "previous release's rows, unchanged"
KEPT_NONE = "not in this release"


@dataclass(frozen=True)
class ProviderState:
    """One provider partition as the instance sees it."""

    provider: str
    cleaned: bool  # a successful clean's folder exists (it may hold no rows: all rejected)
    failed: bool = False  # the latest refresh attempt of raw or clean failed
    in_progress: bool = False
    failure: str = ""  # first line of the error, secrets already scrubbed by the step
    failed_at: str = ""  # ISO timestamp of the failed run
    run_id: str = ""


@dataclass(frozen=True)
class HeldBack:
    provider: str
    kept: str  # KEPT_PREVIOUS or KEPT_NONE
    reason: str
    since: str = ""
    run_id: str = ""


@dataclass
class HoldbackReport:
    """The providers a release includes, and the ones it holds back (with what it kept of them and why)."""

    released: list[str]
    held_back: list[HeldBack] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [h.provider for h in self.held_back]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HoldbackReport:
        data = json.loads(text)
        return cls(released=data["released"], held_back=[HeldBack(**h) for h in data["held_back"]])

    def summary(self) -> str:
        """One line for logs and metadata."""
        if not self.held_back:
            return "no provider held back"
        return "held back: " + "; ".join(f"{h.provider} ({h.reason})" for h in self.held_back)

    def card_lines(self) -> list[str]:
        """The card's section on held-back providers (empty when every provider is current)."""
        if not self.held_back:
            return []
        lines = [
            "## Providers held back",
            "",
            "These providers' latest refresh did not succeed. A provider already published keeps its rows from "
            "the previous release, unchanged (works taken down since are still removed); a provider never "
            "refreshed successfully is not in this release. Each catches up with the first refresh that succeeds.",
            "",
            "| provider | in this release | why | since |",
            "|---|---|---|---|",
        ]
        for h in self.held_back:
            cells = [esc(h.provider), h.kept, esc(h.reason), h.since or "-"]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return [*lines, ""]


def decide(states: Iterable[ProviderState]) -> HoldbackReport:
    """Which providers a release includes, and which it holds back with what (see the module docstring)."""
    released: list[str] = []
    held: list[HeldBack] = []
    for s in sorted(states, key=lambda s: s.provider):
        if s.cleaned:
            released.append(s.provider)
        kept = KEPT_PREVIOUS if s.cleaned else KEPT_NONE
        if s.failed:
            why = f"refresh failed: {s.failure}" if s.failure else "refresh failed"
            held.append(HeldBack(s.provider, kept, why, s.failed_at, s.run_id))
        elif not s.cleaned:
            why = "refresh in progress" if s.in_progress else "not refreshed yet"
            held.append(HeldBack(s.provider, kept, why))
    return HoldbackReport(released=released, held_back=held)


def first_line(message: str, limit: int = 200) -> str:
    """The first meaningful line of an error message, shortened: enough for a card or an alert."""
    for line in (message or "").splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""
