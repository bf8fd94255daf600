"""The ``art_generator`` family: one seed -> an engraving and its caption, judged to agree.

What is truly this family's own: its two designs (``composer``, the default, and the
write-up's ``seed_vae``, in ``models/``), that an item is a real engraving with its caption
and true layout, the **judge** (an independent attribute classifier trained on the real
engravings of the family's own train split, never on generated ones: :func:`train_art_judge`,
a node of the family's pipeline) and how generated pairs are scored with it
(``evaluation/art.py``): agreement between a caption's objects and the judge's reading of
its image, against the same captions paired with other seeds' images; parse rate, distinct
captions and attribute histograms; near-black and near-blank images; FID and KID in the
judge's features against real test engravings, beside the real-vs-real line.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from multimodal_lab.data.record_dataset import RecordCollator, RecordDataset, TextField
from multimodal_lab.evaluation.harness import EvalSettings, Evaluation, evaluation_mode
from multimodal_lab.families import register_family
from multimodal_lab.families.base import ModelFamily
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.art_generator import ArtGeneratorConfig, build_art_model, load_art_model

log = logging.getLogger(__name__)

TEXT_COLUMN = "caption"
NAME = "art_generator"
#: The designs trained and compared by the family's pipeline: name -> model switches.
VARIANTS: dict[str, dict[str, Any]] = {"composer": {"design": "composer"}, "seed_vae": {"design": "seed_vae"}}
COLUMNS = ("agreement", "shape_agreement", "size_agreement", "parse_rate", "distinct_captions", "attribute_tv",
           "black_fraction", "blank_fraction", "fid_judge", "kid_judge", "judge_accuracy")


def _default_generation() -> GenerationSettings:
    from multimodal_lab.models.art_composer import default_sampling

    return default_sampling()


@dataclass
class ArtEvalSettings(EvalSettings):
    """Evaluation settings of art_generator (``params:art_generator.evaluation``).

    ``samples`` seeds (``first_seed`` onwards) are generated and judged; the real side is the
    evaluated split's engravings (``max_records`` of them, all when None).
    """

    text_column: str = TEXT_COLUMN
    samples: int = 1000  # generated pairs scored
    first_seed: int = 0  # seeds first_seed .. first_seed + samples - 1
    num_samples: int = 24  # pairs shown in the report
    kid_subset: int = 100  # KID's subset size
    generation: GenerationSettings = field(default_factory=_default_generation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (FID and the shuffled control need two pairs), got {self.samples}")
        if self.first_seed < 0:
            raise ValueError(f"first_seed must be >= 0, got {self.first_seed}")


@dataclass
class JudgeSettings:
    """``params:art_generator.judge``: the judge's config and the bar it must reach to be trusted."""

    model: dict[str, Any] = field(default_factory=dict)  # ArtJudgeConfig fields (image_size comes from ingest)
    min_set_accuracy: float = 0.97  # on the val split, for every number of objects; below it the run stops

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_set_accuracy <= 1.0:
            raise ValueError(f"min_set_accuracy must be in [0, 1], got {self.min_set_accuracy}")


def build(config: ArtGeneratorConfig, tokenizer):
    return build_art_model(config, tokenizer)


def load(directory, map_location: str = "cpu"):
    return load_art_model(directory, map_location)


def _layouts(model) -> Any:
    from multimodal_lab.data.records import metadata_of
    from multimodal_lab.models.art_composer import layout_of

    def make(records: pd.DataFrame) -> torch.Tensor:
        return torch.stack([layout_of(metadata_of(row), model.config) for row in records.to_dict("records")])

    return make


def training_data(model, records: pd.DataFrame) -> tuple[RecordDataset, RecordCollator]:
    """One item per real engraving: the image, its caption and (for the composer) its true layout."""
    from multimodal_lab.models.art_composer import ArtComposer

    texts = [TextField(TEXT_COLUMN, model.tokenizer, model.config.max_caption_tokens)]
    extras = {"layouts": _layouts(model)} if isinstance(model, ArtComposer) else {}
    dataset = RecordDataset(records, image=model.image_input, texts=texts, extras=extras)
    return dataset, _Collator(RecordCollator(texts, extras=tuple(extras)), keep_labels=bool(extras))


