"""The license registry: slugs, versions, ports, URLs, groups, configs and attribution text.

One source of truth for every license fact: cleaning, the license subsets (Hub configs), the dataset card and
the checks all read it. The clean step's polars expressions (transform/clean.py) are built from these tables
(`LICENSES`, `ALIASES`, `valid_keys`, `url_paths`, `LICENSE_URL_RE`); the plain functions below
(`normalize_*`, `parse_license_url`, `license_url`, `full_name`, `attribution`) are the tests' oracle for them,
and `is_valid` is what the release check uses. The version/jurisdiction table and the display-name and
attribution rules follow Openverse's `openverse-attribution` package (WordPress/openverse, MIT); see docs in the README.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

_BY6 = ("by", "by-nc", "by-nc-nd", "by-nc-sa", "by-nd", "by-sa")
_RETIRED_JP = ("nc", "nc-sa", "nd", "nd-nc", "sa")
_BY_10 = _BY6  # by-nc-nd 1.0 was published under the name by-nd-nc (see `_URL_SLUG`)
_PORTS_30 = [
    "am",
    "au",
    "at",
    "az",
    "ca",
    "cl",
    "cr",
    "hr",
    "cz",
    "ec",
    "eg",
    "ee",
    "fr",
    "ge",
    "de",
    "gr",
    "gt",
    "hk",
    "igo",
    "ie",
    "it",
    "lu",
    "nl",
    "nz",
    "no",
    "ph",
    "pl",
    "pt",
    "pr",
    "ro",
    "sg",
    "za",
    "es",
    "ch",
    "th",
    "ug",
    "us",
    "ve",
    "vn",
]
_PORTS_25 = [
    "ar",
    "au",
    "bg",
    "ca",
    "co",
    "hr",
    "dk",
    "hu",
    "in",
    "il",
    "it",
    "mk",
    "my",
    "mt",
    "mx",
    "nl",
    "pe",
    "pl",
    "pt",
    "si",
    "za",
    "es",
    "se",
    "ch",
    "scotland",
]
_PORTS_20 = ["au", "at", "be", "ca", "cl", "hr", "fr", "de", "it", "kr", "nl", "pl", "za", "es", "uk"]

# version -> jurisdiction ("" = unported/generic) -> slugs that exist there.
VERSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "4.0": {"": _BY6},
    "3.0": {"": _BY6, **{j: _BY6 for j in _PORTS_30}},
    "2.5": {"": _BY6, **{j: _BY6 for j in _PORTS_25}},
    "2.1": {j: _BY6 for j in ("au", "ca", "jp", "es")},
    "2.0": {"": (*_BY6, "devnations"), "jp": _BY6 + _RETIRED_JP, **{j: _BY6 for j in _PORTS_20}},
    "1.0": {
        "": (
            "by",
            "by-nc",
            "by-nc-nd",
            "by-nc-sa",
            "by-nd",
            "by-sa",
            "nc",
            "nc-sa",
            "nc-sampling+",
            "nd",
            "nd-nc",
            "sa",
            "sampling",
            "sampling+",
            "cc0",
            "pdm",
        ),
        "fi": (*_BY_10, *_RETIRED_JP),
        "de": ("sampling+",),
        "il": _BY_10,
        "nl": (*_BY_10, *_RETIRED_JP),
        "us": ("certification",),
    },
}


@dataclass(frozen=True)
class License:
    """One license slug and what it allows."""

    slug: str
    display_name: str
    served: bool  # the Openverse API serves works under it today
    public_domain: bool

    @property
    def commercial(self) -> bool:
        """Commercial use allowed: no NC term (Openverse's `commercial` group)."""
        return "nc" not in self.slug.split("-")

    @property
    def modification(self) -> bool:
        """Adaptations allowed: no ND term (Openverse's `modification` group)."""
        return "nd" not in self.slug.split("-")

    @property
    def config_name(self) -> str:
        """Hub config / folder name: the slug, with `+` spelled out (`sampling+` -> `sampling-plus`)."""
        return self.slug.replace("+", "-plus")


def _display(slug: str) -> str:
    special = {
        "pdm": "Public Domain Mark",
        "certification": "Public Domain Certification",
        "publicdomain": "Public Domain",
        "cc0": "CC0",
    }
    if slug in special:
        return special[slug]
    return "CC " + slug.upper().replace("SAMPLING", "Sampling").replace("DEVNATIONS", "DevNations")


_SERVED = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0", "pdm", "sampling+", "nc-sampling+")
_RETIRED = ("sa", "nc", "nd", "nc-sa", "nd-nc", "sampling", "devnations", "publicdomain", "certification")
_PD = ("cc0", "pdm", "publicdomain", "certification")

LICENSES: dict[str, License] = {
    s: License(slug=s, display_name=_display(s), served=s in _SERVED, public_domain=s in _PD)
    for s in _SERVED + _RETIRED
}

# Spellings that mean another slug: CC renamed `by-nd-nc` to `by-nc-nd`; `zero`/`mark` are URL path names.
ALIASES: dict[str, str] = {"by-nd-nc": "by-nc-nd", "zero": "cc0", "mark": "pdm"}

# The URL path uses the name a version was published under (by-nc-nd 1.0 was published as by-nd-nc).
_URL_SLUG: dict[tuple[str, str], str] = {("by-nc-nd", "1.0"): "by-nd-nc"}


@dataclass(frozen=True)
class Config:
    """A Hub config: a named license subset, a view (glob patterns) over the one set of data files."""

    name: str
    description: str
    slugs: tuple[str, ...]


def _group(pred) -> tuple[str, ...]:
    return tuple(s for s in _SERVED if pred(LICENSES[s]))


GROUP_CONFIGS: tuple[Config, ...] = (
    Config("all", "every work in the release, whatever its license", _SERVED),
    Config("commercial", "licenses that allow commercial use (no NC term)", _group(lambda x: x.commercial)),
    Config("modification", "licenses that allow adaptations (no ND term)", _group(lambda x: x.modification)),
    Config(
        "commercial-modification",
        "licenses that allow both commercial use and adaptations",
        _group(lambda x: x.commercial and x.modification),
    ),
    Config("public-domain", "public-domain dedications and marks (CC0, PDM)", _group(lambda x: x.public_domain)),
)
DEFAULT_CONFIG = "all"


def slug_configs() -> tuple[Config, ...]:
    """One config per served license slug."""
    return tuple(Config(LICENSES[s].config_name, f"works under {LICENSES[s].display_name}", (s,)) for s in _SERVED)


def all_configs() -> tuple[Config, ...]:
    """Every config the registry defines, group configs first."""
    return GROUP_CONFIGS + slug_configs()


def slug_for_folder(folder: str) -> str:
    """The slug whose config/folder name is `folder` (`sampling-plus` -> `sampling+`)."""
    for s, x in LICENSES.items():
        if x.config_name == folder:
            return s
    raise KeyError(f"no license has the folder name {folder!r}")


def normalize_slug(raw: str | None) -> str | None:
    """Lower-case, trim and resolve aliases; None when empty."""
    if raw is None or not raw.strip():
        return None
    slug = raw.strip().lower()
    return ALIASES.get(slug, slug)


def normalize_version(raw: str | None) -> str | None:
    """`4` -> `4.0` as Openverse writes versions; None when empty."""
    if raw is None or not raw.strip():
        return None
    v = raw.strip()
    return f"{v}.0" if v.isdigit() else v


def is_valid(slug: str, version: str, jurisdiction: str = "") -> bool:
    """Whether CC published `slug` at `version` for `jurisdiction` ("" = unported). Test oracle: the clean
    step reads the same table through `valid_keys`."""
    return slug in VERSIONS.get(version, {}).get(jurisdiction, ())


@cache
def valid_keys() -> frozenset[str]:
    """`slug|version|jurisdiction` for every combination that exists (used by the polars cleaning step)."""
    return frozenset(f"{s}|{v}|{j}" for v, jurs in VERSIONS.items() for j, slugs in jurs.items() for s in slugs)


# Where a license's deed lives under creativecommons.org, when it is not `licenses/<slug>/`.
_URL_PREFIX: dict[str, str] = {
    "cc0": "publicdomain/zero",
    "pdm": "publicdomain/mark",
    "certification": "publicdomain/certification",
}


def _url_path(slug: str, version: str) -> str:
    prefix = _URL_PREFIX.get(slug, f"licenses/{_URL_SLUG.get((slug, version), slug)}")
    return f"{prefix}/{version}/"


@cache
def url_paths() -> dict[str, str]:
    """`slug|version` -> deed path (`licenses/by-nd-nc/1.0/` for by-nc-nd 1.0), for every published pair."""
    return {f"{s}|{v}": _url_path(s, v) for v, jurs in VERSIONS.items() for slugs in jurs.values() for s in slugs}


def license_url(slug: str, version: str, jurisdiction: str = "") -> str:
    """The deed URL Openverse builds when the catalog row has none (test oracle of the clean step's column)."""
    path = url_paths().get(f"{slug}|{version}") or _url_path(slug, version)
    if jurisdiction:
        path += f"{jurisdiction}/"
    return f"https://creativecommons.org/{path}"


def full_name(slug: str, version: str | None, jurisdiction: str = "") -> str:
    """`CC BY-NC-SA 2.0 JP`, `CC0 1.0`, `Public Domain Mark 1.0`."""
    name = LICENSES[slug].display_name
    if version:
        name += f" {version}"
    if jurisdiction:
        name += f" {jurisdiction.upper()}"
    return name


# A deed URL as the catalog stores it: any case, `www.` or not, with or without the trailing slash, possibly
# pointing at the legal code or a translated deed (`.../by/4.0/legalcode`, `.../deed.en`). The tail is cut
# before parsing, so `legalcode` is never read as a jurisdiction.
LICENSE_URL_TAIL_RE = re.compile(r"/(?:legalcode|deed)(?:\.[a-z_-]+)?/?$")
LICENSE_URL_RE = re.compile(
    r"^https?://(?:www\.)?creativecommons\.org/(?:licenses|publicdomain)/([a-z+-]+)/(\d\.\d)/?(?:([a-z]+)/?)?$"
)


def parse_license_url(url: str | None) -> tuple[str, str, str] | None:
    """(slug, version, jurisdiction) of a creativecommons.org deed URL, or None if it is not one."""
    if not url:
        return None
    m = LICENSE_URL_RE.match(LICENSE_URL_TAIL_RE.sub("/", url.strip().lower()))
    if not m:
        return None
    return normalize_slug(m.group(1)) or "", m.group(2), m.group(3) or ""


def attribution(
    title: str | None, creator: str | None, slug: str, version: str | None, jurisdiction: str, url: str
) -> str:
    """Openverse's plain-text attribution for a work (the API's `attribution` field)."""
    lic = LICENSES[slug]
    parts = [
        f'"{title}"' if title else "This work",
        f"by {creator}" if creator else "",
        "is marked with" if lic.public_domain else "is licensed under",
        full_name(slug, version, jurisdiction) + ".",
        f"To view {'the terms' if lic.public_domain else 'a copy of this license'}, visit {url}.",
    ]
    return re.sub(r"\s{2,}", " ", " ".join(parts)).strip()


HUB_LICENSE_IDS: dict[tuple[str, str], str] = {
    ("cc0", "1.0"): "cc0-1.0",
    **{("by", v): f"cc-by-{v}" for v in ("2.0", "2.5", "3.0", "4.0")},
    **{("by-sa", v): f"cc-by-sa-{v}" for v in ("3.0", "4.0")},
    **{("by-nc", v): f"cc-by-nc-{v}" for v in ("2.0", "3.0", "4.0")},
    ("by-nd", "4.0"): "cc-by-nd-4.0",
    **{("by-nc-nd", v): f"cc-by-nc-nd-{v}" for v in ("3.0", "4.0")},
    **{("by-nc-sa", v): f"cc-by-nc-sa-{v}" for v in ("2.0", "3.0", "4.0")},
}
"""License ids the Hub knows; everything else is listed as `other` (the per-row columns are the authority)."""


def hub_license_ids(pairs: set[tuple[str, str]]) -> list[str]:
    """Hub `license:` ids for the (slug, version) pairs in a release, `other` for those the Hub lacks."""
    ids = {HUB_LICENSE_IDS.get(p, "other") for p in pairs}
    return sorted(ids - {"other"}) + (["other"] if "other" in ids else [])
