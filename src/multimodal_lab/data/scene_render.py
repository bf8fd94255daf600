"""Drawing the scene world: its visual vocabulary and how a scene's metadata becomes pixels.

Holds what can be drawn (colour names and their RGB fills, shape names, backgrounds with
their gradient, texture and mood) and the renderer. A scene is described by metadata with
object positions and radii as *fractions of the image side*, so one scene renders at any
size; drawing is supersampled and then reduced, which anti-aliases the edges. PNGs are
written without timestamps, so equal pixels give byte-identical files.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from multimodal_lab.data.scene_text import BackgroundWords

#: Object colour names (the only colour words any text may use).
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")

#: RGB fill of each colour, chosen to stay apart from every background gradient.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 45),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 215, 40),
    "purple": (140, 60, 180),
    "orange": (240, 120, 20),
    "white": (248, 248, 248),
    "black": (20, 20, 20),
}

#: Object shape names; silhouettes chosen to stay distinct at ~8 px radius.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "heart")


@dataclass(frozen=True)
class Background:
    """A backdrop: how it is painted and the words (mood included) it lends to text."""

    top: tuple[int, int, int]  # RGB at the top edge of the vertical gradient
    bottom: tuple[int, int, int]  # RGB at the bottom edge
    texture: str  # texture kind: "clouds", "blades", "specks", "waves", "dunes", "mist"
    words: BackgroundWords  # mood, mood words, place and setting phrases

    @property
    def mood(self) -> str:
        return self.words.mood

    @property
    def mood_words(self) -> tuple[str, ...]:
        return self.words.mood_words


#: Background name -> how it looks and what mood it carries.
BACKGROUNDS: dict[str, Background] = {
    "sky": Background((120, 175, 230), (185, 215, 240), "clouds", BackgroundWords(
        "calm", ("calm", "peaceful", "gentle", "serene"), "the sky",
        ("under a pale dawn", "high in the sky", "in the open air", "among the clouds"))),
    "grass": Background((150, 170, 90), (95, 125, 60), "blades", BackgroundWords(
        "cheerful", ("cheerful", "happy", "lively", "playful"), "the meadow",
        ("on the meadow", "in the tall grass", "over the field", "on the hillside"))),
    "night": Background((30, 35, 80), (60, 60, 120), "specks", BackgroundWords(
        "mysterious", ("mysterious", "quiet", "dreamy", "secret"), "the night",
        ("in the dark night", "at midnight", "beneath the moon", "in the late hours"))),
    "sea": Background((40, 120, 150), (20, 70, 110), "waves", BackgroundWords(
        "restless", ("restless", "wild", "stormy", "adventurous"), "the sea",
        ("over the waves", "above the sea", "on the open water", "near the rolling waves"))),
    "desert": Background((235, 205, 150), (205, 165, 105), "dunes", BackgroundWords(
        "lonely", ("lonely", "weary", "drowsy", "hushed"), "the desert",
        ("over the sand", "in the desert", "on the dunes", "under the hot sun"))),
    "fog": Background((175, 178, 182), (130, 134, 140), "mist", BackgroundWords(
        "gloomy", ("gloomy", "uneasy", "sombre", "wistful"), "the fog",
        ("in the fog", "in the mist", "through the haze", "behind the mist"))),
}

#: Drawing styles: colour, or monochrome line hatching (the engraving corpus).
STYLES: tuple[str, ...] = ("plain", "engraving")
#: Smallest and largest image side, in pixels.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512


def check_image_size(image_size: Any, where: str = "image_size") -> None:
    """Raise ``ValueError`` naming ``where`` unless ``image_size`` is an integer in range."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not (
            MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"{where} must be an integer in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
                         f"(e.g. 64), got {image_size!r}")


# ----------------------------------------------------------------------------- rendering