@dataclass
class _Collator:
    """The shared collator, less the labels for the seed_vae (its forward makes its own targets)."""

    inner: RecordCollator
    keep_labels: bool

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.inner(items)
        if not self.keep_labels:
            batch.pop("labels", None)
        return batch


# ----------------------------------------------------------------------------- the judge

def train_art_judge(train_records: pd.DataFrame, val_records: pd.DataFrame, judge_params: dict[str, Any],
                    ingest_params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Train the judge on the real engravings of the train split; check it on the val split.

    Returns:
        The judge and its history (per-epoch loss, val set accuracy by number of objects).

    Raises:
        ValueError: when the judge reads fewer than ``min_set_accuracy`` of the val sets
            exactly for some number of objects: its verdicts on generated images would not
            be evidence, so the run stops before any generator is judged by it.
    """
    from multimodal_lab.config import from_params
    from multimodal_lab.models.art_judge import ArtJudgeConfig, set_accuracy, train_judge

    settings = from_params(JudgeSettings, judge_params, where="params:art_generator.judge")
    images, objects = real_images(train_records, ingest_params)
    val_images, val_objects = real_images(val_records, ingest_params)
    config = from_params(ArtJudgeConfig, {**settings.model, "image_size": images.shape[1]},
                         where="params:art_generator.judge.model")
    log.info("training the art judge on %d real engravings (%d for validation)", len(images), len(val_images))
    judge, history = train_judge(images, objects, config)
    by_count = judge_accuracy_by_count(judge, val_images, val_objects)
    history.update({"val": {**set_accuracy(judge, val_images, val_objects), **by_count},
                    "train_records": len(images), "val_records": len(val_images)})
    worst = min(by_count.values()) if by_count else math.nan
    log.info("art judge on val: %s", {k: round(v, 4) for k, v in history["val"].items()})
    if not worst >= settings.min_set_accuracy:
        raise ValueError(f"the art judge reads only {worst:.3f} of the val engravings' object sets exactly for some "
                         f"number of objects ({by_count}); it must reach {settings.min_set_accuracy} before it judges "
                         "generators: give it more engravings (art_generator.data.scene_world.n_engravings) or epochs")
    return judge, history


def judge_accuracy_by_count(judge, images: np.ndarray, objects: Sequence) -> dict[str, float]:
    """Exact set accuracy for each number of objects: ``{"objects_1": 0.99, ...}``."""
    read = judge.read(images)
    out = {}
    for count in sorted({len(o) for o in objects}):
        rows = [i for i, o in enumerate(objects) if len(o) == count]
        out[f"objects_{count}"] = float(np.mean([read[i] == objects[i] for i in rows]))
    return out


def real_images(records: pd.DataFrame, ingest_params: Mapping[str, Any] | None = None, image_input=None,
                ) -> tuple[np.ndarray, list]:
    """Decoded real engravings (N, S, S, 3) uint8 and their (shape, size) object sets."""
    from multimodal_lab.config import from_params
    from multimodal_lab.data.images import ImageInput
    from multimodal_lab.data.ingest import IngestConfig
    from multimodal_lab.data.record_dataset import decode_all
    from multimodal_lab.data.records import metadata_of
    from multimodal_lab.models.art_judge import objects_of

    if records.empty:
        raise ValueError("no real engravings in this split; art_generator needs the art corpus "
                         "(art_generator.data.scene_world.n_engravings > 0)")
    if image_input is None:
        image_input = ImageInput.from_policy(from_params(IngestConfig, dict(ingest_params or {}),
                                                         where="params:ingest").image)
    images = decode_all(records["image"].tolist(), image_input)
    return images, [objects_of(metadata_of(row)) for row in records.to_dict("records")]


# ----------------------------------------------------------------------------- evaluation

def describe(objects) -> str:
    """A judge's reading (or any object set) as words: 'large circle, small star'."""
    if objects is None:
        return "(does not parse)"
    return ", ".join(f"{size} {shape}" for shape, size in sorted(objects)) or "(nothing)"


def evaluate_art(model, records: pd.DataFrame, settings: ArtEvalSettings, train_records: pd.DataFrame | None = None,
                 split: str = "test", *, judge) -> Evaluation:
    """Generate ``settings.samples`` pairs and score them with the judge against the split's real engravings.

    Conditions: ``model`` (every score); ``shuffled`` (the control: the same captions paired
    with other seeds' images, agreement only); ``real`` (the split's real engravings and
    captions: what the scores read on real pairs; its FID is the real-vs-real line).
    FID and KID compare equal numbers of images: two seeded halves A and B of the real
    engravings give the line (A vs B); the generated side is its first |A| images against B.
    """
    from multimodal_lab.data.scene_render import encode_png
    from multimodal_lab.evaluation import art
    from multimodal_lab.evaluation.harness import summarize
    from multimodal_lab.models.art_judge import set_accuracy

    real, real_objects = real_images(records, image_input=model.image_input)
    if settings.max_records is not None and len(real) > settings.max_records:
        keep = np.sort(np.random.default_rng(settings.seed).choice(len(real), settings.max_records, replace=False))
        real, real_objects = real[keep], [real_objects[i] for i in keep]
    if len(real) < 4:
        raise ValueError(f"art_generator's FID needs at least 4 real engravings in the {split} split, got {len(real)}")
    captions_real = records[TEXT_COLUMN].astype(str).tolist()
    seeds = list(range(settings.first_seed, settings.first_seed + settings.samples))
    with evaluation_mode(model, settings):
        images, captions = model.generate(seeds, settings.generation)
    judged = judge.read(images)
    judged_real = judge.read(real)

    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(settings.seed)).numpy()
    half = len(real) // 2
    line_a, line_b = real[order[:half]], real[order[half:2 * half]]
    line = art.judge_fid(judge, line_a, line_b, kid_subset=settings.kid_subset)
    own = art.judge_fid(judge, line_b, images[:half], kid_subset=settings.kid_subset)
    model_row = {"condition": "model", "kind": "model", **art.agreement_scores(captions, judged),
                 **art.caption_population_scores(captions, real_objects), **art.image_scores(images), **own}
    shuffled = {"condition": "shuffled", "kind": "control",
                "agreement": art.shuffled_agreement(captions, judged, settings.seed)}
    accuracy = set_accuracy(judge, real, real_objects)["set_accuracy"]
    by_count = {f"judge_accuracy_{k}": v for k, v in judge_accuracy_by_count(judge, real, real_objects).items()}
    real_row = {"condition": "real", "kind": "reference", **by_count,
                **art.agreement_scores(captions_real, judged_real),
                **art.caption_population_scores(captions_real, real_objects), **art.image_scores(real), **line,
                "judge_accuracy": accuracy}
    metrics = pd.DataFrame([model_row, shuffled, real_row], columns=["condition", "kind", *COLUMNS, *by_count])
    metrics["num_records"] = float(len(real))
    metrics["num_pairs"] = [float(len(seeds)), float(len(seeds)), float(len(real))]
    conditions = [
        {"name": "model", "kind": "model", "description": f"{len(seeds)} pairs from seeds {seeds[0]}..{seeds[-1]}"},
        {"name": "shuffled", "kind": "control", "description": "the same captions, each paired with another seed's image"},
        {"name": "real", "kind": "reference",
         "description": f"the {split} split's real engravings and captions; its FID/KID: two halves of them "
                        "(the real-vs-real line); judge_accuracy: object sets the judge reads exactly"},
    ]
    samples = [{"record_id": f"seed {seed}", "images": [], "reference": "",
                "outputs": {"model": caption}, "notes": {"model": f"the judge reads: {describe(seen)}"},
                "inputs_from": {}, "figures": [{"label": f"seed {seed}", "png": encode_png(Image.fromarray(image))}]}
               for seed, image, caption, seen in zip(seeds[:settings.num_samples], images, captions, judged)]
    notes = [f"FID and KID are computed in the judge's pooled features on {half} images a side: the generated "
             f"images of the first {half} seeds against the same half of real engravings as the real-vs-real line."]
    return Evaluation(metrics=metrics, samples=samples, summary=summarize(metrics, split), conditions=conditions,
                      split=split, notes=notes)


