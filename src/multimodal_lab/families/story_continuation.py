"""The ``story_continuation`` family: 4 frames + their sentences -> the 5th frame and its sentence.

What is truly this family's own: the model (``models.story_continuation``) and its four
variants, that an item is a whole 5-frame sequence, and how a continuation is scored:
the predicted frame with the frame scorer (pixels, objects, spread) against the image
floors, the predicted sentence by perplexity, grounding (objects and motion words) and
exact match against the copy-the-4th-sentence and unigram floors, and the model with its
input frames deranged across sequences. The comparison of the variants (one table, one
report) is :func:`compare`.
"""
from __future__ import annotations

import io
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from multimodal_lab.data.record_dataset import RecordCollator, RecordDataset, TextField
from multimodal_lab.evaluation import frames as F
from multimodal_lab.evaluation.grounding import continuation_f1, continuation_truth
from multimodal_lab.evaluation.harness import (
    EvalSettings,
    Evaluation,
    evaluation_mode,
    seeded_derangement,
    summarize,
)
from multimodal_lab.families import register_family
from multimodal_lab.families.base import ModelFamily
from multimodal_lab.generation.story import GenerationSettings, generate_from_prefix
from multimodal_lab.models.story_continuation import (
    INPUT_FRAMES,
    StoryContinuation,
    StoryContinuationConfig,
)

log = logging.getLogger(__name__)

TEXT_COLUMN = "caption"
FRAMES = INPUT_FRAMES + 1

#: The variants trained and compared by the family's pipeline: name -> model switches.
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"cross_modal": False, "vae": False},
    "cross_modal": {"cross_modal": True, "vae": False},
    "vae": {"cross_modal": False, "vae": True},
    "cross_modal_vae": {"cross_modal": True, "vae": True},
}
#: The text-only floor: the same text path trained without any image.
TEXT_ONLY = {"use_images": False, "cross_modal": False, "vae": False}

IMAGE_METRICS = ("image_mae", "image_mse", "psnr", "ssim", "position_error_px", "detection_rate",
                 "size_accuracy", "colour_accuracy", "spread")
TEXT_METRICS = ("perplexity", "grounding_f1", "exact_match")
COLUMNS = (*IMAGE_METRICS, "sample_diversity", *TEXT_METRICS)
DETECTOR_NOTE = (
    "Object scores come from an exact palette detector (evaluation/frames.py): a missed object counts the image "
    "side as its position error. spread: per-pixel standard deviation across the predictions (0 for one image "
    "predicted for every input); sample_diversity: the same across a vae variant's draws for one input, averaged.")


@dataclass
class ContinuationEvalSettings(EvalSettings):
    """Evaluation settings of story_continuation (``max_records`` counts sequences)."""

    text_column: str = TEXT_COLUMN
    batch_size: int = 50
    max_records: int | None = 300
    num_samples: int = 12
    vae_samples: int = 4  # 5th frames drawn per input by the vae variants (their spread is reported)
    controls: list[str] = field(default_factory=lambda: ["deranged"])
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=38))

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [c for c in self.controls if c != "deranged"]
        if unknown:
            raise ValueError(f"story_continuation has the control 'deranged' only, got {unknown}")
        if self.vae_samples < 0:
            raise ValueError(f"vae_samples must be >= 0, got {self.vae_samples}")


def build(config: StoryContinuationConfig, tokenizer) -> StoryContinuation:
    return StoryContinuation(config, tokenizer)


def load(directory, map_location: str = "cpu") -> StoryContinuation:
    return StoryContinuation.from_pretrained(directory, map_location=map_location)


def _text_fields(model: StoryContinuation) -> list[TextField]:
    return [TextField(TEXT_COLUMN, model.tokenizer, model.config.max_sentence_tokens)]


def training_data(model: StoryContinuation, records: pd.DataFrame) -> tuple[RecordDataset, RecordCollator]:
    """One item per whole 5-frame sequence: images (B, 5, 3, S, S), sentences (B, 5, T)."""
    texts = _text_fields(model)
    return RecordDataset(records, image=model.image_input, texts=texts, group_size=FRAMES), RecordCollator(texts)


# ----------------------------------------------------------------------------- evaluation helpers

