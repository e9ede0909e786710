"""Openverse's cleaning rules as pure polars expressions over a raw partition.

Every rule is one declared unit in `RULES` (see `transform/rules.py`): it either repairs a value (and raises a
`_fix_<rule>` flag, counted per batch) or names a reject reason (`_reject`); nothing is dropped silently. The
first matching reject in priority order wins, so a work that is both taken down and malformed is counted once,
as taken down. The aim is the data Openverse's API serves; where the dataset differs on purpose,
docs/fidelity.md says so and why (Openverse's own tests, ported as data, are the judge).

`clean_lazy` never opens a file or a database: the caller scans the raw shards and the takedown snapshot,
streams the result in batches, and splits kept rows from rejects (see `run_clean`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from html.parser import HTMLParser

import polars as pl

from openverse_dataset import licenses as lic
from openverse_dataset.media import MediaType
from openverse_dataset.transform import optout
from openverse_dataset.transform import rules as R
from openverse_dataset.transform.rules import Rule, RuleContext

INT_MISSING = 2_147_483_647  # integers at or over this are "missing" in the catalog

TAG = pl.Struct({"name": pl.String, "provider": pl.String, "accuracy": pl.Float64})
TAGS = pl.List(TAG)
# Decoded with accuracy as text so numbers and quoted numbers ("0.95", common in real rows) both take the fast
# path; then cast, as Openverse compares float(accuracy).
_TAGS_TEXT = pl.List(pl.Struct({"name": pl.String, "provider": pl.String, "accuracy": pl.String}))
_DECODED = pl.Struct({"tags": TAGS, "malformed": pl.Boolean, "unicode": pl.Boolean})

TAG_DENYLIST = [
    "no person",
    "squareformat",
    "uploaded:by=flickrmobile",
    "uploaded:by=instagram",
    "flickriosapp:filter=flamingo",
    "by",
]
TAG_DENY_SUBSTRINGS = [
    "flickriosapp",
    "uploaded",
    ":",
    "=",
    "cc0",
    "by-nc",
    "by-nd",
    "by-sa",
    "by-nc-nd",
    "by-nc-sa",
    "pdm",
]
TAG_MIN_ACCURACY = 0.90
TAG_DENY_PROVIDERS = ["rekognition"]

_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")
JSON_SLICE_ROWS = 2_000
_SLOW_TAGS = r'"name"\s*:\s*[^"\s]|\\\\x[0-9A-Fa-f]{2}'


def unescape_bytes(name: str) -> str:
    """`mu\\xf1o` -> `muño`: runs of escaped bytes decode as UTF-8 when they form it, else as Latin-1."""

    def fix(m: re.Match) -> str:
        data = bytes(int(h, 16) for h in m.group(0).split("\\x")[1:])
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")

    return _ESCAPES.sub(fix, name)


def _decode_one(text: str | None) -> tuple[list | None, bool, bool]:
    """Python path for the rare rows the fast decoder cannot take exactly: (tags, malformed, unicode)."""
    if text is None:
        return None, False, False
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError):  # RecursionError: nested thousands deep
        return None, True, False
    if value is None or value == {}:  # the catalog writes "{}" for "no tags" in old rows
        return None, False, False
    if not isinstance(value, list):
        return None, True, False
    out, fixed = [], False
    for t in value:
        t = t if isinstance(t, dict) else {}
        name = t.get("name") if isinstance(t.get("name"), str) else None
        if name and _ESCAPES.search(name):
            name, fixed = unescape_bytes(name), True
        acc = t.get("accuracy")
        try:
            acc = None if acc is None or isinstance(acc, bool) else float(acc)
        except (TypeError, ValueError):
            acc = None
        prov = t.get("provider") if isinstance(t.get("provider"), str) else None
        out.append({"name": name, "provider": prov, "accuracy": acc})
    return out, False, fixed


def decode_tags(raw: pl.Series) -> pl.Series:
    """Tags JSON text -> list of {name, provider, accuracy}, never raising on bad input.

    Most rows go through polars' JSON decoder; rows it would coerce (non-string names), rows with escaped
    bytes and slices it rejects go through `_decode_one`.
    """
    n = len(raw)
    empty = raw.str.contains(r"^\s*\{\s*\}\s*$").fill_null(False)  # old rows write "{}" for "no tags"
    slow = ((raw.str.contains(_SLOW_TAGS) | ~raw.str.contains(r"^\s*(?:\[|null\s*$)")) & ~empty).fill_null(False)
    # Decoded a few thousand rows at a time: polars' JSON decoder holds ~4 KB per row while it works (85 MB for
    # 20k rows of tags here against 28 MB in 2k-row slices, and slices are faster too). A slice it rejects
    # goes to the Python path on its own.
    wanted = pl.select(pl.when(~slow & ~empty).then(raw)).to_series()
    parts = []
    for start in range(0, n, JSON_SLICE_ROWS):
        part = wanted.slice(start, JSON_SLICE_ROWS)
        try:
            parts.append(
                part.str.json_decode(_TAGS_TEXT).list.eval(
                    pl.element().struct.with_fields(pl.field("accuracy").cast(pl.Float64, strict=False))
                )
            )
        except pl.exceptions.PolarsError:
            parts.append(pl.Series("tags", [None] * len(part), dtype=TAGS))
            slow = slow.scatter(list(range(start, start + len(part))), raw.slice(start, len(part)).is_not_null())
    fast = pl.concat(parts) if parts else pl.Series("tags", [], dtype=TAGS)
    malformed = [False] * n
    unicode = [False] * n
    idx = slow.arg_true().to_list()
    if idx:
        slow_values: list = [None] * n
        for i in idx:
            slow_values[i], malformed[i], unicode[i] = _decode_one(raw[i])
        slow_s = pl.Series("slow", slow_values, dtype=TAGS)
        fast = pl.select(pl.when(slow).then(slow_s).otherwise(fast)).to_series()
    return pl.DataFrame(
        {"tags": fast, "malformed": pl.Series(malformed, dtype=pl.Boolean), "unicode": unicode}
    ).to_struct("decoded")


def _keep_tag() -> pl.Expr:
    name = pl.element().struct.field("name")
    low = name.str.to_lowercase()
    acc = pl.element().struct.field("accuracy")
    return (
        name.is_not_null()
        & (name != "")
        & (acc.is_null() | (acc >= TAG_MIN_ACCURACY))
        & ~pl.element().struct.field("provider").fill_null("").is_in(TAG_DENY_PROVIDERS)
        & ~low.is_in(TAG_DENYLIST)
        & ~low.str.contains_any(TAG_DENY_SUBSTRINGS)
    )


# --- markup (the API strips HTML from title and creator: api/api/utils/text.py) ------------------------------

# A tag opened at the very end and never closed is still a tag once the value lands in a page.
_OPEN_TAG_AT_END = re.compile(r"<(?=[A-Za-z/!?])[^>]*\Z")
_MAYBE_MARKUP = r"[<&]"  # values without either are returned unchanged, so only these reach Python


class _TextOnly(HTMLParser):
    """Keeps the text between tags (character references decoded); tags, comments, declarations vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _drop_tags(value: str) -> str:
    while "<" in value and ">" in value:
        parser = _TextOnly()
        parser.feed(value)
        parser.close()
        text = "".join(parser.text)
        if text == value:
            break
        value = text
    return _OPEN_TAG_AT_END.sub("", value)


