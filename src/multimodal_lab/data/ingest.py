"""Ingest: records from any source -> accepted records + rejected records with reasons.

The stages run in this order, each on what the previous one kept:

1. source (:func:`reject_source_problems`): rows a source could not read properly (a
   sidecar line that is not JSON, a file outside the folder, a dataset row without an
   image) carry the source's reason; they are rejected here.
2. text (:func:`normalize_texts`): captions and stories get the project's one text
   normalisation (HTML, entities, Unicode, control characters, whitespace); nothing is
   rejected here — a record left without any text is rejected after captioning, which
   may still give it one.
3. licence filter (:func:`filter_licenses`): licence normalised to an SPDX-style id
   and checked against an allow-list; missing or unknown licences are rejected.
4. image validation (:func:`validate_images`): byte and pixel limits, decode, check,
   convert to RGB, orient, resize, re-encode as PNG.
5. duplicate_id (:func:`reject_repeated_ids`): a record id seen earlier (the same image
   bytes and texts delivered twice, by one source or two) is rejected, naming the record
   that was kept. It runs after the licence and image stages on purpose: of two copies
   of one material, one "All rights reserved" and one CC0, the CC0 copy is the one kept,
   and the record a repeat names has passed every stage a repeat would also pass.
6. dedup (:func:`deduplicate`): exact and near-duplicate images across families.

Nothing is lost: every input row ends in exactly one of the two outputs, and
:func:`ingest` checks that before returning (record ids are compared as a multiset).
Rejected rows keep their image bytes only when they are a recognised image within the
limits; other bytes (an HTML error page, a truncated download, anything a source
fetched) are not copied into the rejected records: their sha256 and size are.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params
from multimodal_lab.data.dedup import deduplicate
from multimodal_lab.data.images import ImagePolicy, is_image_bytes, validate_images
from multimodal_lab.data.licenses import (
    DEFAULT_LICENSE_ALLOW,
    filter_licenses,
    normalize_allow_list,
)
from multimodal_lab.data.records import (
    ACCEPTED_EXTRA_COLUMNS,
    RECORD_COLUMNS,
    REJECTED_EXTRA_COLUMNS,
    source_problem,
    split_rejections,
    validate_records,
)
from multimodal_lab.data.text import normalize_text

__all__ = [
    "ACCEPTED_COLUMNS",
    "REJECTED_COLUMNS",
    "IngestConfig",
    "ImagePolicy",
    "deduplicate",
    "filter_licenses",
    "ingest",
    "ingest_summary",
    "validate_images",
]

logger = logging.getLogger(__name__)

ACCEPTED_COLUMNS: list[str] = [*RECORD_COLUMNS, *ACCEPTED_EXTRA_COLUMNS]
REJECTED_COLUMNS: list[str] = [*RECORD_COLUMNS, *REJECTED_EXTRA_COLUMNS]
STAGES = ("source", "license", "image", "duplicate_id", "dedup")


@dataclass
class IngestConfig:
    """Parameters of the ingest stages."""

    license_allow: list[str] = field(default_factory=lambda: list(DEFAULT_LICENSE_ALLOW))  # licence ids that pass
    image: ImagePolicy = field(default_factory=ImagePolicy)  # image checks and normalisation
    near_duplicate_distance: int = 4  # max pHash Hamming distance (of 64 bits) for a near duplicate; -1 = exact only
    near_duplicate_max_difference: float | None = None  # also require thumbnails within this mean abs. difference (0-255); None = pHash alone
    workers: int = 1  # processes for image validation; 1 = in-process, 0 = one per CPU core (identical results)
    chunk_size: int = 64  # images per worker task
    progress: bool | None = None  # progress bars; None = only on a terminal

    def __post_init__(self) -> None:
        if isinstance(self.image, Mapping):
            self.image = from_params(ImagePolicy, self.image, where="image")
        # Fail at configuration time on a misspelt licence id, not mid-run.
        normalize_allow_list(self.license_allow)
        self.license_allow = list(self.license_allow)
        if self.workers < 0:
            raise ValueError(f"ingest workers must be >= 0 (0 = one per CPU core), got {self.workers}")
        if self.workers == 0:
            self.workers = os.cpu_count() or 1

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> IngestConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="IngestConfig")


def _empty(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for column in ("frame_index", "width", "height", "image_size_bytes"):
        if column in frame:
            frame[column] = frame[column].astype("int64")
    return frame


def _conform(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if frame.empty:
        return _empty(columns)
    return frame.loc[:, columns].reset_index(drop=True)


def reject_source_problems(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source stage: rows a source flagged as unreadable (``records.SOURCE_PROBLEM``) are rejected."""
    reasons = [source_problem(m) for m in records["metadata"]]
    return split_rejections(records, reasons, "source")