# ----------------------------------------------------------------------------- the designs, compared

#: flat metric names the issue's bars read, per variant: <variant>/<key>
HEADLINE = ("agreement", "black_fraction", "parse_rate", "fid_judge")


def compare(evaluations: Mapping[str, Evaluation], split: str = "test") -> tuple[Evaluation, dict[str, float]]:
    """One table and one report for every design: each design's row and shuffled control, the real reference.

    Flat metrics: ``<variant>/<metric>`` (every score), ``<variant>/agreement_shuffled``,
    ``real_vs_real/fid_judge`` (and ``kid_judge``), ``judge/test_accuracy``, ``real/<metric>``.
    """
    if not evaluations:
        raise ValueError("compare needs at least one design's evaluation")
    rows, conditions, flat = [], [], {}
    first = next(iter(evaluations.values()))
    for variant, evaluation in evaluations.items():
        table = evaluation.metrics.set_index("condition")
        model = table.loc["model"].drop("kind")
        rows.append({"condition": variant, "kind": "model", **model.to_dict()})
        conditions.append({"name": variant, "kind": "model", "description": f"design {variant}: "
                           + next(c["description"] for c in evaluation.conditions if c["name"] == "model")})
        flat.update({f"{variant}/{k}": float(v) for k, v in model.items() if v == v})
        shuffled = table.loc["shuffled"].drop("kind")
        rows.append({"condition": f"{variant}/shuffled", "kind": "control", **shuffled.to_dict()})
        conditions.append({"name": f"{variant}/shuffled", "kind": "control",
                           "description": f"design {variant}'s captions, each with another seed's image"})
        flat[f"{variant}/agreement_shuffled"] = float(shuffled["agreement"])
    real = first.metrics.set_index("condition").loc["real"].drop("kind")
    rows.append({"condition": "real", "kind": "reference", **real.to_dict()})
    conditions.append(next(c for c in first.conditions if c["name"] == "real"))
    flat.update({f"real/{k}": float(v) for k, v in real.items() if v == v})
    flat["real_vs_real/fid_judge"] = float(real["fid_judge"])
    flat["real_vs_real/kid_judge"] = float(real["kid_judge"])
    flat["judge/test_accuracy"] = float(real["judge_accuracy"])
    by_count = [k for k in real.index if k.startswith("judge_accuracy_")]
    flat.update({f"judge/test_accuracy_{k.removeprefix('judge_accuracy_')}": float(real[k]) for k in by_count})
    metrics = pd.DataFrame(rows, columns=["condition", "kind", *COLUMNS, *by_count, "num_records", "num_pairs"])
    samples = []
    for index, sample in enumerate(first.samples):
        card = {**sample, "outputs": {}, "notes": {}, "figures": []}
        for variant, evaluation in evaluations.items():
            if index >= len(evaluation.samples):
                continue
            theirs = evaluation.samples[index]
            card["outputs"][variant] = theirs["outputs"]["model"]
            card["notes"][variant] = theirs["notes"]["model"]
            card["figures"] += [{**f, "label": f"{variant}: {f['label']}"} for f in theirs["figures"]]
        samples.append(card)
    notes = [*first.notes, _bars(flat, list(evaluations))]
    return Evaluation(metrics=metrics, samples=samples, summary=flat, conditions=conditions, split=split,
                      notes=notes), flat


