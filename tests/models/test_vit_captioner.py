"""The ViT encoder and the captioner on tiny configs: shapes, errors, learning, beam search, saving."""
from __future__ import annotations

import pytest
import torch

from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.generation.naive_beam import naive_caption_ids
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.vision import build_encoder
from multimodal_lab.models.vit_captioner import ViTCaptioner, ViTCaptionerConfig

CAPTIONS = [
    "a small red star in the sky.", "a large blue ring on the grass.", "a medium green cross in the sea.",
    "a small red star and a large blue ring.", "there is a large green cross in the fog.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS * 4, VocabConfig(kind="word"))


def tiny_config(**changes) -> ViTCaptionerConfig:
    values = dict(encoder={"name": "vit", "patch_size": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "mlp_ratio": 2.0},
                  image_size=16, n_layer=1, n_head=2, n_embd=32, n_positions=24, max_caption_tokens=20)
    values.update(changes)
    return ViTCaptionerConfig(**values)


def test_vit_encoder_tokens_and_width():
    encoder = build_encoder({"name": "vit", "patch_size": 8, "hidden_size": 48, "num_heads": 4, "num_layers": 1},
                            out_dim=32, image_size=64)
    tokens = encoder.forward_features(torch.rand(3, 3, 64, 64))
    assert tokens.shape == (3, 64, 32)  # (64 / 8)^2 patches, projected to out_dim
    assert encoder.num_tokens(64) == 64
    with_cls = build_encoder({"name": "vit", "patch_size": 8, "hidden_size": 32, "num_heads": 4, "num_layers": 1,
                              "cls_token": True}, out_dim=32, image_size=64)
    assert with_cls.forward_features(torch.rand(1, 3, 64, 64)).shape == (1, 65, 32)


def test_vit_hybrid_stem_cuts_patches_from_the_feature_map():
    encoder = build_encoder({"name": "vit", "patch_size": 2, "stem_channels": [8, 16], "hidden_size": 32,
                             "num_heads": 2, "num_layers": 1}, out_dim=32, image_size=64)
    assert encoder.patch_size == 8  # 2 cells of a stride-4 map = 8 pixels
    assert encoder.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 64, 32)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"patch_size": 7}, "not divisible by patch_size 7; use a patch_size in"),
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size 30 is not divisible by num_heads 4; use num_heads in"),
        ({"stem_channels": [8, 8, 8, 8, 8, 8, 8]}, "not divisible by the stem's stride"),
    ],
)
def test_vit_sizes_that_do_not_divide_fail_with_advice(options, message):
    with pytest.raises(ValueError, match=message):
        build_encoder({"name": "vit", **options}, out_dim=32, image_size=64)


def test_unknown_encoder_option_is_named():
    with pytest.raises(ValueError, match="patch_sise"):
        ViTCaptionerConfig(encoder={"name": "vit", "patch_sise": 8})


def test_forward_backward_and_learning(tokenizer):
    torch.manual_seed(0)
    model = ViTCaptioner(tiny_config(), tokenizer)
    images = torch.rand(4, 3, 16, 16)
    from multimodal_lab.data.record_dataset import encode_texts, pad_texts

    batch = pad_texts([torch.tensor(t) for t in encode_texts(CAPTIONS[:4], tokenizer, 20)], tokenizer.pad_token_id)
    out = model(images, **batch)
    assert out.logits.shape == (4, batch["input_ids"].shape[1], len(tokenizer))
    assert out.num_targets == int((batch["labels"][:, 1:] != -100).sum())
    out.loss.backward()
    assert model.encoder.vit.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0  # reaches the ViT
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = float(out.loss.detach())
    for _ in range(40):
        optimiser.zero_grad()
        loss = model(images, **batch).loss
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.3 * first  # it memorises four captions


def test_object_loss_needs_pairs_and_trains_the_encoder(tokenizer):
    torch.manual_seed(0)
    model = ViTCaptioner(tiny_config(object_loss_weight=1.0), tokenizer)
    from multimodal_lab.data.record_dataset import encode_texts, pad_texts
    from multimodal_lab.families.vit_captioner import object_targets

    texts = ["a small red star and a large blue ring.", "nothing to see."]
    targets = object_targets(texts, model.config.object_colours, model.config.object_shapes)
    colours, shapes = model.config.object_colours, model.config.object_shapes
    assert targets[0, :2].tolist() == [[colours.index("red"), shapes.index("star")],
                                       [colours.index("blue"), shapes.index("ring")]]
    assert (targets[0, 2] == -100).all() and (targets[1] == -100).all()  # nothing named: no object loss
    batch = pad_texts([torch.tensor(t) for t in encode_texts(texts, tokenizer, 20)], tokenizer.pad_token_id)
    out = model(torch.rand(2, 3, 16, 16), **batch, object_targets=targets)
    assert out.object_loss is not None and float(out.object_loss) > 0
    out.loss.backward()
    assert model.object_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("num_beams", "length_penalty"), [(2, 1.0), (4, 1.0), (4, 0.0)])
