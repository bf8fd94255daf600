"""The caption cache: image content hash -> the caption a model gave it, and how.

The cache is plain data, so the caller persists and versions it (a JSON dataset holds
the dict form; a parquet dataset the frame form). An entry is

``{"caption": str, "model": str, "settings": {"prompt": ..., "max_new_tokens": ..., "num_beams": ...}}``

keyed by the sha256 hex digest of the image bytes. An entry counts as a hit only for the
same model id and the same generation settings, so changing either recaptions.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Columns of the frame form of the cache.
CACHE_COLUMNS = ["image_sha256", "caption", "model", "settings"]

CaptionCache = dict[str, dict[str, Any]]


def image_sha256(image: bytes) -> str:
    """Cache key of an image: the sha256 hex digest of its bytes."""
    return hashlib.sha256(bytes(image)).hexdigest()


def cache_to_frame(cache: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Dict form -> frame form (settings as sorted JSON), sorted by key for stable files."""
    rows = [
        {
            "image_sha256": key,
            "caption": entry["caption"],
            "model": entry["model"],
            "settings": json.dumps(entry["settings"], sort_keys=True),
        }
        for key, entry in sorted(cache.items())
    ]
    return pd.DataFrame(rows, columns=CACHE_COLUMNS)


def cache_from_frame(frame: pd.DataFrame) -> CaptionCache:
    """Frame form -> dict form."""
    missing = [c for c in CACHE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"caption cache frame lacks columns {missing}; expected {CACHE_COLUMNS}")
    return {
        str(row.image_sha256): {
            "caption": row.caption,
            "model": row.model,
            "settings": json.loads(row.settings) if isinstance(row.settings, str) else dict(row.settings),
        }
        for row in frame.itertuples(index=False)
    }


def as_cache(cache: Mapping[str, Any] | pd.DataFrame | None) -> CaptionCache:
    """A fresh dict-form copy of a cache given in either form (None gives {})."""
    if cache is None:
        return {}
    if isinstance(cache, pd.DataFrame):
        return cache_from_frame(cache)
    return {str(key): dict(entry) for key, entry in cache.items()}


def lookup(cache: Mapping[str, Mapping[str, Any]], key: str, model: str, settings: Mapping[str, Any]) -> str | None:
    """The cached caption for an image, or None when absent or made by another model/settings."""
    entry = cache.get(key)
    if entry is None or entry.get("model") != model or dict(entry.get("settings", {})) != dict(settings):
        return None
    return entry.get("caption")