def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [0, 1] -> (N, S, S, 3) uint8."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def strip_png(frames: Sequence[np.ndarray], gap: int = 2) -> bytes:
    """Frames (S, S, 3) side by side with a white gap, as one PNG."""
    side = frames[0].shape[0]
    canvas = np.full((side, len(frames) * (side + gap) - gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        canvas[:, i * (side + gap):i * (side + gap) + side] = frame
    return _png(canvas)


@dataclass
class Sequences:
    """The evaluated sequences, decoded once."""

    images: torch.Tensor  # (N, 5, 3, S, S) float in [0, 1]
    input_ids: torch.Tensor  # (N, 5, T)
    attention_mask: torch.Tensor  # (N, 5, T)
    labels: torch.Tensor  # (N, 5, T)
    sentences: list[list[str]]  # (N, 5)
    metadata: list[dict]  # the 5th frame's metadata
    ids: list[str]  # the 5th frame's record id

    @property
    def frames_uint8(self) -> np.ndarray:
        n, g = self.images.shape[:2]
        return _to_uint8(self.images.flatten(0, 1)).reshape(n, g, *self.images.shape[-2:], 3)


def load_sequences(model: StoryContinuation, records: pd.DataFrame, count: int | None, seed: int) -> Sequences:
    """A seeded subset of ``count`` whole sequences of ``records`` (all when None), in record order."""
    from multimodal_lab.data.records import metadata_of

    texts = _text_fields(model)
    dataset = RecordDataset(records, image=model.image_input, texts=texts, group_size=FRAMES)
    if len(dataset) == 0:
        raise ValueError("no whole 5-frame sequence among the records; evaluate the sequence corpus")
    chosen = np.arange(len(dataset))
    if count is not None and len(dataset) > count:
        chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=count, replace=False))
    batch = RecordCollator(texts)([dataset[int(i)] for i in chosen])
    by_id = records.assign(record_id=records["record_id"].astype(str)).set_index("record_id")
    ids = [[dataset.record_ids[int(i) * FRAMES + f] for f in range(FRAMES)] for i in chosen]
    sentences = [[str(by_id.at[r, TEXT_COLUMN]) for r in group] for group in ids]
    metadata = [metadata_of(by_id.loc[group[-1]].to_dict()) for group in ids]
    return Sequences(batch["images"], batch["input_ids"], batch["attention_mask"], batch["labels"], sentences,
                     metadata, [group[-1] for group in ids])


def _normal(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").replace(",", " ").split())


def text_scores(texts: Sequence[str], sequences: Sequences) -> dict[str, float]:
    """Grounding F1 (objects and motion words) and exact match of predicted 5th sentences."""
    from multimodal_lab.data.scene_render import COLOURS, SHAPES

    truths = [continuation_truth(md.get("objects", []), F.motion_kinds(md)) for md in sequences.metadata]
    exact = [_normal(t) == _normal(s[-1]) for t, s in zip(texts, sequences.sentences)]
    return {"grounding_f1": continuation_f1(texts, truths, COLOURS, SHAPES), "exact_match": float(np.mean(exact))}


def unigram_perplexity(train_sentences: Sequence[str], sequences: Sequences, tokenizer) -> float:
    """Perplexity of the true 5th sentences (words and the end token) under the training 5th
    sentences' unigram distribution (add-one smoothing over the vocabulary)."""
    from multimodal_lab.data.record_dataset import encode_texts

    def tokens(texts: Sequence[str]) -> list[int]:
        return [t for ids in encode_texts(list(texts), tokenizer, 10_000) for t in ids[1:]]  # no bos

    counts = Counter(tokens(train_sentences))
    total = sum(counts.values()) + len(tokenizer)
    test = tokens([s[-1] for s in sequences.sentences])
    nll = -sum(math.log((counts[t] + 1) / total) for t in test)
    return math.exp(nll / max(1, len(test)))


@torch.no_grad()
def _run_model(model: StoryContinuation, sequences: Sequences, settings: ContinuationEvalSettings,
               device: torch.device, order: np.ndarray | None = None) -> dict[str, Any]:
    """Predicted frames, sentences, perplexity (and VAE draws) for every sequence.

    ``order``: for the deranged control, the sequence whose 4 input frames each row reads
    (its own sentences stay); the control draws no VAE samples (they describe the model alone).
    """
    from multimodal_lab.evaluation.text import perplexity, sequence_nll

    images, texts, draws = [], [], []
    nll, count = 0.0, 0
    n = sequences.images.shape[0]
    for start in range(0, n, settings.batch_size):
        rows = slice(start, min(start + settings.batch_size, n))
        source = np.arange(n)[rows] if order is None else order[rows]
        frames = sequences.images[torch.as_tensor(source), :INPUT_FRAMES].to(device)
        ids, mask = sequences.input_ids[rows].to(device), sequences.attention_mask[rows].to(device)
        encoded = model.encode(frames, ids[:, :INPUT_FRAMES], mask[:, :INPUT_FRAMES])
        logits = model.text_logits(encoded["prefix"], ids[:, -1], mask[:, -1])
        part_nll, part_count = sequence_nll(logits, sequences.labels[rows, -1].to(device))
        nll, count = nll + float(part_nll.sum()), count + int(part_count.sum())
        texts.extend(generate_from_prefix(model, encoded["prefix"], settings.generation))
        if model.unet is not None:
            images.append(_to_uint8(model.predict_image(encoded)))
            if model.config.vae and settings.vae_samples > 0 and order is None:
                generator = torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + start)
                draws.append(np.stack([_to_uint8(model.predict_image(encoded, sample=True, generator=generator))
                                       for _ in range(settings.vae_samples)], axis=1))  # (b, k, S, S, 3)
    return {"images": np.concatenate(images) if images else None, "texts": texts,
            "perplexity": perplexity(nll, count), "draws": np.concatenate(draws) if draws else None}


