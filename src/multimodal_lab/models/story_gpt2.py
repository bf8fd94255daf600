"""Image -> short story: a vision encoder whose tokens become GPT-2 prefix embeddings.

The encoder turns an image into N feature tokens, a mapper turns those into k prefix
embeddings of the language model's width, and GPT-2 reads ``[prefix | bos story eos]``
through ``inputs_embeds`` (ClipCap's recipe). The loss covers the story tokens only.

    model = build_story_gpt2(StoryGPT2Config(), tokenizer)
    out = model(images, input_ids, attention_mask, labels)  # out.loss, out.logits
    model.save_pretrained(directory); StoryGPT2.from_pretrained(directory)
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
)

from multimodal_lab.config import from_params
from multimodal_lab.data.images import ImageInput, checked_image_input
from multimodal_lab.models.saving import (  # noqa: F401 - CONFIG_FILE etc. re-exported
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
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

FORMAT_VERSION = 2
FAMILY = "story_gpt2"

# Format 1 kept the CNN's options as flat ``encoder_*`` fields; format 2 nests them in
# the ``encoder`` block. Old model directories still load.
_V1_ENCODER_FIELDS = {
    "encoder_channels": "channels", "encoder_blocks": "blocks_per_stage", "encoder_grid": "grid",
    "encoder_residual": "residual", "encoder_downsample": "downsample", "encoder_stem_stride": "stem_stride",
    "encoder_position_embedding": "position_embedding", "encoder_global_token": "global_token",
}


@dataclass
class StoryGPT2Config:
    """Every size of the story model; the defaults are the measured CPU setting."""

    # the vision encoder: {"name": <registry name>, <that encoder's options>} (models.vision)
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "cnn"})
    image_size: int = 64  # square input side S in pixels
    # how any picture becomes the S x S input (data.images.ImageInput: size, fit mode, resampling,
    # background); the training node copies it from the ingest policy so the saved model knows it
    image_input: dict[str, Any] | None = None
    prefix_tokens: int = 64  # k prefix embeddings handed to the language model
    mapper: str = "mlp"  # "mlp" (per token, or 1 token -> k), "attention" (k learned queries) or "slots"
    mapper_hidden: int = 256  # hidden width of the mapper MLP (0 = a single linear layer)
    mapper_heads: int = 4  # attention heads of the "attention" mapper
    lm_source: str = "config"  # "config": GPT-2 built from the sizes below; "pretrained": loaded
    lm_name_or_path: str | None = None  # hub id or local dir when lm_source == "pretrained"
    n_layer: int = 2  # GPT-2 blocks (lm_source == "config")
    n_head: int = 4  # GPT-2 attention heads (lm_source == "config")
    n_embd: int = 128  # GPT-2 width D; also the prefix width
    n_positions: int = 128  # GPT-2 context length; must hold prefix + story
    dropout: float = 0.0  # GPT-2 residual/embedding/attention dropout
    attn_implementation: str | None = "eager"  # GPT-2 attention kernel: "eager", "sdpa" (None = transformers' pick)
    lm_init_std: float = 0.02  # std of GPT-2's initial weights when built from config (GPT-2's own is 0.02)
    freeze_lm: bool = False  # train only encoder + mapper (ClipCap's frozen GPT-2 setting)
    max_story_tokens: int = 64  # longest text in tokens, bos and eos included (longer is cut)
    emphasis_words: list[str] = field(default_factory=list)  # words whose tokens weigh emphasis_weight in the loss
    emphasis_weight: float = 1.0  # loss weight of those tokens (1 = plain cross-entropy)
    region_loss_weight: float = 0.0  # weight of the text-derived region grounding loss (0 = off; see forward)
    region_colours: list[str] = field(default_factory=list)  # its colour classes (scene-world colours when empty)
    region_shapes: list[str] = field(default_factory=list)  # its shape classes (scene-world shapes when empty)
    # hand the region head's answers to the mapper too: each grid token gains a learned embedding
    # of its colour and shape probabilities (needs the region loss)
    region_features: bool = False

    def __post_init__(self) -> None:
        if self.lm_source not in ("config", "pretrained"):
            raise ValueError(f"lm_source must be 'config' or 'pretrained', got {self.lm_source!r}")
        if self.lm_source == "pretrained" and not self.lm_name_or_path:
            raise ValueError("lm_source 'pretrained' needs lm_name_or_path (a hub id or a local directory)")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}; "
                f"use n_head in {[h for h in range(1, 17) if self.n_embd % h == 0]}"
            )
        for key in ("prefix_tokens", "image_size", "n_layer", "n_head", "n_embd", "n_positions"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.max_story_tokens < 2:
            raise ValueError(f"max_story_tokens must be >= 2 (bos + eos), got {self.max_story_tokens}")
        if self.prefix_tokens + self.max_story_tokens > self.n_positions:
            raise ValueError(
                f"prefix_tokens {self.prefix_tokens} + max_story_tokens {self.max_story_tokens} exceed "
                f"n_positions {self.n_positions}; raise n_positions to at least "
                f"{self.prefix_tokens + self.max_story_tokens} or shorten the prefix/stories"
            )
        if self.mapper not in ("mlp", "attention", "slots"):
            raise ValueError(f"mapper must be 'mlp', 'attention' or 'slots', got {self.mapper!r}")
        if self.mapper == "attention" and self.n_embd % self.mapper_heads:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by mapper_heads {self.mapper_heads}")
        check_emphasis(self.emphasis_words, self.emphasis_weight)
        if self.region_loss_weight < 0:
            raise ValueError(f"region_loss_weight must be >= 0, got {self.region_loss_weight}")
        if self.region_features and self.region_loss_weight <= 0:
            raise ValueError("region_features reads the region head, which needs region_loss_weight > 0")
        if self.region_loss_weight > 0 and not (self.region_colours and self.region_shapes):
            from multimodal_lab.data.scene_world import COLOURS, SHAPES

            self.region_colours = list(self.region_colours or COLOURS)
            self.region_shapes = list(self.region_shapes or SHAPES)
        if self.lm_init_std <= 0:
            raise ValueError(f"lm_init_std must be positive, got {self.lm_init_std}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.encoder = encoder_spec(self.encoder, where="encoder")
        self.image_input = checked_image_input(self.image_input, self.image_size)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StoryGPT2Config:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, values, where="StoryGPT2Config")


@dataclass
class StoryGPT2Output:
    """Forward result: ``logits[:, t]`` predicts ``input_ids[:, t + 1]``."""

    loss: torch.Tensor | None  # training objective: mean (weighted) cross-entropy over labelled tokens + region loss
    logits: torch.Tensor  # (B, T, V) over the text positions only
    num_targets: int | None = None  # labelled tokens the loss averages over (weights a validation mean)
    region_loss: torch.Tensor | None = None  # the region grounding term alone (when it ran)


class PrefixMapper(nn.Module):
    """Turns N encoder tokens (B, N, D_enc) into k prefix embeddings (B, k, D)."""

    def __init__(self, kind: str, num_inputs: int, in_dim: int, prefix_tokens: int, out_dim: int,
                 hidden: int, heads: int) -> None:
        super().__init__()
        self.kind = kind
        self.prefix_tokens = prefix_tokens
        self.out_dim = out_dim
        if kind == "mlp":
            if num_inputs not in (1, prefix_tokens):
                raise ValueError(
                    f"the 'mlp' mapper needs the encoder's token count ({num_inputs}) to equal "
                    f"prefix_tokens ({prefix_tokens}) or to be 1; set prefix_tokens={num_inputs}, "
                    "use encoder.grid=1, or use mapper='attention'"
                )
            # One token -> k tokens expands in the last layer (ClipCap's MLP mapper);
            # N == k maps each grid token on its own, keeping where it came from.
            width = out_dim * (prefix_tokens if num_inputs == 1 else 1)
            if hidden > 0:
                self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, width))
            else:
                self.net = nn.Linear(in_dim, width)
        elif kind == "slots":
            # Slot competition: each grid token's attention is a softmax over the k queries,
            # so the queries split the image between them instead of all reading the same
            # object (one round of Locatello et al.'s slot attention, without the GRU).
            self.queries = nn.Parameter(torch.randn(prefix_tokens, out_dim) * 0.02)
            self.key = nn.Linear(in_dim, out_dim, bias=False)
            self.value = nn.Linear(in_dim, out_dim, bias=False)
            self.input_norm = nn.LayerNorm(in_dim)
            self.norm = nn.LayerNorm(out_dim)
            self.net = nn.Sequential(nn.Linear(out_dim, hidden or out_dim), nn.GELU(),
                                     nn.Linear(hidden or out_dim, out_dim))
        else:
            self.queries = nn.Parameter(torch.randn(prefix_tokens, out_dim) * 0.02)
            self.attention = nn.MultiheadAttention(out_dim, heads, kdim=in_dim, vdim=in_dim, batch_first=True)
            self.norm = nn.LayerNorm(out_dim)
            self.net = nn.Sequential(nn.Linear(out_dim, hidden or out_dim), nn.GELU(),
                                     nn.Linear(hidden or out_dim, out_dim))

    def slot_shares(self, features: torch.Tensor) -> torch.Tensor:
        """The "slots" mapper's split of each grid token between the k slots: (B, k, N), summing to 1 over k."""
        keys = self.key(self.input_norm(features))  # (B, N, D)
        return (self.queries @ keys.transpose(1, 2) / self.out_dim ** 0.5).softmax(dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, N, D_enc)
        batch = features.shape[0]
        if self.kind == "mlp":
            return self.net(features).reshape(batch, self.prefix_tokens, self.out_dim)  # (B, k, D)
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)  # (B, k, D)
        if self.kind == "slots":
            share = self.slot_shares(features) + 1e-8  # (B, k, N)
            share = share / share.sum(dim=2, keepdim=True)  # a weighted mean per slot
            attended = share @ self.value(self.input_norm(features))  # (B, k, D)
        else:
            attended, _ = self.attention(queries, features, features, need_weights=False)
        hidden = queries + attended
        return hidden + self.net(self.norm(hidden))  # (B, k, D)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer the special tokens the model relies on (pad and bos fall back to eos)."""
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos token; train it with an '<eos>' special token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    return tokenizer


