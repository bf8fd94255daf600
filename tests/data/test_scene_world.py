"""Tests for the procedural scene world (images, texts, sequences, provenance)."""
from __future__ import annotations

import hashlib
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data import scene_text
from multimodal_lab.data.records import RECORD_COLUMNS, metadata_of
from multimodal_lab.data.scene_world import (
    BACKGROUNDS,
    BAD_LICENSES,
    COLOUR_CYCLE,
    COLOUR_RGB,
    COLOURS,
    GOOD_LICENSES,
    SHAPES,
    SIZES,
    WORLD_FORMAT,
    SceneWorldConfig,
    engraving_record,
    generate_scene_world,
    iter_scene_world,
    object_pairs,
    parse_pairs,
    render_scene,
    scene_record,
)

VOCAB = set(COLOURS) | set(SHAPES)


@pytest.fixture(scope="module")
def config() -> SceneWorldConfig:
    return SceneWorldConfig(seed=3, n_scenes=300, n_engravings=40, n_sequences=30,
                            bad_license_fraction=0.1, damaged_fraction=0.05)


@pytest.fixture(scope="module")
def world(config: SceneWorldConfig) -> pd.DataFrame:
    return generate_scene_world(config)


def _decode(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))


def _intact(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[metadata_of(r)["damaged"] is None for _, r in frame.iterrows()]]


def _stray_words(text: str, metadata: dict) -> list[str]:
    """Colour/shape words (plurals and hyphen parts too) left after removing object phrases."""
    phrases = []
    for obj in metadata["objects"]:
        phrases += [f"{obj['size']} {obj['colour']} {obj['shape']}", f"{obj['colour']} {obj['shape']}",
                    f"{obj['size']} {obj['shape']}"]
    rest = text.lower()
    for phrase in sorted(phrases, key=len, reverse=True):
        rest = re.sub(rf"\b{phrase}\b", " ", rest)
    words = re.findall(r"[a-z]+", rest)
    return [w for w in words if w in VOCAB or w.rstrip("s") in VOCAB or w.rstrip("es") in VOCAB]


def test_same_seed_gives_byte_identical_frame(config, world):
    again = generate_scene_world(config)
    pd.testing.assert_frame_equal(world, again)
    assert list(world["image"]) == list(again["image"])


def test_different_seed_differs_and_records_are_stable_under_growth(config, world):
    other = generate_scene_world(SceneWorldConfig(seed=4, n_scenes=20, n_engravings=0, n_sequences=0))
    assert set(other["record_id"]).isdisjoint(world["record_id"])
    small = SceneWorldConfig(seed=3, n_scenes=5, n_engravings=2, n_sequences=1,
                             bad_license_fraction=0.1, damaged_fraction=0.05)
    head = generate_scene_world(small)
    for corpus in ("scene", "engraving", "sequence"):
        ids = list(head.loc[head.corpus == corpus, "record_id"])
        assert ids == list(world.loc[world.corpus == corpus, "record_id"])[: len(ids)]


def test_counts_columns_and_provenance(config, world):
    assert list(world.columns) == list(RECORD_COLUMNS)
    counts = world["corpus"].value_counts().to_dict()
    assert counts == {"scene": 300, "engraving": 40, "sequence": 30 * 5}
    assert set(world["source"]) == {"scene_world"}
    assert set(world["attribution"]) == {"multimodal_lab scene world"}
    assert world["record_id"].is_unique
    assert world.loc[world.corpus == "scene", "url"].iloc[7] == "sceneworld://scene/7"
    seq = world[world.corpus == "sequence"]
    assert seq.groupby("group_id")["frame_index"].apply(list).map(lambda f: f == [0, 1, 2, 3, 4]).all()
    assert seq["group_id"].iloc[0] == "seq-3-0"
    assert seq["story"].isna().all()
    scenes = world[world.corpus != "sequence"]
    assert (scenes["group_id"] == scenes["record_id"]).all()
    assert (scenes["frame_index"] == 0).all()
    assert (scenes.loc[scenes.corpus == "engraving", "story"].isna()).all()


