import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.scene_world import COLOUR_RGB, COLOURS, SceneWorldConfig, generate_scene_world, object_pairs
from multimodal_lab.data.story_dataset import StoryCollator, encode_texts
from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.evaluation import story_eval
from multimodal_lab.evaluation.story_eval import (
    CONDITIONS,
    METRIC_COLUMNS,
    EvalSettings,
    _text_logits,
    evaluate_story_model,
    samples_to_jsonable,
    seeded_derangement,
    select_records,
    true_pairs_of,
)
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.preprocess import decode_image, images_to_tensor
from multimodal_lab.models.story_gpt2 import StoryGPT2, StoryGPT2Config

FAST = dict(show_progress=False, generation=GenerationSettings(max_new_tokens=6))


def _png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _scene_records(colours=COLOURS) -> pd.DataFrame:
    """One solid-colour image per colour; the truth is one circle of that colour."""
    rows = []
    for colour in colours:
        rows.append(
            make_record(
                image=_png(COLOUR_RGB[colour]),
                source="scene_world",
                corpus="scene",
                caption=f"a {colour} circle.",
                story=f"There was a {colour} circle. The {colour} circle was calm.",
                license="CC0-1.0",
                metadata={"objects": [{"colour": colour, "shape": "circle", "size": "small"}]},
            )
        )
    return records_frame(rows)


def _real_records(n: int = 5) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows.append(
            make_record(
                image=_png((i * 40, 100, 200 - i * 30)),
                source="web",
                corpus="engraving",
                story=None if i == 0 else f"an old engraving of a harbour number {i}.",
                license="CC-BY-4.0",
            )
        )
    return records_frame(rows)


@pytest.fixture(scope="module")
def tokenizer():
    texts = list(_scene_records()["story"]) + list(_real_records()["story"].dropna())
    return train_tokenizer(texts, VocabConfig(kind="word", min_frequency=1))


def _tiny_model(tokenizer, seed: int = 0) -> StoryGPT2:
    torch.manual_seed(seed)
    config = StoryGPT2Config(
        encoder_channels=[8], encoder_blocks=0, encoder_grid=2, image_size=16, prefix_tokens=4,
        mapper_hidden=0, n_layer=1, n_head=2, n_embd=16, n_positions=48, max_story_tokens=32,
    )
    return StoryGPT2(config, tokenizer).eval()


def _make_prefix_constant(model: StoryGPT2, value: float) -> None:
    """The single-linear mapper ignores its input: every image gets the same prefix."""
    with torch.no_grad():
        model.mapper.net.weight.zero_()
        model.mapper.net.bias.fill_(value)


# ---------------------------------------------------------------------------- helpers


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
    scene = _scene_records(["red"]).iloc[0]
    assert true_pairs_of(scene) == {("red", "circle")}
    assert true_pairs_of(_real_records(1).iloc[0]) is None
    assert true_pairs_of({"metadata": "not json"}) is None
    assert true_pairs_of({"metadata": json.dumps({"objects": []})}) == set()
    world = generate_scene_world(SceneWorldConfig(n_scenes=2, n_engravings=1, n_sequences=0, image_size=32,
                                                  damaged_fraction=0.0))
    scene_truth = true_pairs_of(world.iloc[0])
    assert scene_truth and scene_truth == set(object_pairs(json.loads(world.at[0, "metadata"])))
    assert true_pairs_of(world[world["corpus"] == "engraving"].iloc[0]) is None
    engraving = {"style": "engraving", "objects": [{"colour": "red", "shape": "star"}]}
    assert true_pairs_of({"metadata": json.dumps(engraving)}) is None  # no colour in the pixels


def test_eval_settings_from_dict_names_unknown_keys():
    settings = EvalSettings.from_dict({"batch_size": 4, "generation": {"max_new_tokens": 5}})
    assert settings.generation.max_new_tokens == 5
    with pytest.raises(ValueError, match="batch_sise"):
        EvalSettings.from_dict({"batch_sise": 4})
    with pytest.raises(ValueError, match="max_new_token"):
        EvalSettings.from_dict({"generation": {"max_new_token": 5}})
    with pytest.raises(ValueError, match="max_records"):
        EvalSettings(max_records=0)


# ---------------------------------------------------------------- controls, patched generator


def _nearest_colour(image: torch.Tensor) -> str:
    mean = (image.mean(dim=(1, 2)) * 255).tolist()
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOUR_RGB[c], mean)))


def _oracle_generate(model, images, settings=None, prefix_override=None, batch_size=256):
    """Names exactly the object in the image; says nothing useful without an image prefix."""
    if prefix_override is not None:
        return ["there is nothing to see." for _ in range(images.shape[0])]
    return [f"a {_nearest_colour(image)} circle is here." for image in images]


