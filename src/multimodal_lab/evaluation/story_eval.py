"""Evaluate a story model against two controls that show whether it uses the image.

A story model can reach a low loss while ignoring its input: scene stories share
templates, so a language model alone writes fluent, plausible text. The evaluation
therefore runs the same model, on the same records and with the same decoding, three
times:

* ``model``: each record with its own image;
* ``shuffled_images``: each record with another record's image (a seeded derangement,
  so no record keeps its own image);
* ``zeroed_prefix``: the image prefix replaced by zeros.

Grounding (are the generated (colour, shape) pairs the image's objects?) must drop in
both controls, and so should the reference stories' likelihood. Records without
scene-world object metadata (real material) still get perplexity and diversity; their
grounding is reported as NaN.
"""
from __future__ import annotations

import base64
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from multimodal_lab.config import from_params
from multimodal_lab.data.records import metadata_of
from multimodal_lab.data.scene_world import COLOURS, SHAPES, object_pairs
from multimodal_lab.data.story_dataset import StoryCollator, encode_texts
from multimodal_lab.evaluation.grounding import extract_pairs, grounding_scores
from multimodal_lab.evaluation.text import (
    distinct_n,
    perplexity,
    repeated_ngram_rate,
    sequence_nll,
    words,
)
from multimodal_lab.generation.story import GenerationSettings, generate_stories
from multimodal_lab.models.preprocess import decode_image, image_to_array

logger = logging.getLogger(__name__)

#: Conditions in table order: the model first, then its controls.
CONDITIONS: tuple[str, ...] = ("model", "shuffled_images", "zeroed_prefix")

#: Prefix of each condition's keys in the flat summary (MLflow metric names).
SUMMARY_PREFIX: dict[str, str] = {
    "model": "val",
    "shuffled_images": "control_shuffled",
    "zeroed_prefix": "control_zeroed",
}

#: Columns of ``StoryEvaluation.metrics`` after ``condition``, in order.
METRIC_COLUMNS: tuple[str, ...] = (
    "pair_precision",
    "pair_recall",
    "pair_f1",
    "colour_f1",
    "shape_f1",
    "distinct_1",
    "distinct_2",
    "repeated_3gram_rate",
    "mean_words",
    "perplexity",
    "num_records",
    "num_grounded",
)


@dataclass
class EvalSettings:
    """How the story model is evaluated."""

    batch_size: int = 32  # records per generation / scoring batch
    max_records: int | None = None  # evaluate a seeded random subset of this size (None = all)
    seed: int = 0  # seeds the subset and the shuffled-image derangement
    num_samples: int = 24  # records kept with their stories for the report
    text_column: str = "story"  # reference text scored for perplexity ("story" or "caption")
    controls: bool = True  # run the shuffled-image and zeroed-prefix controls
    show_progress: bool = True  # tqdm progress bar over records
    device: str | None = None  # run on "cpu", "cuda", "auto" (cuda when available); None = where the model is
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # decoding

    def __post_init__(self) -> None:
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings(**self.generation)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError(f"max_records must be >= 1 or None (all records), got {self.max_records}")
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EvalSettings:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, values, where="EvalSettings")


@dataclass
class StoryEvaluation:
    """What :func:`evaluate_story_model` measured."""

    metrics: pd.DataFrame  # one row per condition: "condition" + METRIC_COLUMNS
    samples: list[dict[str, Any]]  # kept records: image bytes, stories per condition, pairs
    summary: dict[str, float]  # flat metrics for MLflow ("val/pair_f1", "grounding_gap", ...)


def seeded_derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (perm[i] != i for all i).

    A uniform permutation is drawn, then every fixed point i is swapped with a random
    other position j: afterwards perm[i] is the old perm[j] (not i, since i already sat
    at i) and perm[j] is i (not j), so each swap removes a fixed point without creating
    one and a single pass suffices.

    Args:
        n: number of items, at least 2 (one item cannot be moved).
        seed: seed of the draw; the same (n, seed) gives the same permutation.

    Returns:
        int64 array of shape (n,).
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got n={n}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    for i in range(n):
        if perm[i] == i:
            j = int(rng.integers(n - 1))
            j = j + 1 if j >= i else j  # uniform over positions other than i
            perm[i], perm[j] = perm[j], perm[i]
    return perm.astype(np.int64)


