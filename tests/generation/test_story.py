"""Story generation: greedy/sample/beam through GPT-2's generate with a prefix."""
from __future__ import annotations

import pytest
import torch
from tiny_models import make_word_tokenizer
from transformers import PreTrainedTokenizerFast

from multimodal_lab.generation.story import (
    GenerationSettings,
    clean_text,
    generate_stories,
    generate_token_ids,
)
from multimodal_lab.models.story_gpt2 import StoryGPT2Config, build_story_gpt2

WORDS = "a the red blue green circle square star sat on left right top . it was calm".split()
STORIES = ["a red circle sat on the left .", "a blue square sat on the top .", "it was calm . a green star ."]
COLOURS = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def word_tokenizer() -> PreTrainedTokenizerFast:
    return make_word_tokenizer(WORDS)


def images() -> torch.Tensor:
    return torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 8, 8) for c in COLOURS])


def tiny_model():
    torch.manual_seed(0)
    config = StoryGPT2Config(encoder={"name": "cnn", "channels": [8, 16], "grid": 1}, image_size=8, prefix_tokens=2,
                             mapper_hidden=32, n_layer=1, n_head=2, n_embd=32, n_positions=24,
                             max_story_tokens=12)
    return build_story_gpt2(config, word_tokenizer())


@pytest.fixture(scope="module")
def trained():
    """A model that has memorised one story per solid-colour image."""
    model = tiny_model()
    tokenizer = model.tokenizer
    encoded = [[tokenizer.bos_token_id, *tokenizer(s, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
               for s in STORIES]
    longest = max(map(len, encoded))
    input_ids = torch.full((3, longest), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(images(), input_ids, mask, labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05
    return model


def test_greedy_tells_each_image_its_story(trained):
    assert generate_stories(trained, images(), GenerationSettings(max_new_tokens=12)) == [
        "a red circle sat on the left.", "a blue square sat on the top.", "it was calm. a green star."]


def test_beam_agrees_with_greedy_on_a_memorised_story(trained):
    settings = GenerationSettings(max_new_tokens=12, strategy="beam", num_beams=3)
    assert generate_stories(trained, images(), settings)[0] == "a red circle sat on the left."


def test_small_batches_give_the_same_stories(trained):
    settings = GenerationSettings(max_new_tokens=12)
    assert generate_stories(trained, images(), settings, batch_size=1) == generate_stories(trained, images(), settings)


def test_greedy_with_cache_matches_step_by_step_argmax(trained):
    """generate() returns only new tokens and agrees with the uncached forward pass."""
    model = trained.eval()
    ids = generate_token_ids(model, images()[:1], GenerationSettings(max_new_tokens=5))
    assert ids.shape[1] <= 5
    tokens = torch.tensor([[model.tokenizer.bos_token_id]])
    for _ in range(ids.shape[1]):
        logits = model(images()[:1], tokens, torch.ones_like(tokens)).logits
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens[:, 1:], ids)


def test_prefix_override_replaces_the_image(trained):
    settings = GenerationSettings(max_new_tokens=12)
    own = trained.encode_prefix(images()).detach()
    swapped = generate_stories(trained, images(), settings, prefix_override=own.flip(0))
    assert swapped == generate_stories(trained, images().flip(0), settings)
    zeros = generate_stories(trained, images(), settings, prefix_override=torch.zeros_like(own))
    assert len(set(zeros)) == 1  # without image information every image gets the same story


def test_sampling_is_seeded_and_leaves_global_rng_alone():
    model = tiny_model()  # untrained: sampling spreads over the vocabulary
    settings = GenerationSettings(max_new_tokens=8, strategy="sample", temperature=1.5, seed=7)
    before = torch.get_rng_state()
    first = generate_stories(model, images(), settings)
    assert torch.equal(torch.get_rng_state(), before)
    assert generate_stories(model, images(), settings) == first
    other = generate_stories(model, images(), GenerationSettings(max_new_tokens=8, strategy="sample",
                                                                 temperature=1.5, seed=8))
    assert other != first
    assert not any(token in story for story in first for token in ("<bos>", "<eos>", "<pad>"))


def test_settings_are_checked_and_text_is_cleaned():
    with pytest.raises(ValueError, match="strategy must be one of"):
        GenerationSettings(strategy="nucleus")
    with pytest.raises(ValueError, match="num_beams >= 2"):
        GenerationSettings(strategy="beam", num_beams=1)
    with pytest.raises(ValueError, match="temperature must be positive"):
        GenerationSettings(temperature=0.0)
    assert clean_text("  a red circle .  it was calm ,  ok  ") == "a red circle. it was calm, ok"


def test_generation_longer_than_the_context_fails_clearly():
    model = tiny_model()  # 2 prefix tokens, n_positions 24
    with pytest.raises(ValueError, match="lower max_new_tokens to at most 21"):
        generate_stories(model, images()[:1], GenerationSettings(max_new_tokens=22))
    assert len(generate_stories(model, images()[:1], GenerationSettings(max_new_tokens=21))) == 1