def test_batched_beam_search_equals_the_naive_algorithm(tokenizer, num_beams, length_penalty):
    torch.manual_seed(1)
    model = ViTCaptioner(tiny_config(), tokenizer).eval()
    with torch.no_grad():  # sharper distributions than at initialisation, so beams really differ
        for parameter in model.decoder.parameters():
            parameter.mul_(4.0)
    features = model.encode(torch.rand(6, 3, 16, 16))
    settings = GenerationSettings(strategy="beam", num_beams=num_beams, max_new_tokens=12,
                                  length_penalty=length_penalty)
    batched = model.generate_ids(features, settings)
    naive = naive_caption_ids(model, features, num_beams=num_beams, max_new_tokens=12,
                              length_penalty=length_penalty)
    pad = tokenizer.pad_token_id
    for row, expected in enumerate(naive):
        got = batched[row].tolist()
        got = got[:len(expected)] if len(got) >= len(expected) else got
        assert got == expected, f"image {row}"
        assert all(t == pad for t in batched[row].tolist()[len(expected):])  # padding after the hypothesis
    greedy = model.generate_ids(features, GenerationSettings(strategy="greedy", max_new_tokens=12))
    assert greedy.shape[0] == 6


def test_cross_attention_maps_sum_to_one_over_the_image(tokenizer):
    model = ViTCaptioner(tiny_config(n_layer=2), tokenizer).eval()
    features = model.encode(torch.rand(3, 3, 16, 16))
    ids = model.generate_ids(features, GenerationSettings(strategy="greedy", max_new_tokens=8))
    maps = model.cross_attention_maps(features, ids)
    assert maps.shape == (2, 3, ids.shape[1], 16)  # layers, images, tokens, (16/4)^2 patches
    assert torch.allclose(maps.sum(dim=-1), torch.ones(2, 3, ids.shape[1]), atol=1e-5)
    assert model.decoder.config._attn_implementation == "sdpa"  # the fast kernel is back


def test_save_and_load_give_the_same_captions(tokenizer, tmp_path):
    torch.manual_seed(2)
    model = ViTCaptioner(tiny_config(), tokenizer).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = ViTCaptioner.from_pretrained(tmp_path / "model").eval()
    images = torch.rand(2, 3, 16, 16)
    settings = GenerationSettings(strategy="beam", num_beams=3, max_new_tokens=8)
    assert torch.equal(model.generate_ids(model.encode(images), settings),
                       loaded.generate_ids(loaded.encode(images), settings))
    from multimodal_lab.families import load_model

    assert isinstance(load_model(tmp_path / "model"), ViTCaptioner)  # the family is read from config.json


def test_config_errors_are_actionable():
    with pytest.raises(ValueError, match="n_embd 30 is not divisible by n_head 4"):
        tiny_config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="raise n_positions"):
        tiny_config(max_caption_tokens=30, n_positions=24)


def test_object_features_start_neutral_and_learn(tokenizer):
    torch.manual_seed(0)
    plain = ViTCaptioner(tiny_config(object_loss_weight=1.0), tokenizer)
    torch.manual_seed(0)
    model = ViTCaptioner(tiny_config(object_loss_weight=1.0, object_features=True), tokenizer)
    images = torch.rand(2, 3, 16, 16)
    # zero-initialised: the decoder first sees exactly the encoder's tokens
    assert torch.equal(model.encode(images), plain.encode(images))
    from multimodal_lab.data.record_dataset import encode_texts, pad_texts
    from multimodal_lab.families.vit_captioner import object_targets

    texts = ["a small red star and a large blue ring.", "a medium green cross in the sea."]
    targets = object_targets(texts, model.config.object_colours, model.config.object_shapes)
    batch = pad_texts([torch.tensor(t) for t in encode_texts(texts, tokenizer, 20)], tokenizer.pad_token_id)
    model(images, **batch, object_targets=targets).loss.backward()
    assert model.object_embedding.weight.grad.abs().sum() > 0  # the caption loss reaches the pair embedding
    with pytest.raises(ValueError, match="needs object_loss_weight > 0"):
        tiny_config(object_features=True)


