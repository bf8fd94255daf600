"""Captioning: BLIP-2 captions for records that lack one (cached by image hash)."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params

log = logging.getLogger(__name__)


def caption_missing(
    accepted_records: pd.DataFrame, caption_cache: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Give records without a caption one from BLIP-2; the others pass through.

    Args:
        accepted_records: Records that passed ingest.
        caption_cache: Captions of earlier runs by image hash (``{}`` on the first run).
        params: ``params:captioning`` — ``enabled`` plus the fields of ``Blip2Config``.

    Returns:
        The records (captions filled, ``caption_source`` in their metadata) and the
        extended cache. The model is loaded only when an uncached image needs a caption.
    """
    params = dict(params or {})
    enabled = params.pop("enabled", False)
    missing = int((accepted_records["caption"].fillna("").astype(str).str.strip() == "").sum())
    if not enabled:
        if missing:
            log.warning(
                "captioning is disabled and %d records have no caption; set "
                "params:captioning.enabled to true to caption them with BLIP-2", missing,
            )
        return accepted_records.copy(), dict(caption_cache or {})
    from multimodal_lab.captioning.blip2 import Blip2Config, caption_records

    config = from_params(Blip2Config, params, where="params:captioning")
    records, cache = caption_records(accepted_records, config, caption_cache)
    log.info("captioning: %d records lacked a caption; cache holds %d images", missing, len(cache))
    return records, cache
