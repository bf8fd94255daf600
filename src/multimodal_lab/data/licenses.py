"""Licence normalisation and the licence-filter stage of ingest.

Sources spell the same licence in many ways ("CC BY 4.0", "cc-by-4.0",
"https://creativecommons.org/licenses/by/4.0/", "Attribution 4.0 International").
:func:`normalize_license` maps each recognised spelling to one SPDX-style id and
returns ``None`` for anything it does not recognise: a licence is never guessed.

Ids used here:

* Creative Commons licences: the SPDX ids (``CC0-1.0``, ``CC-BY-4.0``,
  ``CC-BY-NC-SA-3.0``, ...). Jurisdiction ports ("CC BY 3.0 US",
  ``.../by/3.0/us/``) map to the generic id of the same terms and version, because
  the allow-list is about the terms.
* Public Domain Mark 1.0 and the bare phrase "public domain":
  :data:`PUBLIC_DOMAIN_MARK` (``PDM-1.0``, a short id in SPDX style; the spellings
  ``LicenseRef-PDM-1.0`` and ``CC-PDM-1.0`` are read as the same mark).
* "All rights reserved": :data:`ALL_RIGHTS_RESERVED`
  (``LicenseRef-All-Rights-Reserved``), recognised so that the rejection says what
  the licence is rather than "not recognised".
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import pandas as pd

from multimodal_lab.data.records import split_rejections

logger = logging.getLogger(__name__)

PUBLIC_DOMAIN_MARK = "PDM-1.0"
ALL_RIGHTS_RESERVED = "LicenseRef-All-Rights-Reserved"
CC0 = "CC0-1.0"

#: Allow-list used when none is given: licences that permit commercial use and
#: derivatives. NC and ND variants are deliberately absent.
DEFAULT_LICENSE_ALLOW: tuple[str, ...] = (
    CC0,
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    PUBLIC_DOMAIN_MARK,
    "CC-BY-2.0",
    "CC-BY-3.0",
    "CC-BY-SA-3.0",
)

_CC_VERSIONS = ("1.0", "2.0", "2.5", "3.0", "4.0")
# Canonical order of the CC licence elements after "BY", as SPDX writes them.
_CC_ELEMENT_ORDER = ("NC", "ND", "SA")
_CC_ELEMENT_SETS = (
    frozenset(),
    frozenset({"SA"}),
    frozenset({"ND"}),
    frozenset({"NC"}),
    frozenset({"NC", "SA"}),
    frozenset({"NC", "ND"}),
)


def _cc_id(elements: Iterable[str], version: str) -> str:
    ordered = [e for e in _CC_ELEMENT_ORDER if e in set(elements)]
    return "-".join(["CC", "BY", *ordered, version])


#: Every id that :func:`normalize_license` can return.
KNOWN_LICENSE_IDS: frozenset[str] = frozenset(
    [CC0, PUBLIC_DOMAIN_MARK, ALL_RIGHTS_RESERVED]
    + [_cc_id(s, v) for s in _CC_ELEMENT_SETS for v in _CC_VERSIONS]
)
_KNOWN_BY_LOWER = {i.lower(): i for i in KNOWN_LICENSE_IDS}
_KNOWN_BY_LOWER["licenseref-pdm-1.0"] = PUBLIC_DOMAIN_MARK
_KNOWN_BY_LOWER["cc-pdm-1.0"] = PUBLIC_DOMAIN_MARK

_CC_URL = re.compile(
    r"^(?:https?://)?(?:www\.)?creativecommons\.org/"
    r"(?P<kind>licenses|publicdomain)/(?P<terms>[a-z-]+)/(?P<version>\d\.\d)"
    r"(?:/(?P<rest>[a-z0-9._/-]*))?$"
)
# Words that name the CC elements in long-form licence names.
_WORD_SYNONYMS = {
    "attribution": "by",
    "sharealike": "sa",
    "noncommercial": "nc",
    "noderivatives": "nd",
    "noderivs": "nd",
}
# Words that carry no licence meaning in long-form names and may be ignored.
_FILLER_WORDS = frozenset(
    {"cc", "creative", "commons", "license", "licence", "international",
     "generic", "unported", "deed", "legalcode", "universal", "the"}
)
_VERSION = re.compile(r"^\d\.\d$")


def _from_url(text: str) -> str | None:
    match = _CC_URL.match(text.rstrip("/"))
    if match is None:
        return None
    kind, terms, version = match["kind"], match["terms"], match["version"]
    rest = (match["rest"] or "").strip("/")
    # After the version only a jurisdiction port and/or a deed/legalcode page may follow.
    if rest and not re.fullmatch(r"([a-z]{2}/?)?((deed|legalcode)(\.[a-z_-]+)?)?", rest):
        return None
    if kind == "publicdomain":
        if terms == "zero" and version == "1.0":
            return CC0
        if terms == "mark" and version == "1.0":
            return PUBLIC_DOMAIN_MARK
        return None
    parts = terms.split("-")
    if parts[0] != "by" or version not in _CC_VERSIONS:
        return None
    elements = frozenset(p.upper() for p in parts[1:])
    if len(elements) != len(parts) - 1 or elements not in _CC_ELEMENT_SETS:
        return None
    return _cc_id(elements, version)


def _from_words(text: str) -> str | None:
    lowered = text.lower()
    if "all rights reserved" in lowered:
        return ALL_RIGHTS_RESERVED
    # "CC-BY-SA-4.0", "CC BY-NC 4.0", "Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)"
    words = re.findall(r"\d\.\d|[a-z0-9]+", lowered.replace("_", " "))
    words = [_WORD_SYNONYMS.get(w, w) for w in words]
    versions = {w for w in words if _VERSION.match(w)}
    content = [w for w in words if w not in _FILLER_WORDS and not _VERSION.match(w)]
    if len(versions) > 1:
        return None
    version = next(iter(versions), None)

    if content and set(content) <= {"cc0", "zero", "public", "domain", "dedication"} and (
        "cc0" in content or ("cc" in words and "zero" in content)
    ):
        return CC0 if version in (None, "1.0") else None
    if set(content) <= {"public", "domain", "mark", "pdm"} and (
        "pdm" in content or {"public", "domain"} <= set(content)
    ):
        return PUBLIC_DOMAIN_MARK if version in (None, "1.0") else None
    if "by" in content and version in _CC_VERSIONS and ("cc" in words or "creative" in words
                                                        or content[0] == "by"):
        # Long names repeat the short form ("Attribution 4.0 International (CC BY 4.0)"),
        # so the words are read as a set.
        rest = {w for w in content if w != "by"}
        elements = frozenset(w.upper() for w in rest if w in ("nc", "nd", "sa"))
        # A two-letter word is a jurisdiction port ("CC BY 3.0 US").
        others = {w for w in rest if w not in ("nc", "nd", "sa") and len(w) != 2}
        ports = {w for w in rest if w not in ("nc", "nd", "sa") and len(w) == 2}
        if others or len(ports) > 1 or elements not in _CC_ELEMENT_SETS:
            return None
        return _cc_id(elements, version)
    return None


def is_missing(value: Any) -> bool:
    """True for None, NaN/NA and blank strings: the licence field was not filled."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def normalize_license(value: Any) -> str | None:
    """Map a licence string to its SPDX-style id.

    Args:
        value: the licence as found at the source (string, or None/NaN when absent).

    Returns:
        One of :data:`KNOWN_LICENSE_IDS`, or ``None`` when the value is missing or not
        recognised. Use :func:`license_rejection_reason` to tell those apart.
    """
    if is_missing(value) or not isinstance(value, str):
        return None
    text = " ".join(value.strip().split())
    exact = _KNOWN_BY_LOWER.get(text.lower())
    if exact is not None:
        return exact
    lowered = text.lower()
    if "creativecommons.org" in lowered:
        return _from_url(lowered)
    return _from_words(text)


