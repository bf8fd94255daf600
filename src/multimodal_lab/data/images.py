"""Image validation and normalisation: the image stage of ingest.

Every image is decoded (one at a time: only encoded bytes are ever held for many
records), checked, converted to RGB, oriented by its EXIF tag, resized by an
:class:`ImagePolicy` and re-encoded as PNG, unless its file already is what that would
write (a PNG of 8-bit RGB at the target size with no ancillary chunk), which keeps its
bytes: re-encoding it was ~40 % of the stage's time on the scene world. The same input
bytes and policy always give the same output bytes, and ``image_hash`` is the sha256 of
the output's size and pixels, so one picture has one id for exact de-duplication
however it was encoded.

Anything that cannot be read becomes a rejection with a reason, never an exception:
empty files, truncated files, non-images, files above ``max_bytes``, images above
``max_pixels`` (decompression bombs) and images with a side below ``min_side``.

This module is also the one way an image becomes model input. :func:`open_image`
applies the byte and pixel limits before anything is decoded (every place that opens a
user's image calls it: sources, inference, reports), :func:`to_rgb` turns any mode into
RGB the same way everywhere (16-bit grey scaled, transparency over a background), and
:class:`ImageInput` — the size, fit mode, resampling and background a model was trained
with, saved in its ``config.json`` — makes a model's input from any picture exactly as
ingest made its training images.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from multimodal_lab.data.dedup import phash_of_image
from multimodal_lab.data.records import split_rejections

logger = logging.getLogger(__name__)

RESIZE_MODES = ("pad", "center_crop", "stretch", "none")
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
#: Defaults of the limits every decode applies before decoding (see :func:`open_image`).
DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImagePolicy:
    """How images are checked and normalised."""

    size: tuple[int, int] = (256, 256)  # target (width, height); ignored when mode='none'
    mode: str = "pad"  # 'pad' (fit inside, fill with background) | 'center_crop' | 'stretch' | 'none'
    min_side: int = 32  # reject images whose shorter side (before resizing) is below this
    max_pixels: int = DEFAULT_MAX_PIXELS  # reject width*height above this: decompression-bomb guard
    max_bytes: int = DEFAULT_MAX_BYTES  # reject encoded files larger than this, before reading them
    output_format: str = "PNG"  # only PNG: lossless and deterministic to re-encode
    background: tuple[int, int, int] = (255, 255, 255)  # behind transparency and padding
    resample: str = "bicubic"  # resize filter: nearest | bilinear | bicubic | lanczos | box
    png_compress_level: int = 3  # zlib level 0-9; 3 encodes ~3x faster than 6 for ~5% more bytes

    def __post_init__(self) -> None:
        # YAML gives lists; a frozen dataclass needs hashable tuples.
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"ImagePolicy.size must be two positive ints (width, height), got {self.size}")
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"ImagePolicy.mode {self.mode!r} is not one of {RESIZE_MODES}")
        if self.min_side < 1:
            raise ValueError(f"ImagePolicy.min_side must be >= 1, got {self.min_side}")
        if self.max_bytes < 1:
            raise ValueError(f"ImagePolicy.max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_pixels < self.min_side**2:
            raise ValueError(
                f"ImagePolicy.max_pixels {self.max_pixels} is below min_side**2 "
                f"({self.min_side**2}); no image could pass"
            )
        if self.output_format.upper() != "PNG":
            raise ValueError(
                f"ImagePolicy.output_format {self.output_format!r} is not supported; use 'PNG' "
                f"(lossless, so re-encoding is deterministic)"
            )
        if self.resample not in _RESAMPLING:
            raise ValueError(f"ImagePolicy.resample {self.resample!r} is not one of {sorted(_RESAMPLING)}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"ImagePolicy.background must be an RGB triple 0-255, got {self.background}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"ImagePolicy.png_compress_level must be 0-9, got {self.png_compress_level}")


class ImageRejected(ValueError):
    """An image failed validation; ``str(exc)`` is the reason recorded for the record."""


@dataclass(frozen=True)
class NormalizedImage:
    """Result of :func:`normalize_image`."""

    data: bytes  # PNG bytes of the RGB image
    width: int
    height: int
    image_hash: str  # sha256 hex of the size and RGB pixels (pixel_hash): equal pictures, equal ids
    phash: str  # 64-bit perceptual hash (16 hex chars) of the output, for near-dedup


def open_image(source: bytes | bytearray | memoryview | str | os.PathLike, *,
               max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               verify: bool = False) -> Image.Image:
    """Open an encoded image (bytes or a file), enforcing the limits before decoding it.

    The byte count is checked before a file is read, the pixel count from the header
    before any pixel is decoded (a decompression bomb costs nothing), and only then is
    the image fully loaded, so a damaged file fails here and not later.

    Args:
        source: encoded bytes, or the path of an image file.
        max_bytes: largest accepted encoded size.
        max_pixels: largest accepted width * height.
        verify: also run PIL's structural check (e.g. PNG chunk CRCs) first.

    Returns:
        The fully loaded image, in its own mode and size.

    Raises:
        ImageRejected: with the reason (too large, not an image, damaged, ...).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageRejected(f"file is {size} bytes, above max_bytes {max_bytes}")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if len(data) > max_bytes:
        raise ImageRejected(f"image is {len(data)} bytes, above max_bytes {max_bytes}")
    if not data:
        raise ImageRejected("image is empty (0 bytes)")
    with warnings.catch_warnings():
        # Our max_pixels check below is the authoritative guard; PIL's warning would
        # only duplicate it. PIL's hard error (above 2x its own limit) is still caught.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"decompression bomb guard: {exc}") from None
        except Image.UnidentifiedImageError:
            raise ImageRejected("not a recognised image format") from None
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                f"image is {width}x{height} = {width * height} pixels, above max_pixels "
                f"{max_pixels} (decompression-bomb guard)"
            )
        if width < 1 or height < 1:
            raise ImageRejected(f"image has an empty size {width}x{height}")
        try:
            if verify:
                # verify() checks structure that a plain decode may skip, but leaves the
                # object unusable, so the image is reopened to decode it.
                image.verify()
                image = Image.open(io.BytesIO(data))
            image.load()
        except ImageRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - hostile files raise OSError, SyntaxError, struct.error, ...
            message = str(exc) or "no detail"
            raise ImageRejected(f"cannot decode image ({type(exc).__name__}: {message})") from None
    return image


