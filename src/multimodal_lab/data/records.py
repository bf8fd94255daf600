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
    "group_id": "story / sequence id: the records that form one item (a 5-frame sequence, a story)",
    "family_id": "the records that must stay on one side of the split and are never deduplicated against "
    "each other (a StoryReasoning story's windows); the group id unless a source says otherwise",
    "frame_index": "position inside the group (0 for a standalone image)",
    "corpus": "which material this is: 'scene', 'engraving', 'sequence' or a source-defined name",
    "image": "encoded image bytes as received (PNG, JPEG, ...); validated and re-encoded by ingest",
    "caption": "one-sentence caption, or per-frame sentence for sequences; None when missing "
    "(normalised by data.text.normalize_text)",
    "story": "multi-sentence story; None when the source has none (normalised likewise)",
    "license": "licence string as found at the source (normalised to SPDX by the licence filter)",
    "source": "where it came from: 'scene_world', 'local_folder', 'web', 'huggingface'",
    "attribution": "author / credit line to show next to the material",
    "url": "origin URL or path, for provenance",
    "metadata": "JSON object string: structured truth (objects, attributes) and source extras",
}

#: Columns that ingest adds to accepted records.
ACCEPTED_EXTRA_COLUMNS: dict[str, str] = {
    "license_spdx": "normalised SPDX id of the licence (e.g. 'CC-BY-4.0')",
    "image_hash": "sha256 of the normalised image's size and RGB pixels (data.images.pixel_hash)",
    "width": "image width after normalisation",
    "height": "image height after normalisation",
}

#: Columns that the stages add to rejected records.
REJECTED_EXTRA_COLUMNS: dict[str, str] = {
    "stage": "which stage rejected the record: 'source', 'duplicate_id', 'license', 'image', 'dedup', "
    "'text', 'corpus'",
    "reason": "human-readable reason, e.g. 'license CC-BY-NC-ND-4.0 not in allow-list'",
    "image_sha256": "sha256 of the image bytes the rejecting stage saw: as received up to the image stage, "
    "the normalised PNG after it ('' when there were none)",
    "image_size_bytes": "length of those bytes; the bytes themselves are kept in 'image' only when they are "
    "a recognised image format within the limits",
}

#: Metadata key a source sets on a row it could not read properly (a sidecar line that is not
#: JSON, a file outside the folder, a dataset row without an image): ingest rejects the row at
#: its first stage, 'source', with this text as the reason, so no row a source saw is lost.
SOURCE_PROBLEM = "source_problem"


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
    family_id: str | None = None,
    frame_index: int = 0,
    metadata: Mapping[str, Any] | None = None,
    problem: str | None = None,
) -> dict[str, Any]:
    """Build one record dict in canonical column order.

    ``group_id`` defaults to the record id, so a standalone image is its own group, and
    ``family_id`` to the group id. Caption and story go through the project's one text
    normalisation (``data.text.normalize_text``). A source that could not read a row
    properly still builds its record, with the ``problem`` as text: ingest rejects it
    with that reason instead of the row vanishing.
    """
    from multimodal_lab.data.text import normalize_text

    caption, story = normalize_text(caption), normalize_text(story)
    extra = (problem,) if problem else ()  # ids of ordinary records do not change with the problem field
    record_id = make_record_id(image or b"", caption, story, group_id, str(frame_index), *extra)
    metadata = dict(metadata or {})
    if problem:
        metadata[SOURCE_PROBLEM] = str(problem)
    group = group_id if group_id is not None else record_id
    return {
        "record_id": record_id,
        "group_id": group,
        "family_id": family_id if family_id is not None else group,
        "frame_index": int(frame_index),
        "corpus": corpus,
        "image": bytes(image or b""),
        "caption": caption,
        "story": story,
        "license": license,
        "source": source,
        "attribution": attribution,
        "url": url,
        "metadata": json.dumps(metadata, sort_keys=True, default=str),
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


def source_problem(metadata: Any) -> str | None:
    """The problem a source flagged on a record (see :data:`SOURCE_PROBLEM`), from its metadata JSON."""
    if not metadata or SOURCE_PROBLEM not in str(metadata):
        return None
    try:
        value = json.loads(metadata).get(SOURCE_PROBLEM)
    except (TypeError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def metadata_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """Decode a record's metadata JSON (an absent or empty value gives {})."""
    raw = record.get("metadata")
    if not raw:
        return {}
    return json.loads(raw)


def references_of(record: Mapping[str, Any], text_field: str = "caption") -> list[str]:
    """Every reference text of a record: ``metadata["references"]`` when the source gave
    several (the scene world's captions, a COCO-format folder), else the record's own
    ``text_field`` (empty when it has none). Blank entries are dropped.
    """
    try:
        listed = metadata_of(record).get("references")
    except (TypeError, ValueError):  # metadata that is not JSON: no listed references
        listed = None
    if isinstance(listed, list):
        texts = [str(t).strip() for t in listed if isinstance(t, str) and t.strip()]
        if texts:
            return texts
    own = record.get(text_field)
    return [own.strip()] if isinstance(own, str) and own.strip() else []

