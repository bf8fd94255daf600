"""Four frames and their sentences in, the fifth frame and its sentence out.

One model, four variants as config switches (``cross_modal``, ``vae``); ``use_images:
false`` is the text-only floor (the same text path, no pixels at all). Shapes, with
B sequences, 4 input frames, side S (64), width D (``d_model``) and sentence length T:

* **frame encoder** (per frame, shared): 3 stride-2 convolutions, (B·4, 3, S, S) ->
  visual tokens (B, 4, (S/8)², D) and their mean (B, 4, D);
* **sentence encoder** (per sentence, shared): token embeddings and a GRU, (B, 4, T) ->
  token states (B, 4, T, D) and the state at the last real token (B, 4, D);
* ``cross_modal``: each sentence's tokens attend to its frame's visual tokens (4 heads);
  the attended vectors, averaged over real tokens, join the step (B, 4, D);
* **sequence model**: a GRU over the 4 fused steps -> state h (B, D);
* **image path** (a U-Net): the 4 frames, the change ``f4 - f3`` and the motion evidence (a
  constant-velocity correlation layer, :func:`motion_evidence`) stacked (B, 15 + 2K, S, S) go
  down to (B, C4, S/8, S/8), where h modulates the features (FiLM) and a *spatial* latent
  (B, Z, S/8, S/8) is formed; ``vae`` makes it a reparameterised Gaussian with a KL term.
  Coming back up, skip connections hand over every scale of the input frames. The ``kernel``
  head (default) makes every output pixel from three sources: the 4th frame moved by a
  per-pixel separable kernel (offsets up to ``kernel_radius``; the evidence adds to its
  logits), the 1st frame (the background a moved object uncovers), and a painted layer (a
  per-pixel MLP that changes the 4th frame's colour, for what no move shows: a colour that
  cycles). Training mixes the sources softly; inference (``inference_mix: mode``) takes each
  pixel's likeliest source and offset, so the frame is made of exact input pixels and painted
  colours, never a blur of them;
* **text path**: GPT-2 (from config, the corpus tokenizer) reads a prefix of
  ``state_tokens`` vectors made from h, the 4 fused steps and the 4th sentence's tokens at
  fixed positions, then writes the 5th sentence; decoding goes through the shared
  generation module (KV cache, greedy / beam / sampling).

Loss: L1 on pixels plus an edge term (L1 between the images' horizontal and vertical
differences, which L1 alone lets blur away), the painted layer's own L1 where no move
explains the 5th frame, a cross-entropy that teaches the head's source choice (what the
mode inference reads), the 5th sentence's next-token cross-entropy, and for ``vae``
``kl_weight``·KL(q(z) || N(0, I)) (mean per latent unit).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from multimodal_lab.config import from_params
from multimodal_lab.data.images import ImageInput
from multimodal_lab.models.pixel_ops import (  # noqa: F401 - also this module's API
    best_source,
    edge_loss,
    motion_evidence,
    separable_shift,
    shift_pixels,
    warp,
    weighted_l1,
)
from multimodal_lab.models.saving import (
    load_tokenizer,
    load_weights,
    read_config,
    save_directory,
)
from multimodal_lab.models.story_gpt2 import _prepare_tokenizer
from multimodal_lab.models.text_loss import next_token_loss

FAMILY = "story_continuation"
FORMAT_VERSION = 1
INPUT_FRAMES = 4


@dataclass
class StoryContinuationConfig:
    """Sizes and switches of one variant (``params:story_continuation.model`` + the variant's own)."""

    cross_modal: bool = False  # text queries attend to the frame's visual tokens (4 heads)
    vae: bool = False  # a reparameterised spatial latent with a KL term
    use_images: bool = True  # False: the text-only floor (no image input, no image output)
    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64, 96, 128])  # U-Net widths at S, S/2, S/4, S/8
    latent_channels: int = 32  # channels of the spatial latent at S/8
    d_model: int = 128  # width of the frame, sentence and sequence states (and of GPT-2)
    cross_heads: int = 4
    state_tokens: int = 4  # GPT-2 prefix vectors made from the sequence state (plus one per input step)
    n_layer: int = 2
    n_head: int = 4
    n_positions: int = 96
    # the decoder also reads the 4th sentence's own tokens (after the state vectors), so it can
    # copy what carries over (most of a 5th sentence repeats the 4th's objects and verbs)
    context_sentence: bool = True
    # where the 4th sentence's tokens sit in the prefix: "aligned" (right-padded to
    # max_sentence_tokens, so its token i always sits max_sentence_tokens positions before the 5th
    # sentence's token i: copying is a fixed positional attention) or "left" (left-padded to the
    # batch's longest, ending where the 5th begins: copying must be learned by content)
    context_layout: str = "aligned"
    max_sentence_tokens: int = 40  # bos and eos included
    edge_loss_weight: float = 1.0  # weight of the image-gradient L1 term
    # pixels that change (between frames 4 and 5, or 3 and 4) weigh 1 + this in the L1 terms:
    # objects cover a few percent of a frame, and the background would drown their gradient
    change_weight: float = 0.0
    text_loss_weight: float = 1.0
    kl_weight: float = 0.01
    # "kernel": every output pixel is a mixture of three sources: the 4th frame moved by a
    # per-pixel separable kernel (a displacement of up to kernel_radius px each way), the 1st
    # frame (the background a moved object uncovers), and a painted RGB layer;
    # "warp": a displacement field moves the 4th frame's pixels before a painted layer goes
    # over them through a mask; "paint": the painted layer and mask alone
    decoder: str = "kernel"
    kernel_radius: int = 7
    # kernel head: a correlation (cost-volume) layer scores every horizontal and vertical offset o
    # by constant velocity (the 4th frame at p + o matches the 3rd at p + 2o, and that pixel
    # changed between them, i.e. something moved through it); the scores go into the U-Net and,
    # through learned scales (evidence_scale_init), straight into the kernel logits
    motion_evidence: bool = True
    # the evidence's weight in the kernel logits at the start of training (a learned scale per axis).
    # Above the head's "no shift" bias (4), so training starts from "a pixel with clear evidence
    # (score ~1) keeps the velocity it shows"; at 0 the convolution had to learn each direction on
    # its own and one of the four often lagged (its objects stayed put: 3-6 % of moving objects missed)
    evidence_scale_init: float = 5.0
    # kernel head: the painted layer is a per-pixel MLP of the 4 input frames' colours at that
    # pixel and the U-Net's features (a colour that cycles is a function of the colours it had)
    pixel_paint: bool = True
    # kernel head with pixel_paint: the painted layer's own L1 to the 5th frame joins the loss with
    # this weight, so the layer learns what each pixel becomes (the next colour of a cycling object)
    # even where the mixture does not yet pick it; 0 trains it only through the mixture
    paint_loss_weight: float = 1.0
    paint_hidden: int = 32  # width of the painted layer's per-pixel MLP (two hidden layers)
    # kernel head: cross-entropy of its source logits toward each pixel's best source (best_source),
    # with this weight: the choice the "mode" inference reads is taught directly
    choice_loss_weight: float = 0.1
    # how the kernel head turns its per-pixel mixture into a frame at inference: "mixture" (the
    # weighted sum, as in training) or "mode" (each pixel takes its most likely source and
    # offset: an exact copy of one input pixel or the painted colour, so objects stay crisp)
    inference_mix: str = "mode"
    lm_init_std: float = 0.02
    image_input: dict[str, Any] | None = None  # set by the training node from params:ingest

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f"channels must be 4 positive widths (at S, S/2, S/4, S/8), got {self.channels}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the U-Net halves it 3 times), got {self.image_size}")
        if self.d_model % self.n_head or self.d_model % self.cross_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_head {self.n_head} and cross_heads "
                             f"{self.cross_heads}")
        if self.vae and not self.use_images:
            raise ValueError("vae needs use_images (the latent is the image path's)")
        if self.cross_modal and not self.use_images:
            raise ValueError("cross_modal needs use_images (text attends to visual features)")
        if self.decoder not in ("kernel", "warp", "paint"):
            raise ValueError(f"decoder must be 'kernel', 'warp' or 'paint', got {self.decoder!r}")
        if self.inference_mix not in ("mixture", "mode"):
            raise ValueError(f"inference_mix must be 'mixture' or 'mode', got {self.inference_mix!r}")
        if self.context_layout not in ("aligned", "left"):
            raise ValueError(f"context_layout must be 'aligned' or 'left', got {self.context_layout!r}")
        if self.kernel_radius < 1:
            raise ValueError(f"kernel_radius must be >= 1, got {self.kernel_radius}")
        if self.state_tokens < 1:
            raise ValueError(f"state_tokens must be >= 1, got {self.state_tokens}")
        needed = self.prefix_tokens + self.max_sentence_tokens * (2 if self.context_sentence else 1)
        if needed > self.n_positions:
            raise ValueError(f"the prefix ({self.prefix_tokens} vectors{' + the 4th sentence' if self.context_sentence else ''}"
                             f") and the 5th sentence need up to {needed} positions but n_positions is "
                             f"{self.n_positions}; raise n_positions")

    @property
    def prefix_tokens(self) -> int:
        return self.state_tokens + INPUT_FRAMES

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StoryContinuationConfig:
        return from_params(cls, dict(values), where="story_continuation config")