def _bars(flat: Mapping[str, float], variants: Sequence[str]) -> str:
    line = flat["real_vs_real/fid_judge"]
    parts = [f"{v}: agreement {flat[f'{v}/agreement']:.3f} (shuffled {flat[f'{v}/agreement_shuffled']:.3f}), "
             f"parse rate {flat[f'{v}/parse_rate']:.3f}, near-black {flat[f'{v}/black_fraction']:.3f}, "
             f"FID {flat[f'{v}/fid_judge']:.1f} ({flat[f'{v}/fid_judge'] / line:.2f}x real-vs-real)" for v in variants]
    counts = ", ".join(f"{k.rsplit('_', 1)[-1]} object(s) {v:.3f}" for k, v in flat.items()
                       if k.startswith("judge/test_accuracy_objects_"))
    return (f"Judge: {flat['judge/test_accuracy']:.3f} of real test object sets read exactly ({counts}). Real-vs-real FID "
            f"{line:.1f}. " + "; ".join(parts) + ".")


# ----------------------------------------------------------------------------- inference

@dataclass
class ArtInferenceParams:
    """``params:art_generator_inference``: which seeds to draw and how captions are sampled."""

    seeds: list[int] = field(default_factory=list)  # explicit seeds; [] = the range below
    first_seed: int = 0  # with seeds [], seeds first_seed .. first_seed + count - 1
    count: int = 16
    generation: GenerationSettings = field(default_factory=_default_generation)

    def __post_init__(self) -> None:
        if isinstance(self.generation, Mapping):
            self.generation = GenerationSettings(**self.generation)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must not repeat, got {self.seeds}")
        if self.first_seed < 0 or self.count < 1:
            raise ValueError(f"first_seed must be >= 0 and count >= 1, got {self.first_seed} and {self.count}")

    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds else list(range(self.first_seed, self.first_seed + self.count))