def _lm_config(config: StoryGPT2Config, tokenizer: PreTrainedTokenizerBase) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        # The fused tanh-GELU equals GPT-2's "gelu_new" but runs as one kernel instead of
        # five element-wise ones (about a fifth of a CPU training step at width 128).
        activation_function="gelu_pytorch_tanh",
        initializer_range=config.lm_init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


class StoryGPT2(nn.Module):
    """Vision encoder + prefix mapper + GPT-2 language model.

    Args:
        config: model sizes.
        tokenizer: the text tokenizer (needs an eos token; pad/bos fall back to eos).
        lm: an already built GPT-2 (used by :func:`build_story_gpt2` for pretrained
            weights and by :meth:`from_pretrained`); built from ``config`` when None.
    """

    def __init__(self, config: StoryGPT2Config, tokenizer: PreTrainedTokenizerBase,
                 lm: GPT2LMHeadModel | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = _prepare_tokenizer(tokenizer)
        self.encoder: VisionEncoder = build_encoder(config.encoder, out_dim=config.n_embd)
        num_inputs = self.encoder.num_tokens(config.image_size)
        self.mapper = PrefixMapper(config.mapper, num_inputs, self.encoder.out_dim, config.prefix_tokens,
                                   config.n_embd, config.mapper_hidden, config.mapper_heads)
        self.lm = lm if lm is not None else GPT2LMHeadModel(_lm_config(config, self.tokenizer))
        if config.attn_implementation is not None:
            # On a CPU under bf16 autocast the plain matmul attention is about twice as
            # fast as SDPA's flash kernel backward; on a GPU "sdpa" is the better pick.
            self.lm.set_attn_implementation(config.attn_implementation)
        if self.lm.config.n_embd != config.n_embd:
            raise ValueError(f"language model width {self.lm.config.n_embd} != config n_embd {config.n_embd}")
        if len(self.tokenizer) > self.lm.config.vocab_size:
            self.lm.resize_token_embeddings(len(self.tokenizer))
        # Per-token loss weights: emphasised words (e.g. colour and shape names) count more.
        self.register_buffer("loss_weights", emphasis_weights(self.tokenizer, config.emphasis_words,
                                                              config.emphasis_weight), persistent=False)
        self.region_head = None
        if config.region_loss_weight > 0:
            classes = len(config.region_colours) + len(config.region_shapes)
            self.region_head = nn.Linear(self.encoder.out_dim, classes)
        self.region_embedding = None
        if config.region_features:
            self.region_embedding = nn.Linear(self.region_head.out_features, self.encoder.out_dim, bias=False)
            nn.init.zeros_(self.region_embedding.weight)  # starts as the plain encoder
        self.lm.generation_config.pad_token_id = self.tokenizer.pad_token_id
        self.lm.generation_config.eos_token_id = self.tokenizer.eos_token_id
        if config.freeze_lm:
            if config.lm_source == "config":
                warnings.warn("freeze_lm with a freshly initialised GPT-2 keeps random LM weights; "
                              "use lm_source='pretrained' or freeze_lm=False", stacklevel=2)
            self.lm.requires_grad_(False)

    @property
    def image_input(self) -> ImageInput:
        """How pictures become this model's input (see ``data.images.ImageInput``)."""
        return ImageInput.from_dict(self.config.image_input, self.config.image_size)

    @property
    def prefix_tokens(self) -> int:
        return self.config.prefix_tokens

    def train(self, mode: bool = True) -> StoryGPT2:
        super().train(mode)
        if self.config.freeze_lm:
            self.lm.eval()  # a frozen LM gains nothing from dropout noise
        return self

    def encode_prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> prefix embeddings (B, k, D)."""
        return self.mapper(self._with_regions(self.encoder.forward_features(images)))  # (B, k, D)

    def _with_regions(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, D_enc) -> the mapper's input: the same unless region_features."""
        if self.region_embedding is None:
            return features
        scores = self.region_head(features)  # (B, N, C + S)
        split = len(self.config.region_colours)
        probabilities = torch.cat([scores[..., :split].softmax(-1), scores[..., split:].softmax(-1)], dim=-1)
        # each token also says, in one learned vector, which colour and shape it shows
        return features + self.region_embedding(probabilities.to(features.dtype))

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> the language model's input embeddings (B, T, D)."""
        return self.lm.get_input_embeddings()(input_ids)

    def text_logits(self, prefix: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
        """Text logits (B, T, V) after a given prefix (B, k, D): the image's own or a control's."""
        text = self.embed_tokens(input_ids)  # (B, T, D)
        embeds = torch.cat([prefix.to(text.dtype), text], dim=1)  # (B, k + T, D)
        mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
        hidden = self.lm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self.lm.get_output_embeddings()(hidden[:, prefix.shape[1]:])  # (B, T, V)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, region_masks: torch.Tensor | None = None,
                region_colours: torch.Tensor | None = None,
                region_shapes: torch.Tensor | None = None) -> StoryGPT2Output:
        """Score stories given images.

        Args:
            images: (B, 3, S, S) float in [0, 1].
            input_ids: (B, T) ``bos story eos pad...``.
            attention_mask: (B, T) 1 on real tokens, 0 on padding.
            labels: (B, T) token ids with -100 where no loss is wanted (bos, padding).
            region_masks: (B, R, G) for the region loss: the encoder grid cells (row by
                row) that each of R object sentences of the story points at with its
                position phrase ("near the top left").
            region_colours: (B, R) class of each sentence's colour (-100: no sentence).
            region_shapes: (B, R) class of each sentence's shape (-100: no sentence).

        Returns:
            loss (when labels are given) and text logits (B, T, V). With the region
            loss on, a small head classifies colour and shape from every grid token; the
            best-scoring token inside a sentence's region must name that sentence's
            object. The targets come from the training stories alone, and the term makes
            the image tokens carry which object is where before the language model has
            learned to ask for it.
        """
        features = self.encoder.forward_features(images)  # (B, N, D_enc)
        logits = self.text_logits(self.mapper(self._with_regions(features)), input_ids, attention_mask)  # (B, T, V)
        loss, num_targets, region_loss = None, None, None
        if labels is not None:
            # Position t predicts token t + 1, so the prefix never carries a target.
            loss, num_targets = next_token_loss(logits, labels, self.loss_weights)
            if self.region_head is not None and region_masks is not None:
                region_loss = self._region_loss(features, region_masks, region_colours, region_shapes)
                if region_loss is not None:
                    loss = loss + self.config.region_loss_weight * region_loss
        return StoryGPT2Output(loss=loss, logits=logits, num_targets=num_targets, region_loss=region_loss)

    def _region_loss(self, features: torch.Tensor, masks: torch.Tensor, colours: torch.Tensor,
                     shapes: torch.Tensor) -> torch.Tensor | None:
        if not bool((colours != -100).any()):
            return None  # no story in the batch named an object's place
        cells = masks.shape[-1]
        if cells > features.shape[1]:
            raise ValueError(f"region masks cover {cells} cells but the encoder gives {features.shape[1]} tokens")
        scores = self.region_head(features[:, -cells:].float())  # (B, G, C + S): the grid tokens
        pooled = scores[:, None].masked_fill(~masks[..., None], -1e4).amax(dim=2)  # (B, R, C + S)
        split = len(self.config.region_colours)
        return (F.cross_entropy(pooled[..., :split].flatten(0, 1), colours.flatten(), ignore_index=-100)
                + F.cross_entropy(pooled[..., split:].flatten(0, 1), shapes.flatten(), ignore_index=-100))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` into ``directory`` (atomically)."""
        payload = {
            "format_version": FORMAT_VERSION,
            "family": FAMILY,
            "story_gpt2": dataclasses.asdict(self.config),
            "lm_config": self.lm.config.to_dict(),
        }
        save_directory(self, directory, payload, self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> StoryGPT2:
        """Load a model written by :meth:`save_pretrained` (no network access needed)."""
        payload = read_config(directory, "StoryGPT2.save_pretrained")
        config = StoryGPT2Config.from_dict(_upgrade(payload)["story_gpt2"])
        lm = GPT2LMHeadModel(GPT2Config.from_dict(payload["lm_config"]))
        model = cls(config, load_tokenizer(directory), lm=lm)
        return load_weights(model, directory, map_location)


def _upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """Bring a saved config.json payload to the current format."""
    version = int(payload.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"this model directory has format {version}, newer than this code reads ({FORMAT_VERSION}); "
            "upgrade multimodal_lab"
        )
    if version == 1:
        old = dict(payload["story_gpt2"])
        name = old.pop("encoder", "cnn")
        encoder = {"name": name, **old.pop("encoder_kwargs", {})}
        for flat, nested in _V1_ENCODER_FIELDS.items():
            if flat in old:
                value = old.pop(flat)
                if name == "cnn":
                    encoder[nested] = value
        payload = {**payload, "format_version": 2, "family": FAMILY, "story_gpt2": {**old, "encoder": encoder}}
    return payload


def build_story_gpt2(config: StoryGPT2Config, tokenizer: PreTrainedTokenizerBase | None = None) -> StoryGPT2:
    """Build a story model, loading GPT-2 (and its tokenizer) when ``lm_source == "pretrained"``.

    Args:
        config: model sizes; for a pretrained LM the GPT-2 sizes are taken from the
            loaded model (the returned model's config reflects them).
        tokenizer: required for ``lm_source == "config"``; for a pretrained LM the
            tokenizer saved with it is loaded when None.
    """
    if config.lm_source == "config":
        if tokenizer is None:
            raise ValueError("lm_source 'config' needs a tokenizer (e.g. the one trained by the vocab pipeline)")
        return StoryGPT2(config, tokenizer)
    lm = GPT2LMHeadModel.from_pretrained(config.lm_name_or_path)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(config.lm_name_or_path)
    lm_cfg = lm.config
    config = dataclasses.replace(config, n_layer=lm_cfg.n_layer, n_head=lm_cfg.n_head, n_embd=lm_cfg.n_embd,
                                 n_positions=lm_cfg.n_positions)
    return StoryGPT2(config, tokenizer, lm=lm)
