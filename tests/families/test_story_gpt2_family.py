"""The story_gpt2 family on the shared machinery: its conditioner, controls and evaluation."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest
import torch
from PIL import Image

from multimodal_lab.data.record_dataset import encode_texts
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.families import available_families, family_of_directory, get_family, load_model
from multimodal_lab.families.story_gpt2 import StoryEvalSettings, evaluate_story_model, training_data
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.preprocess import decode_image, images_to_tensor
from multimodal_lab.models.story_gpt2 import StoryGPT2, StoryGPT2Config

from scene_fixtures import scene_records

FAST = dict(show_progress=False, generation=GenerationSettings(max_new_tokens=6))


def _png(colour, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _real_records(n: int = 5) -> pd.DataFrame:
    return records_frame(
        make_record(image=_png((i * 40, 100, 200 - i * 30)), source="web", corpus="engraving",
                    story=None if i == 0 else f"an old engraving of a harbour number {i}.", license="CC-BY-4.0")
        for i in range(n)
    )


@pytest.fixture(scope="module")
def tokenizer():
    texts = list(scene_records()["story"]) + list(_real_records()["story"].dropna())
    return train_tokenizer(texts, VocabConfig(kind="word", min_frequency=1))


def _tiny_model(tokenizer, seed: int = 0) -> StoryGPT2:
    torch.manual_seed(seed)
    config = StoryGPT2Config(
        encoder={"name": "cnn", "channels": [8], "blocks_per_stage": 0, "grid": 2}, image_size=16,
        prefix_tokens=4, mapper_hidden=0, n_layer=1, n_head=2, n_embd=16, n_positions=48, max_story_tokens=32,
    )
    return StoryGPT2(config, tokenizer).eval()


def _make_prefix_constant(model: StoryGPT2, value: float) -> None:
    """The single-linear mapper ignores its input: every image gets the same prefix."""
    with torch.no_grad():
        model.mapper.net.weight.zero_()
        model.mapper.net.bias.fill_(value)


def _settings(**kwargs) -> StoryEvalSettings:
    """Controls that need no training records; a test that wants the others asks for them."""
    return StoryEvalSettings(**{**FAST, "controls": ["shuffled_images", "zeroed_prefix"], "baselines": [], **kwargs})


def test_default_conditions_are_the_in_distribution_controls_and_the_retrieval_baseline(tokenizer):
    settings = StoryEvalSettings(**FAST)
    assert settings.controls == ["shuffled_images", "mean_prefix"] and settings.baselines == ["nearest_neighbour"]
    records = scene_records()
    result = evaluate_story_model(_tiny_model(tokenizer), records.iloc[:4], settings, train_records=records)
    table = result.metrics.set_index("condition")
    assert list(table.index) == ["model", "shuffled_images", "mean_prefix", "nearest_neighbour"]
    # the retrieval baseline copies the story of the same-coloured training image: perfect here
    assert table.at["nearest_neighbour", "pair_f1"] == 1.0 and table.at["nearest_neighbour", "kind"] == "baseline"


def test_the_family_is_registered_with_its_pieces():
    assert "story_gpt2" in available_families()
    family = get_family("story_gpt2")
    assert family.corpus == "story" and family.config_class is StoryGPT2Config
    assert family.headline_metric == "pair_f1"
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        get_family("nope")


def test_a_saved_model_directory_names_its_family_and_loads_back(tokenizer, tmp_path):
    model = _tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "model")
    assert family_of_directory(tmp_path / "model").name == "story_gpt2"
    loaded = load_model(tmp_path / "model")
    assert isinstance(loaded, StoryGPT2)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no config.json"):
        family_of_directory(tmp_path)


def test_training_data_uses_the_story_column(tokenizer):
    model = _tiny_model(tokenizer)
    dataset, collate = training_data(model, scene_records(["red", "blue"]))
    batch = collate([dataset[0], dataset[1]])
    assert set(batch) == {"images", "input_ids", "attention_mask", "labels"}
    out = model(**batch)
    assert out.loss is not None and torch.isfinite(out.loss)


def test_image_blind_model_gives_identical_model_and_shuffled_rows(tokenizer):
    model = _tiny_model(tokenizer)
    _make_prefix_constant(model, 0.3)
    result = evaluate_story_model(model, scene_records(), _settings(batch_size=3))
    table = result.metrics.set_index("condition")
    model_row, shuffled_row = table.loc["model"], table.loc["shuffled_images"]
    pd.testing.assert_series_equal(model_row.drop("kind"), shuffled_row.drop("kind"), check_names=False, rtol=1e-6)
    assert [s["outputs"]["model"] for s in result.samples] == [s["outputs"]["shuffled_images"] for s in result.samples]
    assert math.isfinite(table.at["model", "perplexity"]) and table.at["model", "perplexity"] > 1.0
    assert result.summary["test/perplexity_ratio/shuffled_images"] == pytest.approx(1.0)


def _forward_perplexity(model: StoryGPT2, records: pd.DataFrame) -> float:
    dataset, collate = training_data(model, records)
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return math.exp(model(**batch).loss.item())


@pytest.mark.parametrize("batch_size", [2, 16])
def test_model_perplexity_matches_the_forward_loss(tokenizer, batch_size):
    model = _tiny_model(tokenizer, seed=1)
    records = scene_records()
    result = evaluate_story_model(model, records, _settings(batch_size=batch_size))
    # token-pooled over batches, so the batch size does not change it
    assert result.summary["test/perplexity"] == pytest.approx(_forward_perplexity(model, records), rel=1e-5)


def test_text_logits_follow_the_forward_layout(tokenizer):
    model = _tiny_model(tokenizer, seed=2)
    records = scene_records(["red", "blue"])
    images = images_to_tensor([decode_image(b) for b in records["image"]], 16)
    ids = encode_texts(list(records["story"]), tokenizer, 32)
    input_ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True)
    mask = (input_ids != tokenizer.pad_token_id).long()
    with torch.no_grad():
        expected = model(images, input_ids, mask).logits
        got = model.text_logits(model.encode_prefix(images), input_ids, mask)
    torch.testing.assert_close(got, expected)


def test_zeroed_prefix_perplexity_equals_model_when_the_prefix_is_zero(tokenizer):
    model = _tiny_model(tokenizer, seed=3)
    _make_prefix_constant(model, 0.0)
    s = evaluate_story_model(model, scene_records(), _settings(batch_size=3)).summary
    assert s["test/zeroed_prefix/perplexity"] == pytest.approx(s["test/perplexity"], rel=1e-6)
    assert s["test/zeroed_prefix/pair_f1"] == s["test/pair_f1"]


def test_mean_prefix_control_is_the_average_training_prefix(tokenizer):
    model = _tiny_model(tokenizer, seed=5)
    records = scene_records()
    settings = _settings(controls=["mean_prefix"], null_records=4, seed=1)
    result = evaluate_story_model(model, records.iloc[:3], settings, train_records=records)
    # with an input-blind mapper every prefix is the mean, so the control equals the model
    _make_prefix_constant(model, 0.2)
    blind = evaluate_story_model(model, records.iloc[:3], settings, train_records=records).metrics.set_index("condition")
    assert blind.at["mean_prefix", "perplexity"] == pytest.approx(blind.at["model", "perplexity"], rel=1e-6)
    assert "mean_prefix" in set(result.metrics["condition"])
    with pytest.raises(ValueError, match="need the training records"):
        evaluate_story_model(model, records, settings)


def test_unknown_control_names_the_known_ones(tokenizer):
    with pytest.raises(ValueError, match="shuffled_images"):
        evaluate_story_model(_tiny_model(tokenizer), scene_records(), _settings(controls=["scrambled"]))


def test_real_records_without_metadata_get_nan_grounding_but_text_metrics(tokenizer):
    records = _real_records(5)
    before = records.copy()
    result = evaluate_story_model(_tiny_model(tokenizer), records, _settings(batch_size=2))
    table = result.metrics.set_index("condition")
    for name in ("model", "shuffled_images", "zeroed_prefix"):
        assert math.isnan(table.at[name, "pair_f1"])
        assert table.at[name, "num_grounded"] == 0
        assert table.at[name, "num_records"] == 5
        assert math.isfinite(table.at[name, "perplexity"])
    assert math.isnan(result.summary["test/pair_f1_margin/shuffled_images"])
    assert result.samples[0]["reference_note"] == ""
    assert result.samples[0]["reference"] is None  # the record without a story
    pd.testing.assert_frame_equal(records, before)  # input not mutated


def test_records_without_any_text_get_nan_perplexity(tokenizer):
    records = _real_records(3).assign(story=None)
    result = evaluate_story_model(_tiny_model(tokenizer), records, _settings())
    assert math.isnan(result.summary["test/perplexity"])
    assert result.metrics["perplexity"].isna().all()
    assert result.summary["test/num_records"] == 3


def test_max_records_caps_and_runs_are_deterministic(tokenizer):
    model = _tiny_model(tokenizer, seed=4)
    settings = _settings(max_records=5, batch_size=2, seed=7, device="auto")
    first = evaluate_story_model(model, scene_records(), settings)
    second = evaluate_story_model(model, scene_records(), settings)
    assert first.summary["test/num_records"] == 5
    assert next(model.parameters()).device.type == "cpu" and not model.training
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    assert [s["outputs"] for s in first.samples] == [s["outputs"] for s in second.samples]
