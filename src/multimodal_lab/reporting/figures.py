"""Figures for HTML reports, returned as bytes or data URIs so a page is self-contained.

Matplotlib is used through ``Figure`` + the Agg canvas directly, never through pyplot,
so rendering a report neither needs a display nor touches global figure state (safe in
a Kedro node, a notebook or a thread).
"""
from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from multimodal_lab.data.images import open_image, to_rgb


def png_data_uri(png: bytes) -> str:
    """Wrap PNG bytes in a ``data:image/png;base64,...`` URI for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def to_display_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB for display: the project's one conversion (``data.images.to_rgb``),
    transparency flattened onto white."""
    return to_rgb(image)


def image_png(image: bytes | Image.Image, max_side: int = 256) -> bytes:
    """Re-encode an image (encoded bytes or PIL) as an RGB PNG no larger than max_side.

    Args:
        image: encoded image bytes (PNG, JPEG, ...) or a PIL image of any mode.
        max_side: longest side of the thumbnail in pixels; smaller images stay as they are.

    Returns:
        PNG bytes.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if isinstance(image, (bytes, bytearray, memoryview)):
        pil = open_image(image)  # byte and pixel limits before decoding
    else:
        pil = image.copy()
    pil = to_display_rgb(pil)
    pil.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def image_data_uri(image: bytes | Image.Image, max_side: int = 256) -> str:
    """Thumbnail an image and return it as a base64 PNG data URI (see :func:`image_png`)."""
    return png_data_uri(image_png(image, max_side=max_side))


def _finite_series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in history:
        value = row.get(key)
        step = row.get("step")
        if value is None or step is None:
            continue
        value = float(value)
        if math.isfinite(value):
            steps.append(float(step))
            values.append(value)
    return steps, values


def loss_curve_png(
    history: Sequence[Mapping[str, Any]],
    *,
    title: str = "Loss",
    width_in: float = 7.0,
    height_in: float = 3.5,
    dpi: int = 100,
) -> bytes | None:
    """Draw train and validation loss against step, with the learning rate in a panel below.

    Args:
        history: rows with ``step`` and any of ``train_loss``, ``val_loss``, ``lr``;
            missing or non-finite values are skipped (validation runs less often).
        title: figure title.
        width_in: figure width in inches.
        height_in: figure height in inches.
        dpi: resolution.

    Returns:
        PNG bytes, or None when the history holds no loss value to draw.
    """
    train = _finite_series(history, "train_loss")
    val = _finite_series(history, "val_loss")
    lr = _finite_series(history, "lr")
    if not train[0] and not val[0]:
        return None
    figure = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(figure)
    # The learning rate gets its own short panel: on a twin axis its line and the
    # legend compete with the loss curves for the same space.
    if lr[0]:
        axis, lr_axis = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        axis, lr_axis = figure.add_subplot(1, 1, 1), None
    if train[0]:
        axis.plot(*train, label="train loss", color="#1f77b4", linewidth=1.2)
    if val[0]:
        axis.plot(*val, label="val loss", color="#d62728", marker="o", markersize=3, linewidth=1.5)
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best", fontsize="small")
    if lr_axis is not None:
        lr_axis.plot(*lr, color="#7f7f7f", linewidth=1.0)
        lr_axis.set_ylabel("lr")
        lr_axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        lr_axis.grid(True, alpha=0.3)
        lr_axis.set_xlabel("step")
    else:
        axis.set_xlabel("step")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def attention_strip_png(image: bytes | Image.Image, words: Sequence[str], maps: Any, tile: int = 96,
                        per_row: int = 8) -> bytes:
    """One tile per word: the image with that word's attention over it, the word beneath.

    Args:
        image: the input image (encoded bytes or PIL).
        words: the generated words, in order.
        maps: (len(words), g, g) attention weights over the image's g x g patch grid
            (any non-negative scale; each map is normalised to its own maximum).
        tile: side of each tile in pixels.
        per_row: tiles per row.

    Returns:
        PNG bytes.
    """
    import numpy as np

    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) != len(words):
        raise ValueError(f"need one (g, g) map per word: {len(words)} words, maps of shape {maps.shape}")
    pil = open_image(image) if isinstance(image, (bytes, bytearray, memoryview)) else image
    base = np.asarray(to_display_rgb(pil).resize((tile, tile), Image.BILINEAR), dtype=np.float32) / 255.0
    rows = max(1, math.ceil(len(words) / per_row))
    figure = Figure(figsize=(per_row * tile / 72, rows * (tile + 18) / 72), dpi=72)
    for index, (word, heat) in enumerate(zip(words, maps)):
        axis = figure.add_subplot(rows, per_row, index + 1)
        heat = heat / heat.max() if heat.max() > 0 else heat
        resized = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR),
                             dtype=np.float32)[..., None] / 255.0
        # Dim what the word ignored, keep what it looked at: the image shows through the heat.
        axis.imshow(base * (0.25 + 0.75 * resized))
        axis.set_title(word, fontsize=10)
        axis.axis("off")
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.01, wspace=0.05, hspace=0.3)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