def _unescape_all(value: str) -> str:
    while (decoded := html.unescape(value)) != value:
        value = decoded
    return value


def strip_markup(value: str | None) -> str | None:
    """Title/creator text as Openverse's API serves it: HTML tags (literal or entity-encoded) removed.

    Entities are decoded and tags dropped until the value is stable; a value with no markup comes back
    exactly as stored (entities included), one with markup comes back with its whitespace collapsed.
    """
    if not value:
        return value
    decoded = _unescape_all(value)
    plain = decoded
    while (stripped := _drop_tags(html.unescape(plain))) != plain:
        plain = stripped
    return value if plain == decoded else " ".join(plain.split())


def strip_markup_series(s: pl.Series) -> pl.Series:
    """`strip_markup` over a column, calling Python only for the values that contain `<` or `&`."""
    idx = s.str.contains(_MAYBE_MARKUP).fill_null(False).arg_true()
    if idx.len() == 0:
        return s
    return s.clone().scatter(idx, [strip_markup(v) for v in s.gather(idx).to_list()])


def _markup_free(col: str) -> pl.Expr:
    return pl.col(col).map_batches(strip_markup_series, return_dtype=pl.String, is_elementwise=True).alias(col)


# --- URLs (the API's add_protocol: api/api/utils/url.py) -----------------------------------------------------

# A scheme has no dot: `example.com:8080/user` is a host with a port, and gets https:// like any URL without one.
_SCHEME = r"^[A-Za-z][A-Za-z0-9+\-]*:"
_VALID_URL = r"^(?i:https?)://[^\s/?#@]+\.[^\s/?#@]*[^\s/?#@.]"
URL_COLUMNS = ("foreign_landing_url", "url", "thumbnail", "creator_url")


