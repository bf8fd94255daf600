from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data.images import (
    ImagePolicy,
    ImageRejected,
    normalize_image,
    normalize_images,
    pixel_hash,
    validate_images,
)
from multimodal_lab.data.records import make_record, records_frame

NONE = ImagePolicy(mode="none", min_side=1)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def halves(size=(80, 40), left=(220, 20, 20), right=(20, 20, 220)) -> Image.Image:
    """Left half one colour, right half another."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = left
    array[:, size[0] // 2 :] = right
    return Image.fromarray(array)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(header: bytes, rows: bytes) -> bytes:
    """A PNG file from its IHDR body and its filtered rows."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with almost no pixel data."""
    return _png(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0), b"\x00" * 16)


def reason(data, policy=NONE) -> str:
    with pytest.raises(ImageRejected) as info:
        normalize_image(data, policy)
    return str(info.value)


# ----------------------------------------------------------------------- rejections

def test_empty_missing_and_non_images_are_rejected():
    assert reason(b"") == "image is empty (0 bytes)"
    assert reason(None) == "image missing"
    assert reason(b"definitely not an image") == "not a recognised image format"
    assert reason(np.nan) == "image missing"


def test_truncated_png_and_jpeg_are_rejected():
    png = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    jpeg = encode(halves((64, 64)), "JPEG", quality=90)
    assert reason(png[: len(png) // 2]).startswith("cannot decode image")
    assert reason(jpeg[: len(jpeg) // 2]).startswith("cannot decode image")


def test_header_bomb_is_rejected_with_pixels_in_reason():
    # Far above PIL's own hard limit: PIL refuses at open, which becomes a rejection.
    text = reason(png_header_bomb(20000, 20000), ImagePolicy())
    assert "pixels" in text
    assert "400000000" in text
    # Above max_pixels but below PIL's limit: the policy check names the numbers.
    assert reason(png_header_bomb(10000, 5000), ImagePolicy()) == (
        "image is 10000x5000 = 50000000 pixels, above max_pixels 40000000 (decompression-bomb guard)"
    )


def test_max_pixels_policy_is_enforced_before_decoding():
    data = encode(Image.new("RGB", (300, 300), (1, 2, 3)))
    text = reason(data, ImagePolicy(mode="none", min_side=1, max_pixels=10_000))
    assert text == (
        "image is 300x300 = 90000 pixels, above max_pixels 10000 (decompression-bomb guard)"
    )


def test_image_below_min_side_is_rejected():
    data = encode(Image.new("RGB", (20, 100), (1, 2, 3)))
    assert reason(data, ImagePolicy(min_side=32)) == (
        "image is 20x100; its shorter side is below min_side 32"
    )


# ----------------------------------------------------------------------- conversions

def test_cmyk_jpeg_becomes_rgb_with_expected_size_and_colour():
    cmyk = Image.new("CMYK", (60, 30), (0, 255, 255, 0))  # pure red in CMYK
    out = normalize_image(encode(cmyk, "JPEG", quality=95), NONE)
    image = decode(out.data)
    assert image.mode == "RGB"
    assert (out.width, out.height) == image.size == (60, 30)
    r, g, b = image.getpixel((30, 15))
    assert r > 240 and g < 15 and b < 15


def test_exif_orientation_is_applied():
    # Orientation 6: the camera was turned, the picture must be rotated 90 degrees
    # clockwise to display, so the stored left half ends up on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((80, 40)), "JPEG", quality=95, exif=exif.tobytes())
    out = normalize_image(data, NONE)
    image = decode(out.data)
    assert image.size == (40, 80)
    top, bottom = image.getpixel((20, 10)), image.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 50  # red
    assert bottom[2] > 200 and bottom[0] < 50  # blue


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 20, 40))  # left half opaque red, right transparent
    rgba.paste((0, 0, 255, 128), (20, 20, 40, 40))  # bottom-right half-transparent blue
    image = decode(normalize_image(encode(rgba), NONE).data)
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (255, 0, 0)
    assert image.getpixel((30, 5)) == (255, 255, 255)
    assert image.getpixel((30, 30)) == (127, 127, 255)


def test_palette_with_transparency_and_grey_alpha():
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    data = encode(palette, transparency=0)
    image = decode(normalize_image(data, NONE).data)
    assert image.getpixel((5, 5)) == (0, 200, 0)
    assert image.getpixel((30, 5)) == (255, 255, 255)  # index 0 is transparent

    la = Image.new("LA", (40, 40), (50, 255))
    la.paste((50, 0), (20, 0, 40, 40))
    image = decode(normalize_image(encode(la), NONE).data)
    assert image.getpixel((5, 5)) == (50, 50, 50)
    assert image.getpixel((30, 5)) == (255, 255, 255)


def test_16_bit_grey_is_scaled_not_clipped():
    array = np.array([[0, 32768, 65535, 1000]] * 40, dtype=np.uint16)
    array = np.repeat(array, 10, axis=1)  # 40x40
    source = Image.fromarray(array)
    assert source.mode.startswith("I;16")
    image = decode(normalize_image(encode(source), NONE).data)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in (0, 10, 20, 30)] == [0, 127, 255, 3]


def test_bilevel_and_grey_become_rgb():
    bilevel = Image.new("1", (40, 40), 1)
    assert decode(normalize_image(encode(bilevel), NONE).data).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (40, 40), 77)
    assert decode(normalize_image(encode(grey), NONE).data).getpixel((0, 0)) == (77, 77, 77)