def test_iterator_matches_frame(config, world):
    first = next(iter_scene_world(config))
    assert first == world.iloc[0].to_dict() | {"frame_index": 0}


def test_story_sentences_and_object_mentions(world):
    scenes = world[world.corpus == "scene"]
    lengths = set()
    for _, row in scenes.iterrows():
        meta = metadata_of(row)
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", row.story.strip()) if s]
        assert 3 <= len(sentences) <= 5, row.story
        lengths.add(len(sentences))
        assert all(s[0].isupper() and s.endswith(".") for s in sentences), row.story
        for obj in meta["objects"]:
            assert f"{obj['size']} {obj['colour']} {obj['shape']}" in row.story
            assert f"{obj['colour']} {obj['shape']}" in row.caption
        assert row.caption.count(".") == 1 and row.caption.endswith(".")
        mood_words = BACKGROUNDS[meta["background"]].mood_words
        assert any(re.search(rf"\b{w}\b", row.story) for w in mood_words), row.story
    assert lengths == {3, 4, 5}


def test_text_pairs_equal_object_pairs(world):
    """The grounding parser finds exactly the drawn objects, and no stray vocabulary."""
    for _, row in world.iterrows():
        meta = metadata_of(row)
        truth = set(object_pairs(meta))
        assert len(truth) == len(meta["objects"])
        texts = [row.caption] + ([row.story] if isinstance(row.story, str) else [])
        for text in texts:
            expected = set() if row.corpus == "engraving" else truth
            assert set(parse_pairs(text)) == expected, (text, truth)
            assert _stray_words(text, meta) == [], text


def test_templates_carry_no_vocabulary():
    templates = (scene_text.OPENINGS + scene_text.OBJECT_SENTENCES + scene_text.RELATION_SENTENCES
                 + scene_text.LONE_SENTENCES + scene_text.CLOSINGS + scene_text.CAPTIONS
                 + scene_text.ENGRAVING_CAPTIONS + scene_text.SEQUENCE_INTROS
                 + scene_text.MOVE_VERBS + scene_text.STILL_PHRASES + scene_text.GROW_PHRASES
                 + scene_text.SHRINK_PHRASES + tuple(scene_text.DIRECTION_PHRASES.values()))
    for bg in BACKGROUNDS.values():
        templates += bg.words.settings + bg.words.mood_words + (bg.words.place, bg.mood)
    for template in templates:
        words = re.findall(r"[a-z]+", re.sub(r"\{[a-z_]+\}", " ", template.lower()))
        assert not [w for w in words if w in VOCAB or w.rstrip("s") in VOCAB], template


def test_many_story_templates_in_use(world):
    templates = [metadata_of(r)["templates"] for _, r in world[world.corpus == "scene"].iterrows()]
    assert len(scene_text.OPENINGS) >= 20
    assert len({t["opening"] for t in templates}) >= 20
    assert len({t["template"] for t in templates}) >= 100
    assert len({t["caption"] for t in templates}) == len(scene_text.CAPTIONS)
    openings = {r.story.split(" ")[0] for _, r in world[world.corpus == "scene"].iterrows()}
    assert len(openings) >= 15


def test_images_size_rgb_and_geometry(world, config):
    for _, row in _intact(world).iterrows():
        meta = metadata_of(row)
        image = Image.open(io.BytesIO(row.image))
        assert image.mode == "RGB" and image.size == (config.image_size, config.image_size)
        assert meta["image_size"] == config.image_size
        objects = meta["objects"]
        assert config.min_objects <= len(objects) <= config.max_objects
        for obj in objects:
            assert SIZES[obj["size"]] <= obj["radius"] + 1e-9
            for c in (obj["x"], obj["y"]):
                assert obj["radius"] <= c <= 1.0 - obj["radius"]
        for a_i, a in enumerate(objects):
            for b in objects[a_i + 1:]:
                assert math.hypot(a["x"] - b["x"], a["y"] - b["y"]) > a["radius"] + b["radius"]


