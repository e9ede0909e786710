"""`croissant.json`: the release in Croissant 1.0 with the Responsible AI (RAI) vocabulary.

The Hub generates a base Croissant file from the Parquet files, but it cannot know how the data was collected,
what personal data it holds or where a creator opts out; those are the RAI fields written here, from the same
measured facts as the card (`release.facts`). Structure: one `cr:FileSet` per config (the config's globs over
`data/<license>/<provider>/*.parquet`, relative to the repository root, so a downloaded snapshot loads with
`mlcroissant` as is) and one `cr:RecordSet` per config whose fields are the Parquet schema's columns, with the
per-row license as fields (`license`, `license_version`, `license_url`, `attribution`).

Plain dicts, no runtime dependency on `mlcroissant`: the tests validate the output with it. Deterministic: the
same release gives the same bytes (no clock; key order fixed).
"""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa

from openverse_dataset import licenses as lic
from openverse_dataset.media import COLUMN_DOCS, MediaType
from openverse_dataset.release.card import PROJECT_URL, bibtex, hub_url
from openverse_dataset.release.facts import ReleaseFacts
from openverse_dataset.release.subsets import SubsetStats
from openverse_dataset.transform.clean import cleaning_summary

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
# The JSON-LD context the Croissant 1.0 specification recommends (its appendix), with the RAI prefix.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}