# ----------------------------------------------------------------------- resizing

def test_pad_fits_inside_and_fills_with_background():
    policy = ImagePolicy(size=(64, 64), mode="pad", min_side=8)
    image = decode(normalize_image(encode(Image.new("RGB", (100, 50), (10, 100, 10))), policy).data)
    assert image.size == (64, 64)
    assert image.getpixel((32, 0)) == (255, 255, 255)  # top band is padding
    assert image.getpixel((32, 63)) == (255, 255, 255)
    assert image.getpixel((32, 32)) == (10, 100, 10)


def test_center_crop_keeps_the_middle():
    policy = ImagePolicy(size=(50, 50), mode="center_crop", min_side=8, resample="nearest")
    image = decode(normalize_image(encode(halves((100, 50))), policy).data)
    assert image.size == (50, 50)
    assert image.getpixel((2, 25)) == (220, 20, 20)
    assert image.getpixel((47, 25)) == (20, 20, 220)


def test_stretch_and_none():
    data = encode(halves((100, 50)))
    stretched = normalize_image(data, ImagePolicy(size=(64, 32), mode="stretch", min_side=8))
    assert (stretched.width, stretched.height) == (64, 32)
    kept = normalize_image(data, ImagePolicy(size=(64, 32), mode="none", min_side=8))
    assert (kept.width, kept.height) == (100, 50)


def test_output_is_deterministic_png_without_metadata():
    source = halves((90, 70))
    source.info["icc_profile"] = b"fake"
    data = encode(source, pnginfo=None)
    first = normalize_image(data, ImagePolicy(size=(32, 32)))
    second = normalize_image(data, ImagePolicy(size=(32, 32)))
    assert first == second
    assert first.image_hash == pixel_hash((32, 32), decode(first.data).tobytes())
    assert len(first.phash) == 16
    image = decode(first.data)
    assert image.format == "PNG" and image.mode == "RGB"
    assert "icc_profile" not in image.info and "exif" not in image.info


