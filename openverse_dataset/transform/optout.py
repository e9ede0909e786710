"""Creators' opt-outs: a list of creator URLs, landing-URL prefixes and domains whose works are never published.

The list is a text file or an http(s) URL (`OPENVERSE_OPT_OUT_LIST`), one entry per line:

    # comment lines start with `#`; blank lines are ignored
    creator https://www.flickr.com/photos/12345678@N00     exact creator_url
    prefix  https://www.flickr.com/photos/12345678@N00/    foreign_landing_url starts with this
    domain  example.org                                    host of foreign_landing_url, url or creator_url is
                                                           example.org or a subdomain of it

URLs are compared normalised (`normalise_url`): case-insensitive, scheme (`http`/`https`) and a leading `www.`
ignored; for `creator` a trailing `/` too. A matching row is rejected as `opted_out` and counted like any reject.

Matching is vectorised and its cost does not grow with the rows times the entries: creators are one hash lookup
per row; prefixes and domains are a binary search per row in a sorted, prefix-free array (an entry covered by a
shorter entry is dropped: then the only entry a key can start with is the greatest one not above it). Domains
use the same search on reversed hosts (`a.example.org` -> `gro.elpmaxe.a.`, which starts with `gro.elpmaxe.`).

The list's sha256 is recorded with every clean (a changed list re-cleans the partition in full) and in the card.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow.compute as pc

from openverse_dataset.catalog.connect import redact

KINDS = ("creator", "prefix", "domain")
FETCH_TIMEOUT = 30  # seconds: a list URL that does not answer fails the clean, never publishes without opt-outs
MAX_BYTES = 256 * 1024 * 1024
SYNTAX = "write `creator <http(s) URL>`, `prefix <http(s) URL>` or `domain <host name>` (see README, Opt-outs)"
_URL = re.compile(r"^(?i:https?)://[^\s/?#@]+\.[^\s/?#@]*[^\s/?#@.]")
_HOST = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class OptOutError(ValueError):
    """The opt-out list cannot be read or has a bad line: the clean fails rather than publish without it."""


@dataclass(frozen=True)
class OptOuts:
    """A parsed opt-out list: normalised, sorted and prefix-free entries, and the sha256 of the list's bytes."""

    creators: pl.Series = field(default_factory=lambda: pl.Series("c", [], pl.String))
    prefixes: pl.Series = field(default_factory=lambda: pl.Series("p", [], pl.String))
    domains: pl.Series = field(default_factory=lambda: pl.Series("d", [], pl.String))  # reversed, "."-terminated
    sha256: str | None = None  # None: no list configured
    entries: int = 0

    def __bool__(self) -> bool:
        return self.entries > 0


NO_OPT_OUTS = OptOuts()


def _key(col: pl.Expr) -> pl.Expr:
    """A URL as compared: lower-cased, trimmed, without `http(s)://` and a leading `www.`."""
    key = col.str.strip_chars().str.to_lowercase()
    return key.str.strip_prefix("https://").str.strip_prefix("http://").str.strip_prefix("www.")  # literal: fast


def normalise_url(col: pl.Expr, *, creator: bool = False) -> pl.Expr:
    """The key a creator URL (trailing `/` dropped) or a landing URL/prefix is compared by."""
    key = _key(col)
    return key.str.strip_chars_end("/") if creator else key


def _host(col: pl.Expr) -> pl.Expr:
    """The host of an http(s) URL as stored (case kept, port dropped): literal splits, ~4x cheaper than a regex."""
    rest = col.str.strip_chars().str.strip_prefix("https://").str.strip_prefix("http://")
    rest = rest.str.strip_prefix("HTTPS://").str.strip_prefix("HTTP://")
    host = rest.str.split_exact("/", 1).struct.field("field_0").str.split_exact("?", 1).struct.field("field_0")
    return host.str.split_exact("#", 1).struct.field("field_0").str.split_exact(":", 1).struct.field("field_0")


def _reverse(s: pl.Series) -> pl.Series:
    return pl.Series(s.name, pc.utf8_reverse(s.to_arrow()), pl.String)  # Arrow's: ~1.5x faster than polars'


def _host_key(host: pl.Expr) -> pl.Expr:
    """A host reversed and `.`-terminated (`www.A.org` -> `gro.a.www.`): domains then match as prefixes."""
    host = host.str.to_lowercase().str.strip_chars_end(".")
    return host.map_batches(_reverse, return_dtype=pl.String, is_elementwise=True) + "."


def _domain_key(col: pl.Expr) -> pl.Expr:
    return col.str.to_lowercase().str.strip_chars_end(".").str.reverse() + "."


def _prefix_free(values: list[str]) -> pl.Series:
    """Sorted entries without those a shorter entry already covers (sorted: covered ones follow their cover)."""
    kept: list[str] = []
    for v in sorted(set(values)):
        if not kept or not v.startswith(kept[-1]):
            kept.append(v)
    return pl.Series("entries", kept, pl.String).set_sorted()


def _starts_with_any(key: pl.Expr, entries: pl.Series) -> pl.Expr:
    """`key` starts with one of the sorted, prefix-free `entries`: only the greatest entry <= key can match.

    A key below every entry gets entries[0] as its candidate, which it cannot start with (it would sort after it).
    """
    if entries.is_empty():
        return pl.lit(False)
    key = key.fill_null("")  # never matches; a null among the searched values shifted polars' search results
    idx = (pl.lit(entries).search_sorted(key, side="right").cast(pl.Int64) - 1).clip(lower_bound=0)
    return key.str.starts_with(pl.lit(entries).gather(idx)).fill_null(False)