# What a URL may not hold. Control characters (C0 and DEL; PostgreSQL text cannot hold NUL): Openverse's catalog
# refuses such a URL at ingestion (URLColumn's sanitising), a browser drops or re-encodes them, so the stored value
# names no resource reliably; the media URL's row is rejected, a secondary URL is removed. A space is what a
# browser sends as %20: it is percent-encoded (counted), since the API serves the work with its URL as stored and
# the catalog's SpaceInUrlError only guards new ingestion (docs/fidelity.md, caturl-15).
_CONTROL = r"[\x00-\x1f\x7f]"


def _url(col: str) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(repaired URL or null, scheme added, valid, holds control characters, spaces encoded, whitespace trimmed)
    for one URL column.

    Leading and trailing whitespace is trimmed first (as a browser does); validity is judged before spaces are
    encoded, so a space inside the host still makes the URL invalid.
    """
    s = pl.col(col).str.strip_chars()
    s = pl.when(s != "").then(s)
    has_scheme = s.str.contains(_SCHEME)
    fixed = (
        pl.when(has_scheme)
        .then(s)
        .when(s.str.starts_with("//"))
        .then(pl.lit("https:") + s)
        .otherwise(pl.lit("https://") + s)
    )
    valid = fixed.str.contains(_VALID_URL)
    control = s.str.contains(_CONTROL)
    spaces = s.str.contains(" ", literal=True) & valid & ~control
    encoded = fixed.str.replace_all(" ", "%20", literal=True)
    trimmed = s.is_not_null() & (s != pl.col(col))  # a changed value is always counted, never silent
    return encoded, s.is_not_null() & ~has_scheme, valid, control, spaces, trimmed


def _where_key(col: str, key: str) -> pl.Expr:
    """The JSON text of `col` where it mentions `"key"` at all, else null (nulls skip the JSON parser)."""
    return pl.when(pl.col(col).str.contains(f'"{key}"', literal=True)).then(pl.col(col))


def _mature_flag() -> pl.Expr:
    """`meta_data.mature` is true; also when the JSON path lookup cannot tell (polars gives up past ~127 levels
    of nesting) but the text says `"mature": true` anywhere: an unknown flag counts as set, never as clear."""
    text = _where_key("meta_data", "mature")
    top = text.str.json_path_match("$.mature").str.to_lowercase()
    says_true = text.str.contains(r'"mature"\s*:\s*"?(?i:true)')
    return ((top == "true") | (top.is_null() & says_true)).fill_null(False)


def _int(col: str) -> tuple[pl.Expr, pl.Expr]:
    c = pl.col(col)
    bad = (c >= INT_MISSING) | (c < 0)
    return pl.when(bad).then(None).otherwise(c).cast(pl.Int32).alias(col), bad.fill_null(False)


def _filetype(media: MediaType) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """(first stage: the given and URL-derived filetypes; second stage: the final value).

    A given filetype is kept when the catalog could store it for this media type (case and Openverse's
    aliases unified); a missing one is read from the URL's extension as `catalog/dags/common/extensions.py`
    does, only when the extension belongs to this media type.
    """
    given = pl.col("filetype").str.strip_chars().str.to_lowercase().replace(dict(media.filetype_aliases))
    ext = (
        pl.col("url")
        .str.extract(r"\.([A-Za-z0-9]{1,5})(?:[?#].*)?$")
        .str.to_lowercase()
        .replace_strict(dict(media.url_extensions), default=None, return_dtype=pl.String)
    )
    first = [pl.when(given != "").then(given).alias("_ft_given"), ext.alias("_ft_ext")]
    given, ext = pl.col("_ft_given"), pl.col("_ft_ext")
    known = sorted(media.filetypes)
    return first, [pl.when(given.is_in(known)).then(given).when(given.is_null()).then(ext).alias("filetype")]


def _license_stages() -> list[list[pl.Expr]]:
    """Resolve slug/version/jurisdiction, as successive `with_columns` stages.

    Staged so each intermediate (JSON path lookups above all) is computed once per row: as one expression tree
    polars evaluated the shared parts several times over (2.0 s against 0.3 s per 200k rows).
    """
    slug = pl.col("license").str.strip_chars().str.to_lowercase()
    raw_ver = pl.col("license_version").str.strip_chars()
    first = [
        pl.when(slug != "").then(slug.replace(lic.ALIASES)).alias("_slug"),
        pl.when(raw_ver != "").then(raw_ver).alias("_raw_ver"),
        pl.col("meta_data").str.json_path_match("$.license_url").alias("_meta_url"),
    ]
    rv = pl.col("_raw_ver")
    meta = pl.col("_meta_url").str.strip_chars().str.to_lowercase()
    second = [
        pl.when(rv.str.contains(r"^\d+$")).then(rv + ".0").otherwise(rv).alias("_ver_in"),
        meta.str.replace(lic.LICENSE_URL_TAIL_RE.pattern, "/")
        .str.extract_groups(lic.LICENSE_URL_RE.pattern)
        .alias("_url_parts"),
    ]
    parts = pl.col("_url_parts")
    third = [
        parts.struct.field("1").replace(lic.ALIASES).alias("_url_slug"),
        parts.struct.field("2").alias("_url_ver"),
        parts.struct.field("3").fill_null("").alias("_url_jur"),
    ]
    slug, ver, url_slug, url_ver, url_jur = (
        pl.col(c) for c in ("_slug", "_ver_in", "_url_slug", "_url_ver", "_url_jur")
    )
    same_slug = (url_slug == slug).fill_null(False)
    fourth = [
        same_slug.alias("_same_slug"),
        pl.when(same_slug & (url_ver == ver)).then(url_jur).otherwise(pl.lit("")).alias("_row_jur"),
        slug.is_in([s for s, x in lic.LICENSES.items() if x.public_domain and x.served]).fill_null(False).alias("_pd"),
        slug.is_in(list(lic.LICENSES)).fill_null(False).alias("_known"),
        slug.is_in([s for s, x in lic.LICENSES.items() if x.served]).fill_null(False).alias("_served"),
    ]

    def valid(s: pl.Expr, v: pl.Expr, j: pl.Expr) -> pl.Expr:
        return pl.concat_str([s, v, j], separator="|").is_in(list(lic.valid_keys())).fill_null(False)

    fifth = [
        valid(slug, ver, pl.col("_row_jur")).alias("_ok_row"),
        (pl.col("_same_slug") & valid(slug, url_ver, url_jur)).alias("_ok_url"),
    ]
    pd, ok_row, ok_url = pl.col("_pd"), pl.col("_ok_row"), pl.col("_ok_url")
    sixth = [
        pl.when(pd).then(pl.lit("1.0")).when(ok_row).then(ver).when(ok_url).then(url_ver).alias("_ver"),
        pl.when(pd).then(pl.lit("")).when(ok_row).then(pl.col("_row_jur")).when(ok_url).then(url_jur).alias("_jur"),
    ]
    return [first, second, third, fourth, fifth, sixth]


def _served_license_url() -> pl.Expr:
    """`license_url` as the API serves it (api/api/models/media.py): the catalog's meta_data.license_url as
    stored when it has one, else the deed URL of the row's license."""
    slug, ver, jur, stored = pl.col("_slug"), pl.col("_ver"), pl.col("_jur"), pl.col("_meta_url")
    path = pl.concat_str([slug, ver], separator="|").replace_strict(lic.url_paths(), default=None)
    built = pl.lit("https://creativecommons.org/") + path + pl.when(jur != "").then(jur + "/").otherwise(pl.lit(""))
    return pl.when(stored.fill_null("") != "").then(stored).otherwise(built)