def _supersample(image_size: int) -> int:
    """Supersampling factor: 4x up to 128 px, 2x above (the canvas stays <= 1024 px)."""
    return 4 if image_size <= 128 else 2


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at (cx, cy) that fits in radius r."""
    if shape == "square":
        h = r / math.sqrt(2.0)
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.radians([-90.0, 30.0, 150.0])]
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.42 * r
            a = math.radians(-90.0 + 36.0 * k)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        a, b = 0.3 * r, math.sqrt(1.0 - 0.09) * r
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
               (-a, a), (-b, a), (-b, -a), (-a, -a)]
    elif shape == "diamond":
        pts = [(0.0, -r), (0.62 * r, 0.0), (0.0, r), (-0.62 * r, 0.0)]
    elif shape == "heart":
        pts = _unit_heart()
        pts = [(r * x, r * y) for x, y in pts]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return [(cx + x, cy + y) for x, y in pts]


@lru_cache(maxsize=1)
def _unit_heart() -> list[tuple[float, float]]:
    t = np.linspace(0.0, 2.0 * np.pi, 56, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    x -= (x.max() + x.min()) / 2.0
    y -= (y.max() + y.min()) / 2.0
    scale = np.sqrt(x ** 2 + y ** 2).max()
    return [(float(a), float(b)) for a, b in zip(x / scale, y / scale)]


def _outline_rgb(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """A dark outline for light fills and a light one for dark fills."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (25, 25, 25) if luminance > 140 else (240, 240, 240)


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                 fill: Any, outline: Any, width: int, hole: Any) -> None:
    """Draw one shape with an inner outline; ``hole`` is what the ring's hole is set to."""
    if shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        if shape == "ring":
            inner = 0.5 * r + width  # the hole's edge, outline included
            box = (cx - inner, cy - inner, cx + inner, cy + inner)
            if fill is None:  # outline-only drawing: just the hole's edge
                draw.ellipse(box, outline=outline, width=width)
            else:
                draw.ellipse(box, fill=outline)
                hole_r = inner - width
                draw.ellipse((cx - hole_r, cy - hole_r, cx + hole_r, cy + hole_r), fill=hole)
        return
    draw.polygon(_shape_polygon(shape, cx, cy, r), fill=fill, outline=outline, width=width)