def is_image_bytes(data: Any, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """True when ``data`` has a recognised image header within the limits (nothing is decoded)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or not data or len(data) > max_bytes:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - any failure means "not an image we keep"
            return False
    return 0 < width * height <= max_pixels


def _open_checked(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Open with the policy's limits and PIL's structural check (the ingest path)."""
    return open_image(data, max_bytes=policy.max_bytes, max_pixels=policy.max_pixels, verify=True)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited over ``background``.

    16-bit (and 32-bit integer) grey is scaled into 8 bits (``value // 257``) rather than
    clipped; float grey is clipped to 0-255. Every place that turns a picture into
    pixels (ingest, model input, report thumbnails) uses this one conversion.
    """
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit int) grey: PIL's convert('L') clips at 255, turning most
        # of the range white; scale the 0-65535 range down instead.
        array = np.asarray(image, dtype=np.int64)
        array = np.clip(array, 0, 65535) // 257
        image = Image.fromarray(array.astype(np.uint8))
        mode = "L"
    elif mode == "F":
        image = image.convert("L")  # float grey: clipped to 0-255 like PIL does
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def fit_image(image: Image.Image, size: tuple[int, int], mode: str = "pad", resample: str = "bicubic",
              background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Bring an RGB image to ``size`` (width, height) by a fit mode.

    Args:
        image: an RGB image.
        size: target (width, height).
        mode: "pad" (fit inside, fill the rest with ``background``; nothing is cut),
            "center_crop" (fill, cutting the overflow), "stretch" (ignore the aspect
            ratio) or "none" (keep the size).
        resample: filter name: nearest, bilinear, bicubic, lanczos or box.
        background: RGB fill for "pad".
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"image fit mode {mode!r} is not one of {RESIZE_MODES}")
    if resample not in _RESAMPLING:
        raise ValueError(f"resample {resample!r} is not one of {sorted(_RESAMPLING)}")
    method = _RESAMPLING[resample]
    size = (int(size[0]), int(size[1]))
    if mode == "none" or image.size == size:
        return image
    if mode == "stretch":
        return image.resize(size, method)
    if mode == "center_crop":
        return ImageOps.fit(image, size, method, centering=(0.5, 0.5))
    return ImageOps.pad(image, size, method, color=tuple(background), centering=(0.5, 0.5))


def _resize(image: Image.Image, policy: ImagePolicy) -> Image.Image:
    return fit_image(image, policy.size, policy.mode, policy.resample, policy.background)


@dataclass(frozen=True)
class ImageInput:
    """How a model's input image is made from any picture: the ingest policy it was trained on.

    Saved in every model's ``config.json``, so a model directory alone says how its
    inputs are made; inference applies it to a user's photo exactly as ingest applied
    it to the training images (an RGB conversion, then the same fit).
    """

    size: int = 64  # square side S of the model input, in pixels
    mode: str = "pad"  # fit mode: "pad", "center_crop" or "stretch" (see fit_image)
    resample: str = "bicubic"  # resize filter (see fit_image)
    background: tuple[int, int, int] = (255, 255, 255)  # behind transparency and padding

    def __post_init__(self) -> None:
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))
        if self.size < 1:
            raise ValueError(f"ImageInput.size must be >= 1, got {self.size}")
        if self.mode not in ("pad", "center_crop", "stretch"):
            raise ValueError(f"ImageInput.mode {self.mode!r} is not one of 'pad', 'center_crop', 'stretch'")
        if self.resample not in _RESAMPLING:
            raise ValueError(f"ImageInput.resample {self.resample!r} is not one of {sorted(_RESAMPLING)}")

    @classmethod
    def from_policy(cls, policy: ImagePolicy) -> ImageInput:
        """The model input an ingest policy produces.

        Raises:
            ValueError: when the policy does not produce square images of one size
                (models take S x S input), naming the setting to change.
        """
        width, height = policy.size
        if policy.mode == "none" or width != height:
            raise ValueError(
                f"ingest produces images of mode {policy.mode!r} and size {list(policy.size)}; models need one "
                "square size: set params:ingest.image.size to [S, S] and mode to pad, center_crop or stretch"
            )
        return cls(size=width, mode=policy.mode, resample=policy.resample, background=policy.background)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, size: int) -> ImageInput:
        """From a saved config's ``image_input`` block; None (models saved before it existed)
        gives what inference did then: a bilinear stretch to ``size``."""
        if not values:
            return cls(size=size, mode="stretch", resample="bilinear")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "mode": self.mode, "resample": self.resample, "background": list(self.background)}

    def prepare(self, image: Image.Image) -> Image.Image:
        """Any PIL image -> the RGB S x S image the model reads."""
        return fit_image(to_rgb(image, self.background), (self.size, self.size), self.mode, self.resample,
                         self.background)


def normalize_image(data: Any, policy: ImagePolicy) -> NormalizedImage:
    """Validate one encoded image and return it normalised.

    Args:
        data: encoded image bytes (PNG, JPEG, GIF, TIFF, WebP, ...).
        policy: checks and output size.

    Returns:
        The RGB image re-encoded as PNG, with its size and sha256.

    Raises:
        ImageRejected: the image cannot be used; the message is the reason.
    """
    if data is None or (not isinstance(data, (bytes, bytearray, memoryview)) and pd.isna(data)):
        raise ImageRejected("image missing")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageRejected(f"image field holds {type(data).__name__}, not encoded bytes")
    data = bytes(data)
    if not data:
        raise ImageRejected("image is empty (0 bytes)")
    try:
        image = _open_checked(data, policy)
        passthrough = _is_canonical_png(data, image, policy)
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as exc:  # noqa: BLE001 - corrupt EXIF comes in many exception types
            # Without a readable orientation the picture may be sideways; better rejected.
            raise ImageRejected(f"cannot apply EXIF orientation: {type(exc).__name__}: {exc}") from None
        try:
            image = to_rgb(image, policy.background)
        except ValueError as exc:
            raise ImageRejected(f"cannot convert mode {image.mode} to RGB: {exc}") from None
        width, height = image.size
        if min(width, height) < policy.min_side:
            raise ImageRejected(
                f"image is {width}x{height}; its shorter side is below min_side {policy.min_side}"
            )
        image = _resize(image, policy)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb guard: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hostile files raise OSError, SyntaxError, struct.error, ...
        message = str(exc) or "no detail"
        raise ImageRejected(f"cannot decode image ({type(exc).__name__}: {message})") from None

    pixels = image.tobytes()
    if passthrough:
        png = data  # already what this function would write: re-encoding would only cost time
    else:
        # A fresh image without ``info`` so no ICC profile, EXIF or text chunk is carried
        # over: the output depends on the pixels only.
        buffer = io.BytesIO()
        Image.frombytes("RGB", image.size, pixels).save(
            buffer, format="PNG", compress_level=policy.png_compress_level, optimize=False)
        png = buffer.getvalue()
    return NormalizedImage(
        data=png,
        width=image.width,
        height=image.height,
        image_hash=pixel_hash(image.size, pixels),
        # Hashed here, while the image is decoded, so dedup need not decode it again.
        phash=phash_of_image(image),
    )


def pixel_hash(size: tuple[int, int], rgb: bytes) -> str:
    """sha256 hex of an RGB image's size and pixels: one id per picture, whatever its encoding."""
    digest = hashlib.sha256(b"%dx%d:" % (int(size[0]), int(size[1])))
    digest.update(rgb)
    return digest.hexdigest()


def _is_canonical_png(data: bytes, image: Image.Image, policy: ImagePolicy) -> bool:
    """Whether ``data`` already is what ingest writes: a PNG of 8-bit RGB, not interlaced, at
    the policy's size (any size with mode 'none'), whose chunks are IHDR, IDAT and IEND only
    (no ICC profile, gamma, EXIF, text, transparency, time or any other chunk)."""
    if policy.mode != "none" and image.size != policy.size:
        return False
    # The file's own header and chunk list decide: PIL reports a 16-bit RGB PNG, or one with
    # a chunk it ignores, as a plain RGB image.
    if len(data) < 29 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return False
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    if (bit_depth, colour_type, interlace) != (8, 2, 0):
        return False
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        if kind not in (b"IHDR", b"IDAT", b"IEND"):
            return False
        if kind == b"IEND":
            return True
        position += 12 + length
    return False


# One result per image: (png, width, height, image_hash, phash) or the rejection reason.
_Result = tuple[bytes, int, int, str, str] | str


def _normalize_many(args: tuple[Sequence[Any], ImagePolicy]) -> list[_Result]:
    """Worker body (module level so process pools can pickle it)."""
    images, policy = args
    results: list[_Result] = []
    for data in images:
        try:
            out = normalize_image(data, policy)
        except ImageRejected as exc:
            results.append(str(exc))
        else:
            results.append((out.data, out.width, out.height, out.image_hash, out.phash))
    return results


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def normalize_images(
    images: Sequence[Any], policy: ImagePolicy, *, workers: int = 1, chunk_size: int = 64,
    progress: bool | None = None,
) -> list[_Result]:
    """Normalise many encoded images, in order, optionally in worker processes.

    Args:
        images: encoded image bytes, one per record.
        policy: checks and output size.
        workers: 1 runs in this process; >1 uses that many worker processes. Results
            are identical either way (each image is processed independently).
        chunk_size: images per task sent to a worker; larger chunks cost less
            inter-process traffic, smaller ones balance load better.
        progress: show a progress bar; ``None`` shows it only on a terminal.

    Returns:
        For each image, ``(png_bytes, width, height, image_hash, phash)`` or a reason
        string.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    disable = None if progress is None else not progress
    results: list[_Result] = []
    with tqdm(total=len(images), desc="validate images", unit="img", disable=disable) as bar:
        if workers == 1 or len(images) <= chunk_size:
            for chunk in _chunks(images, chunk_size):
                results.extend(_normalize_many((chunk, policy)))
                bar.update(len(chunk))
        else:
            tasks = ((chunk, policy) for chunk in _chunks(images, chunk_size))
            with ProcessPoolExecutor(max_workers=workers) as pool:
                # map() yields in submission order, so the output order is the input order.
                for chunk_results in pool.map(_normalize_many, tasks):
                    results.extend(chunk_results)
                    bar.update(len(chunk_results))
    return results


def validate_images(
    records: pd.DataFrame, policy: ImagePolicy, workers: int = 1, *, chunk_size: int = 64,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image stage of ingest: decode, check and normalise every record's image.

    Args:
        records: record frame (see ``records.RECORD_COLUMNS``); not modified.
        policy: checks and output size.
        workers: worker processes (1 = in this process; results are identical).
        chunk_size: images per worker task.
        progress: progress bar on/off; ``None`` = only on a terminal.

    Returns:
        ``(kept, rejected)``. ``kept`` has the input columns with ``image`` replaced by
        the normalised PNG, plus ``image_hash``, ``width``, ``height`` and ``phash``
        (perceptual hash used by :func:`~multimodal_lab.data.dedup.deduplicate`). ``rejected``
        has the input columns (original image bytes) plus ``stage`` (``"image"``) and
        ``reason``. Every input row is in exactly one of them, in input order.
    """
    results = normalize_images(
        records["image"].tolist(), policy, workers=workers, chunk_size=chunk_size, progress=progress
    )
    good = [r for r in results if not isinstance(r, str)]
    kept, rejected = split_rejections(
        records, [r if isinstance(r, str) else None for r in results], "image"
    )
    kept["image"] = pd.Series([r[0] for r in good], index=kept.index, dtype=object)
    kept["image_hash"] = pd.Series([r[3] for r in good], index=kept.index, dtype=object)
    kept["width"] = pd.Series([r[1] for r in good], index=kept.index, dtype="int64")
    kept["height"] = pd.Series([r[2] for r in good], index=kept.index, dtype="int64")
    kept["phash"] = pd.Series([r[4] for r in good], index=kept.index, dtype=object)

    if len(rejected):
        logger.info("image validation: kept %d, rejected %d", len(kept), len(rejected))
    return kept.reset_index(drop=True), rejected.reset_index(drop=True)


def checked_image_input(value: Mapping[str, Any] | None, size: int) -> dict[str, Any] | None:
    """A model config's ``image_input`` block, completed and checked against its ``image_size``.

    None stays None (the training node fills it in from the ingest policy).

    Raises:
        ValueError: the block's size differs from the model's image size.
    """
    if value is None:
        return None
    spec = ImageInput.from_dict(value, size)
    if spec.size != size:
        raise ValueError(f"image_input size {spec.size} differs from image_size {size}")
    return spec.to_dict()

