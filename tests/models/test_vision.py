"""Vision encoder registry, the CNN encoder and image preprocessing."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal_lab.models.preprocess import decode_image, images_to_tensor
from multimodal_lab.models.vision import (
    CNNEncoder,
    VisionEncoder,
    available_encoders,
    build_encoder,
    register_encoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_registry_builds_cnn_and_names_known_encoders_on_error():
    encoder = build_encoder("cnn", out_dim=16, channels=[4, 8], grid=2)
    assert isinstance(encoder, CNNEncoder)
    assert "cnn" in available_encoders()
    with pytest.raises(ValueError, match="available encoders.*cnn"):
        build_encoder("no-such-encoder", out_dim=16)


def test_registry_accepts_new_encoders_and_refuses_duplicate_names():
    @register_encoder("test-constant")
    class Constant(VisionEncoder):
        def __init__(self, out_dim: int) -> None:
            super().__init__()
            self.out_dim = out_dim

        def num_tokens(self, image_size: int) -> int:
            return 3

        def forward_features(self, images):
            return images.new_zeros(images.shape[0], 3, self.out_dim)

    encoder = build_encoder("test-constant", out_dim=5)
    assert encoder.forward_features(torch.zeros(2, 3, 8, 8)).shape == (2, 3, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("cnn")(Constant)


@pytest.mark.parametrize(
    ("channels", "grid", "stem_stride", "downsample", "image_size"),
    [([8, 16, 32], 8, 1, "stride", 64), ([8, 16], 4, 2, "maxpool", 32), ([4, 8, 16, 32], 1, 1, "stride", 48)],
)
def test_cnn_tokens_follow_the_config(channels, grid, stem_stride, downsample, image_size):
    encoder = CNNEncoder(out_dim=24, channels=channels, grid=grid, stem_stride=stem_stride, downsample=downsample)
    images = torch.rand(3, 3, image_size, image_size)
    tokens = encoder.forward_features(images)
    assert tokens.shape == (3, grid * grid, 24)
    assert encoder.num_tokens(image_size) == grid * grid
    assert torch.isfinite(tokens).all()
    tokens.square().mean().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_cnn_sizes_are_derived_not_fixed():
    small = CNNEncoder(out_dim=16, channels=[4, 8], blocks_per_stage=0, grid=2)
    large = CNNEncoder(out_dim=16, channels=[8, 16, 32], blocks_per_stage=2, grid=2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > count(small)
    # The same encoder serves two image sizes and keeps its token count.
    assert large.forward_features(torch.rand(1, 3, 32, 32)).shape == large.forward_features(torch.rand(1, 3, 64, 64)).shape


def test_grid_larger_than_the_feature_map_is_refused_with_advice():
    encoder = CNNEncoder(out_dim=8, channels=[4, 8, 16, 32], grid=8)  # 32 px -> 4x4 map
    with pytest.raises(ValueError, match="smaller than grid 8"):
        encoder.num_tokens(32)
    assert encoder.feature_size(64) == 8


def test_position_embeddings_are_added_per_cell():
    torch.manual_seed(0)
    with_pos = CNNEncoder(out_dim=8, channels=[4, 8], grid=2).eval()
    without = CNNEncoder(out_dim=8, channels=[4, 8], grid=2, position_embedding=False).eval()
    without.load_state_dict(with_pos.state_dict(), strict=False)
    images = torch.rand(2, 3, 16, 16)
    assert not torch.allclose(with_pos.forward_features(images), without.forward_features(images), atol=1e-3)
    with torch.no_grad():
        with_pos.row_embed.zero_()
        with_pos.col_embed.zero_()
    assert torch.allclose(with_pos.forward_features(images), without.forward_features(images), atol=1e-6)
    assert without.row_embed is None


def test_global_token_comes_first_and_summarises_the_image():
    torch.manual_seed(0)
    encoder = CNNEncoder(out_dim=8, channels=[4, 8], grid=2, global_token=True).eval()
    assert encoder.num_tokens(16) == 5
    images = torch.rand(2, 3, 16, 16)
    tokens = encoder.forward_features(images)
    assert tokens.shape == (2, 5, 8)
    # Only the first token sees the whole image at once: a change in one corner moves it.
    changed = images.clone()
    changed[:, :, :4, :4] = 1.0
    moved = (encoder.forward_features(changed) - tokens).abs().amax(dim=(0, 2))
    assert moved[0] > 1e-4 and moved[4] < 1e-6  # bottom-right cell is out of reach


def test_channels_last_layout_gives_the_same_tokens():
    torch.manual_seed(0)
    fast = CNNEncoder(out_dim=8, channels=[4, 8], grid=2, channels_last=True).eval()
    plain = CNNEncoder(out_dim=8, channels=[4, 8], grid=2, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    assert fast.stages[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(fast.forward_features(images), plain.forward_features(images), atol=1e-5)


def test_blocks_can_be_set_per_stage():
    encoder = CNNEncoder(out_dim=8, channels=[4, 8, 16], blocks_per_stage=[0, 2, 1], grid=2)
    residual = [sum(1 for m in stage.modules() if type(m).__name__ == "ResidualBlock") for stage in encoder.stages]
    assert residual == [0, 2, 1]
    with pytest.raises(ValueError, match="one such count per stage \\(3 stages"):
        CNNEncoder(out_dim=8, channels=[4, 8, 16], blocks_per_stage=[1, 1])


@pytest.mark.parametrize("bad", [dict(channels=[]), dict(grid=0), dict(downsample="avg"), dict(stem_stride=3),
                                 dict(blocks_per_stage=-1)])
def test_cnn_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        CNNEncoder(out_dim=8, **{"channels": [4, 8], **bad})


def test_images_to_tensor_accepts_any_mode_and_size():
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    grey = Image.new("L", (64, 64), 128)
    palette = Image.new("P", (33, 33), 0)
    batch = images_to_tensor([rgba, grey, palette], 16)
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert torch.allclose(batch[0, :, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(batch[1], torch.full((3, 16, 16), 128 / 255))
    assert 0.0 <= batch.min() and batch.max() <= 1.0


def test_transparent_pixels_become_white():
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert torch.allclose(images_to_tensor([clear], 8), torch.ones(1, 3, 8, 8))


def test_decode_image_round_trips_png_and_rejects_garbage():
    pixels = np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    image = decode_image(_png(Image.fromarray(pixels)))
    assert np.array_equal(np.asarray(image), pixels)
    with pytest.raises(ValueError, match="could not decode"):
        decode_image(b"not an image")
    with pytest.raises(ValueError, match="expects encoded image bytes"):
        decode_image("a string")  # type: ignore[arg-type]
