"""The ``story_gpt2`` family: image -> story, a CNN prefix fed to GPT-2 through ``inputs_embeds``.

What is truly this family's own: the model (``models.story_gpt2``), which record columns
it learns from, how its conditioning (the image prefix) is computed, decoded and scored,
and what its controls mean. The rest is the shared machinery.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
import torch

from multimodal_lab.data.record_dataset import (
    RecordCollator,
    RecordDataset,
    TextField,
    decode_all,
)
from multimodal_lab.data.scene_text import position_regions
from multimodal_lab.evaluation.grounding import extract_pairs
from multimodal_lab.evaluation.harness import (
    Baseline,
    Control,
    EvalSettings,
    Evaluation,
    ImageTextConditioner,
    evaluate,
    evaluation_mode,
    nearest_neighbour_texts,
    pick_conditions,
)
from multimodal_lab.families import register_family
from multimodal_lab.families.base import ModelFamily
from multimodal_lab.generation.story import GenerationSettings, generate_from_prefix
from multimodal_lab.models.preprocess import arrays_to_tensor
from multimodal_lab.models.story_gpt2 import (
    StoryGPT2,
    StoryGPT2Config,
    build_story_gpt2,
)

#: The record column the family learns to write.
TEXT_COLUMN = "story"

CONTROLS: dict[str, Control] = {
    "shuffled_images": Control(
        "shuffled_images", "deranged",
        "each record gets another record's image (a seeded derangement): the story should no longer match",
    ),
    "zeroed_prefix": Control(
        "zeroed_prefix", "zeroed",
        "the image prefix is all zeros (out of distribution for the language model)",
    ),
    "mean_prefix": Control(
        "mean_prefix", "mean_train",
        "every record gets the mean prefix of training images: the language model's prior, image removed",
    ),
}

BASELINES: dict[str, Baseline] = {
    "nearest_neighbour": Baseline(
        "nearest_neighbour",
        "the story of the training image nearest in 16x16 pixel space: reads the image, composes nothing",
        lambda pool, records, settings: nearest_neighbour_texts(pool, records, settings.text_column),
    ),
}


@dataclass
class StoryEvalSettings(EvalSettings):
    """Evaluation settings of story_gpt2 (the shared ones; controls default to the family's)."""

    text_column: str = TEXT_COLUMN  # reference text scored for perplexity ("story" or "caption")
    controls: list[str] = field(default_factory=lambda: ["shuffled_images", "mean_prefix"])
    baselines: list[str] = field(default_factory=lambda: ["nearest_neighbour"])


def build(config: StoryGPT2Config, tokenizer) -> StoryGPT2:
    # A pretrained GPT-2 brings its own tokenizer; the corpus one is for a model built from config.
    return build_story_gpt2(config, None if config.lm_source == "pretrained" else tokenizer)


def load(directory, map_location: str = "cpu") -> StoryGPT2:
    return StoryGPT2.from_pretrained(directory, map_location=map_location)


REGION_SLOTS = 3  # object sentences per story that can carry a region target (the scene world's most objects)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def region_targets(texts: list[str], grid: int, colours: list[str], shapes: list[str]) -> dict[str, torch.Tensor]:
    """Region-grounding targets read off stories: which grid cells each object sentence points at.

    A sentence that names exactly one (colour, shape) pair and one position phrase
    ("a small red star rested near the top left") gives one target: the cells of that
    phrase (``scene_text.position_regions``), the colour class and the shape class. Other
    sentences give none; up to :data:`REGION_SLOTS` per story.

    Returns:
        ``region_masks`` (n, R, grid*grid) bool, ``region_colours`` and ``region_shapes``
        (n, R) long with -100 where a slot is empty.
    """
    regions = position_regions(grid)
    phrases = sorted(regions, key=len, reverse=True)  # "near the top left" before "near the top"
    colour_id = {c: i for i, c in enumerate(colours)}
    shape_id = {s: i for i, s in enumerate(shapes)}
    phrase_id = {phrase: i for i, phrase in enumerate(phrases)}
    read: dict[str, tuple[int, int, int] | None] = {}  # templated corpora repeat sentences: read each once

    def target(sentence: str) -> tuple[int, int, int] | None:
        phrase = next((p for p in phrases if p in sentence), None)
        if phrase is None:
            return None
        pairs = extract_pairs(sentence, colours, shapes)
        if len(pairs) != 1:
            return None
        return phrase_id[phrase], colour_id[pairs[0][0]], shape_id[pairs[0][1]]

    rows, slots, found = [], [], []
    for row, text in enumerate(texts):
        slot = 0
        for sentence in _SENTENCE.split(str(text).lower()):
            if slot >= REGION_SLOTS:
                break
            if sentence not in read:
                read[sentence] = target(sentence)
            if read[sentence] is not None:
                rows.append(row)
                slots.append(slot)
                found.append(read[sentence])
                slot += 1
    masks = torch.zeros(len(texts), REGION_SLOTS, grid * grid, dtype=torch.bool)
    colour_t = torch.full((len(texts), REGION_SLOTS), -100, dtype=torch.long)
    shape_t = torch.full((len(texts), REGION_SLOTS), -100, dtype=torch.long)
    if found:
        cells = torch.tensor([regions[phrase] for phrase in phrases], dtype=torch.bool)  # (P, grid*grid)
        index = (torch.tensor(rows), torch.tensor(slots))
        targets = torch.tensor(found)  # (n, 3): phrase, colour, shape
        masks[index] = cells[targets[:, 0]]
        colour_t[index], shape_t[index] = targets[:, 1], targets[:, 2]
    return {"region_masks": masks, "region_colours": colour_t, "region_shapes": shape_t}


def training_data(model: StoryGPT2, records: pd.DataFrame) -> tuple[RecordDataset, RecordCollator]:
    texts = [TextField(TEXT_COLUMN, model.tokenizer, model.config.max_story_tokens)]
    extras = {}
    config = model.config
    if config.region_loss_weight > 0:
        grid = getattr(model.encoder, "grid", None)
        if grid is None:
            raise ValueError(f"region_loss_weight needs an encoder with a token grid; {config.encoder['name']!r} has none")
        cache: dict[str, dict[str, torch.Tensor]] = {}

        def target(name: str):
            def make(kept: pd.DataFrame) -> torch.Tensor:
                if "all" not in cache:
                    cache["all"] = region_targets(kept[TEXT_COLUMN].tolist(), grid, config.region_colours,
                                                  config.region_shapes)
                return cache["all"][name]
            return make

        extras = {name: target(name) for name in ("region_masks", "region_colours", "region_shapes")}
    dataset = RecordDataset(records, image=model.image_input, texts=texts, extras=extras)
    return dataset, RecordCollator(texts, extras=tuple(extras))


class StoryConditioner(ImageTextConditioner):
    """The harness's view of a story model: image prefixes in, stories and likelihoods out."""

    def __init__(self, model: StoryGPT2, settings: StoryEvalSettings, device: torch.device) -> None:
        super().__init__(model, settings, device)
        self.max_tokens = model.config.max_story_tokens

    def condition(self, records: pd.DataFrame) -> torch.Tensor:
        return self.model.encode_prefix(self.images(records))  # (B, k, D)

    def generate(self, prefix: torch.Tensor, settings: GenerationSettings | None = None) -> list[str]:
        return generate_from_prefix(self.model, prefix, settings or self.settings.generation)


@torch.no_grad()
def evaluate_story_model(model: StoryGPT2, records: pd.DataFrame, settings: StoryEvalSettings,
                         train_records: pd.DataFrame | None = None, split: str = "test") -> Evaluation:
    """Generate and score stories for ``records`` with the model, its controls and baselines.

    Args:
        model: a trained ``StoryGPT2``.
        records: the evaluated records (``record_id``, ``image``, the text column, ``metadata``).
        settings: evaluation settings; ``controls`` / ``baselines`` name entries of
            :data:`CONTROLS` / :data:`BASELINES`.
        train_records: training records (for the mean-prefix control and baselines).
        split: the split ``records`` come from (prefix of the summary keys).
    """
    controls, baselines = pick_conditions("story_gpt2", settings, CONTROLS, BASELINES)
    with evaluation_mode(model, settings) as device:
        return evaluate(
            StoryConditioner(model, settings, device), records, settings, controls=controls, baselines=baselines,
            suites=("grounding", "diversity"), train_records=train_records, split=split, headline="pair_f1",
        )


def validator(model: StoryGPT2, records: pd.DataFrame, count: int, seed: int):
    """Grounding of greedy stories on a fixed seeded subset of validation records, for model selection.

    The images are decoded once; each call decodes the stories of the same records with
    the model as it is then (in eval mode, on its device) and scores their (colour,
    shape) pairs: ``val_pair_f1``, ``val_colour_f1``, ``val_shape_f1``.
    """
    from multimodal_lab.evaluation.harness import select_records
    from multimodal_lab.evaluation.suites import get_suite

    chosen = select_records(records, count, seed).reset_index(drop=True)
    spec = model.image_input
    pixels = torch.from_numpy(decode_all(chosen["image"].tolist(), spec))
    suite = get_suite("grounding")
    settings = GenerationSettings(max_new_tokens=model.config.max_story_tokens)

    def validate(current: StoryGPT2) -> dict[str, float]:
        device = next(current.parameters()).device
        texts = []
        with torch.no_grad():
            for start in range(0, len(chosen), 64):
                images = arrays_to_tensor(pixels[start:start + 64]).to(device)
                texts.extend(generate_from_prefix(current, current.encode_prefix(images), settings))
        scores = suite.score(texts, chosen).metrics
        return {f"val_{name}": scores[name] for name in ("pair_f1", "colour_f1", "shape_f1")}

    return validate


def folder_inference(model: StoryGPT2, named: list, settings) -> tuple[list[dict], str]:
    """A story for each ``(file name, PIL image)``: JSON rows and a page with each image and its story."""
    from multimodal_lab.inference import StoryTeller, render_stories_html

    stories = StoryTeller(model, batch_size=settings.batch_size).tell([image for _, image in named],
                                                                     settings.generation)
    items = [(name, image, story) for (name, image), story in zip(named, stories)]
    return [{"image": name, "story": story} for name, _, story in items], render_stories_html(items)


def inference(model: StoryGPT2):
    from multimodal_lab.inference import StoryTeller

    return StoryTeller(model)


def _inference_params() -> type:
    from multimodal_lab.inference import InferenceParams

    return InferenceParams


FAMILY = register_family(
    ModelFamily(
        name="story_gpt2",
        title="image -> story",
        corpus="story",
        config_class=StoryGPT2Config,
        build=build,
        load=load,
        training_data=training_data,
        evaluate=evaluate_story_model,
        eval_settings_class=StoryEvalSettings,
        inference=inference,
        folder_inference=folder_inference,
        inference_params_class=_inference_params(),
        validator=validator,
        headline_metric="pair_f1",
        description=(
            "A CNN encodes the image into a grid of feature tokens; a mapper turns them into prefix "
            "embeddings that GPT-2 reads before the story (inputs_embeds). Grounding asks whether the "
            "(colour, shape) pairs a story names are the image's real objects; the controls break the "
            "image input, so a model that uses the image scores clearly above all of them."
        ),
    )
)
