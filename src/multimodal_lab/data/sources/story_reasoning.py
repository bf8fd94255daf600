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
  ``stride`` frames after (default ``stride = window``: non-overlapping windows). A story
  of 12 frames gives windows [0-4] and [5-9]; with ``stride: 1`` it gives 8 overlapping
  windows. A window in which a frame has no text block is not kept.
* One record per frame of each kept window: ``group_id = f"{story_id}-w{k}"`` (k counts
  the story's kept windows from 0), ``family_id = story_id`` (the windows of one story
  stay on one side of the split and are never deduplicated against each other, even
  when they overlap), ``frame_index`` 0..window-1, the frame text as ``caption`` (the
  schema's per-frame sentence), ``story`` None (the window's story is its captions in
  frame order), ``corpus`` "sequence", ``source`` "huggingface", licence
  "CC-BY-ND-4.0".
* Nothing is lost: every frame that is in no kept window still becomes one record,
  carrying the reason as its problem (``records.make_record``'s ``problem``), so ingest
  rejects it visibly: a story shorter than a window, a frame of a window dropped for a
  missing text, a frame after the last window (the remainder of the story) or between
  windows (``stride`` > ``window``). These records have ``group_id = story_id``, the
  story's family, ``frame_index`` = the frame's position in the story, and no image (it is
  not read). With non-overlapping windows every frame is therefore exactly one record;
  with overlapping windows a frame is one record per kept window holding it. A story
  without frames becomes one problem record.
* Frames are decoded through ``data.images.open_image`` with the ``max_bytes`` and
  ``max_pixels`` limits checked first (the ingest limits), re-encoded as PNG and
  downscaled so the longer side is at most ``max_side`` (default 256; the frames are
  movie stills of several hundred pixels and ~50k of them at full size would not fit the
  memory budget). Ingest then checks and normalises them like any other image; set
  ``max_side: null`` to leave sizing to ingest. A frame above a limit, or stored as a
  file path outside the dataset's folder, becomes a problem record in its window; one
  that cannot be decoded is kept raw for ingest's image stage to reject (see
  ``data.sources.huggingface``).

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
from multimodal_lab.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.sources.html_extract import clean_text
from multimodal_lab.data.sources.huggingface import (
    RowProblem,
    check_columns,
    dataset_folder,
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
    """Parameters of the StoryReasoning source (``params:sources.story_reasoning`` in the wiring)."""

    path: str = "daniel3303/StoryReasoning"  # Hub id, save_to_disk dir, or folder of the parquet files
    split: str = "train"  # "train" (3,552 stories) or "test" (626)
    window: int = 5  # frames per sequence record group
    stride: int | None = None  # frames between window starts; None = window (non-overlapping)
    max_stories: int | None = None  # read at most this many stories (from the start); None = all
    max_side: int | None = 256  # downscale frames so the longer side is at most this; None keeps size
    max_bytes: int = DEFAULT_MAX_BYTES  # larger frames are not read or decoded (rejected with a reason)
    max_pixels: int = DEFAULT_MAX_PIXELS  # frames whose header claims more pixels are never decoded (rejected)
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
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"story_reasoning: max_bytes={self.max_bytes} and max_pixels={self.max_pixels} "
                             f"must be >= 1")

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


def _no_text(missing: list[int]) -> str:
    if len(missing) == 1:
        return f"frame {missing[0]} has no text (its <gdi image{missing[0] + 1}> block is missing or empty)"
    return f"frames {', '.join(str(i) for i in missing)} have no text"


def _outside_reason(frame: int, starts: list[int], window: int, step: int) -> str:
    """Why a frame is in no window at all: after the last one, or between two (stride > window)."""
    last = starts[-1]
    if frame >= last + window:
        return f"falls after the story's last window (frames {last}-{last + window - 1}; window {window}, stride {step})"
    before = max(s for s in starts if s <= frame)
    after = min(s for s in starts if s > frame)
    return (f"falls between the windows of frames {before}-{before + window - 1} and {after}-{after + window - 1} "
            f"(window {window}, stride {step})")