def _attribution() -> pl.Expr:
    """The API's plain-text attribution, from the markup-free title and creator and the served license_url."""
    slug, ver, jur = pl.col("_slug"), pl.col("_ver"), pl.col("_jur")
    display = slug.replace_strict({s: x.display_name for s, x in lic.LICENSES.items()}, default=None)
    name = pl.concat_str([display, pl.lit(" "), ver]) + pl.when(jur != "").then(
        pl.lit(" ") + jur.str.to_uppercase()
    ).otherwise(pl.lit(""))
    is_pd = slug.is_in([s for s, x in lic.LICENSES.items() if x.public_domain])
    title, creator = pl.col("title"), pl.col("creator")
    text = pl.concat_str(
        [
            pl.when(title.fill_null("") != "").then(pl.lit('"') + title + '"').otherwise(pl.lit("This work")),
            pl.when(creator.fill_null("") != "").then(pl.lit("by ") + creator).otherwise(pl.lit("")),
            pl.when(is_pd).then(pl.lit("is marked with")).otherwise(pl.lit("is licensed under")),
            name + ".",
            pl.lit("To view ")
            + pl.when(is_pd).then(pl.lit("the terms")).otherwise(pl.lit("a copy of this license"))
            + ", visit "
            + pl.col("license_url")
            + ".",
        ],
        separator=" ",
    )
    return text.str.replace_all(r"\s{2,}", " ").str.strip_chars()


