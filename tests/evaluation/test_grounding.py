"""Grounding: (colour, shape) pairs read off texts and scored against the truth."""
from __future__ import annotations

import json

import pytest

from multimodal_lab.evaluation.grounding import extract_pairs, grounding_scores, score_texts

COLOURS = ("red", "blue", "green", "light blue")
SHAPES = ("circle", "square", "star", "cross")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A small red circle sat near a large blue square.", [("red", "circle"), ("blue", "square")]),
        ("RED... Circle!", [("red", "circle")]),
        ("a red, very big circle", [("red", "circle")]),  # two words in between
        ("a red and very big circle", []),  # three words in between
        ("red and blue square", [("blue", "square")]),  # the nearer colour takes the shape
        ("two green stars and red crosses", [("green", "star"), ("red", "cross")]),
        ("a light blue circle", [("light blue", "circle")]),  # longest colour phrase wins
        ("the circle was red", []),  # shape before colour is not a pair
        ("", []),
    ],
)
def test_extract_pairs(text, expected):
    assert extract_pairs(text, COLOURS, SHAPES) == expected


def test_max_gap_controls_the_distance():
    text = "a red and very big circle"
    assert extract_pairs(text, COLOURS, SHAPES, max_gap=3) == [("red", "circle")]
    assert extract_pairs("a red circle", COLOURS, SHAPES, max_gap=0) == [("red", "circle")]
    assert extract_pairs("a red big circle", COLOURS, SHAPES, max_gap=0) == []
    with pytest.raises(ValueError, match="max_gap"):
        extract_pairs(text, COLOURS, SHAPES, max_gap=-1)


def test_scores_are_micro_averaged():
    predicted = [{("red", "circle"), ("blue", "star")}, set(), {("green", "cross")}]
    truth = [{("red", "circle"), ("blue", "square")}, {("red", "star")}, {("green", "cross")}]
    scores = grounding_scores(predicted, truth)
    assert scores["precision"] == pytest.approx(2 / 3)  # 2 right of 3 predicted
    assert scores["recall"] == pytest.approx(2 / 4)  # 2 found of 4 true
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # Colours alone: {red, blue} vs {red, blue}, {} vs {red}, {green} vs {green}.
    assert scores["colour_precision"] == pytest.approx(1.0)
    assert scores["colour_recall"] == pytest.approx(3 / 4)
    # Shapes alone: {circle, star} vs {circle, square}, {} vs {star}, {cross} vs {cross}.
    assert scores["shape_f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_score_edge_cases():
    assert grounding_scores([set()], [set()])["f1"] == 1.0
    assert grounding_scores([{("red", "circle")}], [set()])["f1"] == 0.0
    assert grounding_scores([set()], [{("red", "circle")}])["recall"] == 0.0
    with pytest.raises(ValueError, match="one set per text"):
        grounding_scores([set()], [])


def test_score_texts_reads_and_scores():
    scores = score_texts(["A red circle. Then a blue star.", "Nothing here."],
                         [{("red", "circle")}, {("green", "cross")}], COLOURS, SHAPES)
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)


def test_scene_world_stories_score_perfectly_against_their_metadata():
    scene_world = pytest.importorskip("multimodal_lab.data.scene_world")
    config = scene_world.SceneWorldConfig(n_scenes=40, n_engravings=0, n_sequences=0, damaged_fraction=0.0)
    frame = scene_world.generate_scene_world(config)
    truth = [set(scene_world.object_pairs(json.loads(m))) for m in frame["metadata"]]
    for column in ("story", "caption"):
        predicted = [set(extract_pairs(t, scene_world.COLOURS, scene_world.SHAPES)) for t in frame[column]]
        assert grounding_scores(predicted, truth)["f1"] == 1.0
    # A story told about another picture scores low: the metric sees the mismatch.
    shifted = [set(extract_pairs(t, scene_world.COLOURS, scene_world.SHAPES)) for t in frame["story"]]
    assert grounding_scores(shifted[1:] + shifted[:1], truth)["f1"] < 0.3
