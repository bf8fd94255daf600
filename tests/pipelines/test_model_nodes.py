"""The generic model nodes' own logic: seed repeats of the best variants, side by side."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from multimodal_lab.evaluation.harness import Evaluation
from multimodal_lab.pipelines.model.nodes import _seed_table, repeat_top_variants


def _evaluation(mae: float) -> Evaluation:
    metrics = pd.DataFrame([{"condition": "model", "kind": "model", "image_mae": mae, "perplexity": 1.5}])
    return Evaluation(metrics=metrics, samples=[], summary={}, conditions=[])


def test_the_seed_note_says_whether_the_winner_wins_on_every_seed():
    repeats = {"vae": {"0": {"image_mae": 0.010}, "1": {"image_mae": 0.012}},
               "baseline": {"0": {"image_mae": 0.011}, "1": {"image_mae": 0.013}}}
    table, note = _seed_table(repeats, "image_mae", higher=False)
    assert list(table["condition"]) == ["vae (seed 0)", "vae (seed 1)", "baseline (seed 0)", "baseline (seed 1)"]
    assert "vae beats baseline on every seed" in note and "seed 1 0.012" in note
    repeats["baseline"]["1"]["image_mae"] = 0.011  # baseline wins seed 1
    _, note = _seed_table(repeats, "image_mae", higher=False)
    assert "vae beats baseline on 1 of 2 seeds: the order is within seed noise" in note


def test_no_seeds_means_no_repeats_and_no_training():
    evaluations = {"evaluation__baseline": _evaluation(0.02), "evaluation__vae": _evaluation(0.01)}
    # an empty seed list returns before anything is trained (no records are needed)
    assert repeat_top_variants(None, None, None, None, {}, {}, {}, {}, {"top": 2, "seeds": []},
                               family="story_continuation", **evaluations) == {}
    assert repeat_top_variants(None, None, None, None, {}, {}, {}, {}, {"top": 0, "seeds": [1]},
                               family="story_continuation", **evaluations) == {}


def test_a_mistyped_compare_key_is_named():
    with pytest.raises(ValueError, match="seed"):
        repeat_top_variants(None, None, None, None, {}, {}, {}, {}, {"top": 2, "seed": [1]},
                            family="story_continuation", **{"evaluation__vae": _evaluation(math.nan)})
