"""art_generator's ``seed_vae``: one seed -> an engraving and its caption, the write-up's design.

The baseline the art_generator family must beat, reproduced at our sizes: one Gaussian
latent shared by an image decoder and a caption decoder, learned as a VAE from real
(engraving, caption) pairs, and sampled **from the prior** (a latent drawn from the seed),
as the write-up did. Shapes, with B pairs, side S (64), latent L, width D, caption length T:

* **image encoder**: 3 stride-2 convolutions (C1, C2, C3 channels), (B, 3, S, S) ->
  (B, C3, S/8, S/8) -> a linear layer -> mean and log-variance (B, L) each;
* **image decoder**: a linear layer to (B, C3, S/8, S/8), 3 transposed convolutions ->
  (B, 3, S, S) through a sigmoid;
* **caption decoder** (non-autoregressive): T learned position queries attend to
  ``memory_tokens`` vectors made from the latent, through ``n_layer`` transformer decoder
  layers, and every position's token is predicted at once (B, T, V);
* loss: MSE on pixels + the caption's cross-entropy (padding included: the decoder also
  decides where the caption ends) + ``kl_weight`` * KL(q(z | image) || N(0, I)).

Sampling is reproducible per seed: each seed's latent comes from its own ``torch.Generator``
seeded through ``numpy.random.SeedSequence(seed)`` (:func:`latents_for_seeds`), so a seed gives
the same latent whatever the batch it is drawn in, its position there and the thread count.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from multimodal_lab.config import from_params
from multimodal_lab.models.saving import load_tokenizer, load_weights, read_config, save_directory
from multimodal_lab.models.story_gpt2 import _prepare_tokenizer

FAMILY = "art_generator"
FORMAT_VERSION = 1
GENERATE_CHUNK = 64  # latents decoded together: always this many rows (see SeedVAE.generate)


@dataclass
class SeedVAEConfig:
    """Sizes of the ``seed_vae`` variant (``params:art_generator.model`` + the variant's own)."""

    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # encoder widths at S/2, S/4, S/8
    latent_dim: int = 128
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    memory_tokens: int = 4  # vectors the caption decoder's queries attend to, made from the latent
    max_caption_tokens: int = 24  # eos included
    kl_weight: float = 0.01
    image_input: dict[str, Any] | None = None  # set by the training node from params:ingest

    def __post_init__(self) -> None:
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be 3 positive widths (at S/2, S/4, S/8), got {self.channels}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_head {self.n_head}")
        if min(self.latent_dim, self.memory_tokens, self.max_caption_tokens, self.n_layer) < 1:
            raise ValueError("latent_dim, memory_tokens, max_caption_tokens and n_layer must be >= 1")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SeedVAEConfig:
        return from_params(cls, dict(values), where="art_generator seed_vae config")


def seed_generator(seed: int) -> torch.Generator:
    """The ``torch.Generator`` of one seed (seeded through ``numpy.random.SeedSequence(seed)``).

    Every number a seed draws comes from it, so a sample depends on its seed alone, never on the
    other seeds of the batch or its position among them.

    Raises:
        ValueError: for a seed that is not an integer >= 0.
    """
    if isinstance(seed, bool) or int(seed) < 0:
        raise ValueError(f"seeds must be integers >= 0, got {seed!r}")
    state = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def latents_for_seeds(seeds: Sequence[int], dim: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """One N(0, I) latent (dim,) per seed, each from its own generator: (len(seeds), dim)."""
    return torch.stack([torch.randn(dim, generator=seed_generator(seed)) for seed in seeds]).to(device)


@dataclass
class SeedVAEOutput:
    loss: torch.Tensor
    mse: torch.Tensor
    caption_ce: torch.Tensor
    kl: torch.Tensor
    image: torch.Tensor


class SeedVAE(nn.Module):
    """See the module docstring. ``tokenizer``: the art corpus tokenizer."""

    def __init__(self, config: SeedVAEConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = _prepare_tokenizer(tokenizer)
        c1, c2, c3 = config.channels
        side = config.image_size // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, 2, 1), nn.GELU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.GELU(),
            nn.Conv2d(c2, c3, 4, 2, 1), nn.GELU(), nn.Flatten())  # (B, C3·(S/8)²)
        self.to_latent = nn.Linear(c3 * side * side, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, c3 * side * side)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (c3, side, side)), nn.GELU(),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), nn.GELU(), nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.GELU(),
            nn.ConvTranspose2d(c1, 3, 4, 2, 1))  # (B, 3, S, S) logits
        d = config.d_model
        self.memory = nn.Linear(config.latent_dim, config.memory_tokens * d)
        self.queries = nn.Parameter(torch.randn(config.max_caption_tokens, d) * 0.02)
        layer = nn.TransformerDecoderLayer(d, config.n_head, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.caption_decoder = nn.TransformerDecoder(layer, config.n_layer)
        self.to_vocab = nn.Linear(d, len(self.tokenizer))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, S, S) in [0, 1] -> latent mean and log-variance (B, L) each."""
        mean, logvar = self.to_latent(self.encoder(images * 2 - 1)).chunk(2, dim=1)
        return mean, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B, L) -> images (B, 3, S, S) in [0, 1] and caption logits (B, T, V)."""
        image = torch.sigmoid(self.decoder(self.from_latent(z)))
        memory = self.memory(z).unflatten(1, (self.config.memory_tokens, -1))  # (B, M, D)
        queries = self.queries.unsqueeze(0).expand(z.shape[0], -1, -1)  # (B, T, D)
        return image, self.to_vocab(self.caption_decoder(queries, memory))

    def caption_targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokenized captions (B, T') -> targets (B, T): the tokens, eos, then padding to T."""
        width = self.config.max_caption_tokens
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        targets = torch.full((input_ids.shape[0], width), pad, dtype=torch.long, device=input_ids.device)
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            tokens = [t for t in ids[mask.bool()].tolist() if t not in (self.tokenizer.bos_token_id, eos, pad)]
            tokens = tokens[:width - 1] + [eos]
            targets[row, :len(tokens)] = torch.tensor(tokens, device=input_ids.device)
        return targets

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                generator: torch.Generator | None = None) -> SeedVAEOutput:
        """One training batch: images (B, 3, S, S) in [0, 1] and their tokenized captions (B, T')."""
        mean, logvar = self.encode(images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + noise * torch.exp(0.5 * logvar) if self.training else mean
        image, logits = self.decode(z)
        mse = F.mse_loss(image, images)
        ce = F.cross_entropy(logits.flatten(0, 1), self.caption_targets(input_ids, attention_mask).flatten())
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        loss = mse + ce + self.config.kl_weight * kl
        return SeedVAEOutput(loss=loss, mse=mse.detach(), caption_ce=ce.detach(), kl=kl.detach(), image=image)

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], settings: Any = None) -> tuple[np.ndarray, list[str]]:
        """Seeds -> engravings (N, S, S, 3) uint8 and captions, from latents drawn from the prior.

        ``settings`` is accepted for the family's common signature and not used: the write-up's
        non-autoregressive decoder takes every position's likeliest token at once.

        The latents go through the decoders in chunks of exactly ``GENERATE_CHUNK`` rows (the last
        one padded with zeros, which are dropped): a matrix product over 1 row and over 250 rows
        can round differently (measured: 1e-6, enough to change a pixel's byte), over the same
        number of rows it does not, so a seed's sample is the same byte for byte in any batch.
        """
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            latents = latents_for_seeds(seeds, self.config.latent_dim, device)
            images, captions = [], []
            for start in range(0, len(latents), GENERATE_CHUNK):
                chunk = latents[start:start + GENERATE_CHUNK]
                count = len(chunk)
                if count < GENERATE_CHUNK:
                    chunk = torch.cat([chunk, chunk.new_zeros(GENERATE_CHUNK - count, chunk.shape[1])])
                image, logits = self.decode(chunk)
                images.append(image[:count].mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
                captions += [self._caption(row) for row in logits[:count].argmax(dim=-1).tolist()]
            return np.concatenate(images), captions
        finally:
            self.train(was_training)

    def _caption(self, ids: list[int]) -> str:
        eos = self.tokenizer.eos_token_id
        ids = ids[:ids.index(eos)] if eos in ids else ids
        return self.tokenizer.decode([t for t in ids if t != self.tokenizer.pad_token_id], skip_special_tokens=True)

    @property
    def image_input(self):
        """How a picture becomes this model's image (from params:ingest at training time)."""
        from multimodal_lab.data.images import ImageInput

        return ImageInput.from_dict(self.config.image_input, self.config.image_size)

    # -------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        payload = {"format_version": FORMAT_VERSION, "family": FAMILY, "variant": "seed_vae",
                   FAMILY: dataclasses.asdict(self.config)}
        save_directory(self, directory, payload, self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> SeedVAE:
        payload = read_config(directory, "SeedVAE.save_pretrained", newest_format=FORMAT_VERSION)
        if payload.get("family") != FAMILY or payload.get("variant") != "seed_vae":
            raise ValueError(f"{directory} does not hold an art_generator seed_vae model")
        model = cls(SeedVAEConfig.from_dict(payload[FAMILY]), load_tokenizer(directory))
        return load_weights(model, directory, map_location).eval()


# ----------------------------------------------------------------------------- the family's config

DESIGNS = ("composer", "seed_vae")


@dataclass
class ArtGeneratorConfig:
    """``params:art_generator.model``: which design, and each design's sizes.

    The family's variants set ``design``; ``image_size`` and ``image_input`` (set by the
    training node from ``params:ingest``) are passed down to the chosen design's config.
    """

    design: str = "composer"  # "composer" (the default: caption first, then a layered image) or "seed_vae"
    image_size: int = 64
    composer: dict[str, Any] = field(default_factory=dict)  # ComposerConfig fields
    seed_vae: dict[str, Any] = field(default_factory=dict)  # SeedVAEConfig fields
    image_input: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"art_generator design must be one of {DESIGNS}, got {self.design!r}")
        self.composer_config()  # fail early on a bad field of either design
        self.seed_vae_config()

    def composer_config(self):
        from multimodal_lab.models.art_composer import ComposerConfig

        return from_params(ComposerConfig, {**self.composer, "image_size": self.image_size,
                                            "image_input": self.image_input}, where="params:art_generator.model.composer")

    def seed_vae_config(self) -> SeedVAEConfig:
        return from_params(SeedVAEConfig, {**self.seed_vae, "image_size": self.image_size,
                                           "image_input": self.image_input}, where="params:art_generator.model.seed_vae")



def build_art_model(config: ArtGeneratorConfig, tokenizer) -> nn.Module:
    """The chosen design, freshly initialised."""
    from multimodal_lab.models.art_composer import ArtComposer

    if config.design == "composer":
        return ArtComposer(config.composer_config(), tokenizer)
    return SeedVAE(config.seed_vae_config(), tokenizer)


def load_art_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Any saved art_generator directory: a composer, a seed_vae or the judge."""
    from multimodal_lab.models.art_composer import ArtComposer
    from multimodal_lab.models.art_judge import ArtJudge

    variant = read_config(directory, "save_pretrained").get("variant")
    loaders = {"composer": ArtComposer, "seed_vae": SeedVAE, "judge": ArtJudge}
    if variant not in loaders:
        raise ValueError(f"{directory} holds no art_generator model (variant {variant!r}); "
                         f"expected one of {sorted(loaders)}")
    return loaders[variant].from_pretrained(directory, map_location=map_location)
