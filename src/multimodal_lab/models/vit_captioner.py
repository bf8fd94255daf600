"""Image -> caption: a vision encoder's tokens, read by a GPT-2 decoder through cross-attention.

The encoder (any registered one: the ViT by default, the CNN as well) turns an image into
N feature tokens (B, N, D); a causal GPT-2 decoder built from config with
``add_cross_attention=True`` attends to them in every block while it writes
``bos caption eos``. Training is teacher forcing with cross-entropy on the caption tokens;
decoding goes through GPT-2's own ``generate`` (batched greedy / beam search / sampling
with the KV cache), with the image tokens handed over as ``encoder_hidden_states``:

    model = ViTCaptioner(ViTCaptionerConfig(), tokenizer)
    out = model(images, input_ids, attention_mask, labels)  # out.loss, out.logits
    features = model.encode(images)  # (B, N, D)
    ids = model.generate_ids(features, GenerationSettings(strategy="beam", num_beams=5))
    maps = model.cross_attention_maps(features, ids)  # (layers, B, T, N), head-averaged

Why not ``VisionEncoderDecoderModel``: it needs a ``transformers`` encoder, so the
project's CNN could not caption; the decoder, its cross-attention and ``generate`` are the
same GPT-2 code either way.
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
from multimodal_lab.data.images import ImageInput, checked_image_input
from multimodal_lab.generation.story import GenerationSettings, generate_kwargs
from multimodal_lab.models.saving import (
    load_tokenizer,
    load_weights,
    read_config,
    save_directory,
)
from multimodal_lab.models.text_loss import (
    check_emphasis,
    emphasis_weights,
    next_token_loss,
)
from multimodal_lab.models.vision import VisionEncoder, build_encoder, encoder_spec

FORMAT_VERSION = 1
FAMILY = "vit_captioner"


@dataclass
class ViTCaptionerConfig:
    """Every size of the captioner; the defaults are the measured CPU setting."""

    # the vision encoder: {"name": <registry name>, <that encoder's options>} (models.vision)
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "vit"})
    image_size: int = 64  # square input side S in pixels
    image_input: dict[str, Any] | None = None  # how pictures become the input (set from ingest by training)
    n_layer: int = 2  # decoder blocks (each: causal self-attention, cross-attention, MLP)
    n_head: int = 4  # decoder attention heads
    n_embd: int = 128  # decoder width D; the encoder's tokens are projected to it
    n_positions: int = 48  # decoder context: bos + caption + eos
    dropout: float = 0.0  # decoder residual/embedding/attention dropout
    attn_implementation: str = "sdpa"  # decoder attention kernel ("sdpa" or "eager"); maps switch to eager
    max_caption_tokens: int = 40  # longest caption in tokens, bos and eos included (longer is cut)
    # weight of the object loss (0 = off; see forward): which (colour, shape) pairs the image shows,
    # read off the training captions and predicted from the image tokens
    object_loss_weight: float = 0.0
    # how the head scores a (colour, shape) pair on a token: "joint" = a class of its own per pair;
    # "factored" = P(colour) x P(shape) of the same token, so a pair is bound by the token that
    # shows both and only C + S per-token answers are learned
    object_pairs: str = "joint"
    object_colours: list[str] = field(default_factory=list)  # its colour words (scene-world colours when empty)
    object_shapes: list[str] = field(default_factory=list)  # its shape words (scene-world shapes when empty)
    # hand the object head's (colour, shape) answers to the decoder too: each image token gains a
    # learned embedding of its pair probabilities (needs the object loss)
    object_features: bool = False
    # k object tokens read before the patches: the object head's k most likely (colour, shape)
    # pairs for the image, each a learned embedding of its pair, scaled by how sure the head is,
    # plus the image token where it is strongest (needs the object loss); 0 = none
    object_tokens: int = 0
    emphasis_words: list[str] = field(default_factory=list)  # words whose tokens weigh emphasis_weight in the loss
    emphasis_weight: float = 1.0  # loss weight of those tokens (1 = plain cross-entropy)

    def __post_init__(self) -> None:
        for key in ("image_size", "n_layer", "n_head", "n_embd", "n_positions"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}; "
                             f"use n_head in {[h for h in range(1, 17) if self.n_embd % h == 0]}")
        if self.max_caption_tokens < 2:
            raise ValueError(f"max_caption_tokens must be >= 2 (bos + eos), got {self.max_caption_tokens}")
        if self.max_caption_tokens > self.n_positions:
            raise ValueError(f"max_caption_tokens {self.max_caption_tokens} exceeds n_positions {self.n_positions}; "
                             f"raise n_positions to at least {self.max_caption_tokens}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        if self.object_loss_weight < 0:
            raise ValueError(f"object_loss_weight must be >= 0, got {self.object_loss_weight}")
        if self.object_loss_weight > 0 and not (self.object_colours and self.object_shapes):
            from multimodal_lab.data.scene_world import COLOURS, SHAPES

            self.object_colours = list(self.object_colours or COLOURS)
            self.object_shapes = list(self.object_shapes or SHAPES)
        if self.object_pairs not in ("joint", "factored"):
            raise ValueError(f"object_pairs must be 'joint' or 'factored', got {self.object_pairs!r}")
        if self.object_tokens < 0:
            raise ValueError(f"object_tokens must be >= 0, got {self.object_tokens}")
        if self.object_tokens and self.object_loss_weight <= 0:
            raise ValueError("object_tokens reads the object head, which needs object_loss_weight > 0")
        if self.object_features and self.object_loss_weight <= 0:
            raise ValueError("object_features reads the object head, which needs object_loss_weight > 0")
        check_emphasis(self.emphasis_words, self.emphasis_weight)
        self.encoder = encoder_spec(self.encoder, where="encoder")
        self.image_input = checked_image_input(self.image_input, self.image_size)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ViTCaptionerConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, values, where="ViTCaptionerConfig")


@dataclass
class CaptionerOutput:
    """Forward result: ``logits[:, t]`` predicts ``input_ids[:, t + 1]``."""

    loss: torch.Tensor | None  # mean cross-entropy over the labelled caption tokens
    logits: torch.Tensor  # (B, T, V)
    num_targets: int | None = None  # labelled tokens the loss averages over
    object_loss: torch.Tensor | None = None  # the object term (before its weight), when computed


def _decoder_config(config: ViTCaptionerConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        activation_function="gelu_pytorch_tanh",
        add_cross_attention=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


class ViTCaptioner(nn.Module):
    """Vision encoder + GPT-2 decoder with cross-attention to the image tokens.

    Args:
        config: model sizes.
        tokenizer: the caption tokenizer (needs an eos token; pad and bos fall back to eos).
        decoder: an already built decoder (used by :meth:`from_pretrained`); built from
            ``config`` when None.
    """

    def __init__(self, config: ViTCaptionerConfig, tokenizer: PreTrainedTokenizerBase,
                 decoder: GPT2LMHeadModel | None = None) -> None:
        super().__init__()
        from multimodal_lab.models.story_gpt2 import _prepare_tokenizer

        self.config = config
        self.tokenizer = _prepare_tokenizer(tokenizer)
        self.encoder: VisionEncoder = build_encoder(config.encoder, out_dim=config.n_embd,
                                                    image_size=config.image_size)
        self.num_image_tokens = self.encoder.num_tokens(config.image_size)
        self.decoder = decoder if decoder is not None else GPT2LMHeadModel(_decoder_config(config, self.tokenizer))
        self.decoder.set_attn_implementation(config.attn_implementation)
        if not self.decoder.config.add_cross_attention:
            raise ValueError("the captioner's decoder needs add_cross_attention=True")
        generation = self.decoder.generation_config
        generation.bos_token_id = self.tokenizer.bos_token_id
        generation.eos_token_id = self.tokenizer.eos_token_id
        generation.pad_token_id = self.tokenizer.pad_token_id
        generation.decoder_start_token_id = self.tokenizer.bos_token_id
        self.object_head = None
        if config.object_loss_weight > 0:
            colours, shapes = len(config.object_colours), len(config.object_shapes)
            classes = colours + shapes + (colours * shapes if config.object_pairs == "joint" else 0)
            self.object_head = nn.Linear(self.encoder.out_dim, classes)
        self.object_embedding = None
        if config.object_features:
            pairs = len(config.object_colours) * len(config.object_shapes)
            self.object_embedding = nn.Linear(pairs, config.n_embd, bias=False)
            nn.init.zeros_(self.object_embedding.weight)  # starts as the plain encoder
        self.pair_embedding = self.presence = None
        if config.object_tokens > 0:
            pairs = len(config.object_colours) * len(config.object_shapes)
            self.pair_embedding = nn.Embedding(pairs, config.n_embd)
            self.presence = nn.Parameter(torch.randn(config.n_embd) * 0.02)
        self.register_buffer("loss_weights", emphasis_weights(self.tokenizer, config.emphasis_words,
                                                              config.emphasis_weight), persistent=False)

    @property
    def image_input(self) -> ImageInput:
        """How pictures become this model's input (see ``data.images.ImageInput``)."""
        return ImageInput.from_dict(self.config.image_input, self.config.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> image tokens (B, N, D) the decoder attends to."""
        return self._with_objects(self.encoder.forward_features(images))

    def _with_objects(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D) -> the decoder's memory (B, k + N, D): the k object tokens
        (``object_tokens``, none by default), then the image tokens, each with its object features
        when ``object_features``."""
        if self.object_embedding is None and self.pair_embedding is None:
            return features
        colours, shapes = len(self.config.object_colours), len(self.config.object_shapes)
        pairs = self.object_scores(features)[..., colours + shapes:]  # (B, N, C*S) pair logits per token
        objects = self._object_tokens(features, pairs) if self.pair_embedding is not None else None
        if self.object_embedding is not None:
            # each token also says, in one learned vector, which (colour, shape) pairs it shows
            features = features + self.object_embedding(torch.sigmoid(pairs))
        if objects is not None:
            features = torch.cat([objects, features], dim=1)  # (B, k + N, D)
        return features

    def object_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Per-token logits (B, N, C + S + C*S) of the object head: colours, shapes, then pairs
        (colour-major); a factored pair's logit is that of P(colour) x P(shape) at the token."""
        scores = self.object_head(features)
        if self.config.object_pairs == "joint":
            return scores
        colours = len(self.config.object_colours)
        log_colour = F.logsigmoid(scores[..., :colours])  # (B, N, C)
        log_shape = F.logsigmoid(scores[..., colours:])  # (B, N, S)
        log_pair = (log_colour[..., :, None] + log_shape[..., None, :]).flatten(-2)  # (B, N, C*S)
        log_pair = log_pair.clamp(max=-1e-6)
        pair_logit = log_pair - torch.log(-torch.expm1(log_pair))  # log p - log(1 - p)
        return torch.cat([scores, pair_logit], dim=-1)

    def _object_tokens(self, features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """The head's k likeliest pairs as tokens (B, k, D), likeliest first."""
        best, where = pairs.max(dim=1)  # (B, C*S): each pair's strongest token and its logit
        logit, pair = best.topk(self.config.object_tokens, dim=1)  # (B, k)
        at = where.gather(1, pair)  # (B, k): the image token of each chosen pair
        located = features.gather(1, at[..., None].expand(-1, -1, features.shape[-1]))  # (B, k, D)
        sure = torch.sigmoid(logit)[..., None]  # (B, k, 1)
        return located + sure * (self.pair_embedding(pair) + self.presence)

    def text_logits(self, features: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
        """Caption logits (B, T, V) given image tokens (B, N, D): the image's own or a control's."""
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask,
                            encoder_hidden_states=features.to(self.decoder.dtype)).logits

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, object_targets: torch.Tensor | None = None) -> CaptionerOutput:
        """Teacher-forced captions.

        Args:
            images: (B, 3, S, S) float in [0, 1].
            input_ids: (B, T) ``bos caption eos pad...``.
            attention_mask: (B, T) 1 on real tokens.
            labels: (B, T) ids with -100 where no loss is wanted.
            object_targets: (B, R, 2) for the object loss: the (colour, shape) class ids of
                the objects the record's caption names, -100 in unused slots.

        Returns:
            loss (with labels), logits (B, T, V). With the object loss on, a linear head
            asks every image token which colours, shapes and (colour, shape) pairs it
            shows; the best token's answer per class must say whether the caption names
            it (multiple-instance learning: binary cross-entropy on the token maximum,
            summed over classes). Classes the caption does not name must be absent from
            every token, so no token can claim everything. It makes each object's tokens
            carry what it is long before the decoder has learned to ask for it through
            cross-attention.
        """
        features = self.encoder.forward_features(images)  # (B, N, D)
        logits = self.text_logits(self._with_objects(features), input_ids, attention_mask)  # (B, T, V)
        loss = num_targets = object_loss = None
        if labels is not None:
            loss, num_targets = next_token_loss(logits, labels, self.loss_weights)
            if self.object_head is not None and object_targets is not None:
                object_loss = self._object_loss(features, object_targets)
                if object_loss is not None:
                    loss = loss + self.config.object_loss_weight * object_loss
        return CaptionerOutput(loss=loss, logits=logits, num_targets=num_targets, object_loss=object_loss)

    def _object_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        known = (targets[..., 0] >= 0).any(dim=1)  # (B,): captions that named at least one object
        if not bool(known.any()):
            return None
        targets = targets[known]
        colours, shapes = len(self.config.object_colours), len(self.config.object_shapes)
        present = torch.zeros(targets.shape[0], colours + shapes + colours * shapes, device=features.device)
        valid = targets[..., 0] >= 0  # (B', R)
        rows = torch.arange(targets.shape[0], device=features.device)[:, None].expand_as(valid)[valid]
        colour, shape = targets[..., 0][valid], targets[..., 1][valid]
        present[rows, colour] = 1.0
        present[rows, colours + shape] = 1.0
        present[rows, colours + shapes + colour * shapes + shape] = 1.0
        scores = self.object_scores(features[known].float()).amax(dim=1)  # (B', C + S + C*S): best token per class
        # Summed over classes: each class is one yes/no question about the image.
        return F.binary_cross_entropy_with_logits(scores, present, reduction="sum") / targets.shape[0]

    @torch.no_grad()
    def generate_ids(self, features: torch.Tensor, settings: GenerationSettings | None = None,
                     num_return_sequences: int = 1) -> torch.Tensor:
        """Caption token ids after bos, (B * num_return_sequences, L), padded after eos.

        Batched greedy / beam / sampling through GPT-2's ``generate`` with the KV cache;
        the image tokens are expanded per beam by ``generate`` itself.
        """
        settings = settings or GenerationSettings(max_new_tokens=self.config.max_caption_tokens - 1)
        if settings.max_new_tokens + 1 > self.decoder.config.n_positions:
            raise ValueError(f"bos + max_new_tokens {settings.max_new_tokens} exceed the decoder's "
                             f"{self.decoder.config.n_positions} positions; lower max_new_tokens")
        was_training = self.training
        self.eval()
        try:
            device = features.device
            bos = torch.full((features.shape[0], 1), self.tokenizer.bos_token_id, dtype=torch.long, device=device)
            kwargs = generate_kwargs(settings)
            if num_return_sequences > 1:
                kwargs["num_return_sequences"] = num_return_sequences
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(settings.seed)
                output = self.decoder.generate(
                    input_ids=bos, attention_mask=torch.ones_like(bos),
                    encoder_hidden_states=features.to(self.decoder.dtype),
                    eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
            return output[:, 1:]
        finally:
            self.train(was_training)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Generated ids -> clean captions (special tokens stripped, whitespace tidied)."""
        from multimodal_lab.generation.story import clean_text

        return [clean_text(t) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def cross_attention_maps(self, features: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """Where each generated token looked: cross-attention over the image tokens.

        One teacher-forced pass over ``bos + caption`` with eager attention (the fused
        kernels return no weights), averaged over heads.

        Args:
            features: image tokens (B, N, D).
            caption_ids: generated ids after bos (B, L), padded with pad after eos.

        Returns:
            (layers, B, L, N): row t is the attention of the step that *produced* token t, over
            the N image tokens (the weight on object tokens, when there are any, is left out).
        """
        bos = torch.full((caption_ids.shape[0], 1), self.tokenizer.bos_token_id, dtype=torch.long,
                         device=caption_ids.device)
        ids = torch.cat([bos, caption_ids], dim=1)[:, :-1]  # the inputs of the steps that wrote caption_ids
        was_training, kernel = self.training, self.decoder.config._attn_implementation
        self.eval()
        self.decoder.set_attn_implementation("eager")
        try:
            out = self.decoder(input_ids=ids, attention_mask=torch.ones_like(ids),
                               encoder_hidden_states=features.to(self.decoder.dtype), output_attentions=True)
            maps = torch.stack([layer.mean(dim=1) for layer in out.cross_attentions])  # (layers, B, L, k + N)
            maps = maps[..., -self.num_image_tokens:]  # (layers, B, L, N)
        finally:
            self.decoder.set_attn_implementation(kernel)
            self.train(was_training)
        return maps

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``directory`` (atomically)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "family": FAMILY,
            FAMILY: dataclasses.asdict(self.config),
            "decoder_config": self.decoder.config.to_dict(),
        }
        save_directory(self, directory, payload, self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ViTCaptioner:
        """Load a model written by :meth:`save_pretrained` (no network access needed)."""
        payload = read_config(directory, "ViTCaptioner.save_pretrained", newest_format=FORMAT_VERSION)
        config = ViTCaptionerConfig.from_dict(payload[FAMILY])
        decoder = GPT2LMHeadModel(GPT2Config.from_dict(payload["decoder_config"]))
        model = cls(config, load_tokenizer(directory), decoder=decoder)
        return load_weights(model, directory, map_location)


def word_maps(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, maps: torch.Tensor) -> tuple[list[str], Any]:
    """One caption's words (up to eos) and where each looked, as (words, grid, grid) numpy maps.

    Args:
        tokenizer: the captioner's tokenizer.
        ids: the caption's generated ids after bos (L,).
        maps: its attention over the image tokens (L, N) (e.g. ``cross_attention_maps``
            averaged over layers); the last grid x grid tokens are the patches, row by row.
    """
    import math

    import numpy as np

    grid = math.isqrt(maps.shape[-1])
    words, rows = [], []
    for t, token in enumerate(ids.tolist()):
        if token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
            break
        words.append(tokenizer.decode([token]).strip() or "?")
        rows.append(maps[t, -grid * grid:].reshape(grid, grid).float().cpu().numpy())
    return words, np.stack(rows) if rows else np.zeros((0, grid, grid), dtype=np.float32)