def _outline_width(image_size: int, ss: int) -> int:
    """About one output pixel at 64 px, growing slowly with the image size."""
    return max(1, round(ss * max(1.0, image_size / 80.0)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a random grid upsampled bilinearly, (size, size)."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR))


@lru_cache(maxsize=32)
def _background_base(name: str, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A background's gradient (s, s, 3) and the row and column coordinates in [0, 1),
    float32; computed once per background and size (read-only: callers must not write)."""
    bg = BACKGROUNDS[name]
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    top = np.asarray(bg.top, np.float32)
    bottom = np.asarray(bg.bottom, np.float32)
    img = np.broadcast_to(top + (bottom - top) * t, (s, s, 3)).copy()
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    for array in (img, yy, xx):
        array.flags.writeable = False
    return img, yy, xx


def _background_array(name: str, seed: int, image_size: int) -> np.ndarray:
    """Gradient + seeded texture, (image_size, image_size, 3) uint8; no shape-like blobs."""
    bg = BACKGROUNDS[name]
    rng = np.random.default_rng([seed, image_size])
    s = image_size
    img, yy, xx = _background_base(name, s)
    shade = 6.0 * _smooth_noise(rng, s, 4)
    if bg.texture == "clouds":
        shade += 8.0 * np.clip(_smooth_noise(rng, s, 5), 0.0, 1.0)
    elif bg.texture == "blades":
        shade += 7.0 * rng.uniform(-1.0, 1.0, (1, s)).astype(np.float32) * (0.4 + yy)
    elif bg.texture == "specks":
        specks = rng.random((s, s)) < 0.004
        shade += 45.0 * specks
    elif bg.texture == "waves":
        phase = rng.uniform(0.0, 2.0 * np.pi)
        shade += 7.0 * np.sin(2.0 * np.pi * (9.0 * yy + 0.6 * np.sin(2.0 * np.pi * xx + phase)))
    elif bg.texture == "dunes":
        phase = rng.uniform(0.0, 2.0 * np.pi)
        shade += 8.0 * np.sin(2.0 * np.pi * (2.5 * (yy + 0.3 * xx)) + phase)
    elif bg.texture == "mist":
        shade += 10.0 * _smooth_noise(rng, s, 3)
    shade += rng.normal(0.0, 1.5, (s, s)).astype(np.float32)
    return np.clip(img + shade[:, :, None], 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _hatch_coords(big: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    return xx, yy


def _hatch(big: int, angle_deg: float, spacing: float, thickness: float) -> np.ndarray:
    """Boolean mask of parallel lines at ``angle_deg``, ``spacing`` px apart, (big, big)."""
    xx, yy = _hatch_coords(big)
    a = math.radians(angle_deg)
    d = xx * math.sin(a) - yy * math.cos(a)
    return np.mod(d, spacing) < thickness


# Engraving backdrop per background: (angle, spacing as a fraction of the side, cross-hatched).
_ENGRAVING_BACKDROP: dict[str, tuple[float, float, bool]] = {
    "sky": (0.0, 0.07, False),
    "grass": (90.0, 0.05, False),
    "night": (0.0, 0.04, True),
    "sea": (15.0, 0.05, False),
    "desert": (30.0, 0.08, False),
    "fog": (0.0, 0.10, False),
}
_PAPER, _INK = 238, 28


def _render_engraving(metadata: Mapping[str, Any], image_size: int) -> Image.Image:
    ss = _supersample(image_size)
    big = image_size * ss
    width = _outline_width(image_size, ss) + ss // 2
    line_mask = Image.new("L", (big, big), 0)
    line_draw = ImageDraw.Draw(line_mask)
    inside = np.zeros((big, big), bool)
    object_lines = np.zeros((big, big), bool)
    for k, obj in enumerate(metadata["objects"]):
        cx, cy, r = obj["x"] * big, obj["y"] * big, obj["radius"] * big
        own = Image.new("L", (big, big), 0)
        _draw_object(ImageDraw.Draw(own), obj["shape"], cx, cy, r, 255, 255, 1, 0)
        _draw_object(line_draw, obj["shape"], cx, cy, r, None, 255, width, None)
        own_mask = np.asarray(own) > 0
        inside |= own_mask
        # Tone from the colour's luminance: darker colours get denser, thicker lines, the
        # way engravers render tints; alternate angles keep touching objects apart.
        rgb = COLOUR_RGB[obj["colour"]]
        tone = 1.0 - (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
        step = max(2.0 * ss, big * (0.065 - 0.035 * tone))
        angle = 45.0 if k % 2 == 0 else -45.0
        object_lines |= own_mask & _hatch(big, angle, step, max(ss * 0.6, (0.2 + 0.35 * tone) * step))
    bg_angle, spacing, cross = _ENGRAVING_BACKDROP[metadata["background"]]
    bg_step = max(2.0 * ss, spacing * big)
    bg_lines = _hatch(big, bg_angle, bg_step, max(ss * 0.6, 0.3 * bg_step))
    if cross:
        bg_lines |= _hatch(big, bg_angle + 90.0, bg_step, max(ss * 0.6, 0.3 * bg_step))
    ink = (bg_lines & ~inside) | object_lines
    ink |= np.asarray(line_mask) > 0
    grey = np.where(ink, _INK, _PAPER).astype(np.uint8)
    return Image.fromarray(grey, mode="L").reduce(ss).convert("RGB")


def render_scene(metadata: Mapping[str, Any], image_size: int, style: str = "plain") -> Image.Image:
    """Draw a scene from its metadata.

    Args:
        metadata: ``{"background", "background_seed", "objects": [{"shape", "colour",
            "x", "y", "radius"}, ...]}`` with ``x``, ``y``, ``radius`` as fractions of the
            image side.
        image_size: side of the square output in pixels, 32..512.
        style: ``"plain"`` (colour) or ``"engraving"`` (monochrome line hatching).

    Returns:
        An RGB image of shape (image_size, image_size).
    """
    check_image_size(image_size)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if metadata.get("background") not in BACKGROUNDS:
        raise ValueError(f"metadata background must be one of {tuple(BACKGROUNDS)}, "
                         f"got {metadata.get('background')!r}")
    if style == "engraving":
        return _render_engraving(metadata, image_size)
    ss = _supersample(image_size)
    big = image_size * ss
    background = Image.fromarray(
        _background_array(metadata["background"], int(metadata.get("background_seed", 0)), image_size), mode="RGB")
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = _outline_width(image_size, ss)
    for obj in metadata["objects"]:
        fill = COLOUR_RGB[obj["colour"]]
        _draw_object(draw, obj["shape"], obj["x"] * big, obj["y"] * big, obj["radius"] * big,
                     fill + (255,), _outline_rgb(fill) + (255,), width, (0, 0, 0, 0))
    drawn = layer.getbbox(alpha_only=True)
    if drawn is None:
        return background
    # Only the output pixels the objects touch are composited at the supersampled size;
    # elsewhere the layer is transparent and the result is the background pixel itself.
    left, top = drawn[0] // ss, drawn[1] // ss
    right, bottom = -(-drawn[2] // ss), -(-drawn[3] // ss)
    box = (left * ss, top * ss, right * ss, bottom * ss)
    canvas = background.crop((left, top, right, bottom)).resize((box[2] - box[0], box[3] - box[1]), Image.NEAREST)
    patch = Image.alpha_composite(canvas.convert("RGBA"), layer.crop(box)).convert("RGB").reduce(ss)
    background.paste(patch, (left, top))
    return background


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no timestamp or text chunks, so equal pixels give equal bytes.

    zlib level 1: ingest decodes and re-encodes every image anyway, so the generated
    bytes only travel to it; level 1 encodes ~3x faster than 6 (it was ~30 % of the
    time a scene took to make) for somewhat larger files.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
