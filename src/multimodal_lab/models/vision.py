"""Vision encoders behind one interface, picked by name from a small registry.

Every encoder turns images (B, 3, S, S) into a sequence of feature tokens (B, N, D)
through ``forward_features``, exposes its token width ``out_dim`` and says how many
tokens it makes for an image size (``num_tokens``). Pipelines only talk to that
interface, so a CNN and a ViT are swapped by changing one name in the parameters:

    encoder = build_encoder({"name": "cnn", "channels": [32, 64, 128], "grid": 8}, out_dim=128)
    tokens = encoder.forward_features(images)  # (B, 64, 128)

Models describe their encoder with one nested block, ``{"name": ..., <that encoder's
options>}``, checked against the encoder's own config dataclass, so a mistyped option
fails naming it. New encoders register themselves with
``@register_encoder("name", config=TheirConfig)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch
from torch import nn

from multimodal_lab.config import from_params, to_params

_ENCODERS: dict[str, tuple[type[VisionEncoder], type | None]] = {}

E = TypeVar("E", bound="type[VisionEncoder]")


def register_encoder(name: str, config: type | None = None) -> Callable[[E], E]:
    """Class decorator that makes an encoder available to :func:`build_encoder`.

    Args:
        name: the registry key used in configs (e.g. ``"cnn"``, ``"vit"``).
        config: a dataclass whose fields are the encoder's options (its constructor
            arguments besides ``out_dim``); options are checked against it. None
            passes options through unchecked.
    """

    def decorator(cls: E) -> E:
        if name in _ENCODERS and _ENCODERS[name][0] is not cls:
            raise ValueError(
                f"encoder name {name!r} is already registered by {_ENCODERS[name][0].__name__}; "
                "pick another name"
            )
        _ENCODERS[name] = (cls, config)
        return cls

    return decorator


def available_encoders() -> list[str]:
    """Names accepted by :func:`build_encoder`, sorted."""
    return sorted(_ENCODERS)


def encoder_spec(spec: str | Mapping[str, Any], *, where: str = "encoder", **options: Any) -> dict[str, Any]:
    """Check an encoder block and return it complete: ``{"name": ..., every option}``.

    Args:
        spec: the block, e.g. ``{"name": "cnn", "channels": [32, 64], "grid": 4}``, or a name.
        where: dotted name for error messages (e.g. ``"params:story_gpt2.model.encoder"``).
        **options: options that override the block's.

    Raises:
        ValueError: for a missing or unknown name (listing the known ones) or an unknown
            option (naming it and the closest known one).
        TypeError: for an option of the wrong type.
    """
    values = {"name": spec} if isinstance(spec, str) else dict(spec)
    values.update(options)
    name = values.pop("name", None)
    if name is None:
        raise ValueError(f"{where} needs a 'name'; available encoders: {available_encoders()}")
    if name not in _ENCODERS:
        raise ValueError(f"unknown encoder {name!r} in {where}; available encoders: {available_encoders()}")
    config = _ENCODERS[name][1]
    if config is None:
        return {"name": name, **values}
    return {"name": name, **to_params(from_params(config, values, where=where))}


def build_encoder(spec: str | Mapping[str, Any], *, out_dim: int, image_size: int | None = None,
                  **options: Any) -> VisionEncoder:
    """Instantiate a registered encoder from its block (or name plus options).

    Args:
        spec: ``{"name": ..., options}`` or a registry name.
        out_dim: width D of the output tokens (normally the language model's width).
        image_size: the model's input side, handed to encoders that are built for one
            size (the ViT's position embeddings); ignored by those that are not.
        **options: options that override the block's.

    Raises:
        ValueError: for an unknown name or option (see :func:`encoder_spec`).
    """
    name = spec if isinstance(spec, str) else dict(spec).get("name")
    config = _ENCODERS.get(name, (None, None))[1]
    if image_size is not None and config is not None and "image_size" in {f.name for f in fields(config)}:
        options = {"image_size": int(image_size), **options}
    values = encoder_spec(spec, **options)
    cls = _ENCODERS[values.pop("name")][0]
    return cls(out_dim=out_dim, **values)


class VisionEncoder(nn.Module):
    """Interface every registered encoder implements."""

    out_dim: int  # width D of each output token

    def num_tokens(self, image_size: int) -> int:
        """Number N of output tokens for square images of side ``image_size``."""
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            images: (B, 3, S, S) float tensor in [0, 1].

        Returns:
            (B, N, D) feature tokens with D == ``out_dim``.
        """
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with an identity shortcut (same width, same size)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        # Zero-init the last norm so each block starts as the identity: deep stacks
        # train from the first step without a warm-up of their own.
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class PlainBlock(nn.Sequential):
    """One 3x3 conv + batch norm + ReLU without a shortcut (the write-up's plain CNN)."""

    def __init__(self, channels: int) -> None:
        super().__init__(*_conv_bn_relu(channels, channels, stride=1))


@dataclass
class CNNConfig:
    """Options of the ``cnn`` encoder (see :class:`CNNEncoder`)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels per stage
    blocks_per_stage: int | list[int] = 1  # blocks after each stage's entry conv (one int or one per stage)
    grid: int = 8  # output grid side; N = grid^2 tokens (1 = global pooling)
    residual: bool = True  # residual (True) or plain (False) blocks
    downsample: str = "stride"  # down-sampling between stages: "stride" conv or "maxpool"
    stem_stride: int = 1  # stride of the stem conv (1 keeps small objects sharp)
    position_embedding: bool = True  # learned row + column embeddings on the grid tokens
    global_token: bool = False  # an extra whole-image token before the grid tokens (N = grid^2 + 1)
    channels_last: bool = True  # NHWC convolutions (faster on oneDNN and cuDNN)


@register_encoder("cnn", config=CNNConfig)
class CNNEncoder(VisionEncoder):
    """Convolutional encoder whose output grid cells become tokens.

    Layout: a stem conv (stride ``stem_stride``) to ``channels[0]``, then one stage per
    entry of ``channels``; every stage after the first halves the resolution (strided
    conv or max pooling) and each stage runs ``blocks_per_stage`` blocks. The final map
    is adaptively average-pooled to ``grid`` x ``grid`` cells, each projected to
    ``out_dim`` and given a learned row + column position embedding, so the language
    model can tell objects apart by where they are. ``grid=1`` is global pooling (N=1).

    Args:
        out_dim: token width D (normally the language model's width).
        channels: channels per stage, e.g. [32, 64, 128].
        blocks_per_stage: blocks after each stage's entry conv (0 = entry conv only);
            one int for every stage or a list with one count per stage.
        grid: side of the output grid; N = grid * grid tokens.
        residual: residual blocks (True) or plain conv-bn-relu blocks (False).
        downsample: "stride" (strided conv) or "maxpool" (conv then 2x2 max pool).
        stem_stride: stride of the stem conv (1 keeps full resolution for small objects).
        position_embedding: add learned 2-D (row + column) embeddings to the tokens.
        global_token: put one extra token first, projected from the whole-image average,
            so the scene's content is readable without first learning where to look.
        channels_last: keep conv weights and activations in NHWC layout, which oneDNN
            (CPU) and cuDNN (bf16) convolve faster than NCHW.
        in_channels: image channels.
    """

    def __init__(
        self,
        out_dim: int,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int | Sequence[int] = 1,
        grid: int = 8,
        residual: bool = True,
        downsample: str = "stride",
        stem_stride: int = 1,
        position_embedding: bool = True,
        global_token: bool = False,
        channels_last: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c <= 0 for c in channels):
            raise ValueError(f"encoder channels must be a non-empty list of positive ints, got {channels}")
        if out_dim <= 0:
            raise ValueError(f"encoder out_dim must be positive, got {out_dim}")
        if grid <= 0:
            raise ValueError(f"encoder grid must be >= 1 (1 = global pooling), got {grid}")
        blocks = [int(blocks_per_stage)] * len(channels) if isinstance(blocks_per_stage, int) else [
            int(b) for b in blocks_per_stage]
        if len(blocks) != len(channels) or any(b < 0 for b in blocks):
            raise ValueError(
                f"blocks_per_stage must be an int >= 0 or one such count per stage ({len(channels)} stages "
                f"for channels {channels}), got {blocks_per_stage}"
            )
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be 'stride' or 'maxpool', got {downsample!r}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.out_dim = int(out_dim)
        self.grid = int(grid)
        self.channels = channels
        self.stem_stride = stem_stride
        self.downsample = downsample
        block = ResidualBlock if residual else PlainBlock

        stages: list[nn.Module] = []
        previous = in_channels
        for index, (width, count) in enumerate(zip(channels, blocks)):
            layers: list[nn.Module] = []
            if index == 0:
                layers.append(_conv_bn_relu(previous, width, stride=stem_stride))
            elif downsample == "stride":
                layers.append(_conv_bn_relu(previous, width, stride=2))
            else:
                layers.extend([_conv_bn_relu(previous, width, stride=1), nn.MaxPool2d(2)])
            layers.extend(block(width) for _ in range(count))
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        self.proj = nn.Linear(channels[-1], self.out_dim)
        self.norm = nn.LayerNorm(self.out_dim)
        self.global_proj = nn.Linear(channels[-1], self.out_dim) if global_token else None
        if position_embedding and self.grid > 1:
            self.row_embed = nn.Parameter(torch.randn(self.grid, 1, self.out_dim) * 0.02)
            self.col_embed = nn.Parameter(torch.randn(1, self.grid, self.out_dim) * 0.02)
        else:
            self.register_parameter("row_embed", None)
            self.register_parameter("col_embed", None)
        self.channels_last = channels_last
        if channels_last:
            self.stages.to(memory_format=torch.channels_last)

    @property
    def downsampling(self) -> int:
        """Total stride of the convolution stack."""
        return self.stem_stride * 2 ** (len(self.channels) - 1)

    def feature_size(self, image_size: int) -> int:
        """Side of the last convolutional map for an input of side ``image_size``."""
        # A 3x3 conv with stride 2 and padding 1 gives ceil(n / 2); 2x2 max pooling floor(n / 2).
        size = (image_size + 1) // 2 if self.stem_stride == 2 else image_size
        for _ in range(len(self.channels) - 1):
            size = (size + 1) // 2 if self.downsample == "stride" else size // 2
        return size

    def num_tokens(self, image_size: int) -> int:
        feature = self.feature_size(image_size)
        if feature < self.grid:
            raise ValueError(
                f"image_size {image_size} gives a {feature}x{feature} feature map, smaller than "
                f"grid {self.grid}; use a grid <= {feature}, fewer channel stages, or larger images"
            )
        return self.grid * self.grid + (self.global_proj is not None)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.stages(images)  # (B, C, H', W')
        pooled = self.pool(features)  # (B, C, g, g)
        tokens = self.proj(pooled.flatten(2).transpose(1, 2))  # (B, g*g, D)
        if self.row_embed is not None:
            position = (self.row_embed + self.col_embed).reshape(1, self.grid * self.grid, self.out_dim)
            tokens = tokens + position
        if self.global_proj is not None:
            summary = self.global_proj(features.mean(dim=(2, 3))).unsqueeze(1)  # (B, 1, D)
            tokens = torch.cat([summary, tokens], dim=1)  # (B, 1 + g*g, D)
        return self.norm(tokens)


@dataclass
class ViTEncoderConfig:
    """Options of the ``vit`` encoder (see :class:`ViTEncoder`)."""

    image_size: int = 64  # side S the position embeddings are made for (other sizes are interpolated)
    patch_size: int = 8  # side P of a square patch; S must be divisible by P -> (S/P)^2 patch tokens
    hidden_size: int = 128  # width of the Transformer blocks
    num_layers: int = 4  # pre-norm Transformer blocks
    num_heads: int = 4  # attention heads; hidden_size must be divisible by it
    mlp_ratio: float = 4.0  # MLP width = mlp_ratio * hidden_size
    dropout: float = 0.0  # hidden and attention dropout
    cls_token: bool = False  # also return the [CLS] token first (N = (S/P)^2 + 1)
    attn_implementation: str = "sdpa"  # "sdpa" or "eager" (eager returns attention weights)
    # channels of a convolutional stem (3x3, stride 2, BN, ReLU each) whose feature map is cut
    # into patches instead of the pixels: ViT's "hybrid" form; [] = patches of pixels
    stem_channels: list[int] = field(default_factory=list)
    stem_blocks: int | list[int] = 0  # residual 3x3 blocks after each stem convolution (one int or one per conv)


@register_encoder("vit", config=ViTEncoderConfig)
class ViTEncoder(VisionEncoder):
    """A Vision Transformer built from config: ``transformers``' ``ViTModel``, no weights downloaded.

    Patch embedding (a P x P convolution with stride P), learned position embeddings, a
    [CLS] token and pre-norm Transformer blocks with a final LayerNorm, as in ViT (Dosovitskiy
    et al., 2021). With ``stem_channels`` the patches are cut from a small convolutional
    stem's feature map instead of the pixels (the paper's hybrid form; early convolutions
    also make small ViTs learn faster, Xiao et al., 2021); ``patch_size`` then counts
    feature-map cells, and a token still covers ``patch_size * 2**len(stem_channels)`` pixels. Images in [0, 1] are mapped to [-1, 1] (what an image processor with mean
    and std 0.5 does); the patch tokens (and optionally [CLS]) are projected to ``out_dim``
    when the widths differ.

    Args:
        out_dim: token width D of the output.
        image_size, patch_size, hidden_size, num_layers, num_heads, mlp_ratio, dropout,
        cls_token, attn_implementation: see :class:`ViTEncoderConfig`.
    """

    def __init__(self, out_dim: int, image_size: int = 64, patch_size: int = 8, hidden_size: int = 128,
                 num_layers: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 cls_token: bool = False, attn_implementation: str = "sdpa",
                 stem_channels: Sequence[int] = (), stem_blocks: int | Sequence[int] = 0) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        stem_channels = [int(c) for c in stem_channels]
        blocks = ([int(stem_blocks)] * len(stem_channels) if isinstance(stem_blocks, int)
                  else [int(b) for b in stem_blocks])
        if len(blocks) != len(stem_channels) or any(b < 0 for b in blocks):
            raise ValueError(f"vit stem_blocks must be an int >= 0 or one count per stem conv "
                             f"({len(stem_channels)}), got {stem_blocks}")
        if any(c <= 0 for c in stem_channels):
            raise ValueError(f"vit stem_channels must be positive, got {stem_channels}")
        self.stem_stride = 2 ** len(stem_channels)
        if image_size % self.stem_stride:
            raise ValueError(f"vit image_size {image_size} is not divisible by the stem's stride {self.stem_stride} "
                             f"({len(stem_channels)} stride-2 convolutions); use fewer stem_channels")
        check_vit_sizes(image_size, patch_size * self.stem_stride, hidden_size, num_heads)
        if out_dim <= 0:
            raise ValueError(f"encoder out_dim must be positive, got {out_dim}")
        if num_layers < 1 or mlp_ratio <= 0:
            raise ValueError(f"vit num_layers must be >= 1 and mlp_ratio > 0, got {num_layers}, {mlp_ratio}")
        if attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"vit attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
        self.out_dim = int(out_dim)
        self.image_size, self.cls_token = int(image_size), bool(cls_token)
        self.patch_size = int(patch_size) * self.stem_stride  # in image pixels
        self.grid = self.image_size // self.patch_size
        layers: list[nn.Module] = []
        previous = 3
        for width, count in zip(stem_channels, blocks):
            layers.extend(_conv_bn_relu(previous, width, stride=2))
            layers.extend(ResidualBlock(width) for _ in range(count))
            previous = width
        self.stem = nn.Sequential(*layers)
        config = ViTConfig(
            image_size=self.image_size // self.stem_stride, patch_size=int(patch_size), num_channels=previous,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads,
            intermediate_size=int(round(mlp_ratio * hidden_size)), hidden_act="gelu",
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, layer_norm_eps=1e-6,
        )
        config._attn_implementation = attn_implementation
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.proj = nn.Identity() if hidden_size == self.out_dim else nn.Linear(hidden_size, self.out_dim)

    def num_tokens(self, image_size: int) -> int:
        if image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by the vit patch_size {self.patch_size}; "
                             f"use a patch_size in {[p for p in range(2, 33) if image_size % p == 0]}")
        return (image_size // self.patch_size) ** 2 + self.cls_token

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        pixels = self.stem(images * 2.0 - 1.0)  # (B, C, S / stride, S / stride); the images when no stem
        hidden = self.vit(pixel_values=pixels,
                          interpolate_pos_encoding=size != self.image_size).last_hidden_state  # (B, 1 + N, H)
        if not self.cls_token:
            hidden = hidden[:, 1:].contiguous()  # (B, N, H): the patch tokens, row by row
        return self.proj(hidden)  # (B, N, D)


def check_vit_sizes(image_size: int, patch_size: int, hidden_size: int, num_heads: int) -> None:
    """Fail with an actionable message when ViT sizes do not divide."""
    if min(image_size, patch_size, hidden_size, num_heads) <= 0:
        raise ValueError(f"vit sizes must be positive, got image_size={image_size}, patch_size={patch_size}, "
                         f"hidden_size={hidden_size}, num_heads={num_heads}")
    if image_size % patch_size:
        raise ValueError(f"vit image_size {image_size} is not divisible by patch_size {patch_size}; "
                         f"use a patch_size in {[p for p in range(2, 33) if image_size % p == 0]}")
    if hidden_size % num_heads:
        raise ValueError(f"vit hidden_size {hidden_size} is not divisible by num_heads {num_heads}; "
                         f"use num_heads in {[h for h in range(1, 17) if hidden_size % h == 0]}")
