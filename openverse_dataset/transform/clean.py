"""Openverse's cleaning rules as pure polars expressions over a raw partition.

Every rule either repairs a value (and raises a `_fix_<rule>` flag, counted per batch) or names a reject reason
(`_reject`); nothing is dropped silently. The first matching reason in `REJECT_REASONS` order wins, so a work
that is both taken down and malformed is counted once, as taken down.

`clean_lazy` never opens a file or a database: the caller scans the raw shards and the takedown snapshot,
streams the result in batches, and splits kept rows from rejects (see `run_clean`).
"""

from __future__ import annotations

import json
import re

import polars as pl

from openverse_dataset import licenses as lic
from openverse_dataset.media import MediaType

INT_MISSING = 2_147_483_647  # integers at or over this are "missing" in the catalog

# Reject reasons, in priority order, with what each means (the card and the UI show these texts).
REJECT_REASONS: dict[str, str] = {
    "taken_down": "listed in api_deleted<media>: de-indexed for good (deleted at source, takedown, sensitive)",
    "deleted_in_catalog": "listed in deleted_<media>: moved out of the catalog (e.g. dead link)",
    "mature": "listed in api_mature<media>: confirmed sensitive",
    "mature_by_provider": "the provider marks the work as mature (meta_data.mature)",
    "removed_from_source": "removed_from_source is true: the API never shows it as a live work",
    "missing_url": "no media URL",
    "invalid_url": "the media URL is not an http(s) URL with a host, even after adding a scheme",
    "unknown_license": "the license slug is not a Creative Commons license or mark",
    "license_not_served": "a retired license Openverse does not serve (sa, nc, nd, sampling, ...)",
    "missing_license_version": "no license version, and none in meta_data.license_url",
    "invalid_license_version": "a version that does not exist for the license (and no valid one in the URL)",
    "duplicate": "a second row with the same (provider, foreign_identifier); the first by identifier is kept",
}

# Repairs, with what each does.
REPAIRS: dict[str, str] = {
    "url_scheme_added": "a URL without a scheme got https:// (foreign_landing_url, url, thumbnail, creator_url)",
    "url_dropped": "a secondary URL that is not http(s) was set to null (thumbnail, creator_url, landing URL)",
    "tags_unparseable": "tags that are not a JSON array of objects were set to null",
    "tags_filtered": "tags dropped by Openverse's rules (no name, accuracy < 0.90, rekognition, denylist)",
    "tag_unicode_repaired": "escaped byte sequences (\\xf1) in tag names decoded to characters",
    "license_normalised": "license slug lower-cased, trimmed or an alias resolved (CC0 -> cc0, by-nd-nc)",
    "license_version_normalised": "version written as Openverse does (4 -> 4.0)",
    "license_version_corrected": "CC0/PDM exist only at 1.0: an impossible version was replaced",
    "license_version_from_url": "an invalid version replaced by the one in meta_data.license_url",
    "filetype_normalised": "filetype lower-cased or mapped (jpeg -> jpg, tif -> tiff)",
    "filetype_from_url": "missing filetype taken from the URL's extension",
    "filetype_dropped": "a filetype that is not a known media extension was set to null",
    "category_dropped": "a category outside the media type's list was set to null",
    "integer_out_of_range": "an integer at or over 2,147,483,647 (or negative) was set to null",
}

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
    except (ValueError, TypeError):
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


