"""The media types the catalog holds, as one table of facts.

Every stage (schema, extract, clean, card, assets) reads these facts instead of restating them, so a third
media type is a new entry here rather than a new copy of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Columns shared by every media table, in the order our Parquet files use (never the database's order:
# production column order differs from the DDL, so columns are always selected by name).
_COMMON_HEAD: list[tuple[str, pa.DataType]] = [
    ("identifier", pa.string()),
    ("created_on", TIMESTAMP),
    ("updated_on", TIMESTAMP),
    ("ingestion_type", pa.string()),
    ("provider", pa.string()),
    ("source", pa.string()),
    ("foreign_identifier", pa.string()),
    ("foreign_landing_url", pa.string()),
    ("url", pa.string()),
    ("thumbnail", pa.string()),
]
_COMMON_TAIL: list[tuple[str, pa.DataType]] = [
    ("filesize", pa.int64()),
    ("license", pa.string()),
    ("license_version", pa.string()),
    ("creator", pa.string()),
    ("creator_url", pa.string()),
    ("title", pa.string()),
    ("meta_data", pa.string()),  # jsonb, kept as the catalog's JSON text
    ("tags", pa.string()),  # jsonb, kept as the catalog's JSON text
    ("watermarked", pa.bool_()),
    ("last_synced_with_source", TIMESTAMP),
    ("removed_from_source", pa.bool_()),
    ("filetype", pa.string()),
    ("category", pa.string()),
    ("standardized_popularity", pa.float64()),
]


@dataclass(frozen=True)
class MediaType:
    """Facts about one media type: its catalog tables, raw columns and the dataset it becomes."""

    name: str  # "image" | "audio": asset key prefix, group name, folder name
    table: str  # upstream catalog table
    specific_columns: tuple[tuple[str, pa.DataType], ...]
    categories: frozenset[str]
    filetypes: frozenset[str]  # filetypes the catalog stores and the API serves for this media type
    filetype_aliases: tuple[tuple[str, str], ...]  # stored spellings Openverse unifies (jpeg -> jpg)
    # URL extension -> filetype, as the catalog derives it when a provider gives none
    # (`catalog/dags/common/extensions.py`: Python's mimetypes plus Openverse's aliases; `.ogg` -> `oga`).
    url_extensions: tuple[tuple[str, str], ...]
    integer_columns: tuple[str, ...]  # int columns where values >= 2**31-1 mean "missing"
    json_columns: tuple[str, ...]  # jsonb columns, extracted as JSON text
    repo_name: str  # the dataset repository's name on the Hub / under a local target
    pretty_name: str
    task_categories: tuple[str, ...]

    @property
    def deleted_table(self) -> str:
        """Catalog table rows are moved to when deleted (`deleted_image`)."""
        return f"deleted_{self.name}"

    @property
    def api_deleted_table(self) -> str:
        """API table of works de-indexed for good (`api_deletedimage`)."""
        return f"api_deleted{self.name}"

    @property
    def api_mature_table(self) -> str:
        """API table of works confirmed sensitive (`api_matureimage`)."""
        return f"api_mature{self.name}"

    @property
    def raw_schema(self) -> pa.Schema:
        """Arrow schema of the raw extract: catalog columns, typed the same for every database."""
        from openverse_dataset.parquet import large_types

        return large_types(pa.schema(_COMMON_HEAD + list(self.specific_columns) + _COMMON_TAIL))

    @property
    def column_names(self) -> list[str]:
        return self.raw_schema.names


IMAGE = MediaType(
    name="image",
    table="image",
    specific_columns=(("width", pa.int64()), ("height", pa.int64())),
    categories=frozenset({"photograph", "digitized_artwork", "illustration"}),
    filetypes=frozenset({"jpg", "png", "gif", "svg", "tiff", "webp", "bmp", "djvu", "ico", "avif", "apng"}),
    filetype_aliases=(("jpeg", "jpg"), ("tif", "tiff")),
    url_extensions=(
        *((e, e) for e in ("apng", "avif", "bmp", "djvu", "gif", "ico", "jpg", "png", "svg", "tiff", "webp")),
        ("jpeg", "jpg"),
        ("jpe", "jpg"),
        ("tif", "tiff"),
    ),
    integer_columns=("width", "height", "filesize"),
    json_columns=("meta_data", "tags"),
    repo_name="openverse-images",
    pretty_name="Openverse images",
    # No labels, so no classification task: titles and tags are weak text paired with each image (image-to-text,
    # text-to-image), and the images alone serve unconditional generation. Ids from the Hub's task list.
    task_categories=("image-to-text", "text-to-image", "unconditional-image-generation"),
)

AUDIO = MediaType(
    name="audio",
    table="audio",
    specific_columns=(
        ("duration", pa.int64()),
        ("bit_rate", pa.int64()),
        ("sample_rate", pa.int64()),
        ("genres", pa.list_(pa.string())),
        ("audio_set", pa.string()),
        ("set_position", pa.int64()),
        ("alt_files", pa.string()),
        ("audio_set_foreign_identifier", pa.string()),
    ),
    categories=frozenset({"audiobook", "music", "news", "podcast", "pronunciation", "sound_effect"}),
    filetypes=frozenset({"mp3", "ogg", "oga", "opus", "wav", "flac", "aif", "m4a", "mid", "m3u", "mka"}),
    filetype_aliases=(("aiff", "aif"), ("midi", "mid")),
    url_extensions=(
        *((e, e) for e in ("aif", "flac", "m4a", "m3u", "mid", "mka", "mp3", "oga", "wav")),
        ("aiff", "aif"),
        ("aifc", "aif"),
        ("midi", "mid"),
        ("ogg", "oga"),
        ("opus", "oga"),
    ),
    integer_columns=("duration", "bit_rate", "sample_rate", "filesize", "set_position"),
    json_columns=("meta_data", "tags", "audio_set", "alt_files"),
    repo_name="openverse-audio",
    pretty_name="Openverse audio",
    # No labels (audio-classification) and no paired target audio (audio-to-audio): titles, tags and genres are
    # weak text paired with each recording, which is what text-to-audio (the Hub's task id) trains on.
    task_categories=("text-to-audio",),
)

MEDIA_TYPES: dict[str, MediaType] = {m.name: m for m in (IMAGE, AUDIO)}


def media_type(name: str) -> MediaType:
    """Look up a media type by name, with an error that lists the valid ones."""
    try:
        return MEDIA_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown media type {name!r}; expected one of {sorted(MEDIA_TYPES)}") from None


# What each published column means: the card's column table and the UI's column schema read this.
COLUMN_DOCS: dict[str, str] = {
    "identifier": "Openverse's stable public id of the work (UUID); the id to use when reporting a work",
    "provider": "the institution or site Openverse ingested the work from (e.g. flickr, wikimedia)",
    "source": "the sub-collection of the provider the work belongs to (defaults to the provider)",
    "foreign_identifier": "the work's id at the provider",
    "title": "title of the work as the provider gives it, HTML markup removed as the API does (may be null)",
    "creator": "name of the creator as the provider gives it, HTML markup removed as the API does (may be null)",
    "creator_url": "link to the creator's page at the provider",
    "license": "license slug, lower case (by, by-sa, by-nd, by-nc, by-nc-sa, by-nc-nd, cc0, pdm, sampling+, "
    "nc-sampling+)",
    "license_version": "license version as Openverse writes it (4.0, 3.0, 2.5, 2.1, 2.0, 1.0)",
    "license_jurisdiction": "jurisdiction of a ported license (jp, fr, ...); empty for unported licenses",
    "license_url": "the license link as Openverse's API serves it: the catalog's own (meta_data.license_url) as "
    "stored, else the deed URL of the license",
    "attribution": "ready-to-use plain-text attribution, exactly as Openverse's API writes it",
    "foreign_landing_url": "the work's page at the provider (always with a scheme)",
    "url": "direct link to the media file at the provider",
    "thumbnail": "link to a smaller rendition at the provider, when there is one",
    "width": "width in pixels",
    "height": "height in pixels",
    "duration": "length in milliseconds",
    "bit_rate": "bits per second",
    "sample_rate": "samples per second",
    "genres": "genres the provider lists",
    "audio_set": "JSON object describing the album or set the track belongs to",
    "set_position": "position of the track in its set",
    "alt_files": "JSON array of alternative files (url, filesize, filetype, bit_rate, sample_rate)",
    "audio_set_foreign_identifier": "the set's id at the provider",
    "filesize": "size of the media file in bytes",
    "filetype": "lower-case file extension (jpg, png, mp3, ...)",
    "category": "Openverse's category (photograph, illustration, music, sound_effect, ...)",
    "tags": "tags after Openverse's filters: name, the tag's provider, and accuracy for machine tags",
    "meta_data": "the provider's free-form metadata as JSON text (description, popularity, dates, ...)",
    "watermarked": "whether the provider reports a watermark",
    "standardized_popularity": "Openverse's popularity score in [0, 1], comparable across providers",
    "ingestion_type": "how Openverse ingested the row (provider_api, commoncrawl, ...)",
    "created_on": "when the row entered the catalog (UTC)",
    "updated_on": "when the row last changed in the catalog (UTC)",
    "last_synced_with_source": "when Openverse last checked the work at its provider (UTC)",
}