def _image_row(predicted: np.ndarray | None, sequences: Sequences, true: np.ndarray) -> dict[str, float]:
    if predicted is None:
        return dict.fromkeys(IMAGE_METRICS, math.nan)
    return {**F.frame_metrics(predicted, true, sequences.metadata), "spread": F.spread(predicted)}


def evaluate_continuation(model: StoryContinuation, records: pd.DataFrame, settings: ContinuationEvalSettings,
                          train_records: pd.DataFrame | None = None, split: str = "test") -> Evaluation:
    """Score the model's 5th frames and sentences next to the floors and the deranged control.

    Conditions: ``model``; ``deranged`` (each sequence reads another sequence's 4 frames,
    its own sentences); the image floors ``copy_last``, ``mean_image``, ``mean_inputs``,
    ``linear``; the text floors ``copy_sentence`` (the 4th sentence as the 5th) and
    ``unigram`` (perplexity only).
    """
    if train_records is None or train_records.empty:
        raise ValueError("story_continuation's floors need the training records; pass train_records")
    with evaluation_mode(model, settings) as device:
        sequences = load_sequences(model, records, settings.max_records, settings.seed)
        frames = sequences.frames_uint8
        inputs, true = frames[:, :INPUT_FRAMES], frames[:, -1]
        n = len(sequences.ids)
        own = _run_model(model, sequences, settings, device)
        runs = {"model": own}
        # A model without image input (the text-only floor) is its own deranged control: not run twice.
        deranged = n >= 2 and "deranged" in settings.controls and model.config.use_images
        perm = seeded_derangement(n, settings.seed) if deranged else None
        if perm is not None:
            runs["deranged"] = _run_model(model, sequences, settings, device, order=perm)
        train = load_sequences(model, train_records, settings.baseline_records, settings.seed)

    rows, conditions = [], []
    descriptions = {"model": "the model, each sequence with its own 4 frames and sentences",
                    "deranged": "the model with the 4 input frames of another test sequence (its own sentences)"}
    for name, run in runs.items():
        row = {"condition": name, "kind": "model" if name == "model" else "control",
               **_image_row(run["images"], sequences, true), "perplexity": run["perplexity"],
               **text_scores(run["texts"], sequences)}
        row["sample_diversity"] = (float(np.mean([F.spread(d) for d in run["draws"]]))
                                   if run["draws"] is not None else math.nan)
        rows.append(row)
        conditions.append({"name": name, "kind": row["kind"], "description": descriptions[name]})
    floors = {
        "copy_last": F.copy_last(inputs),
        "mean_image": F.mean_image(train.frames_uint8[:, -1], n),
        "mean_inputs": F.mean_of_inputs(inputs),
        "linear": F.linear_extrapolation(inputs),
    }
    for name, predicted in floors.items():
        rows.append({"condition": name, "kind": "floor", **_image_row(predicted, sequences, true)})
        conditions.append({"name": name, "kind": "floor", "description": F.FRAME_FLOORS[name]})
    copied = [s[-2] for s in sequences.sentences]
    rows.append({"condition": "copy_sentence", "kind": "floor", **text_scores(copied, sequences)})
    conditions.append({"name": "copy_sentence", "kind": "floor", "description": "the 4th sentence, copied"})
    rows.append({"condition": "unigram", "kind": "floor",
                 "perplexity": unigram_perplexity([s[-1] for s in train.sentences], sequences, model.tokenizer)})
    conditions.append({"name": "unigram", "kind": "floor",
                       "description": "the training 5th sentences' unigram distribution (perplexity only)"})
    metrics = pd.DataFrame(rows, columns=["condition", "kind", *COLUMNS])
    metrics["num_records"] = float(n)
    samples = _samples(sequences, frames, runs, copied, settings.num_samples)
    return Evaluation(metrics=metrics, samples=samples, summary=summarize(metrics, split), conditions=conditions,
                      split=split, notes=[DETECTOR_NOTE])


