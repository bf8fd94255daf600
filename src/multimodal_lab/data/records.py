"""The record: the one row shape that every source produces and every stage passes on.

A *record* is one image with its texts, licence and provenance. Sources (scene world,
local folder, web, Hugging Face) each yield records in this shape; ingest filters them;
split and corpus selection read them. Keeping one schema means a new source drops in
without touching any later stage.

Records travel as a ``pandas.DataFrame`` with exactly :data:`RECORD_COLUMNS`. Images are
kept *encoded* (PNG/JPEG bytes), never as decoded arrays, so 50k records at 256x256 stay
far below the memory budget: decoding happens one image at a time where it is needed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

#: Column name -> meaning. The order is the canonical column order.
RECORD_COLUMNS: dict[str, str] = {
    "record_id": "stable id: sha256 of image bytes and texts, 16 hex chars (see make_record_id)",
    "group_id": "story / sequence id; records of one group never straddle train and val",
    "frame_index": "position inside the group (0 for a standalone image)",
    "corpus": "which material this is: 'scene', 'engraving', 'sequence' or a source-defined name",
    "image": "encoded image bytes as received (PNG, JPEG, ...); validated and re-encoded by ingest",
    "caption": "one-sentence caption, or per-frame sentence for sequences; None when missing",
    "story": "multi-sentence story; None when the source has none",
    "license": "licence string as found at the source (normalised to SPDX by the licence filter)",
    "source": "where it came from: 'scene_world', 'local_folder', 'web', 'huggingface'",
    "attribution": "author / credit line to show next to the material",
    "url": "origin URL or path, for provenance",
    "metadata": "JSON object string: structured truth (objects, attributes) and source extras",
}

#: Columns that ingest adds to accepted records.
ACCEPTED_EXTRA_COLUMNS: dict[str, str] = {
    "license_spdx": "normalised SPDX id of the licence (e.g. 'CC-BY-4.0')",
    "image_hash": "sha256 of the normalised image bytes",
    "width": "image width after normalisation",
    "height": "image height after normalisation",
}

#: Columns that ingest adds to rejected records.
REJECTED_EXTRA_COLUMNS: dict[str, str] = {
    "stage": "which ingest stage rejected the record: 'license', 'image', 'dedup', ...",
    "reason": "human-readable reason, e.g. 'license CC-BY-NC-ND-4.0 not in allow-list'",
}


def make_record_id(image: bytes, *texts: str | None) -> str:
    """Stable content id of a record: the same bytes and texts give the same id."""
    digest = hashlib.sha256(image)
    for text in texts:
        digest.update(b"\x00")
        digest.update((text or "").encode("utf-8"))
    return digest.hexdigest()[:16]


def make_record(
    *,
    image: bytes,
    source: str,
    corpus: str,
    caption: str | None = None,
    story: str | None = None,
    license: str | None = None,  # noqa: A002 - the schema's own word
    attribution: str = "",
    url: str = "",
    group_id: str | None = None,
    frame_index: int = 0,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one record dict in canonical column order.

    ``group_id`` defaults to the record id, so a standalone image is its own group.
    """
    record_id = make_record_id(image, caption, story, group_id, str(frame_index))
    return {
        "record_id": record_id,
        "group_id": group_id if group_id is not None else record_id,
        "frame_index": int(frame_index),
        "corpus": corpus,
        "image": bytes(image),
        "caption": caption,
        "story": story,
        "license": license,
        "source": source,
        "attribution": attribution,
        "url": url,
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True),
    }


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Make a DataFrame with exactly the record columns (an empty iterable is fine)."""
    frame = pd.DataFrame(list(records), columns=list(RECORD_COLUMNS))
    frame["frame_index"] = frame["frame_index"].astype("int64")
    return frame


def validate_records(frame: pd.DataFrame, *, where: str = "records") -> pd.DataFrame:
    """Fail loudly when a frame lacks record columns; return it unchanged otherwise."""
    missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{where} is missing record columns {missing}; every source must produce "
            f"the columns of multimodal_lab.data.records.RECORD_COLUMNS"
        )
    return frame


def split_rejections(
    records: pd.DataFrame, reasons: Sequence[str | None], stage: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a stage's input into kept rows (reason ``None``) and rejected rows.

    Rejected rows get ``stage`` and their ``reason``; both frames keep the input order and
    index, so callers can still add columns aligned on it before resetting.
    """
    if len(reasons) != len(records):
        raise ValueError(f"{len(reasons)} reasons for {len(records)} records in stage {stage!r}")
    ok = pd.Series([r is None for r in reasons], index=records.index, dtype=bool)
    rejected = records.loc[~ok].copy()
    rejected["stage"] = stage
    rejected["reason"] = pd.Series([r for r in reasons if r is not None], index=rejected.index, dtype=object)
    return records.loc[ok].copy(), rejected


def metadata_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a record's metadata JSON (an absent or empty value gives {})."""
    raw = record.get("metadata")
    if not raw:
        return {}
    return json.loads(raw)
