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
    if value is None or value == {} or value == []:  # the catalog writes "{}" for "no tags" in old rows
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
    bytes and whole batches it rejects go through `_decode_one`.
    """
    n = len(raw)
    empty = raw.str.contains(r"^\s*\{\s*\}\s*$").fill_null(False)  # old rows write "{}" for "no tags"
    slow = ((raw.str.contains(_SLOW_TAGS) | ~raw.str.contains(r"^\s*(?:\[|null\s*$)")) & ~empty).fill_null(False)
    try:
        fast = (
            pl.select(pl.when(~slow & ~empty).then(raw))
            .to_series()
            .str.json_decode(_TAGS_TEXT)
            .list.eval(pl.element().struct.with_fields(pl.field("accuracy").cast(pl.Float64, strict=False)))
        )
    except pl.exceptions.PolarsError:
        slow = raw.is_not_null()
        fast = pl.Series("tags", [None] * n, dtype=TAGS)
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


def _int(col: str) -> tuple[pl.Expr, pl.Expr]:
    c = pl.col(col)
    bad = (c >= INT_MISSING) | (c < 0)
    return pl.when(bad).then(None).otherwise(c).cast(pl.Int32).alias(col), bad.fill_null(False)


def _filetype(media: MediaType) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    aliases = dict(media.filetype_aliases)
    raw = pl.col("filetype")
    given = raw.str.strip_chars().str.to_lowercase().replace(aliases)
    given = pl.when(given != "").then(given)
    ext = pl.col("url").str.extract(r"\.([A-Za-z0-9]{1,5})(?:[?#].*)?$").str.to_lowercase().replace(aliases)
    known = list(media.filetypes)
    final = pl.when(given.is_in(known)).then(given).when(given.is_null() & ext.is_in(known)).then(ext)
    normalised = given.is_in(known) & (given != raw)
    from_url = given.is_null() & ext.is_in(known)
    dropped = given.is_not_null() & ~given.is_in(known)
    return (
        final.alias("filetype"),
        normalised.fill_null(False),
        from_url.fill_null(False),
        dropped.fill_null(False),
    )


def _license_columns() -> list[pl.Expr]:
    """Resolve slug/version/jurisdiction, deed URL, display name and Openverse's attribution text."""
    raw_slug = pl.col("license")
    slug = raw_slug.str.strip_chars().str.to_lowercase()
    slug = pl.when(slug != "").then(slug.replace(lic.ALIASES))
    raw_ver = pl.col("license_version").str.strip_chars()
    raw_ver = pl.when(raw_ver != "").then(raw_ver)
    ver = pl.when(raw_ver.str.contains(r"^\d+$")).then(raw_ver + ".0").otherwise(raw_ver)

    meta_url = pl.col("meta_data").str.json_path_match("$.license_url").str.strip_chars()
    parts = meta_url.str.extract_groups(lic.LICENSE_URL_RE.pattern)
    url_slug = parts.struct.field("1").replace(lic.ALIASES)
    url_ver = parts.struct.field("2")
    url_jur = parts.struct.field("3").fill_null("")
    same_slug = (url_slug == slug).fill_null(False)
    row_jur = pl.when(same_slug & (url_ver == ver)).then(url_jur).otherwise(pl.lit(""))

    def valid(s: pl.Expr, v: pl.Expr, j: pl.Expr) -> pl.Expr:
        return pl.concat_str([s, v, j], separator="|").is_in(list(lic.valid_keys())).fill_null(False)

    pd = slug.is_in(["cc0", "pdm"]).fill_null(False)
    ok_row = valid(slug, ver, row_jur)
    ok_url = same_slug & valid(slug, url_ver, url_jur)
    final_ver = pl.when(pd).then(pl.lit("1.0")).when(ok_row).then(ver).when(ok_url).then(url_ver)
    final_jur = pl.when(pd).then(pl.lit("")).when(ok_row).then(row_jur).when(ok_url).then(url_jur)

    known = slug.is_in(list(lic.LICENSES)).fill_null(False)
    served = slug.is_in([s for s, x in lic.LICENSES.items() if x.served]).fill_null(False)
    reason = (
        pl.when(~known)
        .then(pl.lit("unknown_license"))
        .when(~served)
        .then(pl.lit("license_not_served"))
        .when(final_ver.is_null() & ver.is_null())
        .then(pl.lit("missing_license_version"))
        .when(final_ver.is_null())
        .then(pl.lit("invalid_license_version"))
    )
    return [
        slug.alias("_slug"),
        final_ver.alias("_ver"),
        final_jur.alias("_jur"),
        meta_url.alias("_meta_url"),
        url_slug.alias("_url_slug"),
        url_ver.alias("_url_ver"),
        url_jur.alias("_url_jur"),
        reason.alias("_license_reject"),
        ((slug != raw_slug) & known).fill_null(False).alias("_fix_license_normalised"),
        (ok_row & ~pd & (ver != raw_ver)).fill_null(False).alias("_fix_license_version_normalised"),
        (pd & known & (ver.is_null() | (ver != "1.0"))).fill_null(False).alias("_fix_license_version_corrected"),
        (~pd & ~ok_row & ok_url).fill_null(False).alias("_fix_license_version_from_url"),
    ]


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
    ft, ft_norm, ft_url, ft_drop = _filetype(media)
    cat = pl.col("category").str.strip_chars().str.to_lowercase()
    exprs += [
        ft,
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
        ft_norm.alias("_fix_filetype_normalised"),
        ft_url.alias("_fix_filetype_from_url"),
        ft_drop.alias("_fix_filetype_dropped"),
        (cat.is_not_null() & (cat != "") & ~cat.is_in(list(media.categories)))
        .fill_null(False)
        .alias("_fix_category_dropped"),
        (pl.col("meta_data").str.json_path_match("$.mature").str.to_lowercase() == "true")
        .fill_null(False)
        .alias("_mature_by_provider"),
        *_license_columns(),
    ]
    lf = lf.with_columns(exprs)

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
