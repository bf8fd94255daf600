"""Captioning: BLIP-2 captions for records that lack one (cached by image hash)."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def caption_missing(accepted_records: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Give every record a caption; records that already have one pass through.

    Args:
        accepted_records: Records that passed ingest.
        params: ``params:captioning`` — ``enabled`` plus the fields of ``Blip2Config``.
    """
    params = dict(params or {})
    enabled = params.pop("enabled", False)
    missing = accepted_records["caption"].fillna("").str.strip() == ""
    if not enabled or not missing.any():
        if missing.any():
            log.info("captioning disabled: %d records keep no caption", int(missing.sum()))
        return accepted_records.copy()
    raise NotImplementedError("BLIP-2 captioning is wired in pipelines/captioning")
