"""The scene world: a seeded, procedural source of grounded image/text records.

It is the project's default data and needs no download. Three corpora:

* ``scene``: an image of 1-3 objects (shape, colour, size, position) on a background that
  carries a mood, with a one-sentence caption and a 3-5 sentence story;
* ``engraving``: the same kind of scene drawn as monochrome line hatching, with a caption
  naming sizes and shapes (for the art corpus);
* ``sequence``: ``frames_per_sequence`` frames in which objects move, grow, shrink or cycle
  colour predictably, one sentence per frame.

Every record carries its structured truth in ``metadata`` (objects with ``x``, ``y`` and
``radius`` as *fractions of the image side*, so one scene renders at any size), and a
licence. A configurable share of records carries a licence the default allow-list
rejects, and a few carry damaged image bytes, so every default run exercises the filters.

Record ``i`` of each corpus draws from its own generator ``default_rng([seed, kind, i])``:
generation can be chunked or parallelised, and adding records never changes earlier ones.
PNGs are written without timestamps, so the same seed gives a byte-identical corpus.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from multimodal_lab.data import scene_text
from multimodal_lab.data.records import make_record, records_frame
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

#: Size name -> radius as a fraction of the image side. Every shape fits in its circle.
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.16, "large": 0.20}

#: Order of the colour-cycle motion (a rainbow, so the next colour is guessable).
COLOUR_CYCLE: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")


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

#: Licences a normaliser maps to allowed SPDX ids (real-world spellings on purpose).
GOOD_LICENSES: tuple[str, ...] = (
    "CC0", "CC0 1.0 Universal", "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0", "Public Domain Mark 1.0",
)
#: Licences the default allow-list rejects (None and "" mean missing).
BAD_LICENSES: tuple[str | None, ...] = ("All rights reserved", "CC BY-NC-ND 4.0", None, "")
#: Kinds of damaged image bytes.
DAMAGE_KINDS: tuple[str, ...] = ("empty", "truncated", "not_image")

SOURCE = "scene_world"
ATTRIBUTION = "multimodal_lab scene world"
STYLES: tuple[str, ...] = ("plain", "engraving")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
MAX_OBJECTS = 3  # a story has one sentence per object and must stay within 5 sentences
MAX_FRAMES = 12  # motions must stay inside the frame over the whole sequence

# Corpus -> code in the per-record seed; never renumber, or every corpus changes.
KIND_CODES: dict[str, int] = {"scene": 0, "engraving": 1, "sequence": 2}
_PROVENANCE_STREAM = 1  # extra seed word for licence/damage draws, apart from content draws
_MARGIN = 0.02  # gap between an object and the frame edge (fraction of the side)
_GAP = 0.03  # minimum gap between two objects (fraction of the side)
_PLACEMENT_TRIES = 40  # random positions tried per object
_LAYOUT_RESTARTS = 6  # fresh layouts tried before a scene keeps fewer objects
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class SceneWorldConfig:
    """What to generate. Counts are per corpus; a sequence yields ``frames_per_sequence`` records."""

    seed: int = 0  # base seed; record i of corpus k uses default_rng([seed, k, i])
    n_scenes: int = 2000  # image + caption + story records (corpus="scene")
    n_engravings: int = 500  # engraving image + caption records (corpus="engraving")
    n_sequences: int = 200  # sequences of frames_per_sequence records (corpus="sequence")
    frames_per_sequence: int = 5  # frames per sequence, 2..12
    image_size: int = 64  # side of the square images in pixels, 32..512
    min_objects: int = 1  # fewest objects in a scene or engraving, >= 1
    max_objects: int = 3  # most objects in a scene or engraving, <= 3
    max_sequence_objects: int = 2  # most objects in a sequence frame, 1..2
    bad_license_fraction: float = 0.05  # share of records given a licence the default allow-list rejects
    damaged_fraction: float = 0.01  # share of records whose image bytes are damaged

    def __post_init__(self) -> None:
        for name in ("seed", "n_scenes", "n_engravings", "n_sequences", "frames_per_sequence",
                     "image_size", "min_objects", "max_objects", "max_sequence_objects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SceneWorldConfig.{name} must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"SceneWorldConfig.{name} must be >= 0, got {value}")
        _check_image_size(self.image_size, "SceneWorldConfig.image_size")
        if not 2 <= self.frames_per_sequence <= MAX_FRAMES:
            raise ValueError(f"SceneWorldConfig.frames_per_sequence must be 2..{MAX_FRAMES}, "
                             f"got {self.frames_per_sequence}")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"SceneWorldConfig.min_objects/max_objects must satisfy 1 <= min_objects <= "
                f"max_objects <= {MAX_OBJECTS}, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}")
        if not 1 <= self.max_sequence_objects <= 2:
            raise ValueError("SceneWorldConfig.max_sequence_objects must be 1 or 2, got "
                             f"{self.max_sequence_objects}")
        for name in ("bad_license_fraction", "damaged_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"SceneWorldConfig.{name} must be a number in [0, 1], got {value!r}")


def _check_image_size(image_size: Any, where: str = "image_size") -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or not (
            MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"{where} must be an integer in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} "
                         f"(e.g. 64), got {image_size!r}")


# ----------------------------------------------------------------------------- text truth

_WORD = re.compile(r"[a-z]+")


def object_pairs(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The true ``(colour, shape)`` pairs of a record, in metadata order."""
    return [(o["colour"], o["shape"]) for o in metadata.get("objects", [])]


