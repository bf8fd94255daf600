"""How generated (image, caption) pairs are scored: agreement by an independent judge, and quality.

* **Captions** are read by the scene grammar (:func:`parse_caption`): every object is named
  ``<size> [colour] <shape>``, at most once per shape, so a caption's objects are a set of
  (shape, size) pairs, or ``None`` when it does not parse (a shape without a size, a shape
  named twice, no object at all).
* **Agreement** (:func:`agreement_scores`): the share of pairs whose caption's set equals the
  judge's reading of the image (:class:`multimodal_lab.models.art_judge.ArtJudge`), the same
  for shapes alone and, over the shapes both name, for sizes; a pair whose caption does not
  parse disagrees. The control pairs the same captions with other images (a seeded
  derangement): agreement that survives it is not agreement.
* **Images** (:func:`image_scores`): the share of near-black images (mean brightness below
  ``dark``) and of near-blank ones (pixel standard deviation below ``flat``), and FID and KID
  computed on the judge's pooled features (:func:`judge_fid`; KID on them scaled to unit length),
  against real engravings, so no weights are downloaded; real-vs-real (two disjoint halves of real
  images) is the reference line.
* **Captions as a population** (:func:`caption_population_scores`): parse rate, the share of
  distinct captions, and the total-variation distance between the (shape, size) histograms of
  the generated captions and of real ones.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from multimodal_lab.data.scene_render import COLOURS, SHAPES
from multimodal_lab.evaluation.harness import seeded_derangement
from multimodal_lab.models.art_judge import SIZE_NAMES, ArtJudge, Objects, as_float_images

_PLURALS = {f"{shape}s": shape for shape in SHAPES} | {"crosses": "cross"}


def real_engravings(count: int, seed: int = 0, size: int = 64) -> tuple[np.ndarray, list[Objects], list[str]]:
    """``count`` scene-world engravings rendered directly (no licence or damage draws): images
    (N, S, S, 3) uint8, their (shape, size) object sets and their captions."""
    import io

    from PIL import Image

    from multimodal_lab.data.scene_world import SceneWorldConfig, engraving_record
    from multimodal_lab.models.art_judge import objects_of

    config = SceneWorldConfig(seed=seed, n_scenes=0, n_engravings=count, n_sequences=0, image_size=size,
                              damaged_fraction=0.0, bad_license_fraction=0.0)
    records = [engraving_record(config, i) for i in range(count)]
    images = np.stack([np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in records])
    return images, [objects_of(r["metadata"]) for r in records], [str(r["caption"]) for r in records]


def caption_objects(text: str, shapes: Sequence[str] = SHAPES, sizes: Sequence[str] = SIZE_NAMES,
                    colours: Sequence[str] = COLOURS, *, strict: bool = True) -> list[tuple[str, str]] | None:
    """The (shape, size) pairs a caption names, in its order, under the scene grammar.

    An object is ``<size> [<colour>] <shape>``. ``strict``: a shape named without a size just
    before it, a shape named twice, or no shape at all gives None. Not strict: such shapes are
    skipped (a shape's first sized mention counts), and no object gives [].
    """
    words = re.findall(r"[a-z]+", text.lower())
    shape_set, size_set, colour_set = set(shapes), set(sizes), set(colours)
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        shape = word if word in shape_set else _PLURALS.get(word) if _PLURALS.get(word) in shape_set else None
        if shape is None:
            continue
        before = words[max(0, i - 2):i]
        if before and before[-1] in colour_set:
            before = before[:-1]
        if not before or before[-1] not in size_set or shape in found:
            if strict:
                return None
            continue
        found[shape] = before[-1]
    if strict and not found:
        return None
    return list(found.items())


def parse_caption(text: str, shapes: Sequence[str] = SHAPES, sizes: Sequence[str] = SIZE_NAMES,
                  colours: Sequence[str] = COLOURS) -> Objects | None:
    """The (shape, size) set a caption names, or None when it does not parse under the scene grammar
    (see :func:`caption_objects`)."""
    found = caption_objects(text, shapes, sizes, colours)
    return frozenset(found) if found else None


def agreement_scores(captions: Sequence[str], judged: Sequence[Objects]) -> dict[str, float]:
    """Caption against the judge's reading of its own image, pair by pair (see the module docstring)."""
    if len(captions) != len(judged) or not captions:
        raise ValueError(f"need one judged image per caption, got {len(captions)} captions and {len(judged)} images")
    exact, shapes_equal, size_hits, size_total = 0, 0, 0, 0
    for caption, seen in zip(captions, judged):
        named = parse_caption(caption)
        if named is None:
            continue
        exact += named == seen
        named_sizes, seen_sizes = dict(named), dict(seen)
        shapes_equal += set(named_sizes) == set(seen_sizes)
        for shape in set(named_sizes) & set(seen_sizes):
            size_total += 1
            size_hits += named_sizes[shape] == seen_sizes[shape]
    n = len(captions)
    return {"agreement": exact / n, "shape_agreement": shapes_equal / n,
            "size_agreement": size_hits / size_total if size_total else float("nan")}


def shuffled_agreement(captions: Sequence[str], judged: Sequence[Objects], seed: int = 0) -> float:
    """Agreement with each caption paired with another pair's image (a seeded derangement)."""
    perm = seeded_derangement(len(captions), seed)
    return agreement_scores(captions, [judged[int(j)] for j in perm])["agreement"]


def caption_population_scores(captions: Sequence[str], real_objects: Sequence[Objects]) -> dict[str, float]:
    """Parse rate, share of distinct captions, and the total-variation distance between the
    (shape, size) histograms of the parsed generated captions and of the real object sets."""
    parsed = [parse_caption(c) for c in captions]
    ok = [p for p in parsed if p is not None]

    def histogram(sets: Sequence[Objects]) -> Counter:
        counts = Counter(pair for s in sets for pair in s)
        total = sum(counts.values()) or 1
        return Counter({k: v / total for k, v in counts.items()})

    generated, real = histogram(ok), histogram(real_objects)
    tv = 0.5 * sum(abs(generated[k] - real[k]) for k in set(generated) | set(real))
    return {"parse_rate": len(ok) / len(captions) if captions else float("nan"),
            "distinct_captions": len(set(captions)) / len(captions) if captions else float("nan"),
            "attribute_tv": float(tv)}


def image_scores(images: np.ndarray | torch.Tensor, dark: float = 0.1, flat: float = 0.02) -> dict[str, float]:
    """Share of near-black (mean brightness < ``dark``) and near-blank (std < ``flat``) images, [0, 1] scale."""
    pixels = as_float_images(images)
    mean = pixels.mean(dim=(1, 2, 3))
    std = pixels.flatten(1).std(dim=1)
    return {"black_fraction": float((mean < dark).float().mean()), "blank_fraction": float((std < flat).float().mean())}


class _JudgeFeatures(torch.nn.Module):
    """The judge's pooled features as a torchmetrics feature extractor (float images in [0, 1]).

    ``unit``: each feature vector scaled to length 1, for KID, whose polynomial kernel
    (x.y / d + 1)^3 on the raw, unbounded features is dominated by their norms."""

    def __init__(self, judge: ArtJudge, unit: bool = False) -> None:
        super().__init__()
        self.judge = judge
        self.unit = unit
        self.num_features = judge.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.judge.features(images.float())
            return torch.nn.functional.normalize(features, dim=1) if self.unit else features


@torch.no_grad()
def judge_fid(judge: ArtJudge, real: np.ndarray | torch.Tensor, generated: np.ndarray | torch.Tensor,
              kid_subset: int = 100, batch_size: int = 256) -> dict[str, float]:
    """FID (on the judge's pooled features) and KID (mean over subsets, on the same features scaled to
    unit length) between two image sets, with torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, generated = as_float_images(real), as_float_images(generated)
    if min(len(real), len(generated)) < 2:
        raise ValueError("FID and KID need at least 2 images on each side")
    was_training = judge.training
    judge.eval()
    try:
        subset = min(kid_subset, len(real), len(generated))
        fid = FrechetInceptionDistance(feature=_JudgeFeatures(judge), normalize=True)
        kid = KernelInceptionDistance(feature=_JudgeFeatures(judge, unit=True), subset_size=subset, normalize=True)
        for images, is_real in ((real, True), (generated, False)):
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                fid.update(chunk, real=is_real)
                kid.update(chunk, real=is_real)
        kid_mean, _ = kid.compute()
        return {"fid_judge": float(fid.compute()), "kid_judge": float(kid_mean)}
    finally:
        judge.train(was_training)


def real_vs_real(judge: ArtJudge, real: np.ndarray | torch.Tensor, seed: int = 0) -> dict[str, float]:
    """FID and KID between two disjoint random halves of the real images: the reference line."""
    pixels = as_float_images(real)
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    half = len(pixels) // 2
    return judge_fid(judge, pixels[order[:half]], pixels[order[half:2 * half]])
