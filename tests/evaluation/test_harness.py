"""The evaluation harness: controls and baselines act on conditioning, whatever the family."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from multimodal_lab.data.scene_world import COLOUR_RGB, COLOURS, SceneWorldConfig, generate_scene_world, object_pairs
from multimodal_lab.evaluation.harness import (
    Baseline,
    Control,
    EvalSettings,
    evaluate,
    nearest_neighbour_texts,
    samples_for_json,
    seeded_derangement,
    select_records,
    summarize,
)
from multimodal_lab.evaluation.suites import get_suite, true_pairs_of
from scene_fixtures import scene_records

FAST = dict(show_progress=False)
DERANGED = Control("shuffled", "deranged", "another record's input")
ZEROED = Control("zeros", "zeroed", "all-zero input")
MEAN = Control("mean", "mean_train", "mean training input")


class OracleConditioner:
    """Conditioning = the image's mean colour; names the nearest colour's circle, or nothing for zeros."""

    def condition(self, records):
        means = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).reshape(-1, 3).mean(0) for b in records["image"]]
        return torch.tensor(np.stack(means), dtype=torch.float32)  # (B, 3)

    def generate(self, conditioning):
        texts = []
        for row in conditioning.tolist():
            if not any(row):
                texts.append("there is nothing to see.")
                continue
            colour = min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOUR_RGB[c], row)))
            texts.append(f"a {colour} circle is here.")
        return texts

    def score(self, conditioning, records):
        # one "token" per record whose nll is the distance of the conditioning from pure red
        red = torch.tensor(COLOUR_RGB["red"], dtype=torch.float32)
        nll = ((conditioning - red).abs().sum(dim=1) / 255.0).double()
        return nll, torch.ones(len(records), dtype=torch.int64)


class BlindConditioner(OracleConditioner):
    def generate(self, conditioning):
        return ["a red circle waits." if i % 2 == 0 else "a blue square sleeps." for i in range(len(conditioning))]


def test_grounded_model_beats_every_control_and_the_summary_says_so():
    records = scene_records()
    result = evaluate(OracleConditioner(), records, EvalSettings(batch_size=3, **FAST),
                      controls=[DERANGED, ZEROED, MEAN], suites=("grounding", "diversity"),
                      train_records=records, split="test", headline="pair_f1")
    table = result.metrics.set_index("condition")
    assert list(table.index) == ["model", "shuffled", "zeros", "mean"]
    assert list(table["kind"]) == ["model", "control", "control", "control"]
    assert table.at["model", "pair_f1"] == pytest.approx(1.0)
    # the derangement gives every record another colour, so no pair can match
    assert table.at["shuffled", "pair_f1"] == 0.0 and table.at["shuffled", "shape_f1"] == 1.0
    assert table.at["zeros", "pair_f1"] == 0.0
    # the mean input is one colour for all records: at most one of the 8 colours matches
    assert table.at["mean", "pair_f1"] <= 1 / len(COLOURS) + 1e-9
    assert result.summary["test/pair_f1"] == pytest.approx(1.0)
    assert result.summary["test/shuffled/pair_f1"] == 0.0
    assert result.summary["test/pair_f1_margin/shuffled"] == pytest.approx(1.0)
    assert result.summary["test/num_records"] == len(records)
    # the zeroed control writes the same sentence every time: distinct-1 is 5 words / 40
    assert table.at["zeros", "distinct_1"] == pytest.approx(5 / (5 * len(records)))


def test_constant_controls_are_decoded_once_per_batch_size():
    class Counting(OracleConditioner):
        def __init__(self):
            self.rows = 0

        def generate(self, conditioning):
            self.rows += len(conditioning)
            return super().generate(conditioning)

    records = scene_records()  # 8 records in batches of 3, 3 and 2
    counting = Counting()
    result = evaluate(counting, records, EvalSettings(batch_size=3, **FAST), controls=[ZEROED, MEAN],
                      train_records=records)
    # the model decodes all 8; each constant control one batch of 3 and one of 2
    assert counting.rows == 8 + 2 * (3 + 2)
    plain = evaluate(OracleConditioner(), records, EvalSettings(batch_size=8, **FAST), controls=[ZEROED, MEAN],
                     train_records=records)
    assert result.samples == plain.samples  # the same texts as decoding every row
    pd.testing.assert_frame_equal(result.metrics, plain.metrics)


def test_image_blind_model_scores_the_same_under_the_derangement():
    result = evaluate(BlindConditioner(), scene_records(), EvalSettings(batch_size=4, **FAST),
                      controls=[DERANGED], suites=("grounding", "diversity"), headline="pair_f1")
    table = result.metrics.set_index("condition")
    for column in ("pair_precision", "pair_recall", "pair_f1", "colour_f1", "shape_f1", "distinct_1"):
        assert table.at["model", column] == table.at["shuffled", column], column
    assert result.summary["test/pair_f1_margin/shuffled"] == 0.0
    assert 0.0 < table.at["model", "pair_f1"] < 1.0


def test_perplexity_pools_tokens_and_controls_move_it():
    records = scene_records(["red", "blue", "green"])
    result = evaluate(OracleConditioner(), records, EvalSettings(batch_size=2, **FAST), controls=[DERANGED])
    table = result.metrics.set_index("condition")
    blue, green = COLOUR_RGB["blue"], COLOUR_RGB["green"]
    red = COLOUR_RGB["red"]
    distance = [0.0] + [sum(abs(a - b) for a, b in zip(c, red)) / 255.0 for c in (blue, green)]
    assert table.at["model", "perplexity"] == pytest.approx(math.exp(sum(distance) / 3))
    assert table.at["shuffled", "perplexity"] == pytest.approx(math.exp(sum(distance) / 3))  # same set, permuted
    assert result.summary["test/perplexity_ratio/shuffled"] == pytest.approx(1.0)


def test_samples_record_each_condition_and_the_deranged_source():
    records = scene_records()
    result = evaluate(OracleConditioner(), records, EvalSettings(num_samples=3, **FAST), controls=[DERANGED],
                      suites=("grounding",))
    assert len(result.samples) == 3
    first = result.samples[0]
    assert first["record_id"] == records.at[0, "record_id"]
    assert first["images"] == [records.at[0, "image"]]
    assert first["reference"] == records.at[0, "story"]
    assert first["reference_note"] == "red circle"
    assert set(first["outputs"]) == {"model", "shuffled"}
    assert first["notes"]["model"] == "red circle"
    source = first["inputs_from"]["shuffled"]
    assert source != first["record_id"]
    shuffled_colour = first["outputs"]["shuffled"].split()[1]
    assert f"a {shuffled_colour} circle" in records.set_index("record_id").at[source, "story"]
    json.dumps(samples_for_json(result.samples))  # JSON-ready, image bytes left out
    assert "images" not in samples_for_json(result.samples)[0]


def test_baselines_run_without_the_model_and_need_training_records():
    records = scene_records()
    echo = Baseline("echo", "repeats a training story", lambda pool, recs, s: [pool["story"].iat[0]] * len(recs))
    result = evaluate(OracleConditioner(), records, EvalSettings(**FAST), baselines=[echo],
                      suites=("grounding",), train_records=records.iloc[:1])
    row = result.metrics.set_index("condition").loc["echo"]
    assert row["kind"] == "baseline" and math.isnan(row["perplexity"])
    assert row["pair_f1"] == pytest.approx(1 / 8)  # "red circle" for all: right for 1 of 8 records
    with pytest.raises(ValueError, match="need the training records"):
        evaluate(OracleConditioner(), records, EvalSettings(**FAST), baselines=[echo])


def test_nearest_neighbour_finds_the_look_alike():
    pool = scene_records()
    queries = scene_records(["blue", "red"])
    assert nearest_neighbour_texts(pool, queries, "story") == list(queries["story"])


def test_single_record_skips_the_derangement():
    result = evaluate(OracleConditioner(), scene_records(["red"]), EvalSettings(**FAST), controls=[DERANGED, ZEROED])
    assert list(result.metrics["condition"]) == ["model", "zeros"]


def test_missing_columns_fail_with_the_column_name():
    with pytest.raises(ValueError, match="'metadata'"):
        evaluate(OracleConditioner(), scene_records().drop(columns="metadata"), EvalSettings(**FAST))


def test_unknown_control_operation_and_suite_are_refused():
    with pytest.raises(ValueError, match="control operation"):
        Control("x", "scrambled", "")
    with pytest.raises(ValueError, match="unknown metric suite 'bleu'"):
        get_suite("bleu")


def test_summarize_names_keys_by_split_and_condition():
    table = pd.DataFrame({"condition": ["model", "c"], "kind": ["model", "control"], "f1": [0.75, 0.25],
                          "perplexity": [2.0, 6.0]})
    summary = summarize(table, "val", headline="f1")
    assert summary == {"val/f1": 0.75, "val/perplexity": 2.0, "val/c/f1": 0.25, "val/c/perplexity": 6.0,
                       "val/f1_margin/c": 0.5, "val/perplexity_ratio/c": 3.0}


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize("n", [2, 3, 5, 17, 100])
def test_derangement_has_no_fixed_point_and_is_a_permutation(n):
    for seed in range(25):
        perm = seeded_derangement(n, seed)
        assert sorted(perm.tolist()) == list(range(n))
        assert not np.any(perm == np.arange(n)), (n, seed, perm)


def test_derangement_is_seeded():
    assert seeded_derangement(50, 3).tolist() == seeded_derangement(50, 3).tolist()
    assert seeded_derangement(50, 3).tolist() != seeded_derangement(50, 4).tolist()
    assert seeded_derangement(2, 0).tolist() == [1, 0]
    with pytest.raises(ValueError, match="n=1"):
        seeded_derangement(1, 0)


def test_select_records_is_seeded_and_keeps_order():
    frame = pd.DataFrame({"record_id": [f"r{i}" for i in range(20)]})
    a = select_records(frame, 5, seed=1)
    assert len(a) == 5
    assert list(a.index) == sorted(a.index)
    assert a.equals(select_records(frame, 5, seed=1))
    assert not a.equals(select_records(frame, 5, seed=2))
    assert select_records(frame, None, seed=1) is frame
    assert select_records(frame, 50, seed=1) is frame


def test_true_pairs_of_scene_and_real_records():
    scene = scene_records(["red"]).iloc[0]
    assert true_pairs_of(scene) == {("red", "circle")}
    assert true_pairs_of({"metadata": "not json"}) is None
    assert true_pairs_of({"metadata": json.dumps({"objects": []})}) == set()
    world = generate_scene_world(SceneWorldConfig(n_scenes=2, n_engravings=1, n_sequences=0, image_size=32,
                                                  damaged_fraction=0.0))
    scene_truth = true_pairs_of(world.iloc[0])
    assert scene_truth and scene_truth == set(object_pairs(json.loads(world.at[0, "metadata"])))
    assert true_pairs_of(world[world["corpus"] == "engraving"].iloc[0]) is None
    engraving = {"style": "engraving", "objects": [{"colour": "red", "shape": "star"}]}
    assert true_pairs_of({"metadata": json.dumps(engraving)}) is None  # no colour in the pixels


def test_eval_settings_name_unknown_keys():
    from multimodal_lab.config import from_params

    settings = from_params(EvalSettings, {"batch_size": 4, "generation": {"max_new_tokens": 5}})
    assert settings.generation.max_new_tokens == 5
    with pytest.raises(ValueError, match="batch_sise"):
        from_params(EvalSettings, {"batch_sise": 4})
    with pytest.raises(ValueError, match="max_new_token"):
        from_params(EvalSettings, {"generation": {"max_new_token": 5}})
    with pytest.raises(ValueError, match="max_records"):
        EvalSettings(max_records=0)