def _samples(sequences: Sequences, frames: np.ndarray, runs: Mapping[str, Mapping[str, Any]], copied: list[str],
             count: int) -> list[dict[str, Any]]:
    samples = []
    own = runs["model"]
    for i in range(min(count, len(sequences.ids))):
        strip = [*frames[i, :INPUT_FRAMES], frames[i, -1]]
        figures = [{"label": "input frames 1-4, the true 5th frame", "png": strip_png(strip)}]
        if own["images"] is not None:
            predicted = [own["images"][i]]
            if own["draws"] is not None:
                predicted += list(own["draws"][i])
            label = "predicted 5th frame" + (" (mean), then draws" if own["draws"] is not None else "")
            figures.append({"label": label, "png": strip_png(predicted)})
        samples.append({
            "record_id": sequences.ids[i],
            "images": [],
            "reference": sequences.sentences[i][-1],
            "reference_note": " / ".join(sequences.sentences[i][:INPUT_FRAMES]),
            "outputs": {**{name: run["texts"][i] for name, run in runs.items()}, "copy_sentence": copied[i]},
            "notes": {},
            "inputs_from": {},
            "figures": figures,
        })
    return samples


# ----------------------------------------------------------------------------- the variants, compared

def compare(evaluations: Mapping[str, Evaluation], split: str = "test") -> tuple[Evaluation, dict[str, float]]:
    """One table for every variant next to the floors, and the flat metrics with the issue's keys.

    Rows: each variant (its own model row) and its deranged control (``<variant>/deranged``),
    the floors once (from the first variant's evaluation: they do not depend on the model),
    and ``text_only`` (the text-only model's perplexity and sentence scores).

    Returns:
        The combined evaluation (for the report) and metrics ``<variant>/image_mae``,
        ``<variant>/perplexity``, ``floor_copy_last/image_mae``, ``floor_text_only/perplexity``...
    """
    evaluations = dict(evaluations)
    text_only = evaluations.pop("text_only", None)
    if not evaluations:
        raise ValueError("compare needs at least one image variant's evaluation")
    rows, conditions, flat = [], [], {}
    first = next(iter(evaluations.values()))
    for variant, evaluation in evaluations.items():
        table = evaluation.metrics.set_index("condition")
        for condition in ("model", "deranged"):
            if condition not in table.index:
                continue
            name = variant if condition == "model" else f"{variant}/deranged"
            rows.append({"condition": name, "kind": "model" if condition == "model" else "control",
                         **table.loc[condition].drop("kind").to_dict()})
            conditions.append({"name": name, "kind": rows[-1]["kind"],
                               "description": f"variant {variant}" + ("" if condition == "model" else
                                                                      ", input frames deranged")})
            prefix = variant if condition == "model" else f"{variant}/control_deranged"
            flat.update({f"{prefix}/{k}": float(v) for k, v in table.loc[condition].drop("kind").items()})
    floors = first.metrics[first.metrics["kind"] == "floor"]
    described = {c["name"]: c["description"] for c in first.conditions}
    for row in floors.to_dict("records"):
        rows.append(row)
        conditions.append({"name": row["condition"], "kind": "floor", "description": described[row["condition"]]})
        flat.update({f"floor_{row['condition']}/{k}": float(v) for k, v in row.items()
                     if k not in ("condition", "kind")})
    if text_only is not None:
        row = text_only.metrics.set_index("condition").loc["model"]
        kept = {k: row[k] for k in ("perplexity", "grounding_f1", "exact_match", "num_records")}
        rows.append({"condition": "text_only", "kind": "floor", **kept})
        conditions.append({"name": "text_only", "kind": "floor",
                           "description": "the same text path trained without images (perplexity and sentences)"})
        flat.update({f"floor_text_only/{k}": float(v) for k, v in kept.items()})
    metrics = pd.DataFrame(rows, columns=["condition", "kind", *COLUMNS, "num_records"])
    # One card per sequence: the inputs and the true 5th frame once, then every variant's frame and sentence.
    samples = [{**sample, "figures": list(sample["figures"][:1]),
                "outputs": {"copy_sentence": sample["outputs"].get("copy_sentence", "")}} for sample in first.samples]
    named = {**evaluations, **({"text_only": text_only} if text_only is not None else {})}
    for variant, evaluation in named.items():
        for sample, theirs in zip(samples, evaluation.samples):
            sample["outputs"][variant] = theirs["outputs"]["model"]
            sample["figures"] += [{**f, "label": f"{variant}: {f['label']}"} for f in theirs["figures"][1:]]
    notes = [*first.notes, _winners(metrics, list(evaluations))]
    combined = Evaluation(metrics=metrics, samples=samples, summary=flat, conditions=conditions, split=split,
                          notes=notes)
    return combined, flat


