"""Tiny scene-world-like records for evaluation tests (imported by tests)."""
from __future__ import annotations

import io

import pandas as pd
from PIL import Image

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.scene_world import COLOUR_RGB, COLOURS


def _png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def scene_records(colours=COLOURS) -> pd.DataFrame:
    """One solid-colour image per colour; the truth is one circle of that colour."""
    return records_frame(
        make_record(
            image=_png(COLOUR_RGB[colour]), source="scene_world", corpus="scene", caption=f"a {colour} circle.",
            story=f"There was a {colour} circle. The {colour} circle was calm.", license="CC0-1.0",
            metadata={"objects": [{"colour": colour, "shape": "circle", "size": "small"}]},
        )
        for colour in colours
    )