def normalize_allow_list(allow: Iterable[str]) -> frozenset[str]:
    """Normalise an allow-list, failing on entries that are not recognised licences.

    Entries may use any spelling that :func:`normalize_license` understands.
    """
    if isinstance(allow, str):
        raise TypeError(
            f"license_allow must be a list of licence ids, got the string {allow!r}; "
            f"write it as a YAML list, e.g. ['CC0-1.0', 'CC-BY-4.0']"
        )
    normalised = set()
    for entry in allow:
        spdx = normalize_license(entry)
        if spdx is None:
            raise ValueError(
                f"license_allow entry {entry!r} is not a recognised licence id; use ids "
                f"such as {', '.join(DEFAULT_LICENSE_ALLOW)}"
            )
        normalised.add(spdx)
    return frozenset(normalised)


def license_rejection_reason(value: Any, allow: frozenset[str]) -> tuple[str | None, str | None]:
    """Decide one licence: ``(spdx_id, None)`` when allowed, ``(spdx_or_None, reason)`` otherwise.

    ``allow`` must already be normalised (see :func:`normalize_allow_list`).
    """
    if is_missing(value):
        return None, "license missing"
    spdx = normalize_license(value)
    if spdx is None:
        return None, f"license {value!r} not recognised"
    if spdx not in allow:
        return spdx, f"license {spdx} not in allow-list"
    return spdx, None


def filter_licenses(
    records: pd.DataFrame, allow: Iterable[str] = DEFAULT_LICENSE_ALLOW
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Licence stage of ingest: keep records whose licence is in ``allow``.

    Args:
        records: record frame (see ``records.RECORD_COLUMNS``); not modified.
        allow: licence ids (any recognised spelling) that may pass.

    Returns:
        ``(kept, rejected)``. ``kept`` has the input columns plus ``license_spdx``;
        ``rejected`` has the input columns plus ``stage`` (``"license"``) and
        ``reason``. Every input row is in exactly one of them, in input order.
    """
    allowed = normalize_allow_list(allow)
    spdx_ids: list[str | None] = []
    reasons: list[str | None] = []
    for value in records["license"].tolist():
        spdx, reason = license_rejection_reason(value, allowed)
        spdx_ids.append(spdx)
        reasons.append(reason)
    kept, rejected = split_rejections(records, reasons, "license")
    kept["license_spdx"] = pd.Series(
        [s for s, r in zip(spdx_ids, reasons) if r is None], index=kept.index, dtype=object
    )
    if len(rejected):
        logger.info("licence filter: kept %d, rejected %d", len(kept), len(rejected))
    return kept.reset_index(drop=True), rejected.reset_index(drop=True)