def select_records(records: pd.DataFrame, max_records: int | None, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``max_records`` rows in their original order (all when None)."""
    if max_records is None or len(records) <= max_records:
        return records
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(records), size=max_records, replace=False))
    return records.iloc[keep]


def true_pairs_of(record: dict[str, Any] | pd.Series) -> set[tuple[str, str]] | None:
    """The (colour, shape) truth of a scene-world record; None when grounding does not apply.

    None for records without object metadata (real material) and for engravings, whose
    monochrome hatching shows no colour, so a (colour, shape) pair cannot be read off them.
    """
    try:
        metadata = metadata_of(record)
    except (TypeError, ValueError):  # metadata that is not JSON: real material, no truth
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("objects"), list):
        return None
    if metadata.get("style") == "engraving":
        return None
    return set(object_pairs(metadata))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _text_logits(model: Any, prefix: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    """Text logits (B, T, V) given an explicit prefix (B, k, D), laid out as in StoryGPT2.forward.

    Used for the zeroed-prefix control, which the model's forward (image in) cannot
    express; a test checks it matches forward for the model's own prefix.
    """
    text = model.embed_tokens(input_ids)  # (B, T, D)
    embeds = torch.cat([prefix.to(text.dtype), text], dim=1)  # (B, k + T, D)
    mask = torch.cat([attention_mask.new_ones(prefix.shape[:2]), attention_mask], dim=1)
    hidden = model.lm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return model.lm.get_output_embeddings()(hidden[:, prefix.shape[1]:])  # (B, T, V)


def _zero_prefix(model: Any, batch: int, device: torch.device) -> torch.Tensor:
    width = model.lm.config.n_embd
    return torch.zeros(batch, model.config.prefix_tokens, width, device=device, dtype=model.lm.dtype)


class _Tally:
    """Per-condition accumulators over batches."""

    def __init__(self) -> None:
        self.stories: list[str] = []
        self.predicted: list[set[tuple[str, str]]] = []
        self.nll = 0.0
        self.tokens = 0


def _condition_metrics(tally: _Tally, truths: list[set[tuple[str, str]] | None],
                       scored: bool) -> dict[str, float]:
    grounded = [i for i, truth in enumerate(truths) if truth is not None]
    if grounded:
        scores = grounding_scores([tally.predicted[i] for i in grounded], [truths[i] for i in grounded])
    else:
        scores = {}
    nan = math.nan
    return {
        "pair_precision": scores.get("precision", nan),
        "pair_recall": scores.get("recall", nan),
        "pair_f1": scores.get("f1", nan),
        "colour_f1": scores.get("colour_f1", nan),
        "shape_f1": scores.get("shape_f1", nan),
        "distinct_1": distinct_n(tally.stories, 1),
        "distinct_2": distinct_n(tally.stories, 2),
        "repeated_3gram_rate": repeated_ngram_rate(tally.stories, 3),
        "mean_words": float(np.mean([len(words(s)) for s in tally.stories])) if tally.stories else nan,
        "perplexity": perplexity(tally.nll, tally.tokens) if scored else nan,
        "num_records": float(len(tally.stories)),
        "num_grounded": float(len(grounded)),
    }


@torch.no_grad()
def evaluate_story_model(model: Any, val_records: pd.DataFrame, settings: EvalSettings) -> StoryEvaluation:
    """Generate and score stories for validation records, with the two controls.

    Args:
        model: a ``StoryGPT2`` (``tokenizer``, ``config.image_size``, ``config.prefix_tokens``,
            ``config.max_story_tokens``, ``encode_prefix``, ``embed_tokens``, ``lm``).
        val_records: record frame (``record_id``, ``image`` bytes, the text column,
            ``metadata``); it is not modified.
        settings: evaluation settings.

    Returns:
        A :class:`StoryEvaluation`: metrics per condition, kept samples and a flat summary.
    """
    for column in ("record_id", "image", "metadata"):
        if column not in val_records.columns:
            raise ValueError(f"val_records lack the column {column!r}; pass a record frame (data.records)")
    if settings.text_column not in val_records.columns:
        raise ValueError(
            f"val_records lack the text column {settings.text_column!r} set in EvalSettings.text_column"
        )
    records = select_records(val_records, settings.max_records, settings.seed).reset_index(drop=True)
    n = len(records)
    if n == 0:
        raise ValueError("evaluate_story_model got no validation records; check the split and max_records")
    conditions = list(CONDITIONS if settings.controls else CONDITIONS[:1])
    if "shuffled_images" in conditions and n < 2:
        logger.warning("one validation record cannot be shuffled; the shuffled_images control is skipped")
        conditions.remove("shuffled_images")
    perm = seeded_derangement(n, settings.seed) if "shuffled_images" in conditions else np.arange(n)

    image_size = int(model.config.image_size)
    max_tokens = int(model.config.max_story_tokens)
    tokenizer = model.tokenizer
    collate = StoryCollator(pad_token_id=tokenizer.pad_token_id)
    home = _model_device(model)
    if settings.device is None:
        device = home
    elif settings.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(settings.device)
    was_training = model.training
    model.to(device).eval()

    images = list(records["image"])
    texts = [t if isinstance(t, str) and t.strip() else None for t in records[settings.text_column]]
    truths = [true_pairs_of(row) for row in records.to_dict("records")]
    tallies = {name: _Tally() for name in conditions}

    progress = tqdm(total=n, desc="evaluating story model", unit="record", disable=not settings.show_progress)
    try:
        for start in range(0, n, settings.batch_size):
            rows = list(range(start, min(start + settings.batch_size, n)))
            own = torch.from_numpy(np.stack([image_to_array(decode_image(images[i]), image_size) for i in rows]))
            batch_images = own.permute(0, 3, 1, 2).float().div_(255.0).to(device)  # (B, 3, S, S)
            inputs = {"model": batch_images}
            if "shuffled_images" in conditions:
                other = np.stack([image_to_array(decode_image(images[perm[i]]), image_size) for i in rows])
                inputs["shuffled_images"] = (
                    torch.from_numpy(other).permute(0, 3, 1, 2).float().div_(255.0).to(device)
                )
            for name in conditions:
                override = _zero_prefix(model, len(rows), device) if name == "zeroed_prefix" else None
                condition_images = inputs.get(name, batch_images)
                stories = generate_stories(model, condition_images, settings.generation, prefix_override=override)
                tally = tallies[name]
                tally.stories.extend(stories)
                tally.predicted.extend(set(extract_pairs(s, COLOURS, SHAPES)) for s in stories)

            # Likelihood of the reference texts under each condition (records with text only).
            scored = [k for k, i in enumerate(rows) if texts[i] is not None]
            if scored:
                token_ids = encode_texts([texts[rows[k]] for k in scored], tokenizer, max_tokens)
                batch = collate(
                    [{"pixels": own[k], "input_ids": torch.tensor(ids)} for k, ids in zip(scored, token_ids)]
                )
                input_ids = batch["input_ids"].to(device)
                attention_mask = batch["attention_mask"].to(device)
                labels = batch["labels"].to(device)
                for name in conditions:
                    if name == "zeroed_prefix":
                        prefix = _zero_prefix(model, len(scored), device)
                        logits = _text_logits(model, prefix, input_ids, attention_mask)
                    else:
                        logits = model(inputs[name][scored], input_ids, attention_mask).logits
                    nll, count = sequence_nll(logits, labels)
                    tallies[name].nll += float(nll.sum())
                    tallies[name].tokens += int(count.sum())
            progress.update(len(rows))
    finally:
        progress.close()
        model.to(home).train(was_training)  # hand the model back as it came

    any_scored = any(t is not None for t in texts)
    rows_out = []
    for name in CONDITIONS:
        if name in tallies:
            rows_out.append({"condition": name, **_condition_metrics(tallies[name], truths, any_scored)})
        else:
            rows_out.append({"condition": name, **{c: math.nan for c in METRIC_COLUMNS}})
    metrics = pd.DataFrame(rows_out, columns=["condition", *METRIC_COLUMNS])

    summary = _summary(metrics)
    samples = _samples(records, perm, tallies, truths, settings.num_samples, settings.text_column)
    return StoryEvaluation(metrics=metrics, samples=samples, summary=summary)


def _summary(metrics: pd.DataFrame) -> dict[str, float]:
    table = metrics.set_index("condition")
    summary: dict[str, float] = {}
    for name, prefix in SUMMARY_PREFIX.items():
        for column in METRIC_COLUMNS:
            summary[f"{prefix}/{column}"] = float(table.at[name, column])
    model_f1 = summary["val/pair_f1"]
    summary["grounding_gap"] = model_f1 - summary["control_shuffled/pair_f1"]
    summary["grounding_gap_zeroed"] = model_f1 - summary["control_zeroed/pair_f1"]
    # > 1 when the true image makes the reference story more likely than a wrong one.
    model_ppl = summary["val/perplexity"]
    summary["perplexity_ratio_shuffled"] = (
        summary["control_shuffled/perplexity"] / model_ppl if model_ppl and not math.isnan(model_ppl) else math.nan
    )
    return summary


def _samples(records: pd.DataFrame, perm: np.ndarray, tallies: dict[str, _Tally],
             truths: list[set[tuple[str, str]] | None], limit: int, text_column: str) -> list[dict[str, Any]]:
    samples = []
    for i in range(min(limit, len(records))):
        reference = records.at[i, text_column]
        samples.append(
            {
                "record_id": str(records.at[i, "record_id"]),
                "image": bytes(records.at[i, "image"]),
                "reference": reference if isinstance(reference, str) else None,
                "stories": {name: tally.stories[i] for name, tally in tallies.items()},
                "true_pairs": sorted(truths[i]) if truths[i] is not None else None,
                "predicted_pairs": {name: sorted(tally.predicted[i]) for name, tally in tallies.items()},
                "shuffled_image_record_id": (
                    str(records.at[int(perm[i]), "record_id"]) if "shuffled_images" in tallies else None
                ),
            }
        )
    return samples


def samples_to_jsonable(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples with image bytes as base64 PNG/JPEG strings and pairs as lists, for a JSON dataset."""
    out = []
    for sample in samples:
        item = dict(sample)
        item["image"] = base64.b64encode(sample["image"]).decode("ascii")
        if item.get("true_pairs") is not None:
            item["true_pairs"] = [list(p) for p in item["true_pairs"]]
        item["predicted_pairs"] = {k: [list(p) for p in v] for k, v in sample.get("predicted_pairs", {}).items()}
        out.append(item)
    return out
