"""BLEU and CIDEr-D through the COCO scorers, on fixtures whose values are known by hand."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from multimodal_lab.data.records import references_of
from multimodal_lab.evaluation.captioning import caption_scores, tokenize_caption
from multimodal_lab.evaluation.suites import get_suite


def test_tokenize_like_the_ptb_step():
    assert tokenize_caption("A Red star, in the SKY.") == "a red star in the sky"
    assert tokenize_caption("  ") == ""


def test_bleu_of_a_short_exact_prefix_is_the_brevity_penalty():
    # Candidate "a red star" (3 words) vs one reference of 6 words: every 1..3-gram of the
    # candidate is in the reference, there is no 4-gram; BP = exp(1 - 6/3) = e^-1.
    scores = caption_scores(["A red star."], [["a red star in the sky"]])
    penalty = math.exp(1 - 6 / 3)
    for n in (1, 2, 3):
        assert scores[f"bleu_{n}"] == pytest.approx(penalty, rel=1e-6)
    # No 4-gram at all: the scorer smooths the 4-gram precision to 1e-15 / 1e-9.
    assert scores["bleu_4"] == pytest.approx(penalty * (1e-15 / 1e-9) ** 0.25, rel=1e-6)


def test_bleu_uses_every_reference():
    one = caption_scores(["a blue ring on the grass"], [["a red ring on the sand"]])
    many = caption_scores(["a blue ring on the grass"], [["a red ring on the sand", "a blue ring on the grass"]])
    assert many["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert one["bleu_4"] < 0.5


def test_cider_d_of_perfect_distinct_captions_is_ten():
    # Identical to every reference, no n-gram shared across images: for n = 1..4 the tf-idf
    # vectors coincide (cosine 1), no length penalty, x10. (A 3-word caption has no 4-gram:
    # it would score 7.5.)
    candidates = ["red star above sky", "blue ring upon grass", "green cross over sea"]
    references = [[c] * 3 for c in candidates]
    assert caption_scores(candidates, references)["cider_d"] == pytest.approx(10.0, rel=1e-6)


def test_cider_d_depends_on_the_whole_scored_set():
    candidates = ["a red star in the sky", "a blue ring in the sky", "a green cross on the sea"]
    references = [["a red star in the sky", "the red star"], ["a blue ring in the sky", "blue ring"],
                  ["a green cross on the sea", "green cross"]]
    whole = caption_scores(candidates, references)["cider_d"]
    first_two = caption_scores(candidates[:2], references[:2])["cider_d"]
    assert whole != pytest.approx(first_two)  # document frequencies come from the scored references
    wrong = caption_scores(list(reversed(candidates)), references)["cider_d"]
    assert wrong < 0.5 * whole


def test_records_without_references_are_left_out_and_empty_candidates_score_zero():
    scores = caption_scores(["", "a red star"], [["a blue ring"], []])
    assert scores["cider_d"] == pytest.approx(0.0)
    assert math.isnan(caption_scores(["x"], [[]])["cider_d"])


def test_suite_scores_against_metadata_references():
    records = pd.DataFrame({
        "caption": ["a red star.", "a blue ring."],
        "metadata": [json.dumps({"references": ["a red star.", "the red star in the sky."]}), "{}"],
    })
    assert references_of(records.iloc[0].to_dict()) == ["a red star.", "the red star in the sky."]
    assert references_of(records.iloc[1].to_dict()) == ["a blue ring."]  # falls back to the caption
    result = get_suite("captioning").score(["a red star.", "a blue ring."], records)
    assert result.metrics["num_references"] == 1.5
    assert result.metrics["bleu_1"] == pytest.approx(1.0, abs=1e-6)