def _category_given() -> pl.Expr:
    return pl.col("_raw_category").str.strip_chars().str.to_lowercase()


def _takedown_is(reason: str):
    return lambda ctx: pl.col("_takedown") == reason


# --- the rules -------------------------------------------------------------------------------------------

_LICENSE_IN = ("license", "license_version", "meta_data")
RULES: tuple[Rule, ...] = (
    # Rejects, by priority: the first that matches is the row's reason.
    Rule("taken_down", "reject", 10,
         "listed in api_deleted<media>: de-indexed for good (deleted at source, takedown, sensitive)",
         _takedown_is("taken_down"), removal="taken_down"),
    Rule("deleted_in_catalog", "reject", 20,
         "listed in deleted_<media>: moved out of the catalog (e.g. dead link)",
         _takedown_is("deleted_in_catalog"), removal="deleted"),
    Rule("mature", "reject", 30, "listed in api_mature<media>: confirmed sensitive",
         _takedown_is("mature"), removal="taken_down"),
    Rule("source_hidden", "reject", 40,
         "its source is hidden in the API (content_provider.filter_content): the API serves none of its works",
         lambda ctx: pl.coalesce("source", "provider").is_in(list(ctx.hidden_sources)), removal="source_hidden"),
    Rule("opted_out", "reject", 45,
         "its creator opted out: creator_url, a landing-URL prefix or a domain is on the opt-out list",
         lambda ctx: optout.matches(ctx.opt_outs), removal="opted_out"),
    Rule("mature_by_provider", "reject", 50, "the provider marks the work as mature (meta_data.mature)",
         lambda ctx: pl.col("_mature_by_provider"), removal="taken_down"),
    Rule("removed_from_source", "reject", 60, "removed_from_source is true: the API never shows it as a live work",
         lambda ctx: pl.col("removed_from_source"), removal="removed_from_source"),
    Rule("missing_url", "reject", 70, "no media URL",
         lambda ctx: pl.col("_raw_url").str.strip_chars().fill_null("") == "", removal="rejected"),
    Rule("url_control_characters", "reject", 75,
         "the media URL holds control characters (tab, newline, other C0 or DEL): Openverse's catalog refuses such "
         "URLs and no client fetches what is stored",
         lambda ctx: pl.col("_url_control"), removal="rejected"),
    Rule("invalid_url", "reject", 80,
         "the media URL is not an http(s) URL with a host, even after adding a scheme",
         lambda ctx: ~pl.col("_url_valid"), removal="rejected"),
    Rule("unknown_license", "reject", 90, "the license slug is not a Creative Commons license or mark",
         lambda ctx: ~pl.col("_known"), removal="rejected"),
    Rule("license_not_served", "reject", 100,
         "a retired license Openverse does not serve (sa, nc, nd, sampling, ...)",
         lambda ctx: ~pl.col("_served"), removal="rejected"),
    Rule("missing_license_version", "reject", 110, "no license version, and none in meta_data.license_url",
         lambda ctx: pl.col("_ver").is_null() & pl.col("_ver_in").is_null(), removal="rejected"),
    Rule("invalid_license_version", "reject", 120,
         "a version that does not exist for the license (and no valid one in the URL)",
         lambda ctx: pl.col("_ver").is_null(), removal="rejected"),
    Rule("duplicate", "reject", 130,
         "a second row with the same (provider, foreign_identifier); the first by identifier is kept",
         None, removal="rejected"),
    # Repairs: each raises its `_fix_<name>` flag.
    Rule("url_scheme_added", "repair", 10,
         "a URL without a scheme got https:// (foreign_landing_url, url, thumbnail, creator_url)",
         lambda ctx: pl.col("_url_added"), derives={c: (c,) for c in URL_COLUMNS},
         summary="URLs without a scheme given `https://`"),
    Rule("url_dropped", "repair", 20,
         "a secondary URL that is not http(s), or holds control characters, was set to null (thumbnail, "
         "creator_url, landing URL)",
         lambda ctx: pl.col("_url_dropped"),
         summary="unsafe secondary URLs removed"),
    Rule("url_spaces_encoded", "repair", 22,
         "spaces inside a URL percent-encoded as %20, the request a browser makes for it (all URL columns)",
         lambda ctx: pl.col("_url_spaces"), derives={c: (c,) for c in URL_COLUMNS},
         summary="spaces in URLs percent-encoded"),
    Rule("url_whitespace_trimmed", "repair", 23,
         "leading or trailing whitespace removed from a URL, as a browser does (all URL columns)",
         lambda ctx: pl.col("_url_trimmed"), derives={c: (c,) for c in URL_COLUMNS},
         summary="whitespace around URLs removed"),
    Rule("markup_stripped", "repair", 25,
         "HTML markup removed from title or creator, as the API serves them",
         lambda ctx: (pl.col("title") != pl.col("_raw_title")) | (pl.col("creator") != pl.col("_raw_creator")),
         derives={"title": ("title",), "creator": ("creator",)},
         summary="HTML markup removed from titles and creators"),
    Rule("tags_unparseable", "repair", 30, "tags that are not a JSON array of objects were set to null",
         lambda ctx: pl.col("_decoded").struct.field("malformed"),
         summary="unparseable tags removed"),
    Rule("tags_filtered", "repair", 40,
         "tags dropped by Openverse's rules (no name, accuracy < 0.90, rekognition, denylist)",
         lambda ctx: pl.col("_tags_dropped") > 0, derives={"tags": ("tags",)},
         summary="tags filtered (no name, machine tags under 0.90 accuracy, rekognition, denylisted names)"),
    Rule("tag_unicode_repaired", "repair", 50,
         "escaped byte sequences (\\xf1) in tag names decoded to characters",
         lambda ctx: pl.col("_decoded").struct.field("unicode"),
         summary="escaped bytes in tag names decoded"),
    Rule("license_normalised", "repair", 60,
         "license slug lower-cased, trimmed or an alias resolved (CC0 -> cc0, by-nd-nc)",
         lambda ctx: (pl.col("_slug") != pl.col("_raw_license")) & pl.col("_known"), derives={"license": ("license",)},
         summary="license slugs normalised"),
    Rule("license_version_normalised", "repair", 70, "version written as Openverse does (4 -> 4.0)",
         lambda ctx: pl.col("_ok_row") & ~pl.col("_pd") & (pl.col("_ver_in") != pl.col("_raw_ver")),
         derives={"license_version": ("license_version",)},
         summary="versions written as Openverse writes them"),
    Rule("license_version_corrected", "repair", 80,
         "CC0/PDM exist only at 1.0: an impossible version was replaced",
         lambda ctx: pl.col("_pd") & (pl.col("_ver_in").is_null() | (pl.col("_ver_in") != "1.0")),
         derives={"license_version": ("license", "license_version")},
         summary="impossible CC0/PDM versions set to 1.0"),
    Rule("license_version_from_url", "repair", 90,
         "an invalid version replaced by the one in meta_data.license_url",
         lambda ctx: ~pl.col("_pd") & ~pl.col("_ok_row") & pl.col("_ok_url"),
         derives={"license_version": ("meta_data",), "license_jurisdiction": ("meta_data",)},
         summary="versions that do not exist replaced by the one in the catalog's license URL"),
    Rule("license_url_built", "repair", 95,
         "no meta_data.license_url: the deed URL was built from license and version, as the API does",
         lambda ctx: pl.col("_meta_url").fill_null("") == "", derives={"license_url": _LICENSE_IN},
         summary="license URLs built where the catalog has none"),
    Rule("filetype_normalised", "repair", 100,
         "filetype lower-cased or unified as Openverse does (jpeg -> jpg, tif -> tiff, aiff -> aif)",
         lambda ctx: pl.col("_ft_given").is_in(sorted(ctx.media.filetypes))
         & (pl.col("_ft_given") != pl.col("_raw_filetype")),
         derives={"filetype": ("filetype",)},
         summary="file types unified as the catalog stores them"),
    Rule("filetype_from_url", "repair", 110,
         "missing filetype taken from the URL's extension (catalog/dags/common/extensions.py)",
         lambda ctx: pl.col("_ft_given").is_null() & pl.col("_ft_ext").is_not_null(),
         derives={"filetype": ("filetype", "url")},
         summary="missing file types read from the URL"),
    Rule("filetype_dropped", "repair", 120,
         "a filetype the catalog cannot store for this media type was set to null",
         lambda ctx: pl.col("_ft_given").is_not_null() & ~pl.col("_ft_given").is_in(sorted(ctx.media.filetypes)),
         summary="unknown file types removed"),
    Rule("category_dropped", "repair", 130, "a category outside the media type's list was set to null",
         lambda ctx: (_category_given() != "") & ~_category_given().is_in(sorted(ctx.media.categories)),
         derives={"category": ("category",)},
         summary="unknown categories removed"),
    Rule("integer_out_of_range", "repair", 140,
         "an integer at or over 2,147,483,647 (or negative) was set to null",
         lambda ctx: pl.col("_int_bad"),
         summary="out-of-range integers removed"),
    # Derivations every kept row gets.
    Rule("attribution", "derive", 10,
         "the API's attribution text, from the markup-free title and creator and the served license_url",
         derives={"attribution": ("title", "creator", *_LICENSE_IN)}),
)  # fmt: skip

