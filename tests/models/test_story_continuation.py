"""story_continuation's model: shapes, the four variants, the warp, a loss that falls, save/load."""
from __future__ import annotations

import pytest
import torch
from tiny_models import make_word_tokenizer

from multimodal_lab.generation.story import GenerationSettings, generate_from_prefix
from multimodal_lab.models.story_continuation import (
    StoryContinuation,
    StoryContinuationConfig,
    edge_loss,
    warp,
)

WORDS = ["the", "red", "blue", "circle", "square", "moves", "left", "right", "once", "more", "grows"]
VARIANTS = {"baseline": {}, "cross_modal": {"cross_modal": True}, "vae": {"vae": True},
            "cross_modal_vae": {"cross_modal": True, "vae": True}}


def tiny(**overrides) -> StoryContinuationConfig:
    base = {"image_size": 16, "channels": [8, 8, 8, 16], "latent_channels": 4, "d_model": 16, "cross_heads": 4, "n_head": 2,
                "n_layer": 1, "state_tokens": 2, "n_positions": 32, "max_sentence_tokens": 12}
    return StoryContinuationConfig(**{**base, **overrides})


def batch(b: int = 3, t: int = 6, vocab: int = 10, size: int = 16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (b, 5, t), generator=generator)
    return {"images": torch.rand(b, 5, 3, size, size, generator=generator), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


@pytest.fixture(scope="module")
def tokenizer():
    return make_word_tokenizer(WORDS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_runs_forward_and_backward(tokenizer, variant):
    torch.manual_seed(0)
    model = StoryContinuation(tiny(**VARIANTS[variant]), tokenizer)
    data = batch(vocab=len(tokenizer))
    out = model(**data)
    assert out.image.shape == (3, 3, 16, 16)
    assert float(out.image.detach().min()) >= 0.0 and float(out.image.detach().max()) <= 1.0
    assert out.logits.shape == (3, 6, len(tokenizer))
    assert ("kl" in out.parts) == VARIANTS[variant].get("vae", False)
    out.loss.backward()
    touched = [name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(name.startswith("unet.") for name in touched) and any(name.startswith("lm.") for name in touched)
    if VARIANTS[variant].get("cross_modal"):
        assert any(name.startswith("cross.") for name in touched)


def test_the_text_only_floor_has_no_image_path(tokenizer):
    model = StoryContinuation(tiny(use_images=False), tokenizer)
    assert model.unet is None and model.frames is None
    out = model(**batch(vocab=len(tokenizer)))
    assert out.image is None and "image_l1" not in out.parts
    with pytest.raises(ValueError, match="text-only"):
        model.predict_image({})


def test_warp_without_displacement_is_the_identity():
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(warp(images, torch.zeros(2, 2, 16, 16)), images)


@pytest.mark.parametrize("decoder", ["warp", "paint"])
def test_an_untrained_model_starts_near_copying_the_fourth_frame(tokenizer, decoder):
    model = StoryContinuation(tiny(decoder=decoder), tokenizer).eval()
    data = batch(vocab=len(tokenizer))
    with torch.no_grad():
        image = model(**data).image
    assert (image - data["images"][:, 3]).abs().max() < 0.02  # mask sigmoid(-4) = 0.018


def test_warp_moves_pixels_by_whole_pixels():
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, 3, 2] = 1.0
    moved = warp(images, torch.full((1, 2, 8, 8), 0.0).index_fill_(1, torch.tensor([0]), -2.0))  # read 2 px left
    assert moved[0, 0, 3, 4] == pytest.approx(1.0) and moved[0, 0, 3, 2] == pytest.approx(0.0)


def test_edge_loss_sees_blur_that_is_cheap_in_l1():
    sharp = torch.zeros(1, 1, 8, 8)
    sharp[..., :, 4:] = 1.0
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False)
    assert edge_loss(sharp, sharp) == 0.0
    assert edge_loss(blurred, sharp) > 0.0


def test_sampling_a_vae_varies_the_image_and_the_mean_does_not(tokenizer):
    torch.manual_seed(0)
    model = StoryContinuation(tiny(vae=True), tokenizer).eval()
    torch.nn.init.normal_(model.unet.head.weight, std=1.0)  # a trained head reads the latent
    data = batch(vocab=len(tokenizer))
    with torch.no_grad():
        encoded = model.encode(data["images"][:, :4], data["input_ids"][:, :4], data["attention_mask"][:, :4])
        mean_a, mean_b = model.predict_image(encoded), model.predict_image(encoded)
        draws = [model.predict_image(encoded, sample=True, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    torch.testing.assert_close(mean_a, mean_b)
    assert not torch.equal(draws[0], draws[1])


def test_the_loss_falls_on_a_fixed_batch(tokenizer):
    torch.manual_seed(0)
    model = StoryContinuation(tiny(), tokenizer)
    data = batch(vocab=len(tokenizer))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(**data).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_save_and_load_give_the_same_outputs(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = StoryContinuation(tiny(cross_modal=True), tokenizer).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = StoryContinuation.from_pretrained(tmp_path / "model").eval()
    data = batch(vocab=len(tokenizer))
    with torch.no_grad():
        a, b = model(**data), loaded(**data)
    torch.testing.assert_close(a.image, b.image)
    torch.testing.assert_close(a.logits, b.logits)


def test_the_fifth_sentence_is_decoded_by_the_shared_generation_module(tokenizer):
    model = StoryContinuation(tiny(), tokenizer).eval()
    data = batch(vocab=len(tokenizer))
    with torch.no_grad():
        prefix = model.encode(data["images"][:, :4], data["input_ids"][:, :4], data["attention_mask"][:, :4])["prefix"]
    # state vectors, one per input step, the 4th sentence's tokens padded to max_sentence_tokens
    assert prefix.shape == (3, 2 + 4 + 12, 16)
    for strategy in ("greedy", "beam"):
        texts = generate_from_prefix(model, prefix, GenerationSettings(max_new_tokens=5, strategy=strategy, num_beams=2))
        assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize("overrides, message", [
    ({"channels": [8, 8, 8]}, "4 positive widths"),
    ({"image_size": 20}, "multiple of 8"),
    ({"d_model": 18}, "divisible"),
    ({"vae": True, "use_images": False}, "vae needs use_images"),
    ({"cross_modal": True, "use_images": False}, "cross_modal needs use_images"),
    ({"decoder": "magic"}, "decoder must be"),
    ({"n_positions": 10}, "raise n_positions"),
    ({"n_positions": 16, "context_sentence": False}, "raise n_positions"),
])
def test_config_errors_say_what_to_change(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_a_batch_of_the_wrong_length_is_refused(tokenizer):
    model = StoryContinuation(tiny(), tokenizer)
    data = batch(vocab=len(tokenizer))
    with pytest.raises(ValueError, match="5 frames"):
        model(images=data["images"][:, :4], input_ids=data["input_ids"][:, :4],
              attention_mask=data["attention_mask"][:, :4])


def test_left_padding_moves_each_rows_padding_first():
    from multimodal_lab.models.story_continuation import left_padded

    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert left_padded(ids, mask).tolist() == [[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]]


def test_a_one_hot_separable_kernel_is_an_exact_shift():
    from multimodal_lab.models.story_continuation import separable_shift

    images = torch.rand(2, 3, 9, 9)
    k = 5  # radius 2
    kx, ky = torch.zeros(2, k, 9, 9), torch.zeros(2, k, 9, 9)
    kx[:, 2 + 2] = 1.0  # read 2 px to the right ...
    ky[:, 2 - 1] = 1.0  # ... and 1 px up
    shifted = separable_shift(images, kx, ky)
    torch.testing.assert_close(shifted[..., 1:, :7], images[..., :8, 2:])  # away from the replicated edges
    uniform = separable_shift(images, torch.full((2, k, 9, 9), 0.2), torch.full((2, k, 9, 9), 0.2))
    torch.testing.assert_close(uniform[..., 4, 4], images[..., 2:7, 2:7].mean(dim=(-1, -2)))  # a 5x5 box blur


def test_the_separable_shift_hand_written_backward_matches_autograd():
    from multimodal_lab.models.pixel_ops import _separable_shift_autograd, separable_shift

    torch.manual_seed(0)
    images = torch.rand(2, 3, 10, 10)
    logits_x, logits_y = torch.randn(2, 7, 10, 10), torch.randn(2, 7, 10, 10)
    weights = torch.rand(2, 3, 10, 10)  # a non-uniform upstream gradient
    results = []
    for shift in (separable_shift, _separable_shift_autograd):
        lx, ly = logits_x.clone().requires_grad_(), logits_y.clone().requires_grad_()
        out = shift(images, lx.softmax(dim=1), ly.softmax(dim=1))
        (out * weights).sum().backward()
        results.append((out.detach(), lx.grad, ly.grad))
    for fast, reference in zip(*results):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    assert results[0][1].abs().max() > 1e-3  # the gradients compared are not all zero
    # images that need a gradient take the autograd path, which gives them one
    images.requires_grad_()
    separable_shift(images, logits_x.softmax(dim=1), logits_y.softmax(dim=1)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def _square_frames(positions: list[tuple[int, int]], size: int = 24, side: int = 5) -> torch.Tensor:
    """Frames (N, 3, S, S): a red square on grey at each (x, y) top-left corner."""
    frames = torch.full((len(positions), 3, size, size), 0.5)
    for n, (x, y) in enumerate(positions):
        frames[n, :, y:y + side, x:x + side] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return frames


def test_motion_evidence_scores_the_offset_that_keeps_the_velocity():
    from multimodal_lab.models.story_continuation import motion_evidence

    f3, f4 = _square_frames([(6, 10), (9, 10)])  # moving 3 px right a frame
    evidence = motion_evidence(f3[None], f4[None], radius=4)[0]  # (2K, S, S)
    k = 9
    # The 5th frame's square covers columns 12..16; its new leading pixel (16) is explained by
    # reading the 4th frame 3 px to the left (offset -3; a uniform square also fits -4 and -5),
    # and not at all by standing still or moving the other way.
    x_scores = evidence[:k, 12, 16]
    assert float(x_scores[4 - 3]) > 0.9
    assert float(x_scores[4:].max()) < 1e-3
    # The still background far away has no motion evidence at any offset.
    assert float(evidence[:, 2, 2].max()) < 1e-3


@pytest.mark.parametrize("scale, moved", [(5.0, True), (0.0, False)])
def test_an_untrained_kernel_head_already_follows_the_evidence(tokenizer, scale, moved):
    """With evidence_scale_init 5 training starts from "keep the velocity the evidence shows": an
    untrained model already draws a square's leading part where it goes; at 0 it copies the 4th frame."""
    torch.manual_seed(0)
    model = StoryContinuation(tiny(image_size=32, evidence_scale_init=scale), tokenizer).eval()
    frames = _square_frames([(1, 8), (7, 8), (13, 8), (19, 8)], size=32)[None]  # 6 px to the right per frame
    ids = torch.full((1, 4, 4), 5)
    with torch.no_grad():
        encoded = model.encode(frames, ids, torch.ones_like(ids))
        image = model.predict_image(encoded)[0]
    leading = image[:, 8:13, 25:30]  # where the square goes next (the 4th frame shows background there)
    red = torch.tensor([0.9, 0.1, 0.1])[:, None, None].expand_as(leading)
    grey = torch.full_like(leading, 0.5)
    torch.testing.assert_close(leading, red if moved else grey)
    torch.testing.assert_close(image[:, 0:5], frames[0, 3, :, 0:5])  # the still background stays


def test_best_source_keeps_the_move_unless_another_source_is_clearly_better():
    from multimodal_lab.models.story_continuation import best_source

    target = torch.zeros(1, 3, 2, 2)
    moved = torch.zeros(1, 3, 2, 2)
    moved[..., 0, 1] = 0.5  # the move is wrong at pixel (0, 1) ...
    first = torch.full((1, 3, 2, 2), 0.01)  # ... the 1st frame is nearly right everywhere (within the margin)
    painted = torch.ones(1, 3, 2, 2)
    painted[..., 1, 1] = 0.0  # the painted layer is exactly right at (1, 1) only
    moved[..., 1, 1] = 0.3
    source = best_source(torch.stack([moved, first, painted], dim=1), target)
    assert source[0].tolist() == [[0, 1], [0, 2]]


def test_mode_inference_copies_input_pixels_exactly(tokenizer):
    torch.manual_seed(0)
    model = StoryContinuation(tiny(), tokenizer).eval()  # untrained: every pixel's mode is "the 4th frame"
    data = batch(vocab=len(tokenizer))
    with torch.no_grad():
        encoded = model.encode(data["images"][:, :4], data["input_ids"][:, :4], data["attention_mask"][:, :4])
        image = model.predict_image(encoded)
    torch.testing.assert_close(image, data["images"][:, 3])  # an exact copy, no blend


def test_the_aligned_context_puts_the_fourth_sentences_tokens_at_fixed_positions(tokenizer):
    model = StoryContinuation(tiny(), tokenizer).eval()
    data = batch(vocab=len(tokenizer))
    data["attention_mask"][0, 3, 4:] = 0  # sequence 0's 4th sentence has 4 tokens, then padding
    data["input_ids"][0, 3, 4:] = tokenizer.pad_token_id
    with torch.no_grad():
        prefix = model.encode(data["images"][:, :4], data["input_ids"][:, :4], data["attention_mask"][:, :4])["prefix"]
    context = prefix[:, 2 + 4:]  # (B, max_sentence_tokens, D)
    torch.testing.assert_close(context[:, :6], model.embed_tokens(data["input_ids"][:, 3]))
    torch.testing.assert_close(context[:, 6:], model.embed_tokens(torch.full((3, 6), tokenizer.pad_token_id)))


def test_shift_pixels_equals_a_one_hot_separable_kernel():
    from multimodal_lab.models.story_continuation import separable_shift, shift_pixels

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 9, 9, generator=generator)
    dx = torch.randint(-2, 3, (2, 9, 9), generator=generator)
    dy = torch.randint(-2, 3, (2, 9, 9), generator=generator)
    one_hot = lambda d: torch.nn.functional.one_hot(d + 2, 5).permute(0, 3, 1, 2).float()  # noqa: E731
    torch.testing.assert_close(shift_pixels(images, dx, dy), separable_shift(images, one_hot(dx), one_hot(dy)))