def _blind_generate(model, images, settings=None, prefix_override=None, batch_size=256):
    """Ignores the image: the same two stories alternate whatever the input."""
    return ["a red circle waits." if i % 2 == 0 else "a blue square sleeps." for i in range(images.shape[0])]


def test_grounded_generator_beats_both_controls(tokenizer, monkeypatch):
    monkeypatch.setattr(story_eval, "generate_stories", _oracle_generate)
    records = _scene_records()
    result = evaluate_story_model(_tiny_model(tokenizer), records, EvalSettings(batch_size=3, **FAST))
    table = result.metrics.set_index("condition")
    assert list(result.metrics["condition"]) == list(CONDITIONS)
    assert list(result.metrics.columns) == ["condition", *METRIC_COLUMNS]
    assert table.at["model", "pair_f1"] == pytest.approx(1.0)
    # the derangement gives every record another colour, so no pair can match
    assert table.at["shuffled_images", "pair_f1"] == pytest.approx(0.0)
    assert table.at["shuffled_images", "shape_f1"] == pytest.approx(1.0)
    assert table.at["shuffled_images", "colour_f1"] == pytest.approx(0.0)
    assert table.at["zeroed_prefix", "pair_f1"] == pytest.approx(0.0)
    assert result.summary["val/pair_f1"] == pytest.approx(1.0)
    assert result.summary["grounding_gap"] == pytest.approx(1.0)
    assert result.summary["grounding_gap_zeroed"] == pytest.approx(1.0)
    assert table.at["model", "num_grounded"] == len(records)
    # the zeroed control writes the same sentence every time: distinct-1 is 5 words / 40
    assert table.at["zeroed_prefix", "distinct_1"] == pytest.approx(5 / (5 * len(records)))


def test_image_blind_generator_scores_the_same_with_shuffled_images(tokenizer, monkeypatch):
    monkeypatch.setattr(story_eval, "generate_stories", _blind_generate)
    result = evaluate_story_model(_tiny_model(tokenizer), _scene_records(), EvalSettings(batch_size=4, **FAST))
    table = result.metrics.set_index("condition")
    for column in ("pair_precision", "pair_recall", "pair_f1", "colour_f1", "shape_f1", "distinct_1"):
        assert table.at["model", column] == table.at["shuffled_images", column], column
    assert result.summary["grounding_gap"] == 0.0
    assert 0.0 < table.at["model", "pair_f1"] < 1.0


def test_samples_record_each_condition_and_the_shuffled_source(tokenizer, monkeypatch):
    monkeypatch.setattr(story_eval, "generate_stories", _oracle_generate)
    records = _scene_records()
    result = evaluate_story_model(_tiny_model(tokenizer), records, EvalSettings(num_samples=3, **FAST))
    assert len(result.samples) == 3
    first = result.samples[0]
    assert first["record_id"] == records.at[0, "record_id"]
    assert first["image"] == records.at[0, "image"]
    assert first["reference"] == records.at[0, "story"]
    assert set(first["stories"]) == set(CONDITIONS)
    assert first["true_pairs"] == [("red", "circle")]
    assert first["predicted_pairs"]["model"] == [("red", "circle")]
    assert first["shuffled_image_record_id"] != first["record_id"]
    shuffled_colour = first["stories"]["shuffled_images"].split()[1]
    source = records.set_index("record_id").loc[first["shuffled_image_record_id"]]
    assert f"a {shuffled_colour} circle" in source["story"]
    json.dumps(samples_to_jsonable(result.samples))  # JSON-ready for a JSON dataset


# ----------------------------------------------------------------------- the real model


def test_image_blind_model_gives_identical_model_and_shuffled_rows(tokenizer):
    model = _tiny_model(tokenizer)
    _make_prefix_constant(model, 0.3)
    result = evaluate_story_model(model, _scene_records(), EvalSettings(batch_size=3, **FAST))
    table = result.metrics.set_index("condition")
    model_row, shuffled_row = table.loc["model"], table.loc["shuffled_images"]
    pd.testing.assert_series_equal(model_row, shuffled_row, check_names=False, rtol=1e-6)
    assert [s["stories"]["model"] for s in result.samples] == [s["stories"]["shuffled_images"] for s in result.samples]
    assert math.isfinite(table.at["model", "perplexity"]) and table.at["model", "perplexity"] > 1.0
    assert result.summary["perplexity_ratio_shuffled"] == pytest.approx(1.0)


