"""The license registry: groups, URLs, display names and Openverse's attribution text."""

from __future__ import annotations

import pytest

from openverse_dataset import licenses as lic


def test_groups_match_openverse_api_definitions():
    groups = {c.name: set(c.slugs) for c in lic.GROUP_CONFIGS}
    assert groups["commercial"] == {"by", "by-sa", "by-nd", "cc0", "pdm", "sampling+"}
    assert groups["modification"] == {
        "by",
        "by-sa",
        "by-nc",
        "by-nc-sa",
        "cc0",
        "pdm",
        "sampling+",
        "nc-sampling+",
    }
    assert groups["commercial-modification"] == {"by", "by-sa", "cc0", "pdm", "sampling+"}
    assert groups["public-domain"] == {"cc0", "pdm"}
    assert set(groups["all"]) == {s for s, x in lic.LICENSES.items() if x.served}


def test_every_config_name_is_unique_and_folder_safe():
    names = [c.name for c in lic.all_configs()]
    assert len(names) == len(set(names))
    assert "sampling-plus" in names and "nc-sampling-plus" in names
    assert all("+" not in n and "/" not in n for n in names)
    assert lic.slug_for_folder("sampling-plus") == "sampling+"


@pytest.mark.parametrize(
    ("slug", "version", "jur", "url"),
    [
        ("by", "4.0", "", "https://creativecommons.org/licenses/by/4.0/"),
        ("by-nc-sa", "2.0", "jp", "https://creativecommons.org/licenses/by-nc-sa/2.0/jp/"),
        ("cc0", "1.0", "", "https://creativecommons.org/publicdomain/zero/1.0/"),
        ("pdm", "1.0", "", "https://creativecommons.org/publicdomain/mark/1.0/"),
        ("by-nc-nd", "1.0", "", "https://creativecommons.org/licenses/by-nd-nc/1.0/"),
        ("sampling+", "1.0", "", "https://creativecommons.org/licenses/sampling+/1.0/"),
    ],
)
def test_license_urls(slug, version, jur, url):
    assert lic.license_url(slug, version, jur) == url
    assert lic.is_valid(slug, version, jur)


@pytest.mark.parametrize(
    ("slug", "version", "jur", "valid"),
    [
        ("by", "2.1", "", False),
        ("by", "2.1", "jp", True),
        ("cc0", "3.0", "", False),
        ("by", "5.0", "", False),
        ("by-sa", "2.5", "scotland", True),
        ("nc-sampling+", "2.0", "", False),
        ("by-nd", "1.0", "fi", True),
    ],
)
def test_versions_and_ports_exist_only_where_cc_published_them(slug, version, jur, valid):
    assert lic.is_valid(slug, version, jur) is valid


def test_normalisation():
    assert lic.normalize_slug(" CC0 ") == "cc0"
    assert lic.normalize_slug("by-nd-nc") == "by-nc-nd"
    assert lic.normalize_slug("") is None
    assert lic.normalize_version("4") == "4.0"
    assert lic.normalize_version("2.5") == "2.5"
    assert lic.parse_license_url("https://creativecommons.org/licenses/by-nd-nc/2.0/jp/") == (
        "by-nc-nd",
        "2.0",
        "jp",
    )
    assert lic.parse_license_url("http://creativecommons.org/publicdomain/zero/1.0/") == ("cc0", "1.0", "")
    assert lic.parse_license_url("https://example.org/licenses/by/4.0/") is None


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            ("Sunset", "Jane", "by-sa", "4.0", ""),
            '"Sunset" by Jane is licensed under CC BY-SA 4.0. To view a copy of this license, visit URL.',
        ),
        (
            ("Sunset", "Jane", "cc0", "1.0", ""),
            '"Sunset" by Jane is marked with CC0 1.0. To view the terms, visit URL.',
        ),
        (
            ("Sunset", "Jane", "pdm", "1.0", ""),
            '"Sunset" by Jane is marked with Public Domain Mark 1.0. To view the terms, visit URL.',
        ),
        (
            (None, "Jane", "by", "2.0", ""),
            "This work by Jane is licensed under CC BY 2.0. To view a copy of this license, visit URL.",
        ),
        (
            ("Sunset", None, "by-nc", "3.0", ""),
            '"Sunset" is licensed under CC BY-NC 3.0. To view a copy of this license, visit URL.',
        ),
        (
            (None, None, "by-nc-nd", "2.0", "jp"),
            "This work is licensed under CC BY-NC-ND 2.0 JP. To view a copy of this license, visit URL.",
        ),
        (
            ("Loop", "DJ", "sampling+", "1.0", ""),
            '"Loop" by DJ is licensed under CC Sampling+ 1.0. To view a copy of this license, visit URL.',
        ),
        (
            ("A  spaced   title", "X", "by", "4.0", ""),
            '"A spaced title" by X is licensed under CC BY 4.0. To view a copy of this license, visit URL.',
        ),
    ],
)
def test_attribution_text(args, text):
    assert lic.attribution(*args, "URL") == text


def test_hub_license_ids_fall_back_to_other():
    assert lic.hub_license_ids({("by", "4.0"), ("cc0", "1.0")}) == ["cc-by-4.0", "cc0-1.0"]
    assert lic.hub_license_ids({("pdm", "1.0"), ("by", "4.0")}) == ["cc-by-4.0", "other"]