DOMAIN_COLUMNS = ("foreign_landing_url", "url", "creator_url")


def stage(opt: OptOuts) -> list[pl.Expr]:
    """The comparison keys `matches` reads, as `_oo_*` columns computed once per row (none without a list).

    A separate stage: inside one expression polars evaluated a shared key once per use (4x the cost).
    """
    out: list[pl.Expr] = []
    if not opt.creators.is_empty():
        out.append(normalise_url(pl.col("creator_url"), creator=True).alias("_oo_creator"))
    if not opt.prefixes.is_empty():
        landing = normalise_url(pl.col("foreign_landing_url"))
        # a prefix `.../user/` also covers the landing page `.../user` itself
        out.append((landing + pl.when(landing.str.ends_with("/")).then(pl.lit("")).otherwise(pl.lit("/"))).alias(
            "_oo_landing"
        ))  # fmt: skip
    if not opt.domains.is_empty():
        out += [_host_key(_host(pl.col(c))).alias(f"_oo_host_{c}") for c in DOMAIN_COLUMNS]
    return out


def matches(opt: OptOuts) -> pl.Expr:
    """True for a row the list opts out (over the repaired foreign_landing_url, url and creator_url).

    Reads the `_oo_*` columns of `stage(opt)`, which the caller adds first.
    """
    hit = pl.lit(False)
    if not opt.creators.is_empty():
        hit = hit | pl.col("_oo_creator").is_in(opt.creators.implode())
    if not opt.prefixes.is_empty():
        hit = hit | _starts_with_any(pl.col("_oo_landing"), opt.prefixes)
    if not opt.domains.is_empty():
        for col in DOMAIN_COLUMNS:
            hit = hit | _starts_with_any(pl.col(f"_oo_host_{col}"), opt.domains)
    return hit.fill_null(False)


def match_frame(frame: pl.DataFrame | pl.LazyFrame, opt: OptOuts) -> pl.LazyFrame:
    """`frame` with the boolean column `opted_out` (tests and the benchmark; the clean step stages it itself)."""
    return frame.lazy().with_columns(stage(opt)).with_columns(matches(opt).alias("opted_out"))


def parse(text: str, source: str, sha256: str) -> OptOuts:
    """Parse the list's text; a bad line raises `OptOutError` naming `source:line` and how to write it."""
    found: dict[str, list[str]] = {k: [] for k in KINDS}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"opt-out list {source}:{n}"
        if len(parts) != 2 or parts[0].lower() not in KINDS:
            raise OptOutError(f"{where}: cannot read {line[:80]!r}; {SYNTAX}")
        kind, value = parts[0].lower(), parts[1]
        if "\x00" in value:
            raise OptOutError(f"{where}: NUL byte in the entry; {SYNTAX}")
        if kind in ("creator", "prefix") and not _URL.match(value):
            raise OptOutError(f"{where}: {value[:80]!r} is not an http(s) URL with a host; {SYNTAX}")
        if kind == "domain" and not _HOST.match(value.lower().rstrip(".")):
            raise OptOutError(f"{where}: {value[:80]!r} is not a host name like example.org; {SYNTAX}")
        found[kind].append(value)
    frame = {k: pl.Series(k, v, pl.String) for k, v in found.items()}
    creators = pl.select(normalise_url(pl.lit(frame["creator"]), creator=True)).to_series()
    prefixes = pl.select(normalise_url(pl.lit(frame["prefix"]))).to_series()
    domains = pl.select(_domain_key(pl.lit(frame["domain"]))).to_series()
    return OptOuts(
        creators=pl.Series("creators", sorted(set(creators.to_list())), pl.String),
        prefixes=_prefix_free(prefixes.to_list()),
        domains=_prefix_free(domains.to_list()),
        sha256=sha256,
        entries=sum(len(v) for v in found.values()),
    )


def _fetch(url: str) -> bytes:
    shown = redact(url.split("?", 1)[0])  # a query may carry a token: never printed
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as resp:
            data = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise OptOutError(f"opt-out list {shown}: HTTP {exc.code}; fix the URL or the server") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OptOutError(f"opt-out list {shown}: cannot fetch ({reason}); fix the URL or the network") from None
    if len(data) > MAX_BYTES:
        raise OptOutError(f"opt-out list {shown}: larger than {MAX_BYTES // 2**20} MiB; split or trim it")
    return data


def load(spec: str | None) -> OptOuts:
    """The list `spec` names (a path or an http(s) URL); no list when unset. Never returns a partial list."""
    if not spec:
        return NO_OPT_OUTS
    if re.match(r"^(?i:https?)://", spec):
        data, source = _fetch(spec), redact(spec.split("?", 1)[0])
    else:
        path = Path(spec).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OptOutError(
                f"opt-out list {spec}: cannot read ({exc.strerror}); fix OPENVERSE_OPT_OUT_LIST"
            ) from None
        source = str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OptOutError(f"opt-out list {source}: not UTF-8 text; save it as UTF-8") from None
    return parse(text, source, hashlib.sha256(data).hexdigest())
