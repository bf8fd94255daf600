from __future__ import annotations

import math

import pandas as pd
import pytest

from multimodal_lab.data.licenses import (
    ALL_RIGHTS_RESERVED,
    DEFAULT_LICENSE_ALLOW,
    PUBLIC_DOMAIN_MARK,
    filter_licenses,
    license_rejection_reason,
    normalize_allow_list,
    normalize_license,
)
from multimodal_lab.data.records import make_record, records_frame


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CC0", "CC0-1.0"),
        ("CC0 1.0 Universal", "CC0-1.0"),
        ("cc0-1.0", "CC0-1.0"),
        ("CC BY 4.0", "CC-BY-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("CC BY-SA 3.0", "CC-BY-SA-3.0"),
        ("CC BY 2.0", "CC-BY-2.0"),
        ("CC-BY-3.0", "CC-BY-3.0"),
        ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
        ("CC BY-NC-ND 4.0", "CC-BY-NC-ND-4.0"),
        ("CC BY-ND 4.0", "CC-BY-ND-4.0"),
        ("cc by nd nc 4.0", "CC-BY-NC-ND-4.0"),  # element order does not matter
        ("Creative Commons Attribution-ShareAlike 3.0 Unported", "CC-BY-SA-3.0"),
        ("Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
         "CC-BY-NC-ND-4.0"),
        ("CC BY 3.0 US", "CC-BY-3.0"),  # jurisdiction ports map to the generic terms
        ("https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
        ("http://creativecommons.org/licenses/by-sa/3.0/de/", "CC-BY-SA-3.0"),
        ("https://creativecommons.org/licenses/by-nc-sa/2.5/deed.en", "CC-BY-NC-SA-2.5"),
        ("creativecommons.org/licenses/by/2.0/legalcode", "CC-BY-2.0"),
        ("http://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
        ("Public Domain Mark 1.0", PUBLIC_DOMAIN_MARK),
        ("https://creativecommons.org/publicdomain/mark/1.0/", PUBLIC_DOMAIN_MARK),
        ("public domain", PUBLIC_DOMAIN_MARK),
        ("PDM-1.0", PUBLIC_DOMAIN_MARK),
        ("LicenseRef-PDM-1.0", PUBLIC_DOMAIN_MARK),
        ("All rights reserved", ALL_RIGHTS_RESERVED),
        ("(c) 2021 Jane Doe. All Rights Reserved.", ALL_RIGHTS_RESERVED),
        ("  CC   BY 4.0  ", "CC-BY-4.0"),
    ],
)
def test_normalize_license_spellings(raw, expected):
    assert normalize_license(raw) == expected


def test_public_domain_mark_id_is_the_documented_one():
    assert PUBLIC_DOMAIN_MARK == "PDM-1.0"
    assert ALL_RIGHTS_RESERVED == "LicenseRef-All-Rights-Reserved"


@pytest.mark.parametrize(
    "raw",
    [
        "foo",
        "CC BY",  # no version: never guessed
        "CC BY 9.0",
        "CC BY-SA-ND 4.0",  # not a real combination
        "CC0 2.0",
        "GPL-3.0",
        "Public domain dedication",
        "https://creativecommons.org/licenses/by/9.0/",
        "https://creativecommons.org/licenses/by/4.0/extra/path/here",
        "https://example.org/licenses/by/4.0/",
        "CC BY 4.0 for personal use",
    ],
)
def test_unrecognised_spellings_are_not_guessed(raw):
    assert normalize_license(raw) is None


@pytest.mark.parametrize("raw", [None, "", "   ", math.nan, pd.NA])
def test_missing_licence_reason(raw):
    allow = normalize_allow_list(DEFAULT_LICENSE_ALLOW)
    assert license_rejection_reason(raw, allow) == (None, "license missing")


def test_reasons_are_specific():
    allow = normalize_allow_list(DEFAULT_LICENSE_ALLOW)
    assert license_rejection_reason("foo", allow) == (None, "license 'foo' not recognised")
    assert license_rejection_reason("CC BY-NC-ND 4.0", allow) == (
        "CC-BY-NC-ND-4.0",
        "license CC-BY-NC-ND-4.0 not in allow-list",
    )
    assert license_rejection_reason("All rights reserved", allow) == (
        ALL_RIGHTS_RESERVED,
        f"license {ALL_RIGHTS_RESERVED} not in allow-list",
    )
    assert license_rejection_reason("CC BY 4.0", allow) == ("CC-BY-4.0", None)


def test_default_allow_list_excludes_nc_and_nd():
    allow = normalize_allow_list(DEFAULT_LICENSE_ALLOW)
    assert allow == {
        "CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "PDM-1.0", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-SA-3.0"
    }
    assert not any("NC" in a or "ND" in a for a in allow)


def test_allow_list_accepts_spellings_and_rejects_unknown_entries():
    assert normalize_allow_list(["CC BY 4.0", "cc0"]) == {"CC-BY-4.0", "CC0-1.0"}
    with pytest.raises(ValueError, match="'CC-BY'"):
        normalize_allow_list(["CC0-1.0", "CC-BY"])
    with pytest.raises(TypeError, match="list"):
        normalize_allow_list("CC0-1.0")


def _frame(licenses):
    return records_frame(
        make_record(image=bytes([i]), source="test", corpus="c", caption=f"r{i}", license=lic)
        for i, lic in enumerate(licenses)
    )


def test_filter_licenses_splits_conserves_and_keeps_order():
    records = _frame(["CC BY 4.0", None, "foo", "CC BY-NC-ND 4.0", "public domain", ""])
    before = records.copy(deep=True)
    kept, rejected = filter_licenses(records, DEFAULT_LICENSE_ALLOW)

    ids = records["record_id"].tolist()
    assert kept["record_id"].tolist() == [ids[0], ids[4]]
    assert kept["license_spdx"].tolist() == ["CC-BY-4.0", "PDM-1.0"]
    assert kept["license"].tolist() == ["CC BY 4.0", "public domain"]  # raw value kept
    assert rejected["record_id"].tolist() == [ids[1], ids[2], ids[3], ids[5]]
    assert rejected["stage"].tolist() == ["license"] * 4
    assert rejected["reason"].tolist() == [
        "license missing",
        "license 'foo' not recognised",
        "license CC-BY-NC-ND-4.0 not in allow-list",
        "license missing",
    ]
    assert list(kept.index) == [0, 1] and list(rejected.index) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(records, before)


def test_filter_licenses_with_custom_allow_list():
    records = _frame(["CC BY-NC 4.0", "CC0"])
    kept, rejected = filter_licenses(records, ["CC-BY-NC-4.0"])
    assert kept["license_spdx"].tolist() == ["CC-BY-NC-4.0"]
    assert rejected["reason"].tolist() == ["license CC0-1.0 not in allow-list"]


def test_filter_licenses_empty_input():
    kept, rejected = filter_licenses(_frame([]), DEFAULT_LICENSE_ALLOW)
    assert len(kept) == 0 and len(rejected) == 0
    assert "license_spdx" in kept.columns
    assert {"stage", "reason"} <= set(rejected.columns)