#: metric -> True when higher is better
DIRECTION = {"image_mae": False, "image_mse": False, "psnr": True, "ssim": True, "position_error_px": False,
             "detection_rate": True, "perplexity": False, "grounding_f1": True, "exact_match": True}


def _winners(metrics: pd.DataFrame, variants: list[str]) -> str:
    """Which variant wins each metric, and by how much over the runner-up."""
    table = metrics.set_index("condition").loc[[v for v in variants if v in set(metrics["condition"])]]
    parts = []
    for metric, higher in DIRECTION.items():
        column = table[metric].astype(float).dropna()
        if len(column) < 2:
            continue
        ranked = column.sort_values(ascending=not higher)
        best, second = ranked.index[0], ranked.index[1]
        parts.append(f"{metric}: {best} ({ranked.iloc[0]:.4g} vs {second} {ranked.iloc[1]:.4g})")
    return "Best variant per metric: " + "; ".join(parts) + "." if parts else ""


#: The inference page: per sequence, the 4 input frames with their sentences, then the prediction.
CONTINUATIONS_PAGE = """{% extends "base.html" %}
{% block content %}
<style>
.sequence { display: flex; flex-wrap: wrap; gap: 0.8rem; align-items: flex-start; }
.frame { width: 160px; }
.frame img { width: 160px; display: block; margin-bottom: 0.3rem; image-rendering: pixelated; }
.frame.predicted { border-left: 3px solid #888; padding-left: 0.8rem; }
</style>
{% for s in sequences %}<h2>{{ s.name }}</h2>
<div class="sequence">
{% for f in s.frames %}<div class="frame"><img src="{{ f.uri }}" alt="{{ s.name }}: frame {{ loop.index }}">
<div class="label">frame {{ loop.index }} ({{ f.file }})</div><p class="story">{{ f.sentence }}</p></div>
{% endfor %}<div class="frame predicted">{% if s.predicted_uri %}<img src="{{ s.predicted_uri }}" alt="{{ s.name }}: the predicted 5th frame">{% endif %}
<div class="label">the predicted 5th {% if s.predicted_uri %}frame{% else %}sentence (a text-only model draws no frame){% endif %}</div>
<p class="story">{{ s.sentence }}</p></div>
</div>
{% if s.samples %}<div class="label">{{ s.samples|length }} drawn 5th frames (seed {{ seed }})</div>
<div class="sequence">{% for uri in s.samples %}<div class="frame"><img src="{{ uri }}" alt="{{ s.name }}: drawn 5th frame {{ loop.index }}"></div>
{% endfor %}</div>{% endif %}
{% else %}<p class="note">No sequences.</p>{% endfor %}
{% endblock %}
"""


def inference_file_names(sequence: str, samples: int) -> tuple[str, list[str]]:
    """The PNG names of a sequence's predicted frame and its ``samples`` draws.

    ``<sequence>.predicted.png`` and ``<sequence>.sample<k>.png``: no two sequences' names
    can collide (a name ends in ``.predicted`` or ``.sample`` + digits, the rest is the sequence).
    """
    return f"{sequence}.predicted.png", [f"{sequence}.sample{k}.png" for k in range(samples)]