@dataclass
class ContinuationOutput:
    loss: torch.Tensor | None
    image: torch.Tensor | None  # (B, 3, S, S) in [0, 1]; None for the text-only model
    logits: torch.Tensor  # (B, T, V) of the 5th sentence
    num_targets: int | None = None
    parts: dict[str, float] = field(default_factory=dict)  # the loss terms, for logs


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8 if cout % 8 == 0 else 1, cout), nn.GELU())


class FrameEncoder(nn.Module):
    """One frame (N, 3, S, S) -> visual tokens (N, (S/8)², D)."""

    def __init__(self, width: int, d_model: int) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv(3, width // 2, 2), _conv(width // 2, width, 2), _conv(width, d_model, 2))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(images).flatten(2).transpose(1, 2))


class SentenceEncoder(nn.Module):
    """Token ids (N, T) -> token states (N, T, D) and the state at the last real token (N, D)."""

    def __init__(self, vocab: int, d_model: int, pad_id: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model, padding_idx=pad_id)
        self.gru = nn.GRU(d_model, d_model, batch_first=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self.gru(self.embed(ids))  # (N, T, D)
        last = (mask.sum(dim=1) - 1).clamp(min=0)  # index of the last real token
        return states, states[torch.arange(ids.shape[0], device=ids.device), last]


class ImageUNet(nn.Module):
    """The 4 frames and f4 - f3 -> the 5th frame, painted over the 4th (see the module docstring)."""

    def __init__(self, config: StoryContinuationConfig) -> None:
        super().__init__()
        c1, c2, c3, c4 = config.channels
        self.decoder = config.decoder
        self.radius = config.kernel_radius
        k = 2 * self.radius + 1
        self.evidence = config.motion_evidence and config.decoder == "kernel"
        evidence_channels = 2 * k if self.evidence else 0  # per axis: one score per offset
        self.down1 = nn.Sequential(_conv(3 * INPUT_FRAMES + 3 + evidence_channels, c1), _conv(c1, c1))  # S
        self.down2 = _conv(c1, c2, 2)  # S/2
        self.down3 = _conv(c2, c3, 2)  # S/4
        self.down4 = _conv(c3, c4, 2)  # S/8
        self.film = nn.Linear(config.d_model, 2 * c4)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        z = config.latent_channels
        self.to_latent = nn.Conv2d(c4, 2 * z if config.vae else z, 1)
        self.from_latent = _conv(z + c4, c4)
        self.up3 = _conv(c4 + c3, c3)  # at S/4
        self.up2 = _conv(c3 + c2, c2)  # at S/2
        self.up1 = _conv(c2 + c1, c1)  # at S
        if self.evidence:
            # logit += scale * evidence, per axis (evidence_scale_init at the start)
            self.evidence_scale = nn.Parameter(torch.full((2,), float(config.evidence_scale_init)))
        self.pixel_paint = config.pixel_paint and config.decoder == "kernel"
        if self.pixel_paint:
            hidden = config.paint_hidden
            # two hidden layers: a colour that cycles is a lookup over a few colours, which one layer
            # learned far more slowly (fitted to those pixels alone, 32 wide, 300 steps: 49 % of them
            # within the detector's tolerance with one layer, 78 % with two)
            self.paint = nn.Sequential(nn.Conv2d(c1 + 3 * INPUT_FRAMES, hidden, 1), nn.GELU(),
                                       nn.Conv2d(hidden, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 3, 1))
            # a change of the 4th frame's colour (in logit space), starting near none: the painted layer
            # starts close to the 4th frame itself (small, not zero, weights so the hidden layer learns too)
            nn.init.normal_(self.paint[-1].weight, std=0.01)
            nn.init.zeros_(self.paint[-1].bias)
        self.inference_mix = config.inference_mix
        # kernel: RGB + 3 source logits + x and y kernel logits; warp: RGB + mask + (dx, dy); paint: RGB + mask
        outputs = {"kernel": 6 + 2 * k, "warp": 6, "paint": 4}[config.decoder]
        self.head = nn.Conv2d(c1, outputs, 3, padding=1)
        # Training starts from "copy the 4th frame" (no displacement, the painted layer masked out)
        # wherever the motion evidence shows no clear move (evidence_scale_init).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            if config.decoder == "kernel":
                self.head.bias[3] = 4.0  # source: the moved 4th frame
                self.head.bias[6 + self.radius] = self.head.bias[6 + k + self.radius] = 4.0  # no shift
            else:
                self.head.bias[3] = -4.0  # mask near 0
        self.vae = config.vae

    def encode(self, frames: torch.Tensor, state: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """frames (B, 4, 3, S, S), state (B, D) -> skips, latent mean (B, Z, S/8, S/8), log-variance or None.

        With ``motion_evidence`` the skips end with the evidence (B, 2K, S, S) and the raw frames
        (B, 12, S, S), which the head reads.
        """
        x = torch.cat([frames.flatten(1, 2), frames[:, -1] - frames[:, -2]], dim=1)  # (B, 15, S, S)
        evidence = motion_evidence(frames[:, -2], frames[:, -1], self.radius) if self.evidence else None
        if evidence is not None:
            x = torch.cat([x, evidence], dim=1)  # (B, 15 + 2K, S, S)
        s1 = self.down1(x)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        s4 = self.down4(s3)  # (B, C4, S/8, S/8)
        gamma, beta = self.film(state).chunk(2, dim=1)
        s4 = s4 * (1 + gamma[..., None, None]) + beta[..., None, None]
        latent = self.to_latent(s4)
        skips = [s1, s2, s3, s4, evidence, frames.flatten(1, 2)]
        if self.vae:
            mean, logvar = latent.chunk(2, dim=1)
            return skips, mean, logvar.clamp(-8.0, 8.0)
        return skips, latent, None

    def decode(self, skips: list[torch.Tensor], z: torch.Tensor, last: torch.Tensor,
               first: torch.Tensor) -> DecodedFrame:
        """Latent (B, Z, S/8, S/8) -> the 5th frame (B, 3, S, S) in [0, 1], made from ``last`` (the 4th
        frame), ``first`` (the 1st) and a painted layer. In eval mode with ``inference_mix: mode``
        the kernel head takes each pixel's most likely source and offsets instead of their mixture."""
        s1, s2, s3, s4, evidence, raw = skips
        x = self.from_latent(torch.cat([z, s4], dim=1))
        x = self.up3(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), s3], dim=1))
        x = self.up2(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), s2], dim=1))
        x = self.up1(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), s1], dim=1))
        out = self.head(x)
        if self.pixel_paint:
            base = torch.logit(last.clamp(1e-3, 1 - 1e-3))  # (B, 3, S, S): the 4th frame's colours
            # the U-Net's features are read, not trained, by the painted layer: its own loss
            # would otherwise pull them away from choosing the motion
            rgb = torch.sigmoid(base + self.paint(torch.cat([x.detach(), raw * 2 - 1], dim=1)))
        else:
            rgb = torch.sigmoid(out[:, :3])
        if self.decoder == "kernel":
            k = 2 * self.radius + 1
            source_logits, x_logits, y_logits = out[:, 3:6], out[:, 6:6 + k], out[:, 6 + k:]  # (B, 3|K|K, S, S)
            if evidence is not None:
                x_logits = x_logits + self.evidence_scale[0] * evidence[:, :k]
                y_logits = y_logits + self.evidence_scale[1] * evidence[:, k:]
            with torch.no_grad():  # each pixel's likeliest offsets, as the mode inference reads them
                chosen = shift_pixels(last, x_logits.max(dim=1).indices - self.radius,
                                      y_logits.max(dim=1).indices - self.radius)  # (B, 3, S, S)
            candidates = torch.stack([chosen, first, rgb], dim=1)  # (B, 3 sources, 3, S, S)
            if not self.training and self.inference_mix == "mode":
                # each pixel takes one source whole: an exact input pixel or the painted colour
                pick = source_logits.max(dim=1).indices[:, None, None].expand(-1, 1, 3, -1, -1)
                return DecodedFrame(candidates.gather(1, pick)[:, 0], rgb, source_logits, candidates)
            sources = source_logits.softmax(dim=1)
            moved = separable_shift(last, x_logits.softmax(dim=1), y_logits.softmax(dim=1))
            image = sources[:, :1] * moved + sources[:, 1:2] * first + sources[:, 2:] * rgb
            return DecodedFrame(image, rgb, source_logits, candidates.detach())
        mask = torch.sigmoid(out[:, 3:4])
        if self.decoder == "warp":
            last = warp(last, out[:, 4:6])
        return DecodedFrame(mask * rgb + (1 - mask) * last, rgb)


