"""The dataset card (`README.md` of the dataset repository) and `CITATION.cff`, generated from the release's data.

YAML front matter the Hub and `datasets` read (license, pretty_name, task_categories, size_categories, language
and multilinguality as detected on the titles, configs with data_files globs and one default), and a body that
follows the Hub's dataset card template (details, uses, structure with an example row, creation, personal and
sensitive information, bias/risks/limitations, citation) with every number measured on this release
(`release.facts`). Every value that comes from the catalog goes through `esc` (tables, prose) or `_inert_json`
(the example row): the Hub renders the card's HTML, so a title like `<img onerror=...>` must stay text.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import yaml

from openverse_dataset import licenses as lic
from openverse_dataset.media import COLUMN_DOCS, MediaType
from openverse_dataset.release.changes import REASON_CLASSES, Changelog
from openverse_dataset.release.facts import DETECT_LANGUAGES, ReleaseFacts
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


def front_matter(media: MediaType, stats: SubsetStats, facts: ReleaseFacts | None = None) -> dict:
    """The card's YAML metadata as a dict (configs in registry order, `all` first and default).

    `language` lists the ISO 639-1 codes detected on enough of the sampled titles (`facts`), with
    `multilinguality: multilingual` when there are several; without facts the card claims no language."""
    pairs = {(r["license"], r["license_version"]) for r in stats.by_license_version}
    ids = lic.hub_license_ids(pairs)
    meta: dict = {
        "pretty_name": media.pretty_name,
        "license": ids if len(ids) > 1 else (ids[0] if ids else "other"),
        "task_categories": list(media.task_categories),
        "size_categories": [size_category(stats.rows)],
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
    languages = facts.card_languages() if facts else []
    if languages:
        meta["language"] = languages
        meta["multilinguality"] = ["multilingual" if len(languages) > 1 else "monolingual"]
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


PROJECT_URL = "https://github.com/WordPress/openverse"
# what the card tells consumers to send: the dataset's name, and their own project and contact
USER_AGENT = "openverse-dataset user; YOUR-PROJECT (YOUR-CONTACT)"
EXAMPLE_VALUE_CHARS = 300  # the example row's long values (meta_data, attribution) are shortened to this


CITATION = "CITATION.cff"


def write_new(path: Path, text: str) -> None:
    """Write `text` as a new file at `path` (temp file + rename), never in place: the local target's copy of
    the previous release may be a hard link of the file this replaces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def hub_url(repo_id: str) -> str:
    return f"https://huggingface.co/datasets/{repo_id}"


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "0.0%"


def _inert_json(row: dict) -> str:
    """The example row as JSON that no renderer can turn into markup or a broken code fence: `<`, `>`, `&` and
    the backtick are written as JSON `\\u` escapes (still the same JSON value), long strings are shortened."""

    def short(v: object) -> object:
        if isinstance(v, str) and len(v) > EXAMPLE_VALUE_CHARS:
            return v[:EXAMPLE_VALUE_CHARS] + "..."
        return v

    text = json.dumps({k: short(v) for k, v in row.items()}, indent=2, ensure_ascii=False)
    for ch in "<>&`":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def bibtex_key(media: MediaType, release_date: date) -> str:
    return f"openverse_{media.name}_{release_date.strftime('%Y_%m_%d')}"


def bibtex(media: MediaType, *, repo_id: str, release_date: date, rows: int) -> str:
    """The BibTeX entry of one release (no catalog value in it: names and numbers are the project's own)."""
    return "\n".join(
        [
            f"@misc{{{bibtex_key(media, release_date)},",
            f"  title        = {{{{{media.pretty_name}}}: openly licensed {media.name} metadata from Openverse}},",
            "  author       = {{Openverse contributors}},",
            f"  year         = {{{release_date.year}}},",
            f"  month        = {{{release_date.month}}},",
            f"  version      = {{{release_date.strftime('%Y.%m.%d')}}},",
            "  publisher    = {Hugging Face},",
            f"  howpublished = {{\\url{{{hub_url(repo_id)}}}}},",
            f"  note         = {{Release {release_date.strftime('%Y.%m.%d')}, {rows:,} works}}",
            "}",
        ]
    )


