"""Scoring generated art pairs: the caption grammar, agreement against a judge, image quality."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from multimodal_lab.evaluation.art import (
    agreement_scores,
    caption_population_scores,
    image_scores,
    judge_fid,
    parse_caption,
    real_vs_real,
    shuffled_agreement,
)
from multimodal_lab.models.art_judge import ArtJudge, ArtJudgeConfig

STAR_RING = frozenset({("star", "small"), ("ring", "large")})


@pytest.mark.parametrize("caption, objects", [
    ("An old print of a small star and a large ring in a field.", STAR_RING),
    ("Engraved lines show a large ring and a small star by the sea.", STAR_RING),
    ("A medium red heart near the top.", frozenset({("heart", "medium")})),  # a colour may stand between
    ("A hatched drawing of a small cross, a large square and a medium diamond in a hall.",
     frozenset({("cross", "small"), ("square", "large"), ("diamond", "medium")})),
    ("An etching with a star in a field.", None),  # a shape without its size
    ("A small star and a large star.", None),  # a shape named twice
    ("An old print of a quiet field.", None),  # no object
    ("", None),
])
def test_captions_are_read_by_the_scene_grammar(caption, objects):
    assert parse_caption(caption) == objects


def test_agreement_counts_exact_sets_shapes_and_sizes():
    captions = ["A small star and a large ring.",  # exact
                "A small star and a small ring.",  # shapes right, one size wrong
                "A small star.",  # a shape missing
                "A star."]  # does not parse: disagrees
    judged = [STAR_RING] * 4
    scores = agreement_scores(captions, judged)
    assert scores["agreement"] == 0.25
    assert scores["shape_agreement"] == 0.5
    assert scores["size_agreement"] == pytest.approx(4 / 5)  # over the shapes both name: 2 + 1 + 1 right of 5
    with pytest.raises(ValueError, match="one judged image per caption"):
        agreement_scores(captions, judged[:2])


def test_the_shuffled_control_breaks_agreement_that_is_real():
    shapes = ["star", "ring", "heart", "cross", "square", "diamond"]
    sets = [frozenset({(s, "small")}) for s in shapes]
    captions = [f"A small {s}." for s in shapes]
    assert agreement_scores(captions, sets)["agreement"] == 1.0
    assert shuffled_agreement(captions, sets, seed=0) == 0.0


def test_caption_population_scores():
    real = [STAR_RING, frozenset({("heart", "medium")})]
    captions = ["A small star and a large ring.", "A medium heart.", "A medium heart.", "A heart."]
    scores = caption_population_scores(captions, real)
    assert scores["parse_rate"] == 0.75 and scores["distinct_captions"] == 0.75
    # generated pairs: star/small 1, ring/large 1, heart/medium 2 (of 4); real: 1 each (of 3)
    assert scores["attribute_tv"] == pytest.approx(0.5 * (abs(1 / 4 - 1 / 3) * 2 + abs(2 / 4 - 1 / 3)))
    assert caption_population_scores(["A medium heart."], [frozenset({("heart", "medium")})])["attribute_tv"] == 0


def test_near_black_and_near_blank_images_are_counted():
    rng = np.random.default_rng(0)
    images = np.stack([np.zeros((16, 16, 3), np.uint8),  # black
                       np.full((16, 16, 3), 128, np.uint8),  # blank grey
                       rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)])  # neither
    assert image_scores(images) == {"black_fraction": pytest.approx(1 / 3), "blank_fraction": pytest.approx(2 / 3)}


def test_fid_in_the_judges_feature_space():
    torch.manual_seed(0)
    judge = ArtJudge(ArtJudgeConfig(image_size=16, width=4)).eval()
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    dark = (real // 8).astype(np.uint8)
    same = judge_fid(judge, real, real)
    other = judge_fid(judge, real, dark)
    assert abs(same["fid_judge"]) < 1e-3 and other["fid_judge"] > 100 * max(abs(same["fid_judge"]), 1e-6)
    assert other["kid_judge"] > same["kid_judge"]
    line = real_vs_real(judge, real)
    assert 0 <= line["fid_judge"] < other["fid_judge"] and not math.isnan(line["kid_judge"])