def _url(col: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(repaired URL or null, scheme added, valid) for one URL column."""
    s = pl.col(col).str.strip_chars()
    s = pl.when(s != "").then(s)
    has_scheme = s.str.contains(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
    fixed = (
        pl.when(has_scheme)
        .then(s)
        .when(s.str.starts_with("//"))
        .then(pl.lit("https:") + s)
        .otherwise(pl.lit("https://") + s)
    )
    valid = fixed.str.contains(r"^(?i:https?)://[^\s/?#@]+\.[^\s/?#@]*[^\s/?#@.]")
    return fixed, s.is_not_null() & ~has_scheme, valid


def _where_key(col: str, key: str) -> pl.Expr:
    """The JSON text of `col` where it mentions `"key"` at all, else null (nulls skip the JSON parser)."""
    return pl.when(pl.col(col).str.contains(f'"{key}"', literal=True)).then(pl.col(col))


def _int(col: str) -> tuple[pl.Expr, pl.Expr]:
    c = pl.col(col)
    bad = (c >= INT_MISSING) | (c < 0)
    return pl.when(bad).then(None).otherwise(c).cast(pl.Int32).alias(col), bad.fill_null(False)


def _filetype(media: MediaType) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """(first stage: the given and URL-derived filetypes; second stage: final value and repair flags)."""
    aliases = dict(media.filetype_aliases)
    given = pl.col("filetype").str.strip_chars().str.to_lowercase().replace(aliases)
    ext = pl.col("url").str.extract(r"\.([A-Za-z0-9]{1,5})(?:[?#].*)?$").str.to_lowercase().replace(aliases)
    first = [pl.when(given != "").then(given).alias("_ft_given"), ext.alias("_ft_ext")]
    given, ext, raw = pl.col("_ft_given"), pl.col("_ft_ext"), pl.col("filetype")
    known = list(media.filetypes)
    final = pl.when(given.is_in(known)).then(given).when(given.is_null() & ext.is_in(known)).then(ext)
    second = [
        final.alias("filetype"),
        (given.is_in(known) & (given != raw)).fill_null(False).alias("_fix_filetype_normalised"),
        (given.is_null() & ext.is_in(known)).fill_null(False).alias("_fix_filetype_from_url"),
        (given.is_not_null() & ~given.is_in(known)).fill_null(False).alias("_fix_filetype_dropped"),
    ]
    return first, second


def _license_stages() -> list[list[pl.Expr]]:
    """Resolve slug/version/jurisdiction, as successive `with_columns` stages.

    Staged so each intermediate (JSON path lookups above all) is computed once per row: as one expression tree
    polars evaluated the shared parts several times over (2.0 s against 0.3 s per 200k rows).
    """
    raw_slug = pl.col("license")
    slug = raw_slug.str.strip_chars().str.to_lowercase()
    raw_ver = pl.col("license_version").str.strip_chars()
    first = [
        pl.when(slug != "").then(slug.replace(lic.ALIASES)).alias("_slug"),
        pl.when(raw_ver != "").then(raw_ver).alias("_raw_ver"),
        pl.col("meta_data").str.json_path_match("$.license_url").str.strip_chars().alias("_meta_url"),
    ]
    rv = pl.col("_raw_ver")
    second = [
        pl.when(rv.str.contains(r"^\d+$")).then(rv + ".0").otherwise(rv).alias("_ver_in"),
        pl.col("_meta_url").str.extract_groups(lic.LICENSE_URL_RE.pattern).alias("_url_parts"),
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
        slug.is_in(["cc0", "pdm"]).fill_null(False).alias("_pd"),
        slug.is_in(list(lic.LICENSES)).fill_null(False).alias("_known"),
        slug.is_in([s for s, x in lic.LICENSES.items() if x.served]).fill_null(False).alias("_served"),
    ]

    def valid(s: pl.Expr, v: pl.Expr, j: pl.Expr) -> pl.Expr:
        return pl.concat_str([s, v, j], separator="|").is_in(list(lic.valid_keys())).fill_null(False)

    fifth = [
        valid(slug, ver, pl.col("_row_jur")).alias("_ok_row"),
        (pl.col("_same_slug") & valid(slug, url_ver, url_jur)).alias("_ok_url"),
    ]
    pd, ok_row, ok_url, known = pl.col("_pd"), pl.col("_ok_row"), pl.col("_ok_url"), pl.col("_known")
    final_ver = pl.when(pd).then(pl.lit("1.0")).when(ok_row).then(ver).when(ok_url).then(url_ver)
    final_jur = pl.when(pd).then(pl.lit("")).when(ok_row).then(pl.col("_row_jur")).when(ok_url).then(url_jur)
    reason = (
        pl.when(~known)
        .then(pl.lit("unknown_license"))
        .when(~pl.col("_served"))
        .then(pl.lit("license_not_served"))
        .when(final_ver.is_null() & ver.is_null())
        .then(pl.lit("missing_license_version"))
        .when(final_ver.is_null())
        .then(pl.lit("invalid_license_version"))
    )
    sixth = [
        final_ver.alias("_ver"),
        final_jur.alias("_jur"),
        reason.alias("_license_reject"),
        ((slug != raw_slug) & known).fill_null(False).alias("_fix_license_normalised"),
        (ok_row & ~pd & (ver != rv)).fill_null(False).alias("_fix_license_version_normalised"),
        (pd & known & (ver.is_null() | (ver != "1.0"))).fill_null(False).alias("_fix_license_version_corrected"),
        (~pd & ~ok_row & ok_url).fill_null(False).alias("_fix_license_version_from_url"),
    ]
    return [first, second, third, fourth, fifth, sixth]


def _license_url_and_attribution() -> list[pl.Expr]:
    slug, ver, jur = pl.col("_slug"), pl.col("_ver"), pl.col("_jur")
    url_path_slug = pl.when((slug == "by-nc-nd") & (ver == "1.0")).then(pl.lit("by-nd-nc")).otherwise(slug)
    built = pl.when(slug == "cc0").then(pl.lit("https://creativecommons.org/publicdomain/zero/") + ver + "/").when(
        slug == "pdm"
    ).then(pl.lit("https://creativecommons.org/publicdomain/mark/") + ver + "/").otherwise(
        pl.concat_str([pl.lit("https://creativecommons.org/licenses/"), url_path_slug, pl.lit("/"), ver, pl.lit("/")])
    ) + pl.when(jur != "").then(jur + "/").otherwise(pl.lit(""))
    # Openverse's API prefers the catalog's own license_url when it names the same license.
    consistent = (pl.col("_url_slug") == slug) & (pl.col("_url_ver") == ver) & (pl.col("_url_jur") == jur)
    url = pl.when(consistent.fill_null(False)).then(pl.col("_meta_url")).otherwise(built)
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
            + url
            + ".",
        ],
        separator=" ",
    )
    attribution = text.str.replace_all(r"\s{2,}", " ").str.strip_chars()
    return [url.alias("license_url"), attribution.alias("attribution")]


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


def clean_lazy(raw: pl.LazyFrame, media: MediaType, takedowns: pl.LazyFrame, *, dedupe: bool = True) -> pl.LazyFrame:
    """Apply every rule to a raw partition.

    `takedowns` has columns (identifier, reason) with reason in taken_down/deleted_in_catalog/mature.
    The result has the output columns plus `_reject` (null for kept rows) and `_fix_*` flags. With
    `dedupe=False` the caller removes duplicates of (provider, foreign_identifier) itself (the chunked clean
    step does it across chunks, see `transform/partition.py`).
    """
    url_cols = ["foreign_landing_url", "url", "thumbnail", "creator_url"]
    lf = raw.join(
        takedowns.rename({"reason": "_takedown"}).unique("identifier", keep="first", maintain_order=True),
        on="identifier",
        how="left",
        maintain_order="left",
    )
    exprs: list[pl.Expr] = []
    scheme_flags, dropped_flags = [], []
    url_valid = None
    for col in url_cols:
        fixed, added, valid = _url(col)
        scheme_flags.append(added.fill_null(False))
        if col == "url":
            exprs.append(fixed.alias(col))
            url_valid = valid
        else:
            exprs.append(pl.when(valid).then(fixed).alias(col))
            dropped_flags.append((fixed.is_not_null() & ~valid).fill_null(False))
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
        pl.when(cat.is_in(list(media.categories))).then(cat).alias("category"),
        pl.col("tags").map_batches(decode_tags, return_dtype=_DECODED, is_elementwise=True).alias("_decoded"),
        pl.col("url").alias("_raw_url"),
        pl.col("license").alias("_raw_license"),
        pl.col("license_version").alias("_raw_license_version"),
        ((pl.col("url").str.strip_chars().fill_null("")) == "").alias("_url_missing"),
        url_valid.fill_null(False).alias("_url_valid"),
        pl.any_horizontal(scheme_flags).alias("_fix_url_scheme_added"),
        pl.any_horizontal(dropped_flags).alias("_fix_url_dropped"),
        pl.any_horizontal(int_flags).alias("_fix_integer_out_of_range"),
        (cat.is_not_null() & (cat != "") & ~cat.is_in(list(media.categories)))
        .fill_null(False)
        .alias("_fix_category_dropped"),
        # Parsed only where the key can be: a JSON path on every row cost ~1 s per million rows.
        (_where_key("meta_data", "mature").str.json_path_match("$.mature").str.to_lowercase() == "true")
        .fill_null(False)
        .alias("_mature_by_provider"),
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
        pl.col("_decoded").struct.field("malformed").alias("_fix_tags_unparseable"),
        pl.col("_decoded").struct.field("unicode").alias("_fix_tag_unicode_repaired"),
        (decoded.list.len() - kept.list.len()).fill_null(0).alias("_tags_dropped"),
    ).with_columns((pl.col("_tags_dropped") > 0).alias("_fix_tags_filtered"))

    reject = (
        pl.when(pl.col("_takedown").is_not_null())
        .then(pl.col("_takedown"))
        .when(pl.col("_mature_by_provider"))
        .then(pl.lit("mature_by_provider"))
        .when(pl.col("removed_from_source").fill_null(False))
        .then(pl.lit("removed_from_source"))
        .when(pl.col("_url_missing"))
        .then(pl.lit("missing_url"))
        .when(~pl.col("_url_valid"))
        .then(pl.lit("invalid_url"))
        .otherwise(pl.col("_license_reject"))
    )
    lf = lf.with_columns(reject.alias("_reject"))
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
    return lf.with_columns(_license_url_and_attribution()).with_columns(
        pl.col("_slug").alias("license"),
        pl.col("_ver").alias("license_version"),
        pl.col("_jur").alias("license_jurisdiction"),
    )


FIX_COLUMNS = [f"_fix_{k}" for k in REPAIRS]
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
]


def reject_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The exclusion output for rejected rows: who, why, and the raw values the rules looked at."""
    return df.select(
        "identifier",
        "provider",
        "source",
        "foreign_identifier",
        pl.col("_reject").alias("reason"),
        pl.col("_raw_license").alias("raw_license"),
        pl.col("_raw_license_version").alias("raw_license_version"),
        pl.col("_raw_url").alias("raw_url"),
        "title",
        "updated_on",
    )
