"""art_generator's composer: layouts, the layered decoder, the layout prior, a loss that falls,
the same seed -> the same bytes and caption, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from art_fixtures import engraving_records, fit_composer, generate_in_another_process, png_bytes

from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.evaluation.art import caption_objects, parse_caption
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.art_composer import (
    SLOT_FIELDS,
    ArtComposer,
    ComposerConfig,
    layout_of,
    uniforms_for_seeds,
)

SIZE = 32


def tiny(**overrides) -> ComposerConfig:
    return ComposerConfig(**{"image_size": SIZE, "sprite_resolution": 32, "d_model": 32, "n_head": 2, "n_layer": 1,
                             "layout_tries": 16, **overrides})


@pytest.fixture(scope="module")
def world():
    images, metadata, captions = engraving_records(240, SIZE)
    tokenizer = train_tokenizer(captions, VocabConfig(kind="word"))
    return images, metadata, captions, tokenizer


@pytest.fixture(scope="module")
def trained(world):
    """A tiny composer fitted for 150 steps on 240 engravings, with its loss history."""
    images, metadata, captions, tokenizer = world
    torch.manual_seed(0)
    model = ArtComposer(tiny(), tokenizer)
    history = fit_composer(model, images, metadata, captions, steps=150, batch_size=32, lr=0.005)
    return model.eval(), history


def test_a_layout_row_holds_the_records_objects_in_order(world):
    _, metadata, _, tokenizer = world
    config = tiny()
    md = next(m for m in metadata if len(m["objects"]) == 2)
    row = layout_of(md, config)
    assert row.shape == (1 + SLOT_FIELDS * 3,)
    assert config.backdrops[int(row[0])] == md["background"]
    for k, obj in enumerate(md["objects"]):
        slot = row[1 + SLOT_FIELDS * k:1 + SLOT_FIELDS * (k + 1)].tolist()
        assert slot[0] == 1.0 and config.shapes[int(slot[1])] == obj["shape"] and config.sizes[int(slot[2])] == obj["size"]
        assert slot[4:] == pytest.approx([obj["x"], obj["y"], obj["radius"]])
    assert row[1 + SLOT_FIELDS * 2] == 0  # the third slot is empty
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        layout_of({**md, "objects": [{**md["objects"][0], "shape": "hexagon"}]}, config)
    with pytest.raises(ValueError, match="3 slots"):
        layout_of({**md, "objects": md["objects"] * 2}, config)


def test_the_layered_decoder_draws_objects_where_the_layout_puts_them(world):
    _, metadata, _, tokenizer = world
    model = ArtComposer(tiny(), tokenizer)
    md = {"background": "sky", "objects": [{"shape": "circle", "size": "large", "colour": "black",
                                            "x": 0.3, "y": 0.3, "radius": 0.2}]}
    empty = {"background": "sky", "objects": []}
    drawn = model.decoder(torch.stack([layout_of(md, model.config), layout_of(empty, model.config)]))
    drawn = drawn.detach()
    assert drawn.shape == (2, 3, SIZE, SIZE) and float(drawn.min()) >= 0 and float(drawn.max()) <= 1
    difference = (drawn[0] - drawn[1]).abs().mean(dim=0)  # where the object changed the picture
    ys, xs = torch.nonzero(difference > 1e-3, as_tuple=True)
    assert len(xs) > 0
    assert abs(float(xs.float().mean()) + 0.5 - 0.3 * SIZE) < 2 and abs(float(ys.float().mean()) + 0.5 - 0.3 * SIZE) < 2
    assert float(difference[:, SIZE * 3 // 4:].max()) < 1e-6  # nothing drawn far from it


def test_the_loss_falls_and_the_decoder_redraws_real_engravings(world, trained):
    images, metadata, captions, _ = world
    model, history = trained
    first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
    assert last[0] < 0.5 * first[0] and last[1] < 0.25 * first[1] and last[2] < 0.2 * first[2]
    # drawing the true layouts of real engravings beats the mean engraving by far
    layouts = torch.stack([layout_of(m, model.config) for m in metadata[:64]])
    drawn = model.draw(layouts).astype(float)
    real = images[:64].astype(float)
    mean_image = images.astype(float).mean(axis=0, keepdims=True)
    assert ((drawn - real) ** 2).mean() < 0.5 * ((mean_image - real) ** 2).mean()


def test_the_prior_learns_where_objects_go_and_places_them_apart(world, trained):
    _, metadata, _, _ = world
    model, _ = trained
    prior = model.prior
    assert prior.fitted
    radii = (prior.radius_sum / prior.radius_count).tolist()
    assert radii == pytest.approx([0.12, 0.16, 0.20], abs=1e-6)  # the world's sizes, learned
    numbers = uniforms_for_seeds(range(50), model.config.latent_dim)[:, model.config.max_caption_tokens:].numpy()
    for row_numbers in numbers:
        row = prior.place([(0, 1), (1, 0), (2, 0)], 3, row_numbers)
        slots = row[1:].reshape(3, SLOT_FIELDS)
        assert slots[:, 0].tolist() == [1, 1, 1] and int(row[0]) == 3
        for i in range(3):
            size = int(slots[i, 2])
            low, high = prior.centre_low[size], prior.centre_high[size]
            assert bool(((slots[i, 4:6].double() >= low - 1e-6) & (slots[i, 4:6].double() <= high + 1e-6)).all())
            for j in range(i + 1, 3):
                gap = float(torch.dist(slots[i, 4:6], slots[j, 4:6]) - slots[i, 6] - slots[j, 6])
                assert gap >= float(prior.min_gap) - 1e-5
    untrained = ArtComposer(tiny(), model.tokenizer)
    with pytest.raises(RuntimeError, match="seen no training layouts"):
        untrained.prior.place([(0, 0)], 0, numbers[0])


def test_generated_pairs_agree_by_construction(trained):
    model, _ = trained
    images, captions, layouts = model.generate(range(40), with_layouts=True)
    assert images.shape == (40, SIZE, SIZE, 3) and images.dtype == np.uint8
    for caption, layout in zip(captions, layouts):
        named = caption_objects(caption, strict=False)
        drawn = model.describe_layout(layout)["objects"]
        assert [(o["shape"], o["size"]) for o in drawn] == named[:3]
    assert sum(parse_caption(c) is not None for c in captions) >= 28  # a tiny caption model, mostly grammatical


def test_the_backdrop_reader_reads_the_setting(trained, world):
    _, metadata, captions, _ = world
    model, _ = trained
    read = model.read_backdrops(captions[:100])
    truth = [model.config.backdrops.index(m["background"]) for m in metadata[:100]]
    assert np.mean(np.array(read) == np.array(truth)) > 0.9


def test_caption_sampling_settings(trained):
    model, _ = trained
    numbers = uniforms_for_seeds(range(30), model.config.latent_dim)
    sampled = model.sample_captions(numbers, GenerationSettings(strategy="sample"))
    assert len(set(sampled)) > 10
    greedy = model.sample_captions(numbers, GenerationSettings(strategy="greedy"))
    top1 = model.sample_captions(numbers, GenerationSettings(strategy="sample", top_k=1))
    assert top1 == greedy and len(set(greedy)) == 1  # an unconditional caption model has one likeliest caption
    beam = model.sample_captions(numbers[:3], GenerationSettings(strategy="beam", num_beams=3))
    assert len(set(beam)) == 1 and beam[0]
    # lower temperature, fewer distinct captions
    cold = model.sample_captions(numbers, GenerationSettings(strategy="sample", temperature=0.3))
    assert len(set(cold)) < len(set(sampled))


def test_same_seed_same_bytes_and_caption_in_any_batch_and_process(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path / "model")
    seeds = list(range(100, 230))  # more than two decoding chunks
    images, captions = model.generate(seeds)
    for seed in (100, 163, 164, 229):
        alone, caption = model.generate([seed])
        assert alone[0].tobytes() == images[seed - 100].tobytes() and caption == [captions[seed - 100]]
    backwards, backwards_captions = model.generate(seeds[::-1])
    assert backwards[::-1].tobytes() == images.tobytes() and backwards_captions[::-1] == captions

    pair, pair_captions = generate_in_another_process("multimodal_lab.models.art_composer:ArtComposer",
                                                      tmp_path / "model", [229, 163])
    assert pair_captions == [captions[129], captions[63]]
    assert png_bytes(pair[0]) == png_bytes(images[129]) and png_bytes(pair[1]) == png_bytes(images[63])


def test_save_load_and_config_errors(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path / "m")
    loaded = ArtComposer.from_pretrained(tmp_path / "m")
    a, ca = model.generate([5, 6])
    b, cb = loaded.generate([5, 6])
    assert np.array_equal(a, b) and ca == cb
    with pytest.raises(ValueError, match="without repeats"):
        tiny(shapes=["circle", "circle"])
    with pytest.raises(ValueError, match="divisible"):
        tiny(d_model=33)
    with pytest.raises(ValueError, match="integers >= 0"):
        uniforms_for_seeds([-3], 4)
