"""Ingest: records from any source -> accepted records + rejected records with reasons.

The stages run in this order, each on what the previous one kept:

1. licence filter (:func:`filter_licenses`): licence normalised to an SPDX-style id
   and checked against an allow-list; missing or unknown licences are rejected.
2. image validation (:func:`validate_images`): decode, check, convert to RGB, orient,
   resize, re-encode as PNG.
3. dedup (:func:`deduplicate`): exact and near-duplicate images across groups.

Nothing is lost: every input record ends in exactly one of the two outputs, and
:func:`ingest` checks that before returning (record ids are compared as a multiset).
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params
from multimodal_lab.data.dedup import deduplicate
from multimodal_lab.data.images import ImagePolicy, validate_images
from multimodal_lab.data.licenses import (
    DEFAULT_LICENSE_ALLOW,
    filter_licenses,
    normalize_allow_list,
)
from multimodal_lab.data.records import (
    ACCEPTED_EXTRA_COLUMNS,
    RECORD_COLUMNS,
    REJECTED_EXTRA_COLUMNS,
    validate_records,
)

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
STAGES = ("license", "image", "dedup")


def _check_keys(cls: type, params: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys are {sorted(known)}")


@dataclass
class IngestConfig:
    """Parameters of the ingest stages."""

    license_allow: list[str] = field(default_factory=lambda: list(DEFAULT_LICENSE_ALLOW))  # licence ids that pass
    image: ImagePolicy = field(default_factory=ImagePolicy)  # image checks and normalisation
    near_duplicate_distance: int = 4  # max pHash Hamming distance (of 64 bits) for a near duplicate; -1 = exact only
    near_duplicate_max_difference: float | None = None  # also require thumbnails within this mean abs. difference (0-255); None = pHash alone
    workers: int = 1  # processes for image validation; 1 = in-process (identical results)
    chunk_size: int = 64  # images per worker task
    progress: bool | None = None  # progress bars; None = only on a terminal

    def __post_init__(self) -> None:
        if isinstance(self.image, Mapping):
            _check_keys(ImagePolicy, self.image, "ingest image parameters")
            self.image = ImagePolicy(**self.image)
        # Fail at configuration time on a misspelt licence id, not mid-run.
        normalize_allow_list(self.license_allow)
        self.license_allow = list(self.license_allow)
        if self.workers < 1:
            raise ValueError(f"ingest workers must be >= 1, got {self.workers}")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> IngestConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="IngestConfig")


def _empty(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for column in ("frame_index", "width", "height"):
        if column in frame:
            frame[column] = frame[column].astype("int64")
    return frame


def _conform(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if frame.empty:
        return _empty(columns)
    return frame.loc[:, columns].reset_index(drop=True)


def ingest(records: pd.DataFrame, config: IngestConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run licence filter, image validation and dedup over source records.

    Args:
        records: record frame with :data:`~multimodal_lab.data.records.RECORD_COLUMNS`
            (extra columns are dropped); not modified.
        config: stage parameters.

    Returns:
        ``(accepted, rejected)``. ``accepted`` has :data:`ACCEPTED_COLUMNS` (record
        columns, normalised PNG in ``image``, plus licence id, image hash and size);
        ``rejected`` has :data:`REJECTED_COLUMNS` (record columns as they were when
        rejected, plus ``stage`` and ``reason``). Input order is kept in each.

    Raises:
        ValueError: the input lacks record columns.
        RuntimeError: a record went missing or was duplicated (an internal bug).
    """
    validate_records(records, where="ingest input")
    source = records.loc[:, list(RECORD_COLUMNS)]
    logger.info("ingest: %d input records", len(source))

    licensed, rejected_license = filter_licenses(source, config.license_allow)
    valid, rejected_image = validate_images(
        licensed, config.image, config.workers, chunk_size=config.chunk_size, progress=config.progress
    )
    unique, rejected_dup = deduplicate(
        valid,
        config.near_duplicate_distance,
        max_pixel_difference=config.near_duplicate_max_difference,
        progress=config.progress,
    )

    accepted = _conform(unique, ACCEPTED_COLUMNS)
    parts = [_conform(r, REJECTED_COLUMNS) for r in (rejected_license, rejected_image, rejected_dup)]
    parts = [p for p in parts if len(p)]
    rejected = pd.concat(parts, ignore_index=True) if parts else _empty(REJECTED_COLUMNS)
    rejected["frame_index"] = rejected["frame_index"].astype("int64")

    _check_conservation(source, accepted, rejected)
    summary = ingest_summary(accepted, rejected)
    logger.info("ingest summary: %s", summary)
    return accepted, rejected


def _check_conservation(source: pd.DataFrame, accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
    """Every input record must come out exactly once."""
    if len(accepted) + len(rejected) != len(source):
        raise RuntimeError(
            f"ingest lost or duplicated records: {len(source)} in, {len(accepted)} accepted + "
            f"{len(rejected)} rejected out"
        )
    out = Counter(accepted["record_id"].tolist()) + Counter(rejected["record_id"].tolist())
    if out != Counter(source["record_id"].tolist()):
        raise RuntimeError("ingest changed the set of record ids; every record must come out as it went in")


def ingest_summary(accepted: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, int]:
    """Counts for logging as metrics: accepted, rejected, and rejected per stage."""
    by_stage = rejected["stage"].value_counts().to_dict() if len(rejected) else {}
    summary = {"input": len(accepted) + len(rejected), "accepted": len(accepted), "rejected": len(rejected)}
    for stage in STAGES:
        summary[f"rejected_{stage}"] = int(by_stage.get(stage, 0))
    return summary
