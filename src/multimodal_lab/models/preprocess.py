"""Image preprocessing shared by every vision encoder.

Records keep images encoded (PNG/JPEG bytes); models want float tensors of one fixed
size. These two functions are the only bridge, so every pipeline decodes and resizes
the same way and a model trained in one place sees the same pixels at inference.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

#: Resampling filter for resizing; bilinear keeps thin outlines of small objects.
RESAMPLE = Image.Resampling.BILINEAR


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, ...) into a fully loaded PIL image.

    Args:
        data: the encoded bytes, as stored in a record's ``image`` column.

    Returns:
        The decoded image in its own mode and size.

    Raises:
        ValueError: when the bytes are not a readable image.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"decode_image expects encoded image bytes, got {type(data).__name__}; "
            "pass the record's 'image' column value"
        )
    try:
        image = Image.open(io.BytesIO(bytes(data)))
        image.load()  # force decoding now so a corrupt file fails here, not later
    except Exception as error:  # PIL raises several unrelated types
        raise ValueError(f"could not decode image bytes ({len(data)} bytes): {error}") from error
    return image


def image_to_array(image: Image.Image, size: int) -> np.ndarray:
    """Convert one image to RGB, resize it to ``size`` x ``size`` and return uint8 HWC.

    Args:
        image: any PIL image (any mode: L, P, RGBA, CMYK, ...).
        size: target side length in pixels.

    Returns:
        Array of shape (size, size, 3), dtype uint8.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if image.mode != "RGB":
        # Transparent pixels become white rather than black: scanned material and
        # drawn scenes both read as "paper" behind the content.
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def arrays_to_tensor(arrays: torch.Tensor) -> torch.Tensor:
    """Turn a uint8 batch (B, H, W, 3) into the float model input (B, 3, H, W) in [0, 1]."""
    return arrays.permute(0, 3, 1, 2).float().div_(255.0)


def images_to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Stack PIL images into one float batch in [0, 1].

    Args:
        images: B PIL images of any size and mode; each is converted to RGB and
            resized (aspect ratio is not kept: scenes are square already and a crop
            could cut objects out of the picture).
        size: side length S of the output.

    Returns:
        Tensor of shape (B, 3, S, S), dtype float32, values in [0, 1].
    """
    if len(images) == 0:
        raise ValueError("images_to_tensor got an empty sequence; pass at least one image")
    arrays = np.stack([image_to_array(image, size) for image in images])  # (B, S, S, 3)
    return arrays_to_tensor(torch.from_numpy(arrays))