def test_render_reproduces_stored_image_and_paints_objects(world, config):
    rows = _intact(world[world.corpus == "scene"]).head(60)
    checked = 0
    for _, row in rows.iterrows():
        meta = metadata_of(row)
        pixels = _decode(row.image)
        assert np.array_equal(np.asarray(render_scene(meta, config.image_size)), pixels)
        for obj in meta["objects"]:
            if obj["shape"] == "ring":  # its centre is a hole
                continue
            s = config.image_size
            centre = pixels[int(obj["y"] * s), int(obj["x"] * s)].astype(int)
            assert np.abs(centre - COLOUR_RGB[obj["colour"]]).max() <= 30, obj
            checked += 1
    assert checked > 50


#: Every byte of the test world (images, texts, metadata) at ``WORLD_FORMAT``. Cached worlds
#: are reused by config and format, so a generator change that alters records must bump
#: ``WORLD_FORMAT`` (and this pin); a speed-up must leave it alone.
WORLD_DIGEST = (3, "71aba8efc1232705c99c751331c9d4c8366ad0d2f52588531352074f6c6bc6e2")


def test_records_are_pinned_to_the_world_format(world):
    digest = hashlib.sha256()
    for row in world.itertuples(index=False):
        for value in row:
            digest.update(bytes(value) if isinstance(value, (bytes, bytearray)) else repr(value).encode())
    assert (WORLD_FORMAT, digest.hexdigest()) == WORLD_DIGEST, (
        "the scene world's records changed (the generator, or Pillow's drawing): bump WORLD_FORMAT and "
        "WORLD_DIGEST together")


def test_scene_without_objects_is_its_background():
    from multimodal_lab.data.scene_render import _background_array

    meta = {"background": "sea", "background_seed": 7, "objects": []}
    assert np.array_equal(np.asarray(render_scene(meta, 64)), _background_array("sea", 7, 64))


@pytest.mark.parametrize("size", [32, 128, 512])
def test_other_image_sizes(size):
    cfg = SceneWorldConfig(seed=1, image_size=size, damaged_fraction=0.0)
    for record in (scene_record(cfg, 0), engraving_record(cfg, 0)):
        image = Image.open(io.BytesIO(record["image"]))
        assert image.size == (size, size) and image.mode == "RGB"
        assert metadata_of(record)["image_size"] == size


def test_sequences_are_predictable(world):
    seq = world[world.corpus == "sequence"]
    kinds = set()
    for _, frames in seq.groupby("group_id"):
        frames = frames.sort_values("frame_index")
        metas = [metadata_of(r) for _, r in frames.iterrows()]
        assert [m["frame"] for m in metas] == [0, 1, 2, 3, 4]
        rules = metas[0]["motion"]["rules"]
        assert all(m["motion"]["rules"] == rules for m in metas)
        assert 1 <= len(rules) <= 2
        for k, rule in enumerate(rules):
            kinds.add(rule["kind"])
            track = [m["objects"][k] for m in metas]
            xs, ys = np.array([o["x"] for o in track]), np.array([o["y"] for o in track])
            rs = np.array([o["radius"] for o in track])
            if rule["kind"] == "move":
                assert np.allclose(np.diff(xs), rule["dx"], atol=2e-4)
                assert np.allclose(np.diff(ys), rule["dy"], atol=2e-4)
                assert rule["step"] > 0
            else:
                assert np.allclose(np.diff(xs), 0) and np.allclose(np.diff(ys), 0)
            if rule["kind"] in ("grow", "shrink"):
                steps = np.diff(rs)
                assert np.allclose(steps, steps[0], atol=2e-4) and steps[0] != 0
                assert (steps[0] > 0) == (rule["kind"] == "grow")
            if rule["kind"] == "colour_cycle":
                start = COLOUR_CYCLE.index(track[0]["colour"])
                assert [o["colour"] for o in track] == [
                    COLOUR_CYCLE[(start + f) % len(COLOUR_CYCLE)] for f in range(5)]
        captions = list(frames["caption"])
        if any(rule["kind"] == "colour_cycle" for rule in rules):
            # the sentence names the new colour, which follows COLOUR_CYCLE (checked above)
            colour_words = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
            captions = [colour_words.sub("<colour>", c) for c in captions]
        # From frame 2 on every sentence is the same: frame 5 is predictable.
        assert len(set(captions[2:])) == 1
        assert captions[0] != captions[1]
    assert kinds >= {"move", "still"} and len(kinds) >= 4


