"""Captioning: BLIP-2 captions for records that lack one (cached by image hash)."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params

log = logging.getLogger(__name__)


def _blank(column: pd.Series) -> pd.Series:
    return column.fillna("").astype(str).str.strip() == ""


def caption_missing(
    accepted_records: pd.DataFrame, caption_cache: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Give records without a caption one from BLIP-2, and reject records left with no text.

    Args:
        accepted_records: Records that passed ingest.
        caption_cache: Captions of earlier runs by image hash (``{}`` on the first run).
        params: ``params:captioning`` — ``enabled`` plus the fields of ``Blip2Config``.

    Returns:
        The records that have a caption or a story (captions filled, ``caption_source``
        in their metadata), the extended cache, and the records that still have neither
        (stage ``text``, with the reason). The model is loaded only when an uncached
        image needs a caption.
    """
    from multimodal_lab.data.records import split_rejections

    params = dict(params or {})
    enabled = params.pop("enabled", False)
    if not isinstance(enabled, bool):
        raise TypeError(f"parameter 'params:captioning.enabled' must be true or false, got {enabled!r}")
    missing = int(_blank(accepted_records["caption"]).sum())
    if not enabled:
        records, cache = accepted_records.copy(), dict(caption_cache or {})
        if missing:
            log.warning(
                "captioning is disabled and %d records have no caption; set "
                "params:captioning.enabled to true to caption them with BLIP-2", missing,
            )
        why = "no caption and no story, and captioning is off (set params:captioning.enabled: true to caption it)"
    else:
        from multimodal_lab.captioning.blip2 import Blip2Config, caption_records

        config = from_params(Blip2Config, params, where="params:captioning")
        records, cache = caption_records(accepted_records, config, caption_cache)
        log.info("captioning: %d records lacked a caption; cache holds %d images", missing, len(cache))
        why = "no story, and BLIP-2 returned an empty caption"
    textless = _blank(records["caption"]) & _blank(records["story"])
    kept, rejected = split_rejections(records, [why if t else None for t in textless], "text")
    if len(rejected):
        log.warning("%d records have no text at all and are rejected (stage 'text')", len(rejected))
    return kept.reset_index(drop=True), cache, rejected.reset_index(drop=True)