def _forward_perplexity(model: StoryGPT2, records: pd.DataFrame) -> float:
    size = model.config.image_size
    texts = [t for t in records["story"] if isinstance(t, str)]
    keep = records[records["story"].notna()]
    ids = encode_texts(texts, model.tokenizer, model.config.max_story_tokens)
    pixels = images_to_tensor([decode_image(b) for b in keep["image"]], size)
    items = [{"pixels": (p.permute(1, 2, 0) * 255).round().to(torch.uint8), "input_ids": torch.tensor(i)}
             for p, i in zip(pixels, ids)]
    batch = StoryCollator(model.tokenizer.pad_token_id)(items)
    with torch.no_grad():
        out = model(batch["images"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    return math.exp(out.loss.item())


@pytest.mark.parametrize("batch_size", [2, 16])
def test_model_perplexity_matches_the_forward_loss(tokenizer, batch_size):
    model = _tiny_model(tokenizer, seed=1)
    records = _scene_records()
    result = evaluate_story_model(model, records, EvalSettings(batch_size=batch_size, **FAST))
    # token-pooled over batches, so the batch size does not change it
    assert result.summary["val/perplexity"] == pytest.approx(_forward_perplexity(model, records), rel=1e-5)


def test_zeroed_prefix_logits_follow_the_model_layout(tokenizer):
    model = _tiny_model(tokenizer, seed=2)
    records = _scene_records(["red", "blue"])
    images = images_to_tensor([decode_image(b) for b in records["image"]], 16)
    ids = encode_texts(list(records["story"]), tokenizer, 32)
    input_ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True)
    mask = (input_ids != tokenizer.pad_token_id).long()
    with torch.no_grad():
        expected = model(images, input_ids, mask).logits
        got = _text_logits(model, model.encode_prefix(images), input_ids, mask)
    torch.testing.assert_close(got, expected)


def test_zeroed_prefix_perplexity_equals_model_when_the_prefix_is_zero(tokenizer):
    model = _tiny_model(tokenizer, seed=3)
    _make_prefix_constant(model, 0.0)
    result = evaluate_story_model(model, _scene_records(), EvalSettings(batch_size=3, **FAST))
    s = result.summary
    assert s["control_zeroed/perplexity"] == pytest.approx(s["val/perplexity"], rel=1e-6)
    assert s["control_zeroed/pair_f1"] == s["val/pair_f1"]


def test_real_records_without_metadata_get_nan_grounding_but_text_metrics(tokenizer):
    records = _real_records(5)
    before = records.copy()
    result = evaluate_story_model(_tiny_model(tokenizer), records, EvalSettings(batch_size=2, **FAST))
    table = result.metrics.set_index("condition")
    for name in CONDITIONS:
        assert math.isnan(table.at[name, "pair_f1"])
        assert math.isnan(table.at[name, "colour_f1"])
        assert table.at[name, "num_grounded"] == 0
        assert table.at[name, "num_records"] == 5
        assert math.isfinite(table.at[name, "perplexity"])
    assert math.isnan(result.summary["grounding_gap"])
    assert result.samples[0]["true_pairs"] is None
    assert result.samples[0]["reference"] is None  # the record without a story
    pd.testing.assert_frame_equal(records, before)  # input not mutated


def test_records_without_any_text_get_nan_perplexity(tokenizer):
    records = _real_records(3).assign(story=None)
    result = evaluate_story_model(_tiny_model(tokenizer), records, EvalSettings(**FAST))
    assert math.isnan(result.summary["val/perplexity"])
    assert result.metrics["perplexity"].isna().all()
    assert result.summary["val/num_records"] == 3


def test_max_records_caps_and_runs_are_deterministic(tokenizer):
    model = _tiny_model(tokenizer, seed=4)
    settings = EvalSettings(max_records=5, batch_size=2, seed=7, device="auto", **FAST)
    first = evaluate_story_model(model, _scene_records(), settings)
    second = evaluate_story_model(model, _scene_records(), settings)
    assert first.summary["val/num_records"] == 5
    assert next(model.parameters()).device.type == "cpu" and not model.training
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    assert [s["stories"] for s in first.samples] == [s["stories"] for s in second.samples]
    assert [s["record_id"] for s in first.samples] == [s["record_id"] for s in second.samples]


def test_single_record_skips_the_shuffle_control(tokenizer):
    result = evaluate_story_model(_tiny_model(tokenizer), _scene_records(["red"]), EvalSettings(**FAST))
    table = result.metrics.set_index("condition")
    assert math.isnan(table.at["shuffled_images", "pair_f1"])
    assert table.at["model", "num_records"] == 1
    assert "shuffled_images" not in result.samples[0]["stories"]


def test_missing_columns_fail_with_the_column_name(tokenizer):
    with pytest.raises(ValueError, match="'metadata'"):
        evaluate_story_model(_tiny_model(tokenizer), _scene_records().drop(columns="metadata"), EvalSettings(**FAST))