def folder_inference(model: StoryContinuation, sequences: list, settings) -> tuple[list[dict], str, dict]:
    """The 5th frame and sentence of each of the user's sequences.

    Args:
        model: a trained ``StoryContinuation`` (any variant).
        sequences: ``UserSequence`` items (``inference.read_sequence_folder``): 4 frames
            (PIL images, any size) and 4 sentences each.
        settings: ``ContinuationInferenceParams``: ``samples`` draws per sequence (vae variants
            only; other variants draw none), their ``seed`` and the sentence's ``generation``.

    Returns:
        JSON rows (``sequence``, its ``sentences``, the predicted ``sentence``, the PNG file
        names ``frame`` (None for a text-only model) and ``samples``), the HTML page, and the
        predicted frames as ``{file name: PIL image}`` (each (S, S) RGB, S the model's image_size).
    """
    from multimodal_lab.inference import Continuer
    from multimodal_lab.reporting.figures import image_data_uri
    from multimodal_lab.reporting.html import render_page

    continuer = Continuer(model)
    samples = settings.samples if model.config.vae else 0
    if settings.samples and not samples:
        log.warning("samples=%d ignored: this model has no latent to draw from (not a vae variant)", settings.samples)
    rows, shown, images = [], [], {}
    for sequence in sequences:
        result = continuer.continue_story(sequence.frames, sequence.sentences, samples=samples, seed=settings.seed,
                                          settings=settings.generation)
        frame_name, sample_names = inference_file_names(sequence.name, len(result["samples"]))
        if result["image"] is None:
            frame_name = None
        else:
            images[frame_name] = result["image"]
        images.update(zip(sample_names, result["samples"]))
        rows.append({"sequence": sequence.name, "sentences": list(sequence.sentences), "sentence": result["sentence"],
                     "frame": frame_name, "samples": sample_names})
        shown.append({
            "name": sequence.name,
            "frames": [{"uri": image_data_uri(frame, max_side=320), "file": file, "sentence": sentence}
                       for frame, file, sentence in zip(sequence.frames, sequence.files, sequence.sentences)],
            "predicted_uri": image_data_uri(result["image"]) if result["image"] is not None else None,
            "sentence": result["sentence"],
            "samples": [image_data_uri(sample) for sample in result["samples"]],
        })
    switches = ", ".join(f"{k} {'on' if getattr(model.config, k) else 'off'}" for k in ("cross_modal", "vae"))
    page = render_page("continuations.html", templates={"continuations.html": CONTINUATIONS_PAGE},
                       title="Story continuations", subtitle=f"{len(rows)} sequence(s); the model: {switches}",
                       sequences=shown, seed=settings.seed)
    return rows, page, images


def _inference_params() -> type:
    from multimodal_lab.inference import ContinuationInferenceParams

    return ContinuationInferenceParams


def _read_sequences(settings) -> list:
    from multimodal_lab.inference import read_sequence_folder

    return read_sequence_folder(settings.sequences_dir)


def inference(model: StoryContinuation):
    from multimodal_lab.inference import Continuer

    return Continuer(model)


FAMILY = register_family(
    ModelFamily(
        name="story_continuation",
        title="4 frames + sentences -> the 5th frame and sentence",
        corpus="sequence",
        world_params="params:story_continuation.data.scene_world",
        config_class=StoryContinuationConfig,
        build=build,
        load=load,
        training_data=training_data,
        evaluate=evaluate_continuation,
        eval_settings_class=ContinuationEvalSettings,
        inference=inference,
        folder_inference=folder_inference,
        folder_reader=_read_sequences,
        folder_images=True,
        inference_variant="cross_modal_vae",  # every switch on: the 5th frame, its sentence and drawn samples
        inference_params_class=_inference_params(),
        headline_metric="image_mae",
        headline_higher_is_better=False,
        description=(
            "Given 4 frames of a scene-world sequence and their sentences, the model predicts the 5th frame "
            "(a U-Net that moves the 4th frame's pixels, uncovers the background from the 1st and paints what "
            "changes) and the 5th sentence (GPT-2 reading the fused state). Frames are scored on pixels and on "
            "the objects an exact palette detector finds, sentences on perplexity, grounding and exact match, "
            "next to floors that need no model and the model fed other sequences' frames."
        ),
        variants={**VARIANTS, "text_only": TEXT_ONLY},
        compare=compare,
    )
)
