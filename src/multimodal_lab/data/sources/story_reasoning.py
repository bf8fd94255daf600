"""StoryReasoning (``daniel3303/StoryReasoning``) as the 5-frame sequence corpus.

The dataset has one row per story: ``story_id``, ``images`` (the frames, 5 to 22),
``frame_count``, ``chain_of_thought`` (a scene analysis, not used here) and ``story``,
where the text of frame N sits in a ``<gdi imageN> ... </gdi>`` block whose prose is
grounded with ``<gdo id>`` (objects/characters), ``<gda id>`` (actions) and ``<gdl id>``
(landmarks) tags. Splits: train 3,552 / test 626 stories. Licence: CC-BY-ND-4.0.

What this source produces, per story:

* The frame texts: each ``<gdi imageN>`` block with every grounding tag removed and its
  inner text kept, whitespace collapsed and NFC-normalised. The grounded spans are kept
  as ``entities`` in the record metadata (tag, ids, text), for grounding checks.
* Windows of ``window`` consecutive frames (default 5), starting at frame 0 and every
  ``stride`` frames after (default ``stride = window``: non-overlapping windows, the
  remainder at the end is dropped). A story of 12 frames gives windows [0-4] and [5-9];
  with ``stride: 1`` it gives 8 overlapping windows. Stories with fewer than ``window``
  frames, and windows in which a frame has no text block, are dropped and counted in the
  log.
* One record per frame: ``group_id = f"{story_id}-w{k}"`` (k counts the story's kept
  windows from 0), ``frame_index`` 0..window-1, the frame text as ``caption`` (the
  schema's per-frame sentence), ``story`` None (the window's story is its captions in
  frame order), ``corpus`` "sequence", ``source`` "huggingface", licence
  "CC-BY-ND-4.0".
* Frames are re-encoded as PNG and downscaled so the longer side is at most
  ``max_side`` (default 256; the frames are movie stills of several hundred pixels and
  ~50k of them at full size would not fit the memory budget). Ingest then checks and
  normalises them like any other image; set ``max_side: null`` to leave sizing to ingest.

Note: the default licence allow-list of the licence filter rejects "ND" (no
derivatives) licences. To use this corpus for research, add ``CC-BY-ND-4.0`` to the
``license_allow`` parameter of ingest (see docs/data_sources.md).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.sources.html_extract import clean_text
from multimodal_lab.data.sources.huggingface import (
    check_columns,
    encode_image,
    iter_raw_rows,
    open_dataset,
)

logger = logging.getLogger(__name__)

STORY_REASONING_LICENSE = "CC-BY-ND-4.0"
STORY_REASONING_ATTRIBUTION = (
    "StoryReasoning dataset, D. A. P. Oliveira and D. Martins de Matos (2025), CC BY-ND 4.0"
)
#: Columns the source reads.
_COLUMNS = {"story_id": "story_id", "images": "images", "story": "story"}
_FRAME_BLOCK = re.compile(r"<gdi\s+image(\d+)\s*>(.*?)</gdi\s*>", re.S | re.I)
_GROUNDING_OPEN = re.compile(r"<(gd[oal])((?:\s+[^<>]*)?)>(.*?)</\1\s*>", re.S | re.I)
_ANY_GROUNDING_TAG = re.compile(r"</?gd[a-z]*(\s[^<>]*)?>", re.I)


@dataclass
class StoryReasoningConfig:
    """Parameters of the StoryReasoning source (``params:story_reasoning`` in the wiring)."""

    path: str = "daniel3303/StoryReasoning"  # Hub id, save_to_disk dir, or folder of the parquet files
    split: str = "train"  # "train" (3,552 stories) or "test" (626)
    window: int = 5  # frames per sequence record group
    stride: int | None = None  # frames between window starts; None = window (non-overlapping)
    max_stories: int | None = None  # read at most this many stories (from the start); None = all
    max_side: int | None = 256  # downscale frames so the longer side is at most this; None keeps size
    revision: str | None = None  # Hub revision to pin
    cache_dir: str | None = None  # datasets' Arrow cache location; None = the datasets default
    streaming: bool = False  # read stories lazily (useful with max_stories on the Hub)
    license: str = STORY_REASONING_LICENSE  # licence written into every record
    attribution: str = STORY_REASONING_ATTRIBUTION  # credit line written into every record
    corpus: str = "sequence"  # corpus name written into every record

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"story_reasoning: window={self.window} must be >= 1")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"story_reasoning: stride={self.stride} must be >= 1 or null")
        if self.max_side is not None and self.max_side <= 0:
            raise ValueError(f"story_reasoning: max_side={self.max_side} must be > 0 or null")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> StoryReasoningConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="StoryReasoningConfig")


def strip_grounding(text: str) -> str:
    """Remove grounding tags, keep their inner text, collapse whitespace (NFC)."""
    return clean_text(_ANY_GROUNDING_TAG.sub("", text))


def grounded_entities(text: str) -> list[dict[str, Any]]:
    """The grounded spans of a frame text, in order.

    Returns:
        ``[{"tag": "gdo", "ids": ["char1"], "text": "James"}, ...]``; ``tag`` is
        ``gdo`` (object/character), ``gda`` (action) or ``gdl`` (landmark).
    """
    return [
        {"tag": tag.lower(), "ids": attrs.split(), "text": strip_grounding(inner)}
        for tag, attrs, inner in _GROUNDING_OPEN.findall(text)
    ]


def parse_frames(story: str) -> dict[int, str]:
    """Raw text of each ``<gdi imageN>`` block, keyed by 0-based frame index (N - 1).

    When a frame number appears twice, its blocks are joined in order.
    """
    frames: dict[int, list[str]] = {}
    for number, body in _FRAME_BLOCK.findall(story or ""):
        frames.setdefault(int(number) - 1, []).append(body)
    return {index: " ".join(parts) for index, parts in frames.items()}


def window_starts(frame_count: int, window: int, stride: int | None = None) -> list[int]:
    """Start frames of the windows of a story: 0, stride, 2*stride, ... while a full window fits.

    >>> window_starts(12, 5)
    [0, 5]
    >>> window_starts(7, 5, 1)
    [0, 1, 2]
    >>> window_starts(4, 5)
    []
    """
    step = window if stride is None else stride
    return list(range(0, frame_count - window + 1, step))


def load_story_reasoning(config: StoryReasoningConfig) -> pd.DataFrame:
    """Read StoryReasoning into the windowed sequence corpus (see the module docstring).

    Args:
        config: where the dataset is, the split, and the windowing.

    Returns:
        A record frame with ``window`` rows per kept window, ordered by story, window,
        frame.
    """
    dataset = open_dataset(
        config.path, split=config.split, revision=config.revision, cache_dir=config.cache_dir,
        streaming=config.streaming, param_prefix="params:story_reasoning",
    )
    check_columns(dataset, _COLUMNS, config.path, "the StoryReasoning schema")
    base_dir = config.path if Path(config.path).is_dir() else None
    counts: Counter[str] = Counter()
    records = []
    for row in iter_raw_rows(dataset, config.max_stories, batch_size=8):
        counts["stories"] += 1
        story_id = str(row["story_id"])
        images = row["images"] or []
        frame_texts = parse_frames(row["story"])
        starts = window_starts(len(images), config.window, config.stride)
        if not starts:
            counts["stories_too_short"] += 1
            continue
        kept = 0
        encoded: dict[int, tuple[bytes, str]] = {}  # overlapping windows share frames: encode once
        for start in starts:
            frames = range(start, start + config.window)
            if any(not strip_grounding(frame_texts.get(i, "")) for i in frames):
                counts["windows_missing_text"] += 1
                continue
            group_id = f"{story_id}-w{kept}"
            for position, frame in enumerate(frames):
                if frame not in encoded:
                    encoded[frame] = encode_image(images[frame], max_side=config.max_side, base_dir=base_dir)
                    counts["undecodable_frames"] += bool(encoded[frame][1])
                image, error = encoded[frame]
                raw_text = frame_texts[frame]
                metadata: dict[str, Any] = {
                    "story_id": story_id,
                    "window": kept,
                    "window_start": start,
                    "source_frame": frame,
                    "frame_count": len(images),
                    "entities": grounded_entities(raw_text),
                }
                if error:
                    metadata["image_error"] = error
                records.append(
                    make_record(
                        image=image,
                        source="huggingface",
                        corpus=config.corpus,
                        caption=strip_grounding(raw_text),
                        story=None,
                        license=config.license,
                        attribution=config.attribution,
                        url=f"{config.path}#{config.split}/{story_id}/{frame}",
                        group_id=group_id,
                        frame_index=position,
                        metadata=metadata,
                    )
                )
            kept += 1
            counts["windows"] += 1
    logger.info(
        "story_reasoning[%s]: %d stories -> %d windows of %d frames (%d records); dropped %d stories shorter "
        "than %d frames and %d windows with a frame lacking text; %d undecodable frames kept raw",
        config.split, counts["stories"], counts["windows"], config.window, len(records),
        counts["stories_too_short"], config.window, counts["windows_missing_text"], counts["undecodable_frames"],
    )
    return records_frame(records)
