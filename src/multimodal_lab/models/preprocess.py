"""Image preprocessing shared by every vision encoder.

Records keep images encoded (PNG/JPEG bytes); models want float tensors of one fixed
size. These functions are the only bridge, and they make pixels with the one image path
of ``data.images`` (limits before decoding, one RGB conversion, the model's
:class:`~multimodal_lab.data.images.ImageInput` fit), so training, evaluation and
inference see the same pixels for the same picture.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from multimodal_lab.data.images import ImageInput, ImageRejected, open_image


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, ...) into a fully loaded PIL image.

    The byte and pixel limits of ``data.images.open_image`` apply before decoding.

    Args:
        data: the encoded bytes, as stored in a record's ``image`` column.

    Returns:
        The decoded image in its own mode and size.

    Raises:
        ValueError: when the bytes are not a readable image (or exceed the limits).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(
            f"decode_image expects encoded image bytes, got {type(data).__name__}; "
            "pass the record's 'image' column value"
        )
    try:
        return open_image(data)
    except ImageRejected as error:
        raise ValueError(f"could not decode image bytes ({len(data)} bytes): {error}") from error


def as_image_input(spec: ImageInput | int) -> ImageInput:
    """An :class:`ImageInput`; a bare size means a bilinear stretch to that size."""
    if isinstance(spec, ImageInput):
        return spec
    if int(spec) <= 0:
        raise ValueError(f"image size must be positive, got {spec}")
    return ImageInput(size=int(spec), mode="stretch", resample="bilinear")


def image_to_array(image: Image.Image, spec: ImageInput | int) -> np.ndarray:
    """One image -> the model's uint8 HWC pixels (S, S, 3).

    Args:
        image: any PIL image (any mode: L, P, RGBA, CMYK, I;16, ...).
        spec: the model's image input (size, fit mode, resampling, background), or a
            side length for a plain bilinear stretch.
    """
    return np.array(as_image_input(spec).prepare(image), dtype=np.uint8)  # a writable copy


def arrays_to_tensor(arrays: torch.Tensor) -> torch.Tensor:
    """Turn a uint8 batch (B, H, W, 3) into the float model input (B, 3, H, W) in [0, 1]."""
    return arrays.permute(0, 3, 1, 2).float().div_(255.0)


def images_to_tensor(images: Sequence[Image.Image], spec: ImageInput | int) -> torch.Tensor:
    """Stack PIL images into one float batch in [0, 1].

    Args:
        images: B PIL images of any size and mode.
        spec: the model's image input, or a side length (bilinear stretch).

    Returns:
        Tensor of shape (B, 3, S, S), dtype float32, values in [0, 1].
    """
    if len(images) == 0:
        raise ValueError("images_to_tensor got an empty sequence; pass at least one image")
    arrays = np.stack([image_to_array(image, spec) for image in images])  # (B, S, S, 3)
    return arrays_to_tensor(torch.from_numpy(arrays))