def test_canonical_png_keeps_its_bytes_and_the_hash_is_of_the_pixels():
    policy = ImagePolicy(size=(32, 32))
    written = normalize_image(encode(halves((90, 70))), policy).data
    # what ingest wrote is canonical: a second pass returns the very bytes
    assert normalize_image(written, policy).data == written
    # the same pixels at another zlib level: bytes kept, one image_hash for both
    other = io.BytesIO()
    decode(written).save(other, format="PNG", compress_level=9)
    again = normalize_image(other.getvalue(), policy)
    assert again.data == other.getvalue() != written
    assert again.image_hash == normalize_image(written, policy).image_hash
    assert again.phash == normalize_image(written, policy).phash
    # a chunk ingest strips (gamma), the wrong size, or another mode: re-encoded
    for image, kwargs in [(decode(written), {"pnginfo": _gamma_chunk()}), (halves((40, 40)), {}),
                          (decode(written).convert("L"), {})]:
        data = io.BytesIO()
        image.save(data, format="PNG", **kwargs)
        out = normalize_image(data.getvalue(), policy)
        assert out.data != data.getvalue()
        assert decode(out.data).info == {} and decode(out.data).mode == "RGB"
    # PIL opens these as plain RGB with an empty info, but the file is not what ingest writes:
    # 16 bits per channel, and a chunk PIL does not report (tIME)
    rows = b"".join(b"\x00" + bytes(range(192)) for _ in range(32))
    sixteen = _png(struct.pack(">IIBBBBB", 32, 32, 16, 2, 0, 0, 0), rows)
    timed = written[:33] + _chunk(b"tIME", bytes(7)) + written[33:]
    for data in (sixteen, timed):
        assert decode(data).mode == "RGB" and decode(data).info == {}
        out = normalize_image(data, policy)
        assert out.data != data and out.data[24:26] == bytes([8, 2])


def _gamma_chunk():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    return info


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mode", "zoom", "mode 'zoom'"),
        ("output_format", "JPEG", "output_format 'JPEG'"),
        ("size", (0, 10), "size"),
        ("resample", "magic", "resample 'magic'"),
        ("max_pixels", 10, "max_pixels 10"),
    ],
)
def test_policy_rejects_bad_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        ImagePolicy(**{field: value})


def test_policy_accepts_lists_from_yaml():
    policy = ImagePolicy(size=[64, 48], background=[0, 0, 0])
    assert policy.size == (64, 48) and policy.background == (0, 0, 0)


# ----------------------------------------------------------------------- the stage

def _records() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    images = []
    for i in range(14):
        kind = i % 4
        if kind == 0:
            images.append(encode(Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))))
        elif kind == 1:
            images.append(encode(Image.new("CMYK", (48, 40), (i * 10, 0, 0, 0)), "JPEG"))
        elif kind == 2:
            images.append(b"" if i % 8 == 2 else b"garbage" * i)
        else:
            images.append(encode(Image.new("LA", (36, 44), (i * 5, 128))))
    return records_frame(
        make_record(image=img, source="test", corpus="c", caption=str(i), license="CC0")
        for i, img in enumerate(images)
    )


def test_validate_images_conserves_records_and_order():
    records = _records()
    before = records.copy(deep=True)
    policy = ImagePolicy(size=(32, 32))
    kept, rejected = validate_images(records, policy)
    pd.testing.assert_frame_equal(records, before)

    ids = records["record_id"].tolist()
    bad = [i for i in range(len(ids)) if i % 4 == 2]
    assert rejected["record_id"].tolist() == [ids[i] for i in bad]
    assert kept["record_id"].tolist() == [ids[i] for i in range(len(ids)) if i not in bad]
    assert set(rejected["stage"]) == {"image"}
    assert rejected["reason"].tolist()[:2] == ["image is empty (0 bytes)", "not a recognised image format"]
    assert (kept["width"] == 32).all() and (kept["height"] == 32).all()
    assert kept["width"].dtype == "int64"
    for data, digest in zip(kept["image"], kept["image_hash"]):
        assert decode(data).size == (32, 32)
        assert pixel_hash((32, 32), decode(data).tobytes()) == digest
    # rejected rows carry their original bytes, for inspection
    assert rejected["image"].tolist() == [records["image"][i] for i in bad]


def test_parallel_path_gives_identical_results():
    records = _records()
    policy = ImagePolicy(size=(32, 32))
    serial = validate_images(records, policy, workers=1)
    parallel = validate_images(records, policy, workers=2, chunk_size=3)
    for a, b in zip(serial, parallel):
        pd.testing.assert_frame_equal(a, b)


def test_normalize_images_rejects_bad_worker_count():
    with pytest.raises(ValueError, match="workers"):
        normalize_images([], NONE, workers=0)


def test_validate_images_empty_input():
    kept, rejected = validate_images(_records().iloc[:0], ImagePolicy())
    assert len(kept) == len(rejected) == 0
    assert {"image_hash", "width", "height", "phash"} <= set(kept.columns)
    assert {"stage", "reason"} <= set(rejected.columns)