@dataclass
class DecodedFrame:
    """What the image head made: the frame, its painted layer and (kernel head) the choice logits."""

    image: torch.Tensor  # (B, 3, S, S) in [0, 1]
    painted: torch.Tensor  # (B, 3, S, S) in [0, 1]
    # kernel head (None for the others): the source logits (B, 3, S, S) and the sources as the
    # mode inference reads them (B, 3, 3, S, S): the 4th frame moved by each pixel's likeliest
    # offsets, the 1st frame, the painted layer (no gradient)
    source_logits: torch.Tensor | None = None
    sources: torch.Tensor | None = None


def left_padded(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Right-padded rows (B, T) -> the same rows with their padding first, so every row's last
    token sits at the end (the decoder then always reads a sentence that ends where it starts)."""
    length = mask.sum(dim=1, keepdim=True)  # (B, 1)
    index = (torch.arange(ids.shape[1], device=ids.device)[None] + length) % ids.shape[1]
    return ids.gather(1, index)


class StoryContinuation(nn.Module):
    """See the module docstring. ``tokenizer``: the sequence corpus tokenizer."""

    def __init__(self, config: StoryContinuationConfig, tokenizer: PreTrainedTokenizerBase,
                 lm: GPT2LMHeadModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = _prepare_tokenizer(tokenizer)
        d = config.d_model
        self.sentences = SentenceEncoder(len(self.tokenizer), d, self.tokenizer.pad_token_id)
        self.frames = FrameEncoder(config.channels[1], d) if config.use_images else None
        self.cross = nn.MultiheadAttention(d, config.cross_heads, batch_first=True) if config.cross_modal else None
        parts = 1 + int(config.use_images) + int(config.cross_modal)
        self.fuse = nn.Sequential(nn.Linear(parts * d, d), nn.GELU(), nn.LayerNorm(d))
        self.sequence = nn.GRU(d, d, batch_first=True)
        self.state_prefix = nn.Linear(d, config.state_tokens * d)
        self.step_prefix = nn.Linear(d, d)
        self.unet = ImageUNet(config) if config.use_images else None
        self.lm = lm if lm is not None else GPT2LMHeadModel(GPT2Config(
            vocab_size=len(self.tokenizer), n_positions=config.n_positions, n_embd=d, n_layer=config.n_layer,
            n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            activation_function="gelu_pytorch_tanh", initializer_range=config.lm_init_std,
            bos_token_id=self.tokenizer.bos_token_id, eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id))
        self.lm.generation_config.pad_token_id = self.tokenizer.pad_token_id
        self.lm.generation_config.eos_token_id = self.tokenizer.eos_token_id

    @property
    def image_input(self) -> ImageInput:
        return ImageInput.from_dict(self.config.image_input, self.config.image_size)

    # -------------------------------------------------------------- conditioning
    def encode(self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """The 4 input frames (B, 4, 3, S, S) and sentences (B, 4, T) -> the fused state.

        Returns a dict: ``prefix`` (B, k, D) for the text decoder and, with images, the
        U-Net's ``skips``, latent ``mean`` / ``logvar`` and the ``last`` frame.
        """
        batch = input_ids.shape[0]
        tokens, sentence = self.sentences(input_ids.flatten(0, 1), attention_mask.flatten(0, 1))  # (B·4, T, D), (B·4, D)
        parts = [sentence]
        if self.frames is not None:
            visual = self.frames(frames.flatten(0, 1))  # (B·4, N, D)
            parts.append(visual.mean(dim=1))
            if self.cross is not None:
                attended, _ = self.cross(tokens, visual, visual, need_weights=False)  # (B·4, T, D)
                mask = attention_mask.flatten(0, 1).unsqueeze(-1).to(attended.dtype)
                parts.append((attended * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))
        steps = self.fuse(torch.cat(parts, dim=-1)).unflatten(0, (batch, INPUT_FRAMES))  # (B, 4, D)
        outputs, hidden = self.sequence(steps)  # (B, 4, D), (1, B, D)
        state = hidden[0]
        parts = [self.state_prefix(state).unflatten(1, (self.config.state_tokens, -1)),
                 self.step_prefix(outputs)]  # (B, k, D), (B, 4, D)
        if self.config.context_sentence:
            context = input_ids[:, -1]  # (B, T)
            if self.config.context_layout == "left":
                context = left_padded(context, attention_mask[:, -1])
            else:
                width = self.config.max_sentence_tokens
                context = F.pad(context[:, :width], (0, width - min(width, context.shape[1])),
                                value=self.tokenizer.pad_token_id)  # (B, max_sentence_tokens)
            parts.append(self.embed_tokens(context))
        prefix = torch.cat(parts, dim=1)  # (B, k + 4 [+ T], D)
        out: dict[str, Any] = {"prefix": prefix, "state": state}
        if self.unet is not None:
            out["skips"], out["mean"], out["logvar"] = self.unet.encode(frames, state)
            out["last"], out["first"] = frames[:, -1], frames[:, 0]
        return out

    def predict_image(self, encoded: Mapping[str, Any], sample: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The 5th frame (B, 3, S, S) from :meth:`encode`'s output: the latent mean, or a draw."""
        return self._decode(encoded, sample, generator).image

    def _decode(self, encoded: Mapping[str, Any], sample: bool = False,
                generator: torch.Generator | None = None) -> DecodedFrame:
        if self.unet is None:
            raise ValueError("the text-only model predicts no image")
        z = encoded["mean"]
        if sample and encoded["logvar"] is not None:
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + noise * torch.exp(0.5 * encoded["logvar"])
        return self.unet.decode(encoded["skips"], z, encoded["last"], encoded["first"])

    # -------------------------------------------------------------- text (the generation module's interface)
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def text_logits(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of a sentence (B, T) after a prefix (B, k, D)."""
        text = self.embed_tokens(input_ids)
        embeds = torch.cat([prefix.to(text.dtype), text], dim=1)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        hidden = self.lm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self.lm.get_output_embeddings()(hidden[:, prefix.shape[1]:])

    # -------------------------------------------------------------- training
    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> ContinuationOutput:
        """A batch of 5-frame sequences: images (B, 5, 3, S, S), sentences (B, 5, T).

        Frames and sentences 1-4 are the input; the 5th frame and sentence are the targets.
        """
        if images.shape[1] != INPUT_FRAMES + 1 or input_ids.shape[1] != INPUT_FRAMES + 1:
            raise ValueError(f"a batch holds sequences of {INPUT_FRAMES + 1} frames and sentences, got images "
                             f"{tuple(images.shape)} and sentences {tuple(input_ids.shape)}")
        encoded = self.encode(images[:, :INPUT_FRAMES], input_ids[:, :INPUT_FRAMES], attention_mask[:, :INPUT_FRAMES])
        logits = self.text_logits(encoded["prefix"], input_ids[:, -1], attention_mask[:, -1])
        image = decoded = None
        if self.unet is not None:
            decoded = self._decode(encoded, sample=self.training)
            image = decoded.image
        if labels is None:
            return ContinuationOutput(loss=None, image=image, logits=logits)
        text_loss, num_targets = next_token_loss(logits, labels[:, -1])
        loss = self.config.text_loss_weight * text_loss
        parts = {"text_loss": float(text_loss.detach())}
        if image is not None:
            target = images[:, -1]
            weights = None
            if self.config.change_weight > 0:
                changed = ((target - images[:, -2]).abs().amax(dim=1, keepdim=True) > 0.1) | (
                    (images[:, -2] - images[:, -3]).abs().amax(dim=1, keepdim=True) > 0.1)
                weights = 1.0 + self.config.change_weight * changed.to(image.dtype)  # (B, 1, S, S)
            pixel = weighted_l1(image, target, weights)
            edges = edge_loss(image, target, weights)
            loss = loss + pixel + self.config.edge_loss_weight * edges
            parts.update(image_l1=float(pixel.detach()), edge_loss=float(edges.detach()))
            if self.unet.pixel_paint and self.config.paint_loss_weight > 0:
                # over the pixels that change from the 4th frame to the 5th and that neither the move, as
                # the mode inference reads it, nor the 1st frame gets right (a colour that cycles): the
                # layer learns what no move can show (a mean over the whole frame would drown it)
                unexplained = ((decoded.sources[:, :2] - target[:, None]).abs().amax(dim=2) > 0.1).all(dim=1, keepdim=True)
                changed = (target - images[:, -2]).abs().amax(dim=1, keepdim=True) > 0.1
                where = (changed & unexplained).to(image.dtype)
                paint = weighted_l1(decoded.painted, target, where) if where.any() else image.new_zeros(())
                loss = loss + self.config.paint_loss_weight * paint
                parts["paint_l1"] = float(paint.detach())
            if decoded.source_logits is not None and self.config.choice_loss_weight > 0:
                # Inference takes each pixel's most likely source ("mode"), so that choice is taught
                # directly: cross-entropy toward the source that reads the 5th frame best there
                labels = best_source(decoded.sources, target)
                choice = F.cross_entropy(decoded.source_logits, labels)
                loss = loss + self.config.choice_loss_weight * choice
                parts["choice_ce"] = float(choice.detach())
            if encoded["logvar"] is not None:
                mean, logvar = encoded["mean"], encoded["logvar"]
                kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
                loss = loss + self.config.kl_weight * kl
                parts["kl"] = float(kl.detach())
        return ContinuationOutput(loss=loss, image=image, logits=logits, num_targets=num_targets, parts=parts)

    # -------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        payload = {"format_version": FORMAT_VERSION, "family": FAMILY, FAMILY: dataclasses.asdict(self.config),
                   "lm_config": self.lm.config.to_dict()}
        save_directory(self, directory, payload, self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> StoryContinuation:
        payload = read_config(directory, "StoryContinuation.save_pretrained", newest_format=FORMAT_VERSION)
        config = StoryContinuationConfig.from_dict(payload[FAMILY])
        lm = GPT2LMHeadModel(GPT2Config.from_dict(payload["lm_config"]))
        return load_weights(cls(config, load_tokenizer(directory), lm=lm), directory, map_location)
