"""The dataset card (`README.md` of the dataset repository), generated from the release's own numbers.

YAML front matter the Hub and `datasets` read (license, pretty_name, task_categories, size_categories, configs
with data_files globs and one default), and a body that tells a user what they may do with each license.
"""

from __future__ import annotations

from datetime import date

import yaml

from openverse_dataset import licenses as lic
from openverse_dataset.media import COLUMN_DOCS, MediaType
from openverse_dataset.release.changes import REASON_CLASSES, Changelog
from openverse_dataset.release.subsets import SubsetStats
from openverse_dataset.transform.clean import REJECT_REASONS, cleaning_summary, output_columns

SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


def size_category(n: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "1B<n<10B"


def front_matter(media: MediaType, stats: SubsetStats) -> dict:
    """The card's YAML metadata as a dict (configs in registry order, `all` first and default)."""
    pairs = {(r["license"], r["license_version"]) for r in stats.by_license_version}
    ids = lic.hub_license_ids(pairs)
    meta: dict = {
        "pretty_name": media.pretty_name,
        "license": ids if len(ids) > 1 else (ids[0] if ids else "other"),
        "task_categories": list(media.task_categories),
        "size_categories": [size_category(stats.rows)],
        "language": ["en"],
        "tags": ["openverse", "creative-commons", "public-domain", "openly-licensed", media.name],
        "configs": [
            {
                "config_name": c.name,
                "data_files": [{"split": "train", "path": c.patterns}],
                **({"default": True} if c.default else {}),
            }
            for c in stats.configs
        ],
    }
    if "other" in ids:
        meta["license_name"] = "openverse-mixed-open-licenses"
        meta["license_link"] = "https://creativecommons.org/licenses/"
    return meta


def esc(value: object) -> str:
    """A catalog value as inert Markdown text: no HTML tag, no table break, no line break (the Hub renders HTML)."""
    text = " ".join(str(value).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _n(x: int) -> str:
    return f"{x:,}"


LICENSE_TERMS = """\
Every row carries its own `license`, `license_version`, `license_url` and `attribution`: they are the
authority, not the repository's `license:` field. What the license elements mean:

- **BY (attribution)**: credit the creator. The `attribution` column holds Openverse's ready-made text
  (title, creator, license and a link to the deed); keep it with every copy or derivative you share.
- **SA (share-alike)**: adaptations you share must carry the same license.
- **NC (non-commercial)**: no use primarily intended for commercial advantage. Use the `commercial` config
  to get only works that allow commercial use.
- **ND (no derivatives)**: you may share the work only unchanged. Use the `modification` config to get only
  works that allow adaptations (note: whether training a model is an adaptation is unsettled; ask counsel).
- **CC0**: the creator waived their rights as far as the law allows; no conditions.
- **Public Domain Mark (pdm)**: a *label* saying a work is believed free of known copyright, not a license.
  Marks are applied by providers and can be wrong (for example a recent photo marked PDM); check the work's
  landing page before relying on it, especially for commercial use.
- **Sampling+ / NC Sampling+**: retired CC licenses for sampling and remixing; whole-work copying is limited
  and, for NC Sampling+, commercial use is not allowed.
- Licenses cover copyright only: trademarks, privacy and personality rights of people shown, and other rights
  are not licensed. Works may be mislabelled at the source; Openverse reflects what providers report.
"""


def changelog_section(changelog: Changelog) -> list[str]:
    """The card's "Changes since the previous release": added/removed/changed per provider, removals by reason."""
    lines = ["## Changes since the previous release", ""]
    totals = changelog.totals()
    if not changelog.previous:
        lines += [
            f"No previous release is known for this repository: all {_n(totals['added'])} rows are new. "
            "`removals.parquet` is empty.",
            "",
        ]
        return lines
    lines += [
        f"{_n(totals['added'])} rows added, {_n(totals['removed'])} removed, {_n(totals['changed'])} changed "
        "(same identifier, different values).",
        "",
    ]
    changed = {p: c for p, c in changelog.by_provider.items() if any(c.values())}
    if changed:
        lines += [
            _table(
                ["provider", "added", "removed", "changed"],
                [[esc(p), _n(c["added"]), _n(c["removed"]), _n(c["changed"])] for p, c in changed.items()],
            ),
            "",
        ]
    lines += [
        "`removals.parquet` lists every identifier of the previous release that is not in this one, or that "
        "left a config because its license changed, with a reason class; drop these from any copy you keep.",
        "",
    ]
    if changelog.removed_by_reason:
        lines += [
            _table(
                ["reason", "identifiers", "meaning"],
                [[r, _n(n), esc(REASON_CLASSES.get(r, ""))] for r, n in changelog.removed_by_reason.items()],
            ),
            "",
        ]
    return lines


def opt_out_line(cleaning: dict, lists: list[str]) -> str:
    """How a creator asks to be left out of the dataset, and how many rows this release left out that way."""
    used = f" (opt-out list sha256 {', '.join(f'`{h}`' for h in lists)})" if lists else " (no opt-out list applied)"
    return (
        "To keep your works out of this dataset while they stay on Openverse, ask Openverse in an issue at "
        "https://github.com/WordPress/openverse/issues (or in #openverse on the Make WordPress Slack), giving your "
        "creator page URL, a landing-URL prefix or your domain. This release left out "
        f"{_n(cleaning.get('opted_out', 0))} rows at their creators' request{used}."
    )


def render_card(
    media: MediaType,
    stats: SubsetStats,
    *,
    repo_id: str,
    release_date: date,
    cleaning: dict | None = None,
    changelog: Changelog | None = None,
    notes: list[str] | None = None,
    opt_out_lists: list[str] | None = None,
) -> str:
    """The whole README.md: YAML front matter and a body generated from `stats` (cleaning counts, changelog).

    `notes`: extra markdown lines placed after the changelog (the providers a release holds back, and why).
    `opt_out_lists`: sha256 of each creators' opt-out list the release's partitions were cleaned with.
    """
    meta = front_matter(media, stats)
    fm = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    by_provider = stats.rows_by_provider()
    by_license = stats.rows_by_license()
    example = stats.configs[1].name if len(stats.configs) > 1 else lic.DEFAULT_CONFIG
    lines = [
        "---",
        fm.rstrip(),
        "---",
        "",
        f"# {media.pretty_name}",
        "",
        f"Metadata of **{_n(stats.rows)}** openly licensed {media.name} works from "
        "[Openverse](https://openverse.org), the search engine for openly licensed media run by the "
        "WordPress project: titles, creators, licenses, attribution text, tags and links to the media files "
        "at their providers. The media files themselves are not included; `url` points to each one.",
        "",
        f"Release **{release_date.isoformat()}**, built from Openverse's catalog by "
        "[openverse-dataset](https://github.com/WordPress/openverse). Works deleted, taken down or marked "
        "sensitive in Openverse are excluded, and disappear from the next release when Openverse removes them.",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", "{example}", split="train")',
        "```",
        "",
        "## Configs (license subsets)",
        "",
        "Each config is a view over the same Parquet files (`data/<license>/<provider>/`), chosen by license:",
        "",
        _table(
            ["config", "what it holds", "licenses", "rows"],
            [
                [
                    f"`{c.name}`" + (" (default)" if c.default else ""),
                    c.description,
                    ", ".join(c.slugs),
                    _n(c.rows),
                ]
                for c in stats.configs
            ],
        ),
        "",
    ]
    absent = [c.name for c in lic.all_configs() if c.name not in {x.name for x in stats.configs}]
    if absent:
        lines += [f"Configs with no works in this release (so not listed): {', '.join(absent)}.", ""]
    if changelog is not None:
        lines += changelog_section(changelog)
    lines += notes or []
    lines += [
        "## Rows per provider",
        "",
        _table(["provider", "rows"], [[esc(p), _n(n)] for p, n in by_provider.items()]),
        "",
        "## Rows per license",
        "",
        _table(
            ["license", "name", "rows"],
            [[s, lic.LICENSES[s].display_name, _n(n)] for s, n in by_license.items()],
        ),
        "",
        "## Columns",
        "",
        _table(["column", "meaning"], [[f"`{c}`", COLUMN_DOCS.get(c, "")] for c in output_columns(media)]),
        "",
        "## What each license allows",
        "",
        LICENSE_TERMS,
        "## How to attribute",
        "",
        "Use the `attribution` column, for example:",
        "",
        '> "Sunset over the bay" by Jane Doe is licensed under CC BY 2.0. To view a copy of this license, '
        "visit https://creativecommons.org/licenses/by/2.0/.",
        "",
        "Link the title to `foreign_landing_url` and the creator to `creator_url` where your medium allows.",
        "",
        "## Reporting a work, opting out",
        "",
        "- To report a work (copyright, sensitive content, wrong license), open it on Openverse "
        "(`https://openverse.org/" + media.name + "/<identifier>`) and use **Report**. Works Openverse removes "
        "are dropped from the next release, and the release notes list what was removed.",
        "- Creators who want their works out of Openverse (and so out of this dataset) can also remove them or "
        "change their license at the provider; Openverse follows the provider on its next refresh. Image URLs "
        "can additionally be registered with opt-out services such as Spawning's *Do Not Train* registry.",
        f"- {opt_out_line(cleaning or {}, opt_out_lists or [])}",
        "",
    ]
    if cleaning:
        lines += [
            "## How the data was cleaned",
            "",
            cleaning_summary(),
            "",
            _table(
                ["reason", "rows", "meaning"],
                [[k, _n(v), esc(REJECT_REASONS.get(k, ""))] for k, v in sorted(cleaning.items()) if v],
            ),
            "",
        ]
    lines += [
        "## License of this dataset",
        "",
        "The metadata of each work is published under that work's license (see the `license` column); the "
        "collection is compiled by Openverse from its providers. Respect each row's license terms.",
        "",
    ]
    return "\n".join(lines)