def data_type(t: pa.DataType) -> str:
    """The Croissant (schema.org) data type of an Arrow column type; lists map to their element's type."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return data_type(t.value_type)
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    if pa.types.is_timestamp(t):
        return "sc:DateTime"
    if pa.types.is_date(t):
        return "sc:Date"
    return "sc:Text"


def _field(config: str, name: str, t: pa.DataType, source: dict, parent: str | None = None) -> dict:
    fid = f"{config}/{parent}/{name}" if parent else f"{config}/{name}"
    out: dict = {"@type": "cr:Field", "@id": fid, "name": name}
    if desc := COLUMN_DOCS.get(name if parent is None else f"{parent}.{name}", ""):
        out["description"] = desc
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t)
    inner = t.value_type if is_list else t
    if is_list:
        out["repeated"] = True
    if pa.types.is_struct(inner):
        out["subField"] = [
            _field(
                config,
                inner.field(i).name,
                inner.field(i).type,
                {**source, "transform": {"jsonPath": inner.field(i).name}},
                parent=name,
            )
            for i in range(inner.num_fields)
        ]
    else:
        out["dataType"] = data_type(inner)
        out["source"] = source
    if name == "license_url" and parent is None:
        out["equivalentProperty"] = "sc:license"  # each row's own license: the authority, not the dataset's
    return out


def _license_urls(stats: SubsetStats) -> list[str]:
    pairs = sorted(
        {(r["license"], r["license_version"], r.get("license_jurisdiction") or "") for r in stats.by_license_version}
    )
    return sorted({lic.license_url(s, v, j) for s, v, j in pairs})


def build_croissant(
    media: MediaType,
    stats: SubsetStats,
    schema: pa.Schema,
    facts: ReleaseFacts,
    *,
    repo_id: str,
    release_date: date,
) -> dict:
    """The Croissant document of one release (a JSON-ready dict)."""
    tag = release_date.strftime("%Y.%m.%d")
    n = facts.sample_rows
    share = lambda k: f"{100 * k / n:.1f}%" if n else "not measured"  # noqa: E731
    top = sorted(stats.rows_by_provider().items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    skew = ", ".join(f"{p} {100 * r / stats.rows:.1f}%" for p, r in top) if stats.rows else "none"
    langs = ", ".join(f"{c} {100 * k / facts.titles_checked:.1f}%" for c, k in list(facts.languages.items())[:8])
    distribution = []
    record_sets = []
    for c in stats.configs:
        fs = f"parquet-{c.name}"
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": fs,
                "name": fs,
                "description": f"Parquet files of the `{c.name}` config: {c.description}.",
                "encodingFormat": "application/x-parquet",
                "includes": list(c.patterns),
            }
        )
        fields = [
            _field(c.name, f.name, f.type, {"fileSet": {"@id": fs}, "extract": {"column": f.name}}) for f in schema
        ]
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": c.name,
                "name": c.name,
                "description": f"{c.rows:,} works ({', '.join(c.slugs)}): {c.description}.",
                "key": {"@id": f"{c.name}/identifier"},
                "field": fields,
            }
        )
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": media.repo_name,
        "description": f"Metadata of {stats.rows:,} openly licensed {media.name} works from Openverse "
        "(https://openverse.org): titles, creators, licenses, attribution text, tags and links to the media "
        f"files at their providers (the files are not included). Release {tag}.",
        "conformsTo": CONFORMS_TO,
        "citeAs": bibtex(media, repo_id=repo_id, release_date=release_date, rows=stats.rows),
        "creator": {"@type": "sc:Organization", "name": "Openverse", "url": "https://openverse.org"},
        "datePublished": release_date.isoformat(),
        "version": f"{release_date.year}.{release_date.month}.{release_date.day}",
        "url": hub_url(repo_id),
        "sameAs": PROJECT_URL,
        "license": _license_urls(stats),
        "keywords": ["openverse", "creative commons", "public domain", "open licenses", media.name],
        "rai:dataCollection": "Openverse's catalog gathers works from provider APIs (museums, archives, photo "
        "and sound sharing sites) and, for older rows, from Common Crawl; `ingestion_type` says which. This "
        "release reads that catalog and keeps what Openverse's API serves.",
        "rai:dataCollectionType": ["Web API", "Web Scraping", "Secondary Data Analysis"],
        "rai:dataCollectionRawData": "The providers' own metadata as Openverse stores it (`meta_data`, `tags`).",
        "rai:dataPreprocessingProtocol": "Deleted, taken-down, sensitive and removed-from-source works are "
        "excluded; the rest is cleaned as Openverse's API cleans it before serving. " + cleaning_summary(),
        "rai:dataAnnotationProtocol": "No annotation was made; `tags` are the providers', some machine-generated "
        "(with an `accuracy`).",
        "rai:personalSensitiveInformation": f"Measured on a deterministic sample of {n:,} of {facts.rows:,} rows: "
        f"{share(facts.with_creator)} name a creator (a person's name or user name, with a profile link in "
        f"`creator_url`); {share(facts.with_geolocation)} carry latitude/longitude in `meta_data`. Titles, "
        "descriptions and tags are free text and may name people; the media may show people, whose privacy and "
        "personality rights no license covers. Works Openverse marked sensitive are excluded. Takedown: report "
        f"a work on its Openverse page (https://openverse.org/{media.name}/<identifier>, Report); opt-out: "
        "remove or relicense the work at the provider, or register image URLs with Spawning's Do Not Train "
        "registry; each release's removals.parquet lists what left.",
        "rai:dataBiases": f"Provider skew: the three largest of {len(stats.providers)} providers hold {skew} "
        f"of the rows. Title languages detected on {facts.titles_checked:,} sampled titles (lingua, low-accuracy "
        f"mode): {langs or 'not measured'}. What the providers' users photograph or record dominates.",
        "rai:dataLimitations": "Media are links to the providers: some no longer resolve (link rot), a share "
        "not measured here because the build does not contact providers. Licenses and public-domain marks are "
        "as providers report them and some are wrong. Titles and tags are free text, not labels.",
        "rai:dataUseCases": "Finding and attributing openly licensed media; building image-text or audio-text "
        "collections within each row's license (the configs select by license); studying open licensing.",
        "rai:dataSocialImpact": "Fetching the media puts load on providers, many of them small institutions: "
        "fetch at a bounded rate with a user agent naming your project (the card shows an img2dataset command).",
        "rai:dataReleaseMaintenancePlan": "A release follows Openverse's catalog refreshes (weekly); each is a "
        f"commit tagged with its date (this one {tag}) with manifest.json (sha256 per file) and removals.parquet "
        "(identifiers removed since the previous release, with a reason); works removed from Openverse leave "
        "the next release.",
        "distribution": distribution,
        "recordSet": record_sets,
    }


def croissant_json(doc: dict) -> str:
    """The document as the file's text: stable key order, UTF-8, a final newline."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
