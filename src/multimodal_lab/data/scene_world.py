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

Drawing (and the colour, shape and background vocabulary) lives in
:mod:`multimodal_lab.data.scene_render`, text templates in :mod:`multimodal_lab.data.scene_text`;
this module samples scenes, assigns licences and damage, and builds the records.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from multimodal_lab.data import scene_text
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.scene_render import (  # noqa: F401 - re-exported as this module's API
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    SHAPES,
    STYLES,
    Background,
    check_image_size,
    encode_png,
    render_scene,
)
from multimodal_lab.data.text import normalize_text

#: Size name -> radius as a fraction of the image side. Every shape fits in its circle.
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.16, "large": 0.20}

#: Order of the colour-cycle motion (a rainbow, so the next colour is guessable).
COLOUR_CYCLE: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")

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
logger = logging.getLogger(__name__)

#: Bump when a change to the generator changes the records a config gives (cached copies
#: of an older format are then not reused).
WORLD_FORMAT = 3  # 3: scenes carry several reference captions (metadata['references'])
MAX_OBJECTS = 3  # a story has one sentence per object and must stay within 5 sentences
MAX_FRAMES = 12  # motions must stay inside the frame over the whole sequence

# Corpus -> code in the per-record seed; never renumber, or every corpus changes.
KIND_CODES: dict[str, int] = {"scene": 0, "engraving": 1, "sequence": 2}
_PROVENANCE_STREAM = 1  # extra seed word for licence/damage draws, apart from content draws
_REFERENCE_STREAM = 2  # extra seed word for the extra reference captions, apart from content draws
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
    # reference captions per scene, each from a distinct template (the first is the record's
    # caption); 1..len(scene_text.CAPTIONS). Captioning metrics score against all of them.
    n_references: int = 5
    bad_license_fraction: float = 0.05  # share of records given a licence the default allow-list rejects
    damaged_fraction: float = 0.01  # share of records whose image bytes are damaged
    # How to make it, not what: neither changes a single byte of the records.
    workers: int = 1  # processes drawing records (0 = one per CPU core)
    cache_dir: str | None = None  # keep a copy per config here and reuse it on the next run (None = off)

    def __post_init__(self) -> None:
        for name in ("seed", "n_scenes", "n_engravings", "n_sequences", "frames_per_sequence",
                     "image_size", "min_objects", "max_objects", "max_sequence_objects", "n_references",
                     "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SceneWorldConfig.{name} must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"SceneWorldConfig.{name} must be >= 0, got {value}")
        check_image_size(self.image_size, "SceneWorldConfig.image_size")
        if not 2 <= self.frames_per_sequence <= MAX_FRAMES:
            raise ValueError(f"SceneWorldConfig.frames_per_sequence must be 2..{MAX_FRAMES}, "
                             f"got {self.frames_per_sequence}")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"SceneWorldConfig.min_objects/max_objects must satisfy 1 <= min_objects <= "
                f"max_objects <= {MAX_OBJECTS}, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}")
        if not 1 <= self.n_references <= len(scene_text.CAPTIONS):
            raise ValueError(f"SceneWorldConfig.n_references must be 1..{len(scene_text.CAPTIONS)} (one per caption "
                             f"template), got {self.n_references}")
        if not 1 <= self.max_sequence_objects <= 2:
            raise ValueError("SceneWorldConfig.max_sequence_objects must be 1 or 2, got "
                             f"{self.max_sequence_objects}")
        for name in ("bad_license_fraction", "damaged_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"SceneWorldConfig.{name} must be a number in [0, 1], got {value!r}")


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

@lru_cache(maxsize=64)
def _weyl_offset(seed: int, kind: int, purpose: int) -> float:
    return float(np.random.default_rng([seed, kind, purpose]).random())


def _weyl_hit(seed: int, kind: int, purpose: int, index: int, fraction: float) -> bool:
    """Deterministic low-discrepancy choice: over any run of indices the hit share is
    within O(log n / n) of ``fraction``, so even small runs contain bad records."""
    return (_weyl_offset(seed, kind, purpose) + index * _GOLDEN) % 1.0 < fraction


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
    # Extra references come from their own seed stream, so the caption and story above
    # are the same whatever n_references is.
    extra = scene_text.reference_captions(objects, words, np.random.default_rng(
        [config.seed, kind, index, _REFERENCE_STREAM]), exclude=caption_template, count=config.n_references - 1,
        avoid=[caption])
    metadata["references"] = [normalize_text(caption), *(normalize_text(text) for text in extra)]
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


def _corpus_records(args: tuple[SceneWorldConfig, str, int, int]) -> list[dict[str, Any]]:
    """Records ``start..stop`` of one corpus (module level, so worker processes can run it)."""
    config, corpus, start, stop = args
    if corpus == "scene":
        return [scene_record(config, i) for i in range(start, stop)]
    if corpus == "engraving":
        return [engraving_record(config, i) for i in range(start, stop)]
    return [r for i in range(start, stop) for r in sequence_records(config, i)]


def _tasks(config: SceneWorldConfig, chunk: int) -> list[tuple[SceneWorldConfig, str, int, int]]:
    counts = (("scene", config.n_scenes), ("engraving", config.n_engravings), ("sequence", config.n_sequences))
    return [(config, corpus, start, min(start + chunk, n)) for corpus, n in counts for start in range(0, n, chunk)]


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


def generate_scene_world(config: SceneWorldConfig, workers: int | None = None,
                         progress: bool | None = None) -> pd.DataFrame:
    """All records of :func:`iter_scene_world` as a records DataFrame.

    Args:
        config: what to generate.
        workers: processes drawing records (default: ``config.workers``; 0 = one per
            core); every record has its own seeded generator, so the frame is
            byte-identical whatever the number of workers.
        progress: a progress bar; None shows one only on a terminal.
    """
    workers = config.workers if workers is None else workers
    workers = workers or os.cpu_count() or 1
    tasks = _tasks(config, chunk=250)
    total = config.n_scenes + config.n_engravings + config.n_sequences * config.frames_per_sequence
    disable = None if progress is None else not progress
    records: list[dict[str, Any]] = []
    with tqdm(total=total, desc="scene world", unit="rec", disable=disable) as bar:
        if workers == 1 or len(tasks) < 2:
            parts = map(_corpus_records, tasks)
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            parts = pool.map(_corpus_records, tasks)  # in submission order: the frame keeps its order
        try:
            for part in parts:
                records.extend(part)
                bar.update(len(part))
        finally:
            if workers > 1 and len(tasks) >= 2:
                pool.shutdown()
    return records_frame(records)


def config_key(config: SceneWorldConfig) -> str:
    """A short hash of everything that decides the generated records (the config and the
    generator's format version), naming a cached copy of them."""
    content = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("workers", "cache_dir")}
    payload = json.dumps({"config": content, "format": WORLD_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_scene_world(config: SceneWorldConfig) -> pd.DataFrame:
    """:func:`generate_scene_world`, read from ``config.cache_dir`` when this config was drawn before.

    The cache holds one parquet file per :func:`config_key`; a file is written to a
    temporary name and renamed, so an interrupted run never leaves a partial copy that a
    later run would trust. A copy that cannot be read is drawn again.
    """
    if not config.cache_dir:
        return generate_scene_world(config)
    from pathlib import Path

    folder = Path(config.cache_dir)
    path = folder / f"scene_world-{config_key(config)}.parquet"
    if path.is_file():
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError):
            logger.warning("cached scene world %s cannot be read; drawing it again", path)
    frame = generate_scene_world(config)
    folder.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(staging, index=False)
    os.replace(staging, path)
    return frame