def test_engravings_are_monochrome(world):
    engravings = _intact(world[world.corpus == "engraving"])
    assert len(engravings) > 30
    for _, row in engravings.iterrows():
        pixels = _decode(row.image).astype(int)
        assert np.array_equal(pixels[..., 0], pixels[..., 1])
        assert np.array_equal(pixels[..., 1], pixels[..., 2])
        assert pixels.max() - pixels.min() > 150  # real ink on paper, not a flat grey
        meta = metadata_of(row)
        assert meta["style"] == "engraving"
        assert all(o["colour"] in COLOURS for o in meta["objects"])
        for obj in meta["objects"]:
            assert f"{obj['size']} {obj['shape']}" in row.caption
        assert row.caption.lower().startswith(("an ", "a ", "engraved"))


def test_bad_licence_and_damaged_shares(world, config):
    # a missing licence (None) arrives as a missing value in the frame
    bad = world["license"].map(lambda x: pd.isna(x) or x in BAD_LICENSES)
    assert world["license"].map(lambda x: pd.isna(x) or x in BAD_LICENSES + GOOD_LICENSES).all()
    assert world["license"].isna().any() and (world["license"] == "").any()
    assert abs(bad.mean() - config.bad_license_fraction) < 0.03
    assert set(world.loc[~bad, "license"]) == set(GOOD_LICENSES)
    damaged = world["metadata"].map(lambda m: json.loads(m)["damaged"] is not None)
    assert abs(damaged.mean() - config.damaged_fraction) < 0.02
    for _, row in world[damaged].iterrows():
        with pytest.raises(Exception):
            Image.open(io.BytesIO(row.image)).load()
        assert row.caption  # texts stay valid
    kinds = {json.loads(m)["damaged"] for m in world.loc[damaged, "metadata"]}
    assert kinds == {"empty", "truncated", "not_image"}


def test_default_config_exercises_filters():
    cfg = SceneWorldConfig(n_scenes=200, n_engravings=0, n_sequences=0)
    licences = [scene_record(cfg, i)["license"] for i in range(200)]
    assert 5 <= sum(x in BAD_LICENSES for x in licences) <= 15
    cfg0 = SceneWorldConfig(bad_license_fraction=0.0, damaged_fraction=0.0)
    assert all(scene_record(cfg0, i)["license"] in GOOD_LICENSES for i in range(50))


def test_zero_counts_give_empty_frame():
    frame = generate_scene_world(SceneWorldConfig(n_scenes=0, n_engravings=0, n_sequences=0))
    assert list(frame.columns) == list(RECORD_COLUMNS) and len(frame) == 0


@pytest.mark.parametrize(("field", "value"), [
    ("image_size", 16), ("image_size", 600), ("image_size", 64.0), ("n_scenes", -1),
    ("frames_per_sequence", 1), ("max_objects", 4), ("min_objects", 0),
    ("bad_license_fraction", 1.5), ("damaged_fraction", -0.1), ("seed", -2),
    ("max_sequence_objects", 3),
])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SceneWorldConfig(**{field: value})


def test_render_scene_rejects_bad_arguments():
    meta = {"background": "sky", "background_seed": 0, "objects": []}
    with pytest.raises(ValueError, match="32..512"):
        render_scene(meta, 1024)
    with pytest.raises(ValueError, match="style"):
        render_scene(meta, 64, style="oil")
    with pytest.raises(ValueError, match="background"):
        render_scene(meta | {"background": "mars"}, 64)


