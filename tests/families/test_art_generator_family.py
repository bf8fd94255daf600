"""art_generator's family pieces: the comparison's keys and bar note, settings errors, the inference API's guard."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from multimodal_lab.evaluation.harness import Evaluation
from multimodal_lab.families import get_family
from multimodal_lab.families.art_generator import (
    COLUMNS,
    ArtEvalSettings,
    ArtInferenceParams,
    JudgeSettings,
    compare,
    describe,
)


def evaluation(agreement: float, fid: float, shuffled: float) -> Evaluation:
    rows = [
        {"condition": "model", "kind": "model", "agreement": agreement, "parse_rate": 0.99, "black_fraction": 0.0,
         "fid_judge": fid, "kid_judge": 0.0},
        {"condition": "shuffled", "kind": "control", "agreement": shuffled},
        {"condition": "real", "kind": "reference", "agreement": 0.99, "parse_rate": 1.0, "fid_judge": 30.0,
         "kid_judge": 0.0, "judge_accuracy": 0.99, "judge_accuracy_objects_1": 1.0, "judge_accuracy_objects_3": 0.97},
    ]
    metrics = pd.DataFrame(rows, columns=["condition", "kind", *COLUMNS, "judge_accuracy_objects_1",
                                          "judge_accuracy_objects_3"])
    metrics["num_records"] = 100.0
    metrics["num_pairs"] = [1000.0, 1000.0, 100.0]
    conditions = [{"name": "model", "kind": "model", "description": "1000 pairs"},
                  {"name": "shuffled", "kind": "control", "description": "shuffled"},
                  {"name": "real", "kind": "reference", "description": "real"}]
    samples = [{"record_id": "seed 0", "images": [], "reference": "", "outputs": {"model": f"caption {agreement}"},
                "notes": {"model": "the judge reads: large star"}, "inputs_from": {},
                "figures": [{"label": "seed 0", "png": b"png"}]}]
    return Evaluation(metrics=metrics, samples=samples, summary={}, conditions=conditions, notes=["FID note"])


def test_compare_gives_the_issues_keys_and_one_card_per_seed():
    combined, flat = compare({"composer": evaluation(0.95, 45.0, 0.01), "seed_vae": evaluation(0.0, 900.0, 0.0)})
    assert flat["composer/agreement"] == 0.95 and flat["composer/agreement_shuffled"] == 0.01
    assert flat["seed_vae/fid_judge"] == 900.0 and flat["real_vs_real/fid_judge"] == 30.0
    assert flat["judge/test_accuracy"] == 0.99 and flat["judge/test_accuracy_objects_3"] == 0.97
    assert all(math.isfinite(v) for v in flat.values())
    assert list(combined.metrics["condition"]) == ["composer", "composer/shuffled", "seed_vae", "seed_vae/shuffled",
                                                   "real"]
    card = combined.samples[0]
    assert card["outputs"] == {"composer": "caption 0.95", "seed_vae": "caption 0.0"}
    assert [f["label"] for f in card["figures"]] == ["composer: seed 0", "seed_vae: seed 0"]
    note = combined.notes[-1]
    assert "FID 45.0 (1.50x real-vs-real)" in note and "3 object(s) 0.970" in note
    with pytest.raises(ValueError, match="at least one"):
        compare({})


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="samples must be >= 2"):
        ArtEvalSettings(samples=1)
    with pytest.raises(ValueError, match="min_set_accuracy"):
        JudgeSettings(min_set_accuracy=1.5)
    with pytest.raises(ValueError, match="integers >= 0"):
        ArtInferenceParams(seeds=[3, -1])
    with pytest.raises(ValueError, match="must not repeat"):
        ArtInferenceParams(seeds=[3, 3])
    assert ArtInferenceParams(first_seed=5, count=3).seed_list() == [5, 6, 7]
    assert ArtInferenceParams(seeds=[9, 2]).seed_list() == [9, 2]
    assert ArtEvalSettings().generation.top_p == 0.9  # the evaluated sampling


def test_family_wiring_and_guards():
    from multimodal_lab.inference import ArtGenerator
    from multimodal_lab.models.art_generator import ArtGeneratorConfig
    from multimodal_lab.models.art_judge import ArtJudge, ArtJudgeConfig

    family = get_family("art_generator")
    assert set(family.variants) == {"composer", "seed_vae"} and family.inference_variant == "composer"
    assert family.evaluation_inputs == {"judge": "art_generator.judge"}
    with pytest.raises(ValueError, match="design must be one of"):
        ArtGeneratorConfig(design="diffusion")
    with pytest.raises(ValueError, match="divisible"):
        ArtGeneratorConfig(composer={"d_model": 33})
    with pytest.raises(TypeError, match="composer or seed_vae"):
        ArtGenerator(ArtJudge(ArtJudgeConfig()))
    assert describe(frozenset({("star", "large"), ("circle", "small")})) == "small circle, large star"
    assert describe(None) == "(does not parse)"