def citation_cff(media: MediaType, stats: SubsetStats, *, repo_id: str, release_date: date) -> str:
    """`CITATION.cff` (Citation File Format 1.2.0) of one release: the same facts as the card's BibTeX."""
    tag = release_date.strftime("%Y.%m.%d")
    doc = {
        "cff-version": "1.2.0",
        "message": "If you use this dataset, please cite it as below, and credit each work as its `attribution` "
        "column says.",
        "type": "dataset",
        "title": f"{media.pretty_name}: openly licensed {media.name} metadata from Openverse",
        "authors": [{"name": "Openverse contributors"}],
        "version": tag,
        "date-released": release_date.isoformat(),
        "url": hub_url(repo_id),
        "repository-code": PROJECT_URL,
        "abstract": f"Metadata of {stats.rows:,} openly licensed {media.name} works indexed by Openverse "
        "(titles, creators, licenses, attribution, links to the media at their providers). Each row carries its "
        "own license.",
        "keywords": ["openverse", "creative commons", "public domain", "open licenses", media.name],
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


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
    facts: ReleaseFacts | None = None,
) -> str:
    """The whole README.md: YAML front matter and a body generated from `stats` (cleaning counts, changelog)
    and `facts` (what the sampled rows hold: creators, locations, languages, an example row).

    `notes`: extra markdown lines placed after the changelog (the providers a release holds back, and why).
    `opt_out_lists`: sha256 of each creators' opt-out list the release's partitions were cleaned with.
    """
    meta = front_matter(media, stats, facts)
    fm = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    by_provider = stats.rows_by_provider()
    by_license = stats.rows_by_license()
    example = stats.configs[1].name if len(stats.configs) > 1 else lic.DEFAULT_CONFIG
    tag = release_date.strftime("%Y.%m.%d")
    lines = [
        "---",
        fm.rstrip(),
        "---",
        "",
        f"# {media.pretty_name}",
        "",
        "## Dataset Details",
        "",
        "### Dataset Description",
        "",
        f"Metadata of **{_n(stats.rows)}** openly licensed {media.name} works from "
        "[Openverse](https://openverse.org), the search engine for openly licensed media run by the "
        "WordPress project: titles, creators, licenses, attribution text, tags and links to the media files "
        "at their providers. The media files themselves are not included; `url` points to each one.",
        "",
        f"Release **{release_date.isoformat()}**, built from Openverse's catalog by "
        f"[openverse-dataset]({PROJECT_URL}). Works deleted, taken down or marked "
        "sensitive in Openverse are excluded, and disappear from the next release when Openverse removes them.",
        "",
        "- **Curated by:** the Openverse project (WordPress), from the works its providers publish",
        f"- **Language(s):** {_languages_line(facts)}",
        "- **License:** per row (`license`, `license_version`, `license_url`); see *What each license allows*",
        "",
        "### Dataset Sources",
        "",
        "- **Catalog:** [Openverse](https://openverse.org) and its API, which index the providers listed in "
        "*Rows per provider*",
        f"- **Repository (code):** {PROJECT_URL}",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", "{example}", split="train")',
        "```",
        "",
        "### Pin a release",
        "",
        f"Every release is a commit tagged with its date (this one: `{tag}`); `main` always holds the latest. "
        "Pin the tag to get the same rows every time:",
        "",
        "```python",
        f'ds = load_dataset("{repo_id}", "{example}", split="train", revision="{tag}")',
        "```",
        "",
        f"`manifest.json` lists every file of the release with its sha256; `openverse-dataset verify {repo_id} "
        f"--revision {tag}` checks a download against it. `croissant.json` describes the release in Croissant 1.0 "
        "with the Responsible AI fields.",
        "",
        "## Uses",
        "",
        "### Direct Use",
        "",
        "- Finding openly licensed media by title, creator, tag, provider or license, and attributing them "
        "correctly (`attribution`).",
        "- Building image-text or audio-text collections (titles and tags as weak, noisy descriptions) for "
        "research and training, restricted to the licenses a use allows (the configs).",
        "- Studying the open-licensing ecosystem: which providers publish what under which terms.",
        "",
        "### Out-of-Scope Use",
        "",
        "- Treating titles or tags as labels: they are the providers' free text (file names, catalogue numbers, "
        "machine tags), not annotations.",
        "- Using works against their license (NC works commercially, ND works as adaptations), or without the "
        "attribution BY requires.",
        "- Identifying, profiling or locating the people named in or shown by the works (see *Personal and "
        "Sensitive Information*).",
        "",
        "## Dataset Structure",
        "",
        "### Configs (license subsets)",
        "",
        "Each config is a view over the same Parquet files (`data/<license>/<provider>/`), chosen by license; "
        "every config has one split, `train`:",
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
    lines += [
        "### Columns",
        "",
        _table(["column", "meaning"], [[f"`{c}`", COLUMN_DOCS.get(c, "")] for c in output_columns(media)]),
        "",
    ]
    if facts and facts.example:
        lines += [
            "### Data Instances",
            "",
            f"One row of this release as JSON (values longer than {EXAMPLE_VALUE_CHARS} characters shortened; "
            "`<`, `>`, `&` and backticks written as `\\u` escapes):",
            "",
            "```json",
            _inert_json(facts.example),
            "```",
            "",
        ]
    if changelog is not None:
        lines += changelog_section(changelog)
    lines += notes or []
    lines += [
        "## Rows per provider",
        "",
        _table(
            ["provider", "rows", "share"],
            [[esc(p), _n(n), _pct(n, stats.rows)] for p, n in by_provider.items()],
        ),
        "",
        "## Rows per license",
        "",
        _table(
            ["license", "name", "rows"],
            [[s, lic.LICENSES[s].display_name, _n(n)] for s, n in by_license.items()],
        ),
        "",
        "## Dataset Creation",
        "",
        "### Curation Rationale",
        "",
        "Openverse already gathers openly licensed works from hundreds of sources and keeps their licenses "
        "straight; publishing its catalog as a dataset, with license subsets and a changelog of removals, lets "
        "others use those works within their terms without crawling the providers again.",
        "",
        "### Source Data",
        "",
        "#### Data Collection and Processing",
        "",
        "Openverse's catalog collects works from provider APIs (`ingestion_type` `provider_api`) and, for older "
        "rows, from Common Crawl (`commoncrawl`). This release reads that catalog, removes what Openverse "
        "does not serve (deleted, taken down, marked sensitive, removed from the source) and cleans the rest "
        "as Openverse's API does before serving it.",
        "",
    ]
    if cleaning:
        lines += [
            cleaning_summary(),
            "",
            _table(
                ["reason", "rows", "meaning"],
                [[k, _n(v), esc(REJECT_REASONS.get(k, ""))] for k, v in sorted(cleaning.items()) if v],
            ),
            "",
        ]
    lines += [
        "#### Who are the source data producers?",
        "",
        "The creators of the works (photographers, artists, musicians, institutions) and the providers that "
        "publish them (museums, archives, photo and sound sharing sites); see *Rows per provider*.",
        "",
        "### Annotations",
        "",
        "No annotation was made for this dataset. `tags` are the providers' own, some machine-generated "
        "(those carry an `accuracy`).",
        "",
    ]
    lines += personal_section(facts)
    lines += bias_section(media, stats, facts)
    lines += fetch_section(media, repo_id)
    lines += [
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
        "## License of this dataset",
        "",
        "The metadata of each work is published under that work's license (see the `license` column); the "
        "collection is compiled by Openverse from its providers. Respect each row's license terms.",
        "",
        "## Citation",
        "",
        "Cite the release you used (the repository also holds `CITATION.cff`), and credit each work you use as "
        "its `attribution` says:",
        "",
        "**BibTeX:**",
        "",
        "```bibtex",
        bibtex(media, repo_id=repo_id, release_date=release_date, rows=stats.rows),
        "```",
        "",
        "## Dataset Card Contact",
        "",
        f"Issues with the data or this card: {PROJECT_URL}/issues. Reports about a single work: its Openverse "
        "page's **Report** button.",
        "",
    ]
    return "\n".join(lines)


def _languages_line(facts: ReleaseFacts | None) -> str:
    if not facts or not facts.card_languages():
        return "not measured"
    return ", ".join(facts.card_languages()) + " (detected on the titles; see *Bias, Risks, and Limitations*)"


def personal_section(facts: ReleaseFacts | None) -> list[str]:
    """What personal data a consumer meets, in shares measured on the release's sample."""
    lines = ["## Personal and Sensitive Information", ""]
    if facts and facts.sample_rows:
        n = facts.sample_rows
        lines += [
            f"Measured on a deterministic sample of {_n(n)} of the {_n(facts.rows)} rows (spread over "
            f"{_n(facts.sample_files)} data files in proportion to their rows):",
            "",
            f"- **{_pct(facts.with_creator, n)}** of rows name a creator (`creator`), usually a person's name or "
            "user name, often with a link to their profile (`creator_url`).",
            f"- **{_pct(facts.with_geolocation, n)}** of rows carry a location (latitude/longitude) in "
            "`meta_data`, as the provider published it; for photos this is often where the photographer stood.",
            "",
        ]
    lines += [
        "Titles, descriptions and tags are free text and may name people; the media themselves may show people, "
        "who are not the licensors and whose privacy and personality rights no license covers. Works Openverse "
        "marked sensitive are excluded; others may still show sensitive content. Do not use the dataset to "
        "identify, profile or locate people; to have a work removed, report it (see *Reporting a work, opting "
        "out*).",
        "",
    ]
    return lines


def bias_section(media: MediaType, stats: SubsetStats, facts: ReleaseFacts | None) -> list[str]:
    """Provider skew, languages, link rot and the load on providers, from the release's numbers."""
    lines = ["## Bias, Risks, and Limitations", ""]
    by_provider = sorted(stats.rows_by_provider().items(), key=lambda kv: (-kv[1], kv[0]))
    if by_provider and stats.rows:
        top, top_rows = by_provider[0]
        top3 = sum(n for _, n in by_provider[:3])
        more = (
            f"; the three largest of {len(by_provider)} providers hold {_pct(top3, stats.rows)}"
            if len(by_provider) > 3
            else f" ({len(by_provider)} provider{'s' if len(by_provider) > 1 else ''} in all)"
        )
        lines += [
            f"- **Provider skew:** {esc(top)} alone holds {_n(top_rows)} of {_n(stats.rows)} rows "
            f"({_pct(top_rows, stats.rows)}){more}. What those sites' users photograph or record, and how they "
            "title it, dominates the data.",
        ]
    if facts and facts.titles_checked:
        shown = ", ".join(
            f"{esc(code)} {_pct(n, facts.titles_checked)}" for code, n in list(facts.languages.items())[:10]
        )
        lines += [
            f"- **Languages:** detected on {_n(facts.titles_checked)} sampled titles that have words to detect "
            f"from (lingua, {len(DETECT_LANGUAGES)} candidate languages, low-accuracy mode): {shown}; "
            f"undetermined {_pct(facts.undetermined, facts.titles_checked)}. Short titles are often "
            "misdetected: read these as rough shares. Many titles are file names or catalogue numbers.",
        ]
    lines += [
        "- **Link rot:** `url` and `foreign_landing_url` point to the providers, who move and delete files; "
        "the share of links that no longer resolve is not measured here (this build does not contact "
        "providers), so expect some to fail and keep the rows you could fetch.",
        "- **Licenses as reported:** licenses and public-domain marks are what providers state; some are wrong.",
        "- **Load on providers:** fetching millions of media files puts real load on providers' hosts, many of "
        "them small institutions (see *Fetching the media politely*).",
        "",
        "### Recommendations",
        "",
        "Pick the config that matches your use's license needs, keep `attribution` with every work, re-check "
        "a work's page before relying on a public-domain mark, drop the identifiers each release's "
        "`removals.parquet` lists from any copy you keep, and balance providers if the skew matters for you.",
        "",
    ]
    return lines


def fetch_section(media: MediaType, repo_id: str) -> list[str]:
    """How to download the media without hammering the providers: img2dataset with a named user agent."""
    lines = [
        "## Fetching the media politely",
        "",
        "The files are at the providers, not here. Fetch them at a modest rate, identify yourself with a user "
        "agent that names your project and a contact, honour `429`/`Retry-After` and robots rules, and spread "
        "the load over providers.",
        "",
    ]
    if media.name == "image":
        lines += [
            "With [img2dataset](https://github.com/rom1504/img2dataset) over the `url` column of the config you "
            "chose. It has no requests-per-second setting: one process with a few threads bounds the rate, and "
            "its default skips files whose servers send `X-Robots-Tag: noai` (keep it):",
            "",
            "```bash",
            f"python -c \"from datasets import load_dataset; load_dataset('{repo_id}', 'cc0', split='train')"
            ".to_parquet('cc0.parquet')\"",
            "img2dataset --url_list cc0.parquet --input_format parquet --url_col url --caption_col title \\",
            '  --save_additional_columns \'["identifier","license","attribution"]\' \\',
            "  --output_format webdataset --output_folder images --processes_count 1 --thread_count 4 \\",
            f"  --retries 2 --user_agent_token '{USER_AGENT}'",
            "```",
            "",
        ]
    else:
        lines += [
            "For example with `wget` over the `url` column, one request at a time and a pause between requests:",
            "",
            "```bash",
            'python -c "import pyarrow.parquet as pq, sys; [print(u) for u in '
            "pq.read_table(sys.argv[1], columns=['url']).column(0).to_pylist()]\" FILE.parquet > urls.txt",
            f"wget --input-file urls.txt --wait 1 --random-wait --user-agent '{USER_AGENT}' --directory-prefix audio",
            "```",
            "",
        ]
    return lines
