"""The art judge: which objects (shape and size) an engraving shows, read by a model of its own.

An art generator's image and caption must agree, and only evidence from outside the
generator can say they do. The judge is that evidence: a residual CNN (batch-normalised
3x3 convolutions, global max and average pooling; nothing like the generator's decoders) trained on
real scene-world engravings only, never on generated ones. For each shape of the scene world
it predicts one of ``absent``, ``small``, ``medium``, ``large`` (an engraving holds at most
one object of each shape), so its reading of an image is a set of (shape, size) pairs that
compares directly with a caption parsed by the scene grammar
(:func:`multimodal_lab.evaluation.art.parse_caption`). Its pooled features (``features``) are
the feature space of the FID and KID that score image quality without downloaded weights.

Shapes: B images, side S, width W (``width``), F = 8W features, N shapes:
``(B, 3, S, S)`` in [0, 1] -> stem (B, W, S/2, S/2) -> 3 residual stages (W, 2W, 4W; the
last two halve the side) -> max- and mean-pooled (B, F) -> logits (B, N, 4).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multimodal_lab.config import from_params
from multimodal_lab.data.scene_render import SHAPES
from multimodal_lab.data.scene_world import SIZES
from multimodal_lab.models.preprocess import arrays_to_tensor
from multimodal_lab.models.saving import load_weights, read_config, save_directory

log = logging.getLogger(__name__)

KIND = "art_judge"
FORMAT_VERSION = 1
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)  # small, medium, large
ABSENT = 0  # class 0 of every shape; class 1 + i is SIZE_NAMES[i]

#: An object set: the (shape, size) pairs an image shows or a caption names.
Objects = frozenset


def objects_of(metadata: Mapping[str, Any] | str) -> Objects:
    """The (shape, size) set of a scene-world record's metadata (``{"objects": [...]}``, or its JSON)."""
    if isinstance(metadata, str):
        metadata = json.loads(metadata) if metadata else {}
    return frozenset((str(o["shape"]), str(o["size"])) for o in metadata.get("objects", []))


@dataclass
class ArtJudgeConfig:
    """Sizes of the judge and how it is trained (``params:art_generator.judge``)."""

    image_size: int = 64
    width: int = 16  # channels of the first stage (then 2x, 4x)
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])  # residual blocks per stage
    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    # training (one-cycle schedule): the judge reads little for its first ~250 steps, then learns
    # fast; 15 epochs of 5,000 engravings (1,170 steps) reach 0.99 of held-out sets exactly
    seed: int = 0
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if len(self.blocks) != 3 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be 3 positive counts (one per stage), got {self.blocks}")
        if self.image_size % 4 or self.image_size < 8:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {self.image_size}")
        if self.width < 4:
            raise ValueError(f"width must be >= 4, got {self.width}")
        if len(set(self.shapes)) != len(self.shapes) or not self.shapes:
            raise ValueError(f"shapes must be distinct names, got {self.shapes}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ArtJudgeConfig:
        return from_params(cls, dict(values), where="art judge config")


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.skip is None else self.skip(x)))


