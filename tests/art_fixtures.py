"""Real scene-world engravings for the art judge's tests, rendered once per session."""
from __future__ import annotations

import functools

import numpy as np

from multimodal_lab.evaluation.art import real_engravings


@functools.lru_cache(maxsize=4)
def engravings(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[frozenset]]:
    """``count`` engravings (N, S, S, 3) uint8 and their (shape, size) object sets."""
    images, objects, _captions = real_engravings(count, seed, size)
    return images, objects


@functools.lru_cache(maxsize=4)
def engraving_records(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[dict], list[str]]:
    """``count`` engravings (N, S, S, 3) uint8 with their full metadata (layouts) and captions."""
    import io
    import json

    from PIL import Image

    from multimodal_lab.data.scene_world import SceneWorldConfig, engraving_record

    config = SceneWorldConfig(seed=seed, n_scenes=0, n_engravings=count, n_sequences=0, image_size=size,
                              damaged_fraction=0.0, bad_license_fraction=0.0)
    records = [engraving_record(config, i) for i in range(count)]
    images = np.stack([np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in records])
    metadata = [r["metadata"] if isinstance(r["metadata"], dict) else json.loads(r["metadata"]) for r in records]
    return images, metadata, [str(r["caption"]) for r in records]