def reject_repeated_ids(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Duplicate-id stage: the second and later rows with one record id are rejected.

    A record id is a hash of the image bytes and texts, so a repeat is the same material
    delivered twice (two sidecar rows for one file, or two sources); the reason names the
    record kept and where it came from.
    """
    first: dict[str, int] = {}
    reasons: list[str | None] = []
    ids, sources, urls = records["record_id"].tolist(), records["source"].tolist(), records["url"].tolist()
    for pos, rid in enumerate(ids):
        if rid in first:
            kept = first[rid]
            where = f"{sources[kept]}" + (f" {urls[kept]}" if urls[kept] else "")
            reasons.append(f"repeats record {rid} (same image bytes and texts), kept from {where}")
        else:
            first[rid] = pos
            reasons.append(None)
    return split_rejections(records, reasons, "duplicate_id")


def normalize_texts(records: pd.DataFrame) -> pd.DataFrame:
    """Text stage: caption and story through ``data.text.normalize_text`` (a copy; idempotent)."""
    out = records.copy()
    for column in ("caption", "story"):
        out[column] = pd.Series([normalize_text(v) for v in out[column]], index=out.index, dtype=object)
    return out


def describe_rejected_images(rejected: pd.DataFrame, policy: ImagePolicy) -> pd.DataFrame:
    """Add ``image_sha256`` and ``image_size_bytes``; keep ``image`` only when it is a recognised image.

    Returns a copy; the rows and their order are unchanged.
    """
    out = rejected.copy()
    hashes, sizes, kept = [], [], []
    for data in out["image"]:
        raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else b""
        hashes.append(hashlib.sha256(raw).hexdigest() if raw else "")
        sizes.append(len(raw))
        keep = is_image_bytes(raw, max_bytes=policy.max_bytes, max_pixels=policy.max_pixels)
        kept.append(raw if keep else None)
    out["image"] = pd.Series(kept, index=out.index, dtype=object)
    out["image_sha256"] = pd.Series(hashes, index=out.index, dtype=object)
    out["image_size_bytes"] = pd.Series(sizes, index=out.index, dtype="int64")
    return out


def ingest(records: pd.DataFrame, config: IngestConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the ingest stages (see the module docstring) over source records.

    Args:
        records: record frame with :data:`~multimodal_lab.data.records.RECORD_COLUMNS`
            (extra columns are dropped); not modified.
        config: stage parameters.

    Returns:
        ``(accepted, rejected)``. ``accepted`` has :data:`ACCEPTED_COLUMNS` (record
        columns, normalised PNG in ``image``, plus licence id, image hash and size);
        ``rejected`` has :data:`REJECTED_COLUMNS` (record columns as they were when
        rejected, plus ``stage``, ``reason``, ``image_sha256`` and ``image_size_bytes``).
        Input order is kept in each.

    Raises:
        ValueError: the input lacks record columns.
        RuntimeError: a record went missing or was duplicated (an internal bug).
    """
    validate_records(records, where="ingest input")
    source = records.loc[:, list(RECORD_COLUMNS)]
    logger.info("ingest: %d input records", len(source))

    readable, rejected_source = reject_source_problems(source)
    texts = normalize_texts(readable)
    licensed, rejected_license = filter_licenses(texts, config.license_allow)
    valid, rejected_image = validate_images(
        licensed, config.image, config.workers, chunk_size=config.chunk_size, progress=config.progress
    )
    unique_ids, rejected_repeats = reject_repeated_ids(valid)
    unique, rejected_dup = deduplicate(
        unique_ids,
        config.near_duplicate_distance,
        max_pixel_difference=config.near_duplicate_max_difference,
        progress=config.progress,
    )

    accepted = _conform(unique, ACCEPTED_COLUMNS)
    stages = (rejected_source, rejected_license, rejected_image, rejected_repeats, rejected_dup)
    parts = [describe_rejected_images(r, config.image) for r in stages if len(r)]
    parts = [_conform(p, REJECTED_COLUMNS) for p in parts]
    rejected = pd.concat(parts, ignore_index=True) if parts else _empty(REJECTED_COLUMNS)
    rejected["frame_index"] = rejected["frame_index"].astype("int64")

    _check_conservation(source, accepted, rejected)
    summary = ingest_summary(accepted, rejected)
    logger.info("ingest summary: %s", summary)
    return accepted, rejected


def _check_conservation(source: pd.DataFrame, accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
    """Every input row must come out exactly once."""
    if len(accepted) + len(rejected) != len(source):
        raise RuntimeError(
            f"ingest lost or duplicated records: {len(source)} in, {len(accepted)} accepted + "
            f"{len(rejected)} rejected out"
        )
    out = Counter(accepted["record_id"].tolist()) + Counter(rejected["record_id"].tolist())
    if out != Counter(source["record_id"].tolist()):
        raise RuntimeError("ingest changed the set of record ids; every record must come out as it went in")


def ingest_summary(accepted: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, int]:
    """Counts for logging as metrics: source rows, accepted, rejected, and rejected per stage."""
    by_stage = rejected["stage"].value_counts().to_dict() if len(rejected) else {}
    summary = {"input": len(accepted) + len(rejected), "accepted": len(accepted), "rejected": len(rejected)}
    for stage in STAGES:
        summary[f"rejected_{stage}"] = int(by_stage.get(stage, 0))
    return summary