class _Story:
    """One dataset row (a story) turned into records; see the module docstring."""

    def __init__(self, row: Mapping[str, Any], config: StoryReasoningConfig, folder: Path | None,
                 counts: Counter[str]) -> None:
        self.config, self.folder, self.counts = config, folder, counts
        self.story_id = str(row["story_id"])
        self.images = row["images"]
        self.frame_texts = parse_frames(row["story"])
        # Every record of the story, window or problem, is in the story's family.
        self.common = {"source": "huggingface", "corpus": config.corpus, "license": config.license,
                       "attribution": config.attribution, "family_id": self.story_id}
        # Overlapping windows share frames: each frame is read and encoded once.
        self.encoded: dict[int, tuple[bytes, str] | RowProblem] = {}

    def url(self, frame: int | None = None) -> str:
        """Provenance of the story, or of one of its frames."""
        tail = "" if frame is None else f"/{frame}"
        return f"{self.config.path}#{self.config.split}/{self.story_id}{tail}"

    def records(self) -> list[dict[str, Any]]:
        """The kept windows' records, then one problem record per frame in no kept window."""
        config, counts = self.config, self.counts
        if not isinstance(self.images, list) or not self.images:
            counts["stories_without_frames"] += 1
            return [make_record(image=b"", **self.common, group_id=self.story_id, url=self.url(),
                                metadata={"story_id": self.story_id, "frame_count": 0},
                                problem=f"story {self.story_id} has no frames in column 'images'")]
        count = len(self.images)
        starts = window_starts(count, config.window, config.stride)
        if not starts:
            counts["stories_too_short"] += 1
            reason = f"the story has {count} frames; a window needs {config.window}"
            return [self.problem_record(frame, reason) for frame in range(count)]
        texts = {i: strip_grounding(self.frame_texts.get(i, "")) for i in range(count)}
        records: list[dict[str, Any]] = []
        covered: set[int] = set()
        dropped: dict[int, str] = {}  # frame -> why the first window holding it was not kept
        kept = 0
        for start in starts:
            frames = range(start, start + config.window)
            missing = [i for i in frames if not texts[i]]
            if missing:
                counts["windows_missing_text"] += 1
                reason = f"its window (frames {start}-{frames[-1]}) is not kept: {_no_text(missing)}"
                for frame in frames:
                    dropped.setdefault(frame, reason)
                continue
            records.extend(self.window_record(frame, position, kept, start) for position, frame in enumerate(frames))
            covered.update(frames)
            kept += 1
            counts["windows"] += 1
        step = config.window if config.stride is None else config.stride
        for frame in range(count):
            if frame in covered:
                continue
            if frame not in dropped:
                counts["frames_outside_windows"] += 1
            reason = dropped.get(frame) or _outside_reason(frame, starts, config.window, step)
            records.append(self.problem_record(frame, reason))
        return records

    def problem_record(self, frame: int, reason: str) -> dict[str, Any]:
        """A frame in no kept window: a record in the story's group and family, with the reason."""
        return make_record(
            image=b"", **self.common, caption=strip_grounding(self.frame_texts.get(frame, "")) or None,
            group_id=self.story_id, frame_index=frame, url=self.url(frame),
            metadata={"story_id": self.story_id, "source_frame": frame, "frame_count": len(self.images)},
            problem=f"story {self.story_id} frame {frame}: {reason}",
        )

    def image(self, frame: int) -> tuple[bytes, str] | RowProblem:
        """The frame's encoded image and decode error (see ``encode_image``), or why it cannot be read."""
        if frame not in self.encoded:
            value = self.images[frame]
            try:
                if value is None:
                    raise RowProblem("no image")
                self.encoded[frame] = encode_image(
                    value, max_side=self.config.max_side, folder=self.folder,
                    max_bytes=self.config.max_bytes, max_pixels=self.config.max_pixels,
                )
                self.counts["undecodable_frames"] += bool(self.encoded[frame][1])
            except RowProblem as problem:
                self.encoded[frame] = problem
                self.counts["frames_with_image_problems"] += 1
        return self.encoded[frame]

    def window_record(self, frame: int, position: int, window: int, start: int) -> dict[str, Any]:
        """Frame ``frame`` at ``position`` of the story's kept window number ``window``."""
        raw_text = self.frame_texts[frame]
        metadata: dict[str, Any] = {
            "story_id": self.story_id,
            "window": window,
            "window_start": start,
            "source_frame": frame,
            "frame_count": len(self.images),
            "entities": grounded_entities(raw_text),
        }
        fields = {**self.common, "caption": strip_grounding(raw_text), "story": None, "url": self.url(frame),
                  "group_id": f"{self.story_id}-w{window}", "frame_index": position, "metadata": metadata}
        result = self.image(frame)
        if isinstance(result, RowProblem):
            # The frame stays in its window (ingest rejects this one record), like an undecodable frame.
            return make_record(image=b"", **fields, problem=f"story {self.story_id} frame {frame}: {result}")
        image, error = result
        if error:
            metadata["image_error"] = error
        return make_record(image=image, **fields)


def load_story_reasoning(config: StoryReasoningConfig) -> pd.DataFrame:
    """Read StoryReasoning into the windowed sequence corpus (see the module docstring).

    Args:
        config: where the dataset is, the split, and the windowing.

    Returns:
        A record frame: per story, ``window`` rows per kept window (ordered by window,
        frame), then one problem row per frame in no kept window (ordered by frame).
    """
    dataset = open_dataset(
        config.path, split=config.split, revision=config.revision, cache_dir=config.cache_dir,
        streaming=config.streaming, param_prefix="params:sources.story_reasoning",
    )
    check_columns(dataset, _COLUMNS, config.path, "the StoryReasoning schema")
    folder = dataset_folder(config.path)
    counts: Counter[str] = Counter()
    records = []
    for row in iter_raw_rows(dataset, config.max_stories, batch_size=8):
        counts["stories"] += 1
        records.extend(_Story(row, config, folder, counts).records())
    logger.info(
        "story_reasoning[%s]: %d stories -> %d windows of %d frames (%d records); as problem records that ingest "
        "rejects with the reason: %d stories shorter than %d frames, %d windows with a frame lacking text, "
        "%d frames after or between windows, %d stories without frames, %d frames whose image was refused; "
        "%d undecodable frames kept raw",
        config.split, counts["stories"], counts["windows"], config.window, len(records),
        counts["stories_too_short"], config.window, counts["windows_missing_text"], counts["frames_outside_windows"],
        counts["stories_without_frames"], counts["frames_with_image_problems"], counts["undecodable_frames"],
    )
    return records_frame(records)