def test_emphasis_changes_the_caption_loss(tokenizer):
    torch.manual_seed(0)
    plain = ViTCaptioner(tiny_config(), tokenizer)
    torch.manual_seed(0)
    emphasised = ViTCaptioner(tiny_config(emphasis_words=["red", "star"], emphasis_weight=4.0), tokenizer)
    from multimodal_lab.data.record_dataset import encode_texts, pad_texts

    batch = pad_texts([torch.tensor(t) for t in encode_texts(CAPTIONS[:2], tokenizer, 20)], tokenizer.pad_token_id)
    images = torch.rand(2, 3, 16, 16)
    a, b = plain(images, **batch), emphasised(images, **batch)
    assert torch.equal(a.logits, b.logits) and a.num_targets == b.num_targets
    assert not torch.isclose(a.loss, b.loss)


def test_factored_pair_scores_are_the_product_of_colour_and_shape(tokenizer):
    torch.manual_seed(0)
    model = ViTCaptioner(tiny_config(object_loss_weight=1.0, object_pairs="factored"), tokenizer)
    colours, shapes = len(model.config.object_colours), len(model.config.object_shapes)
    assert model.object_head.out_features == colours + shapes  # no per-pair classes to learn
    features = torch.randn(2, 5, 32)
    scores = model.object_scores(features)
    assert scores.shape == (2, 5, colours + shapes + colours * shapes)
    p = torch.sigmoid(scores)
    pair = p[..., colours + shapes:].reshape(2, 5, colours, shapes)
    expected = p[..., :colours, None] * p[..., None, colours:colours + shapes]
    assert torch.allclose(pair, expected, atol=1e-5)  # P(red star) = P(red) x P(star) on the same token
    joint = ViTCaptioner(tiny_config(object_loss_weight=1.0), tokenizer)
    assert joint.object_head.out_features == colours + shapes + colours * shapes
    with pytest.raises(ValueError, match="object_pairs must be"):
        tiny_config(object_loss_weight=1.0, object_pairs="both")


def test_object_tokens_carry_the_heads_likeliest_pairs(tokenizer):
    torch.manual_seed(0)
    model = ViTCaptioner(tiny_config(object_loss_weight=1.0, object_pairs="factored", object_tokens=2), tokenizer)
    colours, shapes = model.config.object_colours, model.config.object_shapes
    with torch.no_grad():  # a head that reads "red" off feature 0, "star" off 1, "blue" off 2, "ring" off 3
        model.object_head.weight.zero_()
        model.object_head.bias.fill_(-10.0)
        for unit, index in ((0, colours.index("red")), (2, colours.index("blue"))):
            model.object_head.weight[index, unit] = 20.0
        for unit, index in ((1, len(colours) + shapes.index("star")), (3, len(colours) + shapes.index("ring"))):
            model.object_head.weight[index, unit] = 20.0
    features = torch.zeros(1, 16, 32)
    features[0, 5, :2] = 1.0  # a red star on image token 5
    features[0, 9, 2:4] = 1.0  # a blue ring on image token 9
    memory = model._with_objects(features)
    assert memory.shape == (1, 2 + 16, 32)  # the object tokens, then the image tokens
    expected = {colours.index("red") * len(shapes) + shapes.index("star"): 5,
                colours.index("blue") * len(shapes) + shapes.index("ring"): 9}
    for k in range(2):
        pair = next(p for p, at in expected.items()
                    if torch.allclose(memory[0, k], features[0, at] + model.pair_embedding.weight[p]
                                      + model.presence, atol=1e-3))
        expected.pop(pair)  # each object token is one of the two objects, located where it is
    assert not expected
    assert torch.equal(memory[0, 2:], features[0])
    images = torch.rand(2, 3, 16, 16)
    maps = model.cross_attention_maps(model.encode(images), torch.tensor([[4, 5, 6], [4, 5, 6]]))
    assert maps.shape[-1] == 16  # the maps stay over the image's patches
    with pytest.raises(ValueError, match="needs object_loss_weight > 0"):
        tiny_config(object_tokens=3)
