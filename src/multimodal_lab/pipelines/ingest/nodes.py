"""Ingest: licence filter -> image validation -> dedup, losing nothing."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params

log = logging.getLogger(__name__)


def ingest_records(
    raw_records: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Filter raw records into accepted and rejected ones (each rejection with a reason).

    Args:
        raw_records: Records of every source (``data.records`` schema).
        params: ``params:ingest`` — the fields of ``IngestConfig``.

    Returns:
        accepted records, rejected records, and a summary (counts per stage and reason).

    Raises:
        ValueError: When nothing survives the filters, naming what to check.
    """
    from multimodal_lab.data.ingest import IngestConfig, ingest

    config = from_params(IngestConfig, params, where="params:ingest")
    accepted, rejected = ingest(raw_records, config)
    summary = {
        "source_rows": int(len(raw_records)),
        "source_rows_by_source": {str(k): int(v) for k, v in raw_records["source"].value_counts().items()},
        "accepted": int(len(accepted)),
        "rejected": int(len(rejected)),
        "rejected_by_stage": {str(k): int(v) for k, v in rejected["stage"].value_counts().items()},
        "accepted_by_corpus": {str(k): int(v) for k, v in accepted["corpus"].value_counts().items()},
    }
    log.info("ingest: %s", summary)
    if accepted.empty:
        top = rejected["reason"].value_counts().head(3).to_dict() if len(rejected) else {}
        raise ValueError(
            f"no record survived ingest ({len(raw_records)} in, all rejected; top reasons: {top}); "
            "check params:ingest.license_allow and the image policy, or the sources"
        )
    return accepted, rejected, summary
