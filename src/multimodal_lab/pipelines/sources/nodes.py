"""Nodes that read material from each configured source into the record schema.

Every source node returns a frame with the columns of ``data.records.RECORD_COLUMNS``
(an empty one when the source is disabled), so ``merge_sources`` and everything after
it never needs to know where a record came from.
"""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params
from multimodal_lab.data.records import RECORD_COLUMNS, records_frame, validate_records

log = logging.getLogger(__name__)


def _enabled(params: dict[str, Any] | None, where: str) -> tuple[bool, dict[str, Any]]:
    params = dict(params or {})
    enabled = params.pop("enabled", False)
    if not isinstance(enabled, bool):
        raise TypeError(f"parameter '{where}.enabled' must be true or false, got {enabled!r}")
    return enabled, params


def load_scene_world(params: dict[str, Any]) -> pd.DataFrame:
    """Generate the embedded scene world (the default data, no downloads).

    With ``cache_dir`` set, the records of a config are kept there (one parquet file per
    seed + config + generator version) and a later run with the same config reads them
    back instead of drawing them again.

    Args:
        params: ``params:sources.scene_world`` — ``enabled`` plus the fields of
            ``SceneWorldConfig``.
    """
    from multimodal_lab.data.scene_world import SceneWorldConfig, cached_scene_world

    enabled, params = _enabled(params, "sources.scene_world")
    if not enabled:
        return records_frame([])
    config = from_params(SceneWorldConfig, params, where="params:sources.scene_world")
    frame = cached_scene_world(config)
    log.info("scene world: %d records (%s)", len(frame), frame["corpus"].value_counts().to_dict())
    return frame


def load_local_folder(params: dict[str, Any]) -> pd.DataFrame:
    """Read a folder of images plus a sidecar metadata file.

    Args:
        params: ``params:sources.local_folder`` — ``enabled`` plus the fields of
            ``LocalFolderConfig`` (``path``, ``sidecar``, ``corpus``, ...).
    """
    from multimodal_lab.data.sources.local_folder import LocalFolderConfig
    from multimodal_lab.data.sources.local_folder import load_local_folder as _load

    enabled, params = _enabled(params, "sources.local_folder")
    if not enabled:
        return records_frame([])
    return _load(from_params(LocalFolderConfig, params, where="params:sources.local_folder"))


def scrape_web(params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crawl the configured sites politely; return records and one outcome row per URL.

    Args:
        params: ``params:sources.web`` — ``enabled`` plus the fields of ``WebSourceConfig``.
    """
    from multimodal_lab.data.sources.web import WebSourceConfig, outcomes_frame, scrape

    enabled, params = _enabled(params, "sources.web")
    if not enabled:
        return records_frame([]), outcomes_frame([])
    config = from_params(WebSourceConfig, params, where="params:sources.web")
    result = scrape(config)
    return result.records, result.outcomes


def load_huggingface(params: dict[str, Any]) -> pd.DataFrame:
    """Read an image+text dataset with ``datasets.load_dataset`` and a column mapping.

    Args:
        params: ``params:sources.huggingface`` — ``enabled`` plus ``HFSourceConfig`` fields.
    """
    from multimodal_lab.data.sources.huggingface import HFSourceConfig, load_hf_records

    enabled, params = _enabled(params, "sources.huggingface")
    if not enabled:
        return records_frame([])
    return load_hf_records(from_params(HFSourceConfig, params, where="params:sources.huggingface"))


def load_story_reasoning(params: dict[str, Any]) -> pd.DataFrame:
    """Read StoryReasoning into 5-frame sequence records.

    Args:
        params: ``params:sources.story_reasoning`` — ``enabled`` plus
            ``StoryReasoningConfig`` fields.
    """
    from multimodal_lab.data.sources.story_reasoning import StoryReasoningConfig
    from multimodal_lab.data.sources.story_reasoning import load_story_reasoning as _load

    enabled, params = _enabled(params, "sources.story_reasoning")
    if not enabled:
        return records_frame([])
    return _load(from_params(StoryReasoningConfig, params, where="params:sources.story_reasoning"))


def load_coco(params: dict[str, Any]) -> pd.DataFrame:
    """Read a folder of images and its COCO-format captions file (COCO, Flickr30k).

    Args:
        params: ``params:sources.coco`` — ``enabled`` plus ``COCOSourceConfig`` fields
            (``path``, ``annotations``, ``license``, ...).
    """
    from multimodal_lab.data.sources.coco import COCOSourceConfig
    from multimodal_lab.data.sources.coco import load_coco as _load

    enabled, params = _enabled(params, "sources.coco")
    if not enabled:
        return records_frame([])
    return _load(from_params(COCOSourceConfig, params, where="params:sources.coco"))


def merge_sources(*frames: pd.DataFrame) -> pd.DataFrame:
    """Concatenate the sources' records into one raw frame (order: as wired).

    Every row every source yielded is kept, repeats included: ingest rejects a repeated
    record id with a reason naming the record it repeats, so the raw records count the
    source rows exactly.

    Raises:
        ValueError: When every source is empty, naming the parameters to change.
    """
    parts = [validate_records(f, where=f"source #{i}") for i, f in enumerate(frames)]
    parts = [f[list(RECORD_COLUMNS)] for f in parts if len(f)]
    if not parts:
        raise ValueError(
            "no records from any source: enable at least one of params:sources.scene_world, "
            "params:sources.local_folder, params:sources.web, params:sources.huggingface, "
            "params:sources.story_reasoning or params:sources.coco"
        )
    merged = pd.concat(parts, ignore_index=True)
    log.info("raw records: %d (%s)", len(merged), merged["source"].value_counts().to_dict())
    return merged