def test_vocabulary_and_palette_constants():
    assert len(COLOURS) >= 8 and len(SHAPES) >= 6 and len(BACKGROUNDS) >= 4
    assert set(COLOURS) == set(COLOUR_RGB) and set(COLOUR_CYCLE) <= set(COLOURS)
    assert SIZES["small"] < SIZES["medium"] < SIZES["large"]
    moods = {bg.mood for bg in BACKGROUNDS.values()}
    assert len(moods) == len(BACKGROUNDS)
    for bg in BACKGROUNDS.values():
        for rgb in COLOUR_RGB.values():
            for end in (bg.top, bg.bottom):
                assert np.linalg.norm(np.subtract(rgb, end)) > 55, (bg, rgb)
    names = list(COLOUR_RGB.values())
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.linalg.norm(np.subtract(a, b)) > 90


def test_parse_pairs_rule():
    assert parse_pairs("A small red star and the large blue ring.") == [("red", "star"), ("blue", "ring")]
    assert parse_pairs("red and then a star") == []
    assert object_pairs({"objects": [{"colour": "red", "shape": "star"}]}) == [("red", "star")]


def test_workers_and_the_cache_give_the_same_bytes(tmp_path, monkeypatch):
    from multimodal_lab.data import scene_world as world_module

    config = SceneWorldConfig(seed=3, n_scenes=260, n_engravings=3, n_sequences=2, image_size=32)
    serial = generate_scene_world(config)
    parallel = generate_scene_world(config, workers=2)  # chunks of 250 records: two tasks for the scenes
    pd.testing.assert_frame_equal(serial, parallel)

    cached = SceneWorldConfig(**{**config.__dict__, "cache_dir": str(tmp_path), "workers": 2})
    assert world_module.config_key(cached) == world_module.config_key(config)  # how, not what
    first = world_module.cached_scene_world(cached)
    pd.testing.assert_frame_equal(first, serial)
    assert len(list(tmp_path.glob("scene_world-*.parquet"))) == 1
    calls = []
    monkeypatch.setattr(world_module, "generate_scene_world", lambda *a, **k: calls.append(1))
    again = world_module.cached_scene_world(cached)  # read back, not drawn again
    assert calls == [] and again.equals(first)
    other = SceneWorldConfig(**{**cached.__dict__, "seed": 4})
    assert world_module.config_key(other) != world_module.config_key(cached)


def test_every_scene_has_five_references_from_distinct_templates(world):
    scenes = world[world["corpus"] == "scene"]
    for record in scenes.head(60).to_dict("records"):
        metadata = metadata_of(record)
        references = metadata["references"]
        assert len(references) == 5 and references[0] == record["caption"]
        assert len(set(references)) == 5, references
        truth = sorted(object_pairs(metadata))
        assert all(sorted(parse_pairs(text)) == truth for text in references)  # all name the same objects


def test_references_leave_captions_and_stories_unchanged(config):
    import dataclasses

    one = scene_record(dataclasses.replace(config, n_references=1), 7)
    five = scene_record(config, 7)
    assert (one["caption"], one["story"], one["image"]) == (five["caption"], five["story"], five["image"])
    assert metadata_of(one)["references"] == [one["caption"]]
    with pytest.raises(ValueError, match="n_references must be 1..10"):
        SceneWorldConfig(n_references=11)


def test_reference_captions_use_distinct_templates(monkeypatch):
    marked = tuple(f"T{i} {{objs}}." for i in range(len(scene_text.CAPTIONS)))
    monkeypatch.setattr(scene_text, "CAPTIONS", marked)
    objects = [{"shape": "star", "colour": "red", "size": "small", "x": 0.5, "y": 0.5}]
    words = BACKGROUNDS[next(iter(BACKGROUNDS))].words
    texts = scene_text.reference_captions(objects, words, np.random.default_rng(0), exclude=3, count=9)
    assert sorted(t.split()[0] for t in texts) == sorted(f"T{i}" for i in range(10) if i != 3)
    assert all("small red star" in t for t in texts)