GALLERY_PAGE = """{% extends "base.html" %}
{% block content %}
<style>
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 1rem; }
.gallery img { width: 192px; display: block; image-rendering: pixelated; }
</style>
<div class="gallery">
{% for p in pairs %}<div class="card"><img src="{{ p.uri }}" alt="seed {{ p.seed }}: {{ p.caption }}">
<div class="label">seed {{ p.seed }} ({{ p.file }})</div><p class="story">{{ p.caption }}</p></div>
{% else %}<p class="note">No seeds.</p>{% endfor %}
</div>
{% endblock %}
"""


def _read_seeds(settings: ArtInferenceParams) -> list[int]:
    return settings.seed_list()


def folder_inference(model, seeds: list[int], settings: ArtInferenceParams) -> tuple[list[dict], str, dict]:
    """Generate a pair for each seed: JSON rows (seed, caption, PNG file, metadata), the gallery page
    and ``{file name: PIL image}`` (``seed<seed>.png``)."""
    from multimodal_lab.inference import ArtGenerator
    from multimodal_lab.reporting.figures import image_data_uri
    from multimodal_lab.reporting.html import render_page

    generator = ArtGenerator(model)
    rows, shown, images = [], [], {}
    for seed, (image, caption, metadata) in zip(seeds, generator.generate_batch(seeds, settings.generation)):
        name = f"seed{seed}.png"
        images[name] = image
        rows.append({"seed": seed, "caption": caption, "file": name, "metadata": metadata})
        shown.append({"seed": seed, "caption": caption, "file": name, "uri": image_data_uri(image)})
    design = getattr(model.config, "design", None) or type(model).__name__
    page = render_page("gallery.html", templates={"gallery.html": GALLERY_PAGE}, title="Engravings from seeds",
                       subtitle=f"{len(rows)} seed(s); the model: {design}", pairs=shown)
    return rows, page, images


def inference(model):
    from multimodal_lab.inference import ArtGenerator

    return ArtGenerator(model)


def _judge_pipeline(corpus_prefix: str):
    from kedro.pipeline import Pipeline, node

    return Pipeline([node(train_art_judge,
                          [f"{corpus_prefix}.train_records", f"{corpus_prefix}.val_records", f"params:{NAME}.judge",
                           "params:ingest"],
                          [f"{NAME}.judge", f"{NAME}.judge_training"], name=f"{NAME}.train_judge")], tags=NAME)


FAMILY = register_family(
    ModelFamily(
        name=NAME,
        title="one seed -> an engraving and its caption",
        corpus="art",
        world_params=f"params:{NAME}.data.scene_world",
        config_class=ArtGeneratorConfig,
        build=build,
        load=load,
        training_data=training_data,
        evaluate=evaluate_art,
        eval_settings_class=ArtEvalSettings,
        inference=inference,
        folder_inference=folder_inference,
        folder_reader=_read_seeds,
        folder_images=True,
        inference_variant="composer",
        inference_params_class=ArtInferenceParams,
        headline_metric="agreement",
        headline_higher_is_better=True,
        description=(
            "From one integer seed, an engraving and its caption. The default design (composer) samples the "
            "caption from a small GPT-2 with the seed's numbers, reads its objects and backdrop, and draws the "
            "image with a layered decoder of learned textures and sprites at places drawn from a learned layout "
            "prior; seed_vae is the write-up's shared-latent VAE sampled from the prior. An independent judge, "
            "trained only on real engravings, reads each image's objects: agreement is the share of pairs whose "
            "caption names exactly what the judge sees, against the same captions paired with other seeds' images."
        ),
        variants=VARIANTS,
        compare=compare,
        evaluation_inputs={"judge": f"{NAME}.judge"},
        auxiliary_pipeline=_judge_pipeline,
        parameter_blocks={f"{NAME}.judge": JudgeSettings},
    )
)