REJECT_REASONS: dict[str, str] = R.reason_table(RULES)
REPAIRS: dict[str, str] = R.repair_table(RULES)
REMOVAL_CLASSES: dict[str, str] = R.REMOVAL_CLASSES
DERIVED: dict[str, list[str]] = R.lineage(RULES)
FIX_COLUMNS = [f"_fix_{k}" for k in REPAIRS]


def removal_class_sql(column: str) -> str:
    """SQL mapping a reject reason to its removal class (removals.parquet's `reason`)."""
    return R.removal_class_sql(RULES, column)


def reason_priority_sql(column: str) -> str:
    """SQL giving a reject reason's priority, to pick one reason per identifier the way the clean step does."""
    return R.priority_sql(RULES, column)


def cleaning_summary() -> str:
    """The card's sentence on cleaning, from the repair rules."""
    phrases = [r.summary or r.meaning for r in R.repairs(RULES)]
    return (
        "Openverse's own cleaning rules were applied, so each row is what Openverse's API serves for the work "
        "(the deliberate differences are listed in the project's docs/fidelity.md): " + "; ".join(phrases) + ". "
        "Rows that could not be published:"
    )


def output_columns(media: MediaType) -> list[str]:
    """Columns of a cleaned row, in file order: what the published dataset holds."""
    specific = [name for name, _ in media.specific_columns]
    return [
        "identifier",
        "provider",
        "source",
        "foreign_identifier",
        "title",
        "creator",
        "creator_url",
        "license",
        "license_version",
        "license_jurisdiction",
        "license_url",
        "attribution",
        "foreign_landing_url",
        "url",
        "thumbnail",
        *specific,
        "filesize",
        "filetype",
        "category",
        "tags",
        "meta_data",
        "watermarked",
        "standardized_popularity",
        "ingestion_type",
        "created_on",
        "updated_on",
        "last_synced_with_source",
    ]


