"""Scoring predicted frames: pixel metrics, an exact object detector, and the floors.

A predicted 5th frame is judged three ways:

* **pixels**: MAE and MSE on [0, 1] RGB, PSNR and SSIM (``torchmetrics``);
* **objects**: the scene world paints objects in a fixed palette that no background
  comes near (``scene_render.COLOUR_RGB``), so a colour mask and connected components
  find every object exactly. Each true object of the 5th frame is looked for in the
  prediction among the blobs of its colour; the error is the distance between that
  blob's centroid and the same object's centroid in the true frame (both measured by
  the detector, so a shape whose centroid is not its nominal centre costs nothing).
  An object the prediction does not show at all counts as an error of the image side
  and as a miss. Size is right when the blob's area is within 25 % of the true blob's;
  colour is right when a blob of the true colour lies within half an object radius;
* **floors**: predictions that need no model — copy the 4th frame, the mean training
  image, the mean of the 4 input frames, linear extrapolation ``2·f4 − f3``. A model
  that predicts a blurred mean image beats none of them on position error and only
  the weakest on MAE.

Arrays are uint8 ``(..., S, S, 3)`` unless said otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Largest per-channel difference from a palette colour that still counts as that colour.
COLOUR_TOLERANCE = 48
#: Smallest blob (pixels at 64 px; scaled with the image area) that counts as an object.
MIN_BLOB_PIXELS = 6
#: A blob whose area is within this fraction of the true blob's has the right size.
SIZE_TOLERANCE = 0.25


@dataclass(frozen=True)
class Blob:
    """One connected region of one palette colour."""

    colour: str
    x: float  # centroid column, pixels
    y: float  # centroid row, pixels
    area: int  # pixels


def _palette() -> dict[str, tuple[int, int, int]]:
    from multimodal_lab.data.scene_render import COLOUR_RGB

    return COLOUR_RGB


def detect_objects(image: np.ndarray, colours: Sequence[str] | None = None) -> list[Blob]:
    """Blobs of palette colours in one image, largest first per colour.

    Args:
        image: uint8 (S, S, 3).
        colours: palette colours to look for (default: all).
    """
    from scipy import ndimage

    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"detect_objects takes one (S, S, 3) image, got shape {image.shape}")
    palette = _palette()
    pixels = image.astype(np.int16)
    min_pixels = max(2, round(MIN_BLOB_PIXELS * image.shape[0] * image.shape[1] / 4096))
    blobs: list[Blob] = []
    for colour in colours or palette:
        mask = np.abs(pixels - np.asarray(palette[colour], dtype=np.int16)).max(axis=-1) <= COLOUR_TOLERANCE
        if not mask.any():
            continue
        labels, count = ndimage.label(mask)
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(mask, labels, index)
        centres = ndimage.center_of_mass(mask, labels, index)
        for area, (cy, cx) in sorted(zip(areas, centres), key=lambda item: -item[0]):
            if area >= min_pixels:
                blobs.append(Blob(colour, float(cx), float(cy), int(area)))
    return blobs


def _objects_of(metadata: Mapping[str, Any] | str) -> list[dict[str, Any]]:
    if isinstance(metadata, str):
        import json

        metadata = json.loads(metadata)
    return list(metadata.get("objects", []))


def _match(blobs: Sequence[Blob], colour: str, x: float, y: float) -> Blob | None:
    """The blob of ``colour`` nearest to (x, y), or None."""
    same = [b for b in blobs if b.colour == colour]
    return min(same, key=lambda b: (b.x - x) ** 2 + (b.y - y) ** 2) if same else None


def object_scores(predicted: np.ndarray, true: np.ndarray, metadata: Mapping[str, Any] | str,
                  motion_kinds: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per true object of one frame: where the prediction put it and whether size and colour are right.

    Args:
        predicted: the predicted frame, uint8 (S, S, 3).
        true: the true frame, uint8 (S, S, 3).
        metadata: the true frame's metadata (``objects`` with colour, x, y, radius as
            fractions of the side).
        motion_kinds: the motion rule of each object (``move``, ``grow``, ``shrink``,
            ``colour_cycle``, ``still``), to tell which objects' size and colour are tested.

    Returns:
        One dict per object: ``error_px``, ``found``, ``size_ok`` (None when the object's
        size is not what its sequence changes), ``colour_ok`` (likewise for colour).
    """
    side = true.shape[0]
    objects = _objects_of(metadata)
    colours = sorted({obj["colour"] for obj in objects})
    true_blobs = detect_objects(true, colours)
    predicted_blobs = detect_objects(predicted, colours)
    out = []
    for k, obj in enumerate(objects):
        x, y = obj["x"] * side, obj["y"] * side
        reference = _match(true_blobs, obj["colour"], x, y)
        rx, ry = (reference.x, reference.y) if reference is not None else (x, y)
        found = _match(predicted_blobs, obj["colour"], rx, ry)
        error = side if found is None else math.hypot(found.x - rx, found.y - ry)
        kind = motion_kinds[k] if k < len(motion_kinds) else ""
        size_ok = colour_ok = None
        if kind in ("grow", "shrink"):
            size_ok = bool(found is not None and reference is not None
                           and abs(found.area - reference.area) <= SIZE_TOLERANCE * reference.area)
        if kind == "colour_cycle":
            colour_ok = bool(found is not None and error <= 0.5 * obj["radius"] * side)
        out.append({"error_px": float(error), "found": found is not None, "size_ok": size_ok,
                    "colour_ok": colour_ok})
    return out