class ArtJudge(nn.Module):
    """See the module docstring."""

    def __init__(self, config: ArtJudgeConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        stages, cin = [], w
        for i, (count, cout) in enumerate(zip(config.blocks, (w, 2 * w, 4 * w))):
            for j in range(count):
                stages.append(_Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.num_features = 8 * w  # max- and mean-pooled; read by torchmetrics' FID / KID as a feature module
        self.head = nn.Linear(self.num_features, len(config.shapes) * (1 + len(SIZE_NAMES)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> pooled features (B, F)."""
        maps = self.stages(self.stem(images * 2 - 1))  # (B, 4W, S/8, S/8)
        # max: whether a part is anywhere (a small object is a small share of the mean); mean: how much
        return torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> logits (B, N shapes, 4): absent, small, medium, large."""
        return self.head(self.features(images)).unflatten(1, (len(self.config.shapes), 1 + len(SIZE_NAMES)))

    def labels(self, objects: Sequence[Objects]) -> torch.Tensor:
        """Object sets -> class targets (B, N shapes): 0 absent, 1 + size index."""
        index = {s: i for i, s in enumerate(self.config.shapes)}
        out = torch.zeros(len(objects), len(self.config.shapes), dtype=torch.long)
        for row, pairs in enumerate(objects):
            for shape, size in pairs:
                if shape not in index or size not in SIZE_NAMES:
                    raise ValueError(f"the judge knows shapes {self.config.shapes} and sizes {SIZE_NAMES}, "
                                     f"got ({shape!r}, {size!r})")
                out[row, index[shape]] = 1 + SIZE_NAMES.index(size)
        return out

    def to_objects(self, classes: torch.Tensor) -> list[Objects]:
        """Class indices (B, N shapes) -> object sets."""
        return [frozenset((self.config.shapes[i], SIZE_NAMES[c - 1]) for i, c in enumerate(row) if c != ABSENT)
                for row in classes.tolist()]

    @torch.no_grad()
    def read(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> list[Objects]:
        """The object set the judge sees in each image: (B, 3, S, S) float in [0, 1] or (B, S, S, 3) uint8."""
        was_training = self.training
        self.eval()
        try:
            pixels = as_float_images(images)
            return [o for start in range(0, len(pixels), batch_size)
                    for o in self.to_objects(self(pixels[start:start + batch_size]).argmax(dim=-1))]
        finally:
            self.train(was_training)

    # -------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        # family/variant: the catalog's model datasets load any saved directory by its family
        save_directory(self, directory, {"format_version": FORMAT_VERSION, "kind": KIND, "family": "art_generator",
                                         "variant": "judge", KIND: dataclasses.asdict(self.config)})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> ArtJudge:
        payload = read_config(directory, "ArtJudge.save_pretrained", newest_format=FORMAT_VERSION)
        if payload.get("kind") != KIND:
            raise ValueError(f"{directory} holds a {payload.get('kind') or payload.get('family')!r} model, not an art judge")
        return load_weights(cls(ArtJudgeConfig.from_dict(payload[KIND])), directory, map_location).eval()


def as_float_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 (numpy or torch) or (B, 3, S, S) float -> (B, 3, S, S) float32 in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, S, S, 3), got {tuple(images.shape)}")
        return arrays_to_tensor(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"float images must be (B, 3, S, S), got {tuple(images.shape)}")
    return images.float()


def set_accuracy(judge: ArtJudge, images: torch.Tensor | np.ndarray, objects: Sequence[Objects]) -> dict[str, float]:
    """How often the judge reads the true object set exactly, and per shape (present/size right)."""
    read = judge.read(images)
    truth = judge.labels(objects)
    predicted = judge.labels(read)
    return {"set_accuracy": float(np.mean([r == t for r, t in zip(read, objects)])),
            "shape_accuracy": float((predicted == truth).float().mean())}


def train_judge(images: np.ndarray, objects: Sequence[Objects], config: ArtJudgeConfig,
                val_images: np.ndarray | None = None, val_objects: Sequence[Objects] | None = None,
                log_every: int = 50) -> tuple[ArtJudge, dict[str, Any]]:
    """Train a judge on real engravings (N, S, S, 3) uint8 and their object sets.

    Returns:
        The judge (eval mode) and a history: per-epoch training loss, validation set accuracy
        when validation data are given, seconds.

    Raises:
        ValueError: on empty or mismatched inputs, or images of another size than the config's.
    """
    if len(images) == 0 or len(images) != len(objects):
        raise ValueError(f"train_judge needs one object set per image, got {len(images)} images and "
                         f"{len(objects)} sets")
    pixels = as_float_images(images)
    if pixels.shape[-1] != config.image_size:
        raise ValueError(f"the judge is configured for {config.image_size} px images, got {pixels.shape[-1]} px")
    torch.manual_seed(config.seed)
    judge = ArtJudge(config)
    targets = judge.labels(objects)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(pixels) / config.batch_size)
    total = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.15)
    generator = torch.Generator().manual_seed(config.seed)
    history: dict[str, Any] = {"epochs": [], "steps": total}
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        judge.train()
        order = torch.randperm(len(pixels), generator=generator)
        losses = []
        for first in range(0, len(pixels), config.batch_size):
            index = order[first:first + config.batch_size]
            loss = F.cross_entropy(judge(pixels[index]).flatten(0, 1), targets[index].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            if log_every and step % log_every == 0:
                log.info("judge step %d/%d: loss %.4f", step, total, float(np.mean(losses[-log_every:])))
        row: dict[str, float] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if val_images is not None and val_objects is not None:
            row.update({f"val_{k}": v for k, v in set_accuracy(judge, val_images, val_objects).items()})
        history["epochs"].append(row)
        log.info("judge epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
    history["seconds"] = time.perf_counter() - start
    return judge.eval(), history