def one_reason_per_work(takedowns: pl.LazyFrame) -> pl.LazyFrame:
    """One (identifier, reason) per work: the reason of highest priority (taken_down before deleted_in_catalog)."""
    priority = {r.name: r.priority for r in R.rejects(RULES)}
    rank = pl.col("reason").replace_strict(priority, default=1_000_000, return_dtype=pl.Int32)
    return takedowns.sort(rank, maintain_order=True).unique("identifier", keep="first", maintain_order=True)


def clean_lazy(
    raw: pl.LazyFrame,
    media: MediaType,
    takedowns: pl.LazyFrame,
    *,
    dedupe: bool = True,
    hidden_sources: Sequence[str] = (),
    opt_outs: optout.OptOuts = optout.NO_OPT_OUTS,
) -> pl.LazyFrame:
    """Apply every rule to a raw partition.

    `takedowns` has columns (identifier, reason) with reason in taken_down/deleted_in_catalog/mature;
    `hidden_sources` are the sources the API hides (content_provider.filter_content); `opt_outs` the creators'
    opt-out list (`transform/optout.py`). The result has the
    output columns plus `_reject` (null for kept rows) and `_fix_*` flags. With `dedupe=False` the caller
    removes duplicates of (provider, foreign_identifier) itself (the chunked clean step does it across chunks,
    see `transform/partition.py`).
    """
    ctx = RuleContext(media=media, hidden_sources=tuple(sorted(hidden_sources)), opt_outs=opt_outs)
    lf = raw.join(
        one_reason_per_work(takedowns).rename({"reason": "_takedown"}),
        on="identifier",
        how="left",
        maintain_order="left",
    )
    exprs: list[pl.Expr] = []
    scheme_flags, dropped_flags, space_flags, trim_flags = [], [], [], []
    for col in URL_COLUMNS:
        fixed, added, valid, control, spaces, trimmed = _url(col)
        scheme_flags.append(added.fill_null(False))
        space_flags.append(spaces.fill_null(False))
        trim_flags.append((trimmed & valid & ~control).fill_null(False))
        if col == "url":
            exprs += [
                fixed.alias(col),
                valid.fill_null(False).alias("_url_valid"),
                control.fill_null(False).alias("_url_control"),
            ]
        else:
            keep = valid & ~control
            exprs.append(pl.when(keep).then(fixed).alias(col))
            dropped_flags.append((fixed.is_not_null() & ~keep).fill_null(False))
    int_flags = []
    for col in media.integer_columns:
        e, flag = _int(col)
        exprs.append(e)
        int_flags.append(flag)
    ft_first, ft_second = _filetype(media)
    license_stages = _license_stages()
    cat = pl.col("category").str.strip_chars().str.to_lowercase()
    exprs += [
        *ft_first,
        pl.when(cat.is_in(sorted(media.categories))).then(cat).alias("category"),
        pl.col("tags").map_batches(decode_tags, return_dtype=_DECODED, is_elementwise=True).alias("_decoded"),
        _markup_free("title"),
        _markup_free("creator"),
        *(pl.col(c).alias(f"_raw_{c}") for c in ("url", "license", "license_version", "title", "creator")),
        pl.col("filetype").alias("_raw_filetype"),
        pl.col("category").alias("_raw_category"),
        pl.any_horizontal(scheme_flags).alias("_url_added"),
        pl.any_horizontal(dropped_flags).alias("_url_dropped"),
        pl.any_horizontal(space_flags).alias("_url_spaces"),
        pl.any_horizontal(trim_flags).alias("_url_trimmed"),
        pl.any_horizontal(int_flags).alias("_int_bad"),
        # Parsed only where the key can be: a JSON path on every row cost ~1 s per million rows.
        _mature_flag().alias("_mature_by_provider"),
        *license_stages[0],
    ]
    lf = lf.with_columns(exprs).with_columns(ft_second + license_stages[1])
    for stage in license_stages[2:]:
        lf = lf.with_columns(stage)

    decoded = pl.col("_decoded").struct.field("tags")
    decoded = decoded.list.eval(pl.element().struct.with_fields(pl.field("name").str.strip_chars().alias("name")))
    kept = decoded.list.eval(pl.element().filter(_keep_tag()))
    lf = lf.with_columns(
        pl.when(kept.list.len() > 0).then(kept).alias("tags"),
        (decoded.list.len() - kept.list.len()).fill_null(0).alias("_tags_dropped"),
    )
    if opt_outs:
        lf = lf.with_columns(optout.stage(opt_outs))  # the opt-out list's keys, read by the `opted_out` rule
    lf = lf.with_columns(
        *(r.when(ctx).fill_null(False).alias(f"_fix_{r.name}") for r in R.repairs(RULES)),
        R.reject_expr(RULES, ctx).alias("_reject"),
    )
    if dedupe:
        # Dedupe among rows that survived every other rule; null keys (no foreign_identifier) never collide.
        key = pl.when(pl.col("_reject").is_null() & pl.col("foreign_identifier").is_not_null()).then(
            pl.struct("provider", "foreign_identifier")
        )
        lf = lf.with_columns(
            pl.when(pl.col("_reject").is_null() & key.is_not_null() & ~key.is_first_distinct())
            .then(pl.lit("duplicate"))
            .otherwise(pl.col("_reject"))
            .alias("_reject")
        )
    return (
        lf.with_columns(_served_license_url().alias("license_url"))
        .with_columns(_attribution().alias("attribution"))
        .with_columns(
            pl.col("_slug").alias("license"),
            pl.col("_ver").alias("license_version"),
            pl.col("_jur").alias("license_jurisdiction"),
        )
    )


REJECT_COLUMNS = [
    "identifier",
    "provider",
    "source",
    "foreign_identifier",
    "reason",
    "raw_license",
    "raw_license_version",
    "raw_url",
    "title",
    "updated_on",
    "created_on",  # with identifier, the partition's row order: lets a refresh merge rejects in place
]


def reject_frame(df: pl.DataFrame, reason: str | None = None) -> pl.DataFrame:
    """The exclusion output for rejected rows: who, why, and the raw values the rules looked at.

    The one projection of a reject row: the cross-chunk dedupe re-cleans its duplicates' raw rows and passes
    `reason="duplicate"`, so its rejects carry raw values like every other.
    """
    return df.select(
        "identifier",
        "provider",
        "source",
        "foreign_identifier",
        (pl.lit(reason, dtype=pl.String) if reason else pl.col("_reject")).alias("reason"),
        pl.col("_raw_license").alias("raw_license"),
        pl.col("_raw_license_version").alias("raw_license_version"),
        pl.col("_raw_url").alias("raw_url"),
        pl.col("_raw_title").alias("title"),
        "updated_on",
        "created_on",
    )
