"""Facts about a release measured from its own Parquet files, for the card, `croissant.json` and `CITATION.cff`.

The card must say what a consumer meets in the rows (how many name a person, how many carry a location, which
languages the titles are in), and say it from this release's data, not from a hand-written guess. Reading every
row of an 800M-row catalog for that is out of proportion, so the facts come from a deterministic sample:

- the sample is split over the data files in proportion to their rows (largest remainder, files in release-path
  order), so every license x provider stratum is represented as it is in the release;
- within a file, rows come from up to `GROUPS_PER_FILE` row groups spread evenly over the file (files are in
  ingestion order, so this spans early and late ingestion), the first rows of each;
- the same files give the same sample, byte for byte: no random seed, no clock.

Cost: at most `SAMPLE_ROWS` rows of five columns, from at most `GROUPS_PER_FILE` row groups per file; plus
language detection on at most `LANGUAGE_TITLES` titles (lingua, models shipped in its wheel, no download).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SAMPLE_ROWS = 10_000
GROUPS_PER_FILE = 4
LANGUAGE_TITLES = 2_000
# A language goes into the card's YAML `language:` when at least this share of the titles whose language was
# determined are in it (and at least MIN_LANGUAGE_TITLES of them): rarer detections are mostly noise on short text.
LANGUAGE_SHARE = 0.02
MIN_LANGUAGE_TITLES = 5
# Keys of `meta_data` that locate a work (providers write latitude/longitude: flickr, museums, ...).
GEO_KEYS = frozenset({"latitude", "longitude", "lat", "lon", "lng", "geolocation", "geo", "coordinates"})
SAMPLE_COLUMNS = ("identifier", "title", "creator", "meta_data")
# The languages lingua tells apart here: the ones Openverse's titles are mostly in (European museums, flickr,
# wikimedia). A fixed set keeps detection fast and the result stable; a title in another language comes out as
# one of these at low confidence or undetermined. Latin is in because museum and herbarium titles use it.
DETECT_LANGUAGES = [
    "ENGLISH",
    "SPANISH",
    "FRENCH",
    "GERMAN",
    "ITALIAN",
    "PORTUGUESE",
    "DUTCH",
    "SWEDISH",
    "FINNISH",
    "DANISH",
    "BOKMAL",
    "POLISH",
    "RUSSIAN",
    "JAPANESE",
    "CHINESE",
    "KOREAN",
    "ARABIC",
    "TURKISH",
    "CZECH",
    "CATALAN",
    "INDONESIAN",
    "GREEK",
    "HUNGARIAN",
    "LATIN",
]
# lingua's low-accuracy mode (trigram models only): its models load in about a second and 150 MB, where the
# high-accuracy mode took 15-17 s and 500-750 MB for these languages on this machine, paid at every card build.
# The price is noise on short titles, so: below this margin between the two best languages, "undetermined".
MIN_RELATIVE_DISTANCE = 0.2
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_EXTENSION = re.compile(r"\.(jpe?g|png|gif|tiff?|svg|webp|bmp|mp3|ogg|oga|wav|flac|aiff?|m4a|mid)$", re.IGNORECASE)
_SPLIT = re.compile(r"[\s_]+")


def language_text(title: str | None) -> str | None:
    """The words of a title a language can be told from, or None: camera file names (`IMG_2091.jpg`,
    `DSCN3819`), a `File:` prefix, words with digits and one-word titles carry no language and only add noise."""
    if not title:
        return None
    text = _EXTENSION.sub("", title.strip().removeprefix("File:"))
    words = [w for w in _SPLIT.split(text) if not any(c.isdigit() for c in w) and len(_LETTERS.findall(w)) >= 2]
    return " ".join(words) if len(words) >= 2 else None


@dataclass(frozen=True)
class DataFile:
    """One data file of the release: its path in the repository and where its bytes are."""

    path: str
    source: str


@dataclass
class ReleaseFacts:
    """What the sample showed. Counts are over `sample_rows` (shares are derived, never stored rounded)."""

    rows: int  # rows in the release
    sample_rows: int
    sample_files: int
    with_creator: int
    with_geolocation: int
    with_title: int
    titles_checked: int  # titles given to the language detector
    languages: dict[str, int] = field(default_factory=dict)  # ISO 639-1 -> titles, most first
    example: dict = field(default_factory=dict)  # one row of the sample, JSON-ready values

    def share(self, count: int) -> float:
        return count / self.sample_rows if self.sample_rows else 0.0

    @property
    def undetermined(self) -> int:
        return self.titles_checked - sum(self.languages.values())

    def card_languages(self) -> list[str]:
        """ISO 639-1 codes for the card's `language:`: determined often enough to be more than noise."""
        determined = sum(self.languages.values())
        return sorted(
            code
            for code, n in self.languages.items()
            if n >= MIN_LANGUAGE_TITLES and determined and n / determined >= LANGUAGE_SHARE
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseFacts:
        return cls(**json.loads(text))


def allocate(rows: list[int], budget: int) -> list[int]:
    """`budget` sample rows over files holding `rows`, proportionally (largest remainder; ties to the earlier file)."""
    total = sum(rows)
    if total == 0 or budget <= 0:
        return [0] * len(rows)
    budget = min(budget, total)
    exact = [budget * r / total for r in rows]
    out = [min(r, math.floor(x)) for r, x in zip(rows, exact, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: (-(exact[i] - out[i]), i))
    left = budget - sum(out)
    for i in order:
        if left <= 0:
            break
        if out[i] < rows[i]:
            out[i] += 1
            left -= 1
    return out


def _file_sample(pf: pq.ParquetFile, k: int, columns: list[str]) -> pa.Table:
    """`k` rows of one file: the first rows of up to GROUPS_PER_FILE row groups spread evenly over the file."""
    groups = pf.metadata.num_row_groups
    g = max(1, min(groups, GROUPS_PER_FILE, k))
    picks = sorted({(i * groups) // g for i in range(g)})
    per = allocate([pf.metadata.row_group(i).num_rows for i in picks], k)
    parts = [_head(pf, i, n, columns) for i, n in zip(picks, per, strict=True) if n]
    return pa.concat_tables(parts) if parts else pf.schema_arrow.empty_table().select(columns)


def _head(pf: pq.ParquetFile, group: int, n: int, columns: list[str] | None = None) -> pa.Table:
    """The first `n` rows of one row group, decoding only the pages that hold them.

    Reading the whole group and slicing gave the same rows but decoded every page of it: at 2M catalog rows the
    sample's four text columns of 4 groups x 80 files took the card step's process 450 MiB up (its peak)."""
    schema = pf.schema_arrow if columns is None else pa.schema([pf.schema_arrow.field(c) for c in columns])
    if n <= 0:
        return schema.empty_table()
    batches = pf.iter_batches(batch_size=n, row_groups=[group], columns=columns, use_threads=False)
    try:
        first = next(batches, None)
    finally:
        batches.close()
    return pa.Table.from_batches([first]) if first is not None else schema.empty_table()


def sample(files: list[DataFile], budget: int = SAMPLE_ROWS, columns: list[str] | None = None) -> pa.Table:
    """The deterministic sample of the release's data files (all columns unless `columns`)."""
    files = sorted(files, key=lambda f: f.path)
    handles = [pq.ParquetFile(f.source) for f in files]
    counts = allocate([h.metadata.num_rows for h in handles], budget)
    parts = []
    for h, k in zip(handles, counts, strict=True):
        if k:
            cols = columns or h.schema_arrow.names
            parts.append(_file_sample(h, k, list(cols)))
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns or SAMPLE_COLUMNS})
    return pa.concat_tables(parts, promote_options="permissive")


def _has_text(value: str | None) -> bool:
    return bool(value and value.strip())


def _has_geolocation(meta: str | None) -> bool:
    if not meta:
        return False
    try:
        obj = json.loads(meta)
    except ValueError:
        return False
    return isinstance(obj, dict) and any(k.lower() in GEO_KEYS and obj[k] not in (None, "") for k in obj)


def detect_languages(titles: list[str]) -> dict[str, int]:
    """ISO 639-1 code -> titles detected in it (undetermined titles are not counted), most first then by code."""
    if not titles:
        return {}
    from lingua import Language, LanguageDetectorBuilder

    detector = (
        LanguageDetectorBuilder.from_languages(*(getattr(Language, name) for name in DETECT_LANGUAGES))
        .with_minimum_relative_distance(MIN_RELATIVE_DISTANCE)
        .with_low_accuracy_mode()
        .build()
    )
    counts: dict[str, int] = {}
    for lang in detector.detect_languages_in_parallel_of(titles):
        if lang is not None:
            code = lang.iso_code_639_1.name.lower()
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _spread(items: list, n: int) -> list:
    """`n` items evenly spaced over `items` (all of them when there are fewer): keeps the strata's proportions."""
    if len(items) <= n:
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def pick_example(files: list[DataFile]) -> dict:
    """One whole row to show in the card: the first row of the first data file (in path order) that has a title
    and a creator, else the first row; values made JSON-ready (timestamps as ISO text)."""
    for f in sorted(files, key=lambda f: f.path):
        pf = pq.ParquetFile(f.source)
        if pf.metadata.num_rows == 0:
            continue
        head = _head(pf, 0, 200).to_pylist()
        row = next((r for r in head if _has_text(r.get("title")) and _has_text(r.get("creator"))), head[0])
        return {k: _json_ready(v) for k, v in row.items()}
    return {}


def measure(files: list[DataFile], rows: int) -> ReleaseFacts:
    """The facts of a release made of `files` (its data files) holding `rows` rows."""
    files = sorted(files, key=lambda f: f.path)
    table = sample(files, SAMPLE_ROWS, list(SAMPLE_COLUMNS))
    titles = table.column("title").to_pylist()
    creators = table.column("creator").to_pylist()
    metas = table.column("meta_data").to_pylist()
    with_title = [t for t in titles if _has_text(t)]
    checked = _spread([x for x in map(language_text, with_title) if x], LANGUAGE_TITLES)
    return ReleaseFacts(
        rows=rows,
        sample_rows=table.num_rows,
        sample_files=_files_sampled(files),
        with_creator=sum(1 for c in creators if _has_text(c)),
        with_geolocation=sum(1 for m in metas if _has_geolocation(m)),
        with_title=len(with_title),
        titles_checked=len(checked),
        languages=detect_languages(checked),
        example=pick_example(files),
    )


def _files_sampled(files: list[DataFile]) -> int:
    return sum(1 for k in allocate([pq.ParquetFile(f.source).metadata.num_rows for f in files], SAMPLE_ROWS) if k)


def data_files(pairs: list[tuple[str, str]]) -> list[DataFile]:
    """`DataFile`s from (repository path, source path) pairs, Parquet data files only."""
    return [DataFile(p, s) for p, s in pairs if p.startswith("data/") and p.endswith(".parquet")]


def schema_of(files: list[DataFile]) -> pa.Schema | None:
    """The Arrow schema of the release's data files (the first file's, in path order), or None without files."""
    for f in sorted(files, key=lambda f: f.path):
        return pq.read_schema(Path(f.source))
    return None