def motion_kinds(metadata: Mapping[str, Any] | str) -> list[str]:
    """The motion rule kind of each object of a sequence frame's metadata."""
    if isinstance(metadata, str):
        import json

        metadata = json.loads(metadata)
    return [rule.get("kind", "") for rule in metadata.get("motion", {}).get("rules", [])]


def object_metrics(predicted: np.ndarray, true: np.ndarray, metadata: Sequence[Mapping[str, Any] | str]) -> dict[str, float]:
    """Object-level scores of N predicted frames against the true ones, (N, S, S, 3) each.

    Returns:
        ``position_error_px`` (mean over objects, a missed object counting the image side),
        ``detection_rate``, ``size_accuracy`` (grow / shrink objects), ``colour_accuracy``
        (colour-cycle objects); NaN where no object qualifies.
    """
    rows = [row for i, md in enumerate(metadata)
            for row in object_scores(predicted[i], true[i], md, motion_kinds(md))]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    return {
        "position_error_px": mean([r["error_px"] for r in rows]),
        "detection_rate": mean([float(r["found"]) for r in rows]),
        "size_accuracy": mean([float(r["size_ok"]) for r in rows if r["size_ok"] is not None]),
        "colour_accuracy": mean([float(r["colour_ok"]) for r in rows if r["colour_ok"] is not None]),
    }


def _as_float_tensor(images: np.ndarray) -> torch.Tensor:
    from multimodal_lab.models.preprocess import arrays_to_tensor

    return arrays_to_tensor(torch.from_numpy(np.ascontiguousarray(images)))


def pixel_metrics(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MAE, MSE (on [0, 1]), PSNR (dB, data range 1) and SSIM of N frames, (N, S, S, 3) uint8 each."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    if predicted.shape != true.shape:
        raise ValueError(f"predicted frames {predicted.shape} and true frames {true.shape} differ in shape")
    p, t = _as_float_tensor(predicted), _as_float_tensor(true)
    return {
        "image_mae": float((p - t).abs().mean()),
        "image_mse": float(((p - t) ** 2).mean()),
        "psnr": float(peak_signal_noise_ratio(p, t, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(p, t, data_range=1.0)),
    }


def frame_metrics(predicted: np.ndarray, true: np.ndarray, metadata: Sequence[Mapping[str, Any] | str]) -> dict[str, float]:
    """:func:`pixel_metrics` and :func:`object_metrics` together."""
    return {**pixel_metrics(predicted, true), **object_metrics(predicted, true, metadata)}


def spread(images: np.ndarray) -> float:
    """Mean per-pixel standard deviation across N images ([0, 1] scale): how much outputs vary
    from input to input. A model predicting one mean image scores ~0; the true 5th frames
    score what the data varies."""
    return float(_as_float_tensor(images).std(dim=0).mean())


# ----------------------------------------------------------------------------- floors

def copy_last(frames: np.ndarray) -> np.ndarray:
    """The 4th frame as the prediction; frames (N, 4, S, S, 3)."""
    return frames[:, -1].copy()


def mean_of_inputs(frames: np.ndarray) -> np.ndarray:
    """The pixel mean of the 4 input frames."""
    return np.rint(frames.astype(np.float32).mean(axis=1)).astype(np.uint8)


def linear_extrapolation(frames: np.ndarray) -> np.ndarray:
    """``2·f4 − f3``, clipped to the pixel range."""
    f3, f4 = frames[:, -2].astype(np.int16), frames[:, -1].astype(np.int16)
    return np.clip(2 * f4 - f3, 0, 255).astype(np.uint8)


def mean_image(train_frames: np.ndarray, n: int) -> np.ndarray:
    """The mean training 5th frame, repeated ``n`` times; train_frames (M, S, S, 3)."""
    mean = np.rint(train_frames.astype(np.float32).mean(axis=0)).astype(np.uint8)
    return np.repeat(mean[None], n, axis=0)


#: name -> (description, function of the input frames); ``mean_image`` needs training frames.
FRAME_FLOORS: dict[str, str] = {
    "copy_last": "the 4th frame, copied",
    "mean_image": "the mean 5th frame of the training sequences, for every input",
    "mean_inputs": "the pixel mean of the 4 input frames",
    "linear": "linear extrapolation 2*f4 - f3, clipped",
}