def parse_pairs(text: str, max_gap: int = 2) -> list[tuple[str, str]]:
    """``(colour, shape)`` pairs in ``text``: a colour word followed within ``max_gap`` words by a shape word.

    This is the grounding rule the generated text is written for; it lives here so tests
    and the scene world agree on it.
    """
    words = _WORD.findall(text.lower())
    pairs = []
    for i, word in enumerate(words):
        if word in COLOUR_RGB:
            for follower in words[i + 1:i + 1 + max_gap]:
                if follower in _SHAPE_SET:
                    pairs.append((word, follower))
                    break
    return pairs


_SHAPE_SET = frozenset(SHAPES)


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


def _background_array(name: str, seed: int, image_size: int) -> np.ndarray:
    """Gradient + seeded texture, (image_size, image_size, 3) uint8; no shape-like blobs."""
    bg = BACKGROUNDS[name]
    rng = np.random.default_rng([seed, image_size])
    s = image_size
    t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    top = np.asarray(bg.top, np.float32)
    bottom = np.asarray(bg.bottom, np.float32)
    img = np.broadcast_to(top + (bottom - top) * t, (s, s, 3)).copy()
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
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
    _check_image_size(image_size)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if metadata.get("background") not in BACKGROUNDS:
        raise ValueError(f"metadata background must be one of {tuple(BACKGROUNDS)}, "
                         f"got {metadata.get('background')!r}")
    if style == "engraving":
        return _render_engraving(metadata, image_size)
    ss = _supersample(image_size)
    big = image_size * ss
    bg = _background_array(metadata["background"], int(metadata.get("background_seed", 0)), image_size)
    canvas = Image.fromarray(bg, mode="RGB").resize((big, big), Image.NEAREST).convert("RGBA")
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width = _outline_width(image_size, ss)
    for obj in metadata["objects"]:
        fill = COLOUR_RGB[obj["colour"]]
        _draw_object(draw, obj["shape"], obj["x"] * big, obj["y"] * big, obj["radius"] * big,
                     fill + (255,), _outline_rgb(fill) + (255,), width, (0, 0, 0, 0))
    return Image.alpha_composite(canvas, layer).convert("RGB").reduce(ss)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no timestamp or text chunks, so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- sampling

def _size_name(radius: float) -> str:
    """The largest size whose radius is <= ``radius`` (small below that)."""
    name = "small"
    for size, value in sorted(SIZES.items(), key=lambda item: item[1]):
        if radius + 1e-9 >= value:
            name = size
    return name


def _object(shape: str, colour: str, x: float, y: float, radius: float) -> dict[str, Any]:
    return {"shape": shape, "colour": colour, "size": _size_name(radius),
            "x": round(float(x), 4), "y": round(float(y), 4), "radius": round(float(radius), 4)}


