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
