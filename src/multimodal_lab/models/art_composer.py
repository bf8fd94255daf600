"""art_generator's default design, ``composer``: the caption first, then an engraving made from it.

One seed gives one **latent**: a vector of uniform numbers drawn from the seed's own
``torch.Generator`` (seeded through ``numpy.random.SeedSequence``). Both outputs come from it:

1. **The caption.** A small GPT-2 trained on the real captions is sampled token by token; the
   latent's first ``max_caption_tokens`` numbers pick the tokens (inverse CDF of each step's
   distribution after temperature / top-k / top-p), so a caption depends on its seed alone.
2. **The image, from the caption and the rest of the latent.** The caption is read: its
   objects in order by the scene grammar (``<size> [colour] <shape>``), its backdrop by a
   learned reader (a bag of words -> backdrop classifier). The rest of the latent draws what
   the caption does not say: each object's tone (engravers render a colour as the density of
   its hatching) and its place, from a layout prior learned from the training layouts (where
   centres of each size fall, how close objects come). A **layered decoder** then draws the
   engraving: a learned backdrop texture, and for every object a learned silhouette and outline
   of its (shape, size), moved to its place, filled with a learned hatching texture of its
   tone. Every texture, silhouette and outline is a tensor fitted by gradient descent to real
   engravings given their true layouts (pixel MSE); nothing is drawn by the scene world's
   renderer.

So the two outputs agree by construction (the image is made of what the caption names), and
the image is sharp, because the decoder places learned parts instead of averaging whole
images. What is shared: the caption is a function of the latent, the image a function of the
caption and the latent's remaining numbers.

Shapes, with B pairs, side S, K object slots (3), P prototype side:
``layouts`` (B, 1 + 7K) float: the backdrop index, then per slot (present, shape, size, tone,
x, y, radius) with x, y, radius as fractions of the side; sprites (shapes * sizes, 2, P, P);
fills (tones, 2, S, S) (two hatch angles, alternating by the object's place in the caption);
backdrops (backdrops, S, S).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from multimodal_lab.config import from_params
from multimodal_lab.models.saving import load_tokenizer, load_weights, read_config, save_directory
from multimodal_lab.models.story_gpt2 import _prepare_tokenizer

FAMILY = "art_generator"
VARIANT = "composer"
FORMAT_VERSION = 1
GENERATE_CHUNK = 64  # samples decoded together: always this many rows (see ArtComposer.generate)
SLOT_FIELDS = 7  # present, shape, size, tone, x, y, radius


def default_sampling():
    """How captions are sampled unless told otherwise: top-p 0.9 (the evaluation's setting)."""
    from multimodal_lab.generation.story import GenerationSettings

    return GenerationSettings(strategy="sample", top_p=0.9, max_new_tokens=31)


def _scene_vocabulary() -> dict[str, list[str]]:
    from multimodal_lab.data.scene_render import BACKGROUNDS, COLOURS, SHAPES
    from multimodal_lab.data.scene_world import SIZES

    return {"shapes": list(SHAPES), "sizes": sorted(SIZES, key=SIZES.get), "tones": list(COLOURS),
            "backdrops": list(BACKGROUNDS)}


@dataclass
class ComposerConfig:
    """Sizes of the ``composer`` variant (``params:art_generator.model.composer``)."""

    image_size: int = 64
    max_objects: int = 3  # object slots of a layout
    # The words the model knows: shape and size words (read from captions), tones (hatching
    # densities, drawn) and backdrops (read by the learned reader). Default: the scene world's.
    shapes: list[str] = field(default_factory=lambda: _scene_vocabulary()["shapes"])
    sizes: list[str] = field(default_factory=lambda: _scene_vocabulary()["sizes"])
    tones: list[str] = field(default_factory=lambda: _scene_vocabulary()["tones"])
    backdrops: list[str] = field(default_factory=lambda: _scene_vocabulary()["backdrops"])
    sprite_window: float = 0.5  # side of the square a sprite covers, as a fraction of the image side
    sprite_resolution: int = 64  # P: a sprite's side in texels (2 per pixel at 64 px)
    texture_gain: float = 20.0  # logits = gain * parameter: textures move as fast as the caption model learns
    # the caption model (GPT-2)
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    max_caption_tokens: int = 32  # bos and eos included
    layout_tries: int = 64  # places drawn per object before the least crowded one is kept
    image_loss_weight: float = 10.0  # pixel MSE weight next to the caption's cross-entropy
    image_input: dict[str, Any] | None = None  # set by the training node from params:ingest

    def __post_init__(self) -> None:
        for name in ("shapes", "sizes", "tones", "backdrops"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"composer {name} must be a non-empty list without repeats, got {values}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_head {self.n_head}")
        if not 0.0 < self.sprite_window <= 1.0:
            raise ValueError(f"sprite_window must be in (0, 1], got {self.sprite_window}")
        if min(self.max_objects, self.sprite_resolution, self.n_layer, self.layout_tries) < 1:
            raise ValueError("max_objects, sprite_resolution, n_layer and layout_tries must be >= 1")
        if self.max_caption_tokens < 3:
            raise ValueError(f"max_caption_tokens must be >= 3 (bos, a word, eos), got {self.max_caption_tokens}")
        if self.image_loss_weight < 0 or self.texture_gain <= 0:
            raise ValueError("image_loss_weight must be >= 0 and texture_gain > 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ComposerConfig:
        return from_params(cls, dict(values), where="art_generator composer config")

    @property
    def latent_dim(self) -> int:
        """Uniform numbers per seed: caption tokens, then per slot a tone and ``layout_tries`` places."""
        return self.max_caption_tokens + self.max_objects * (1 + 2 * self.layout_tries)


def uniforms_for_seeds(seeds: Sequence[int], dim: int) -> torch.Tensor:
    """One latent of ``dim`` uniform numbers in [0, 1) per seed, each from its own generator (float64)."""
    from multimodal_lab.models.art_generator import seed_generator

    rows = [torch.rand(dim, generator=seed_generator(seed), dtype=torch.float64) for seed in seeds]
    return torch.stack(rows) if rows else torch.zeros(0, dim, dtype=torch.float64)


def layout_of(metadata: Mapping[str, Any], config: ComposerConfig) -> torch.Tensor:
    """A record's metadata -> its layout row (1 + 7K,), objects in the record's (and caption's) order.

    Raises:
        ValueError: for a backdrop, shape, size or tone the config does not know, or more
            objects than slots.
    """
    objects = list(metadata.get("objects", []))
    if len(objects) > config.max_objects:
        raise ValueError(f"a layout has {len(objects)} objects; the composer has {config.max_objects} slots")
    row = torch.zeros(1 + SLOT_FIELDS * config.max_objects)
    row[0] = _index(config.backdrops, metadata.get("background"), "backdrop")
    for k, obj in enumerate(objects):
        size = obj.get("size")
        row[1 + SLOT_FIELDS * k:1 + SLOT_FIELDS * (k + 1)] = torch.tensor([
            1.0, _index(config.shapes, obj["shape"], "shape"), _index(config.sizes, size, "size"),
            _index(config.tones, obj.get("colour"), "tone"), float(obj["x"]), float(obj["y"]), float(obj["radius"])])
    return row


def _index(names: Sequence[str], value: Any, what: str) -> int:
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}; the composer knows {list(names)}")
    return names.index(value)


class LayeredDecoder(nn.Module):
    """Layouts (B, 1 + 7K) -> engravings (B, 3, S, S) in [0, 1] (see the module docstring)."""

    def __init__(self, config: ComposerConfig) -> None:
        super().__init__()
        self.config = config
        s, p = config.image_size, config.sprite_resolution
        n_sprites = len(config.shapes) * len(config.sizes)
        self.backdrops = nn.Parameter(torch.zeros(len(config.backdrops), s, s))
        self.fills = nn.Parameter(torch.zeros(len(config.tones), 2, s, s))
        # channel 0: silhouette, 1: outline; start as a faint disc so every sprite gets gradient
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, p), torch.linspace(-1, 1, p), indexing="ij")
        disc = (0.5 - (xx ** 2 + yy ** 2).sqrt()) * 0.5
        self.sprites = nn.Parameter(torch.stack([disc, disc - 0.1]).expand(n_sprites, 2, p, p).clone())
        self.paper = nn.Parameter(torch.tensor(1.0 / config.texture_gain))  # the paper's brightness, as a logit / gain
        self.ink = nn.Parameter(torch.tensor(-1.0 / config.texture_gain))  # the ink's
        centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        self.register_buffer("centres", centres, persistent=False)

    def forward(self, layouts: torch.Tensor) -> torch.Tensor:
        config = self.config
        gain = config.texture_gain
        b, s = layouts.shape[0], config.image_size
        slots = layouts[:, 1:].reshape(b, config.max_objects, SLOT_FIELDS)
        present = slots[..., 0]
        shape, size, tone = slots[..., 1].long(), slots[..., 2].long(), slots[..., 3].long()
        x, y = slots[..., 4], slots[..., 5]
        half = config.sprite_window / 2
        # where each pixel centre falls in each object's sprite, in grid_sample's [-1, 1]
        gx = (self.centres.view(1, 1, 1, s) - x[..., None, None]) / half  # (B, K, 1, S)
        gy = (self.centres.view(1, 1, s, 1) - y[..., None, None]) / half  # (B, K, S, 1)
        grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1).flatten(0, 1)  # (B*K, S, S, 2)
        sprites = torch.sigmoid(gain * self.sprites)[(shape * len(config.sizes) + size).flatten()]
        drawn = F.grid_sample(sprites, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        drawn = drawn.unflatten(0, (b, config.max_objects)) * present[..., None, None, None]  # (B, K, 2, S, S)
        alpha, outline = drawn[:, :, 0], drawn[:, :, 1]
        parity = (torch.arange(config.max_objects, device=layouts.device) % 2).expand(b, -1)
        fills = torch.sigmoid(gain * self.fills)[tone, parity]  # (B, K, S, S)
        backdrop = torch.sigmoid(gain * self.backdrops)[layouts[:, 0].long()]  # (B, S, S)
        inside = alpha.sum(dim=1).clamp(max=1.0)
        ink = backdrop * (1 - inside) + (alpha * fills).sum(dim=1)
        ink = 1 - (1 - ink.clamp(0, 1)) * torch.prod(1 - outline, dim=1)
        paper, dark = torch.sigmoid(gain * self.paper), torch.sigmoid(gain * self.ink)
        grey = paper - (paper - dark) * ink
        return grey.unsqueeze(1).expand(b, 3, s, s)


class LayoutPrior(nn.Module):
    """Where objects go, learned from the training layouts like batch-norm statistics.

    Gathered in training mode from every batch: each size's mean radius and the range its
    centres fall in, the smallest gap between two objects' edges, and how often each tone
    appears. :meth:`place` draws a layout for a caption's objects from a latent's numbers.
    """

    def __init__(self, config: ComposerConfig) -> None:
        super().__init__()
        self.config = config
        n_sizes = len(config.sizes)
        self.register_buffer("radius_sum", torch.zeros(n_sizes, dtype=torch.float64))
        self.register_buffer("radius_count", torch.zeros(n_sizes, dtype=torch.float64))
        self.register_buffer("centre_low", torch.full((n_sizes, 2), math.inf, dtype=torch.float64))
        self.register_buffer("centre_high", torch.full((n_sizes, 2), -math.inf, dtype=torch.float64))
        self.register_buffer("min_gap", torch.tensor(math.inf, dtype=torch.float64))
        self.register_buffer("tone_count", torch.zeros(len(config.tones), dtype=torch.float64))

    @torch.no_grad()
    def observe(self, layouts: torch.Tensor) -> None:
        """Fold a batch of true layouts (B, 1 + 7K) into the statistics."""
        slots = layouts[:, 1:].to(self.radius_sum).reshape(len(layouts), self.config.max_objects, SLOT_FIELDS)
        present = slots[..., 0] > 0
        placed = slots[present]  # (n, 7)
        if not len(placed):
            return
        size, tone = placed[:, 2].long(), placed[:, 3].long()
        self.radius_sum.index_add_(0, size, placed[:, 6])
        self.radius_count.index_add_(0, size, torch.ones_like(placed[:, 6]))
        centres = placed[:, 4:6]
        index = size[:, None].expand(-1, 2)
        self.centre_low.scatter_reduce_(0, index, centres, reduce="amin")
        self.centre_high.scatter_reduce_(0, index, centres, reduce="amax")
        self.tone_count.index_add_(0, tone, torch.ones_like(placed[:, 6]))
        # the smallest gap between the edges of two objects of one layout
        xy, radius = slots[..., 4:6], slots[..., 6]
        gaps = torch.cdist(xy, xy) - radius[:, :, None] - radius[:, None, :]
        pair = present[:, :, None] & present[:, None, :] & ~torch.eye(present.shape[1], dtype=torch.bool,
                                                                        device=present.device)
        if bool(pair.any()):
            self.min_gap.copy_(torch.minimum(self.min_gap, gaps[pair].min()))

    @property
    def fitted(self) -> bool:
        return bool((self.radius_count > 0).all()) and bool(self.tone_count.sum() > 0)

    def place(self, objects: Sequence[tuple[int, int]], backdrop: int, numbers: np.ndarray) -> torch.Tensor:
        """A layout row for ``objects`` ((shape, size) indices, in caption order) on ``backdrop``.

        ``numbers``: the latent's uniforms after the caption's, ``max_objects * (1 + 2 * tries)``
        of them: slot k's tone from number k, its tries from its own block. Objects are placed
        largest first (they are the hard ones to fit); a try is kept when its edge stays at least
        the learned smallest gap from every placed object's, else the least crowded try is kept.
        """
        if not self.fitted:
            raise RuntimeError("the layout prior has seen no training layouts (train the model first)")
        config = self.config
        k_max, tries = config.max_objects, config.layout_tries
        radius = (self.radius_sum / self.radius_count).cpu().numpy()
        low, high = self.centre_low.cpu().numpy(), self.centre_high.cpu().numpy()
        gap = float(self.min_gap) if math.isfinite(float(self.min_gap)) else 0.0
        tones = self.tone_count.cpu().numpy()
        tone_cdf = np.cumsum(tones / tones.sum())
        row = torch.zeros(1 + SLOT_FIELDS * k_max)
        row[0] = backdrop
        placed: list[tuple[float, float, float]] = []
        order = sorted(range(min(len(objects), k_max)), key=lambda k: (-radius[objects[k][1]], k))
        for k in order:
            shape, size = objects[k]
            r = float(radius[size])
            block = numbers[k_max + k * 2 * tries:k_max + (k + 1) * 2 * tries].reshape(tries, 2)
            best, best_room = None, -math.inf
            for u in block:
                cx, cy = low[size] + u * (high[size] - low[size])
                room = min((math.hypot(cx - px, cy - py) - r - pr for px, py, pr in placed), default=math.inf)
                if room >= gap:
                    best = (cx, cy)
                    break
                if room > best_room:
                    best, best_room = (cx, cy), room
            placed.append((best[0], best[1], r))
            tone = int(np.searchsorted(tone_cdf, numbers[k] * tone_cdf[-1], side="right"))
            row[1 + SLOT_FIELDS * k:1 + SLOT_FIELDS * (k + 1)] = torch.tensor(
                [1.0, shape, size, min(tone, len(tone_cdf) - 1), best[0], best[1], r])
        return row


class ArtComposer(nn.Module):
    """See the module docstring. ``tokenizer``: the art corpus tokenizer."""

    def __init__(self, config: ComposerConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = _prepare_tokenizer(tokenizer)
        tok = self.tokenizer
        self.caption_model = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(tok), n_positions=config.max_caption_tokens, n_embd=config.d_model,
            n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        # the learned caption reader: a bag of words -> which backdrop the caption describes
        self.backdrop_reader = nn.EmbeddingBag(len(tok), len(config.backdrops), mode="sum")
        nn.init.zeros_(self.backdrop_reader.weight)
        self.decoder = LayeredDecoder(config)
        self.prior = LayoutPrior(config)

    # -------------------------------------------------------------- training
    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, layouts: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of real engravings (B, 3, S, S) in [0, 1], their captions and true layouts.

        loss = caption cross-entropy + backdrop reader cross-entropy + ``image_loss_weight`` *
        pixel MSE of the layered decoder drawing the true layout.
        """
        if self.training:
            self.prior.observe(layouts)
        caption = self.caption_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        reader = F.cross_entropy(self._read_backdrop_logits(input_ids, attention_mask), layouts[:, 0].long())
        drawn = self.decoder(layouts)
        mse = F.mse_loss(drawn, images)
        loss = caption + reader + self.config.image_loss_weight * mse
        return CompositionOutput(loss=loss, caption_ce=caption.detach(), reader_ce=reader.detach(),
                                 mse=mse.detach(), image=drawn)

    def _read_backdrop_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.to(self.backdrop_reader.weight.dtype)
        return self.config.texture_gain * self.backdrop_reader(input_ids, per_sample_weights=weights)

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def sample_captions(self, numbers: torch.Tensor, settings=None) -> list[str]:
        """Captions for latents (N, latent_dim): token t is drawn with the latent's number t.

        ``settings``: a ``GenerationSettings`` (strategy "sample" with temperature, top_k, top_p;
        "greedy" or "beam"); None = :func:`default_sampling`. Decoded in chunks of exactly
        ``GENERATE_CHUNK`` rows.
        """
        from multimodal_lab.generation.seeded import sample_with_uniforms

        device = next(self.parameters()).device
        tok = self.tokenizer
        settings = settings or default_sampling()
        width = min(self.config.max_caption_tokens - 1, settings.max_new_tokens)
        captions: list[str] = []
        for start in range(0, len(numbers), GENERATE_CHUNK):
            chunk = numbers[start:start + GENERATE_CHUNK, :width]
            count = len(chunk)
            if count < GENERATE_CHUNK:
                chunk = torch.cat([chunk, chunk.new_zeros(GENERATE_CHUNK - count, width)])
            ids = sample_with_uniforms(self.caption_model, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                                       chunk.to(device), settings)
            captions += [self.decode_caption(row) for row in ids[:count].tolist()]
        return captions

    def decode_caption(self, ids: Sequence[int]) -> str:
        from multimodal_lab.generation.story import clean_text

        eos = self.tokenizer.eos_token_id
        ids = list(ids)
        ids = ids[:ids.index(eos)] if eos in ids else ids
        return clean_text(self.tokenizer.decode([t for t in ids if t != self.tokenizer.pad_token_id],
                                                skip_special_tokens=True))

    @torch.no_grad()
    def read_backdrops(self, captions: Sequence[str]) -> list[int]:
        """The learned reader's backdrop (index into ``config.backdrops``) for each caption."""
        from multimodal_lab.data.record_dataset import encode_texts, pad_texts

        if not captions:
            return []
        ids = [torch.tensor(t) for t in encode_texts(list(captions), self.tokenizer, 10_000)]
        batch = pad_texts(ids, self.tokenizer.pad_token_id)
        device = next(self.parameters()).device
        logits = self._read_backdrop_logits(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        return logits.argmax(dim=1).tolist()

    def read_objects(self, caption: str) -> list[tuple[int, int]]:
        """The caption's objects in order, as (shape, size) indices; lenient: a caption outside the
        grammar still gives every ``<size> [colour] <shape>`` it contains (each shape once)."""
        from multimodal_lab.evaluation.art import caption_objects

        found = caption_objects(caption, self.config.shapes, self.config.sizes, strict=False) or []
        return [(self.config.shapes.index(shape), self.config.sizes.index(size))
                for shape, size in found][:self.config.max_objects]

    def layouts_for(self, captions: Sequence[str], numbers: torch.Tensor) -> torch.Tensor:
        """Layouts (N, 1 + 7K) for captions from the latents' numbers after the caption's."""
        backdrops = self.read_backdrops(captions)
        rest = numbers[:, self.config.max_caption_tokens:].cpu().numpy()
        return torch.stack([self.prior.place(self.read_objects(c), b, r) for c, b, r in
                            zip(captions, backdrops, rest)]) if captions else torch.zeros(0, 1 + SLOT_FIELDS *
                                                                                          self.config.max_objects)

    @torch.no_grad()
    def draw(self, layouts: torch.Tensor) -> np.ndarray:
        """Layouts -> engravings (N, S, S, 3) uint8, drawn in chunks of exactly ``GENERATE_CHUNK``."""
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(layouts), GENERATE_CHUNK):
            chunk = layouts[start:start + GENERATE_CHUNK]
            count = len(chunk)
            if count < GENERATE_CHUNK:
                chunk = torch.cat([chunk, chunk.new_zeros(GENERATE_CHUNK - count, chunk.shape[1])])
            image = self.decoder(chunk.to(device))[:count]
            out.append(image.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        size = self.config.image_size
        return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)

    @torch.no_grad()
    def generate(self, seeds: Sequence[int], settings=None, with_layouts: bool = False):
        """Seeds -> engravings (N, S, S, 3) uint8 and captions (and the layouts drawn, with ``with_layouts``)."""
        was_training = self.training
        self.eval()
        try:
            numbers = uniforms_for_seeds(seeds, self.config.latent_dim)
            captions = self.sample_captions(numbers, settings)
            layouts = self.layouts_for(captions, numbers)
            images = self.draw(layouts)
            return (images, captions, layouts) if with_layouts else (images, captions)
        finally:
            self.train(was_training)

    def describe_layout(self, layout: torch.Tensor) -> dict[str, Any]:
        """A layout row as JSON-safe metadata: backdrop and objects (shape, size, tone, x, y, radius)."""
        config = self.config
        slots = layout[1:].reshape(config.max_objects, SLOT_FIELDS)
        objects = [{"shape": config.shapes[int(s[1])], "size": config.sizes[int(s[2])], "tone": config.tones[int(s[3])],
                    "x": round(float(s[4]), 4), "y": round(float(s[5]), 4), "radius": round(float(s[6]), 4)}
                   for s in slots if s[0] > 0]
        return {"backdrop": config.backdrops[int(layout[0])], "objects": objects}

    @property
    def image_input(self):
        """How a picture becomes this model's image (from params:ingest at training time)."""
        from multimodal_lab.data.images import ImageInput

        return ImageInput.from_dict(self.config.image_input, self.config.image_size)

    # -------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        payload = {"format_version": FORMAT_VERSION, "family": FAMILY, "variant": VARIANT,
                   FAMILY: dataclasses.asdict(self.config)}
        save_directory(self, directory, payload, self.tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ArtComposer:
        payload = read_config(directory, "ArtComposer.save_pretrained", newest_format=FORMAT_VERSION)
        if payload.get("family") != FAMILY or payload.get("variant") != VARIANT:
            raise ValueError(f"{directory} does not hold an art_generator composer model")
        model = cls(ComposerConfig.from_dict(payload[FAMILY]), load_tokenizer(directory))
        return load_weights(model, directory, map_location).eval()


@dataclass
class CompositionOutput:
    loss: torch.Tensor
    caption_ce: torch.Tensor
    reader_ce: torch.Tensor
    mse: torch.Tensor
    image: torch.Tensor