def _fits(x: float, y: float, r: float) -> bool:
    return r + _MARGIN - 1e-9 <= x <= 1.0 - r - _MARGIN + 1e-9 and \
        r + _MARGIN - 1e-9 <= y <= 1.0 - r - _MARGIN + 1e-9


def _apart(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return math.hypot(a["x"] - b["x"], a["y"] - b["y"]) >= a["radius"] + b["radius"] + _GAP


def _sample_objects(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` non-overlapping objects with distinct shapes; fewer only if placement fails."""
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    specs = [(SHAPES[int(s)], COLOURS[int(rng.integers(len(COLOURS)))],
              SIZES[list(SIZES)[int(rng.integers(len(SIZES)))]]) for s in shapes]
    # Largest first: they are the hard ones to fit. The result is shuffled afterwards so
    # captions do not always name the largest object first.
    specs.sort(key=lambda spec: -spec[2])
    best: list[dict[str, Any]] = []
    # An unlucky early position can block the rest, so restart the layout a few times
    # before settling for fewer objects.
    for _ in range(_LAYOUT_RESTARTS):
        objects: list[dict[str, Any]] = []
        for shape, colour, r in specs:
            for _ in range(_PLACEMENT_TRIES):
                x, y = rng.uniform(r + _MARGIN, 1.0 - r - _MARGIN, 2)
                obj = _object(shape, colour, x, y, r)
                if _fits(obj["x"], obj["y"], r) and all(_apart(obj, o) for o in objects):
                    objects.append(obj)
                    break
        if len(objects) > len(best):
            best = objects
        if len(best) == n:
            break
    return [best[int(k)] for k in rng.permutation(len(best))]


def _sample_background(rng: np.random.Generator) -> tuple[str, int]:
    name = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return name, int(rng.integers(2 ** 31 - 1))


def _base_metadata(background: str, bg_seed: int, style: str, objects: list[dict[str, Any]],
                   image_size: int) -> dict[str, Any]:
    return {"background": background, "mood": BACKGROUNDS[background].mood, "style": style,
            "objects": objects, "image_size": image_size, "background_seed": bg_seed}


# ----------------------------------------------------------------------------- provenance

def _weyl_hit(seed: int, kind: int, purpose: int, index: int, fraction: float) -> bool:
    """Deterministic low-discrepancy choice: over any run of indices the hit share is
    within O(log n / n) of ``fraction``, so even small runs contain bad records."""
    offset = np.random.default_rng([seed, kind, purpose]).random()
    return (offset + index * _GOLDEN) % 1.0 < fraction


def _license(config: SceneWorldConfig, kind: int, index: int) -> str | None:
    rng = np.random.default_rng([config.seed, kind, index, _PROVENANCE_STREAM])
    if _weyl_hit(config.seed, kind, 10, index, config.bad_license_fraction):
        return BAD_LICENSES[int(rng.integers(len(BAD_LICENSES)))]
    return GOOD_LICENSES[int(rng.integers(len(GOOD_LICENSES)))]


def _maybe_damage(png: bytes, config: SceneWorldConfig, kind: int, index: int) -> tuple[bytes, str | None]:
    if not _weyl_hit(config.seed, kind, 11, index, config.damaged_fraction):
        return png, None
    rng = np.random.default_rng([config.seed, kind, index, _PROVENANCE_STREAM + 1])
    damage = DAMAGE_KINDS[int(rng.integers(len(DAMAGE_KINDS)))]
    if damage == "empty":
        return b"", damage
    if damage == "truncated":
        return png[: len(png) // 2], damage
    return b"not an image", damage


# ----------------------------------------------------------------------------- records

def scene_record(config: SceneWorldConfig, index: int) -> dict[str, Any]:
    """Record ``index`` of the ``scene`` corpus: image, caption and story."""
    kind = KIND_CODES["scene"]
    rng = np.random.default_rng([config.seed, kind, index])
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    background, bg_seed = _sample_background(rng)
    objects = _sample_objects(rng, n)
    words = BACKGROUNDS[background].words
    caption, caption_template = scene_text.make_caption(objects, words, rng)
    story, story_info = scene_text.make_story(objects, words, rng)
    metadata = _base_metadata(background, bg_seed, "plain", objects, config.image_size)
    metadata["templates"] = {"caption": caption_template, **story_info}
    png = encode_png(render_scene(metadata, config.image_size, "plain"))
    image, damage = _maybe_damage(png, config, kind, index)
    metadata["damaged"] = damage
    return make_record(image=image, source=SOURCE, corpus="scene", caption=caption, story=story,
                       license=_license(config, kind, index), attribution=ATTRIBUTION,
                       url=f"sceneworld://scene/{index}", metadata=metadata)


def engraving_record(config: SceneWorldConfig, index: int) -> dict[str, Any]:
    """Record ``index`` of the ``engraving`` corpus: monochrome hatched image and caption."""
    kind = KIND_CODES["engraving"]
    rng = np.random.default_rng([config.seed, kind, index])
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    background, bg_seed = _sample_background(rng)
    objects = _sample_objects(rng, n)
    caption, caption_template = scene_text.make_caption(
        objects, BACKGROUNDS[background].words, rng, engraving=True)
    metadata = _base_metadata(background, bg_seed, "engraving", objects, config.image_size)
    metadata["templates"] = {"caption": caption_template}
    png = encode_png(render_scene(metadata, config.image_size, "engraving"))
    image, damage = _maybe_damage(png, config, kind, index)
    metadata["damaged"] = damage
    return make_record(image=image, source=SOURCE, corpus="engraving", caption=caption,
                       license=_license(config, kind, index), attribution=ATTRIBUTION,
                       url=f"sceneworld://engraving/{index}", metadata=metadata)


_MOTION_KINDS: tuple[str, ...] = ("move", "grow", "shrink", "colour_cycle")
_MOTION_WEIGHTS = np.array([0.55, 0.15, 0.1, 0.2])
_DIRECTIONS: dict[str, tuple[int, int]] = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}


def _sample_rule(rng: np.random.Generator, kind: str, frames: int) -> dict[str, Any]:
    """A motion rule plus the radius it starts from; positions are placed by the caller."""
    if kind in ("move", "still"):
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        r = SIZES[size]
        rule: dict[str, Any] = {"kind": kind, "radius": r}
        if kind == "move":
            direction = list(_DIRECTIONS)[int(rng.integers(len(_DIRECTIONS)))]
            room = 1.0 - 2.0 * (r + _MARGIN) - 0.05
            step = min(float(rng.choice([0.08, 0.1])), math.floor(room / (frames - 1) * 200) / 200)
            ux, uy = _DIRECTIONS[direction]
            rule.update(direction=direction, step=step, dx=ux * step, dy=uy * step)
        return rule
    if kind in ("grow", "shrink"):
        lo, hi = SIZES["small"], SIZES["large"]
        dr = (hi - lo) / (frames - 1)
        return {"kind": kind, "radius": lo if kind == "grow" else hi,
                "dr": round(dr if kind == "grow" else -dr, 6)}
    start = int(rng.integers(len(COLOUR_CYCLE)))
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    return {"kind": "colour_cycle", "radius": SIZES[size], "cycle": list(COLOUR_CYCLE),
            "start": start}


def _frame_objects(tracks: Sequence[Mapping[str, Any]], frame: int) -> list[dict[str, Any]]:
    objects = []
    for t in tracks:
        rule = t["rule"]
        x = t["x"] + frame * rule.get("dx", 0.0)
        y = t["y"] + frame * rule.get("dy", 0.0)
        r = rule["radius"] + frame * rule.get("dr", 0.0)
        colour = t["colour"]
        if rule["kind"] == "colour_cycle":
            colour = COLOUR_CYCLE[(rule["start"] + frame) % len(COLOUR_CYCLE)]
        objects.append(_object(t["shape"], colour, x, y, r))
    return objects


def _sample_tracks(rng: np.random.Generator, n: int, frames: int) -> list[dict[str, Any]]:
    """Objects with motion rules, placed so every frame stays in view and overlap-free."""
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    tracks: list[dict[str, Any]] = []
    for k, shape_index in enumerate(shapes):
        kind = str(rng.choice(_MOTION_KINDS, p=_MOTION_WEIGHTS)) if k == 0 else \
            ("still" if rng.random() < 0.5 else "move")
        rule = _sample_rule(rng, kind, frames)
        colour = COLOUR_CYCLE[rule["start"]] if kind == "colour_cycle" else \
            COLOURS[int(rng.integers(len(COLOURS)))]
        r_max = max(rule["radius"], rule["radius"] + (frames - 1) * rule.get("dr", 0.0))
        span_x = (frames - 1) * rule.get("dx", 0.0)
        span_y = (frames - 1) * rule.get("dy", 0.0)
        lo = r_max + _MARGIN
        for _ in range(_PLACEMENT_TRIES):
            x = rng.uniform(lo - min(span_x, 0.0), 1.0 - lo - max(span_x, 0.0))
            y = rng.uniform(lo - min(span_y, 0.0), 1.0 - lo - max(span_y, 0.0))
            track = {"shape": SHAPES[int(shape_index)], "colour": colour,
                     "x": round(float(x), 4), "y": round(float(y), 4), "rule": rule}
            candidate = tracks + [track]
            ok = True
            for f in range(frames):
                objs = _frame_objects(candidate, f)
                if not all(_fits(o["x"], o["y"], o["radius"]) for o in objs) or \
                        not all(_apart(objs[-1], o) for o in objs[:-1]):
                    ok = False
                    break
            if ok:
                tracks.append(track)
                break
    return tracks


def _public_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k != "radius"} | {"start_radius": rule["radius"]}


def sequence_records(config: SceneWorldConfig, index: int) -> list[dict[str, Any]]:
    """The ``frames_per_sequence`` records of sequence ``index`` (one per frame)."""
    kind = KIND_CODES["sequence"]
    frames = config.frames_per_sequence
    rng = np.random.default_rng([config.seed, kind, index])
    n = int(rng.integers(1, config.max_sequence_objects + 1))
    background, bg_seed = _sample_background(rng)
    tracks = _sample_tracks(rng, n, frames)
    words = BACKGROUNDS[background].words
    setting = words.settings[int(rng.integers(len(words.settings)))]
    style = scene_text.sequence_style(rng)
    rules = [_public_rule(t["rule"]) for t in tracks]
    group_id = f"seq-{config.seed}-{index}"
    license_ = _license(config, kind, index)
    records = []
    for frame in range(frames):
        objects = _frame_objects(tracks, frame)
        sentence = scene_text.frame_sentence(frame, objects, rules, words, setting, style)
        metadata = _base_metadata(background, bg_seed, "plain", objects, config.image_size)
        metadata.update(frame=frame, sequence_id=group_id, motion={"rules": rules})
        png = encode_png(render_scene(metadata, config.image_size, "plain"))
        image, damage = _maybe_damage(png, config, kind, index * frames + frame)
        metadata["damaged"] = damage
        records.append(make_record(
            image=image, source=SOURCE, corpus="sequence", caption=sentence, story=None,
            license=license_, attribution=ATTRIBUTION, url=f"sceneworld://sequence/{index}/{frame}",
            group_id=group_id, frame_index=frame, metadata=metadata))
    return records


def iter_scene_world(config: SceneWorldConfig) -> Iterator[dict[str, Any]]:
    """Yield every record: scenes, then engravings, then sequence frames in order.

    Args:
        config: what to generate.

    Yields:
        Record dicts built with :func:`multimodal_lab.data.records.make_record`.
    """
    for i in range(config.n_scenes):
        yield scene_record(config, i)
    for i in range(config.n_engravings):
        yield engraving_record(config, i)
    for i in range(config.n_sequences):
        yield from sequence_records(config, i)


def generate_scene_world(config: SceneWorldConfig) -> pd.DataFrame:
    """All records of :func:`iter_scene_world` as a records DataFrame."""
    return records_frame(iter_scene_world(config))
