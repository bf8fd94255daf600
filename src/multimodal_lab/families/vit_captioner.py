"""The ``vit_captioner`` family: image -> caption, a ViT read by a GPT-2 decoder through cross-attention.

What is truly this family's own: the model (``models.vit_captioner``), that it learns
from every reference caption of an image, how its conditioning (the image tokens) is
computed, decoded (greedy and beam search) and scored (BLEU / CIDEr-D against all
references, grounding of the objects it names), its controls and baselines, and the
cross-attention maps it draws for the report. The rest is the shared machinery.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from multimodal_lab.data.record_dataset import (
    RecordCollator,
    RecordDataset,
    TextField,
    decode_all,
)
from multimodal_lab.data.records import references_of
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
    select_records,
)
from multimodal_lab.families import register_family
from multimodal_lab.families.base import ModelFamily
from multimodal_lab.generation.story import GenerationSettings
from multimodal_lab.models.preprocess import arrays_to_tensor
from multimodal_lab.models.vit_captioner import (
    ViTCaptioner,
    ViTCaptionerConfig,
    word_maps,
)

TEXT_COLUMN = "caption"
#: The training column holding every reference caption of a record (one is drawn per read).
REFERENCES_COLUMN = "references"

CONTROLS: dict[str, Control] = {
    "deranged": Control(
        "deranged", "deranged",
        "each image's tokens are given to another record (a seeded derangement): the caption should no longer match",
    ),
    "blind": Control(
        "blind", "mean_train",
        "a blind language model: the decoder reads the mean image tokens of training images, so it writes "
        "its caption prior without seeing the image",
    ),
    "zeroed": Control(
        "zeroed", "zeroed", "the image tokens are all zeros (out of distribution for the decoder)",
    ),
}

BASELINES: dict[str, Baseline] = {
    "nearest": Baseline(
        "nearest",
        "the caption of the training image nearest to the test image in 16x16 RGB pixel space (L2): "
        "captioning's classic retrieval baseline",
        lambda pool, records, settings: nearest_neighbour_texts(pool, records, settings.text_column),
    ),
}

#: The figures the issue's bars and the docs quote, as aliases of the harness's keys.
ALIASES = {"baseline_nearest": "nearest", "baseline_blind": "blind", "control_deranged": "deranged"}


def _default_decodings() -> dict[str, dict]:
    return {"greedy": {"strategy": "greedy"}, "beam3": {"strategy": "beam", "num_beams": 3}}


@dataclass
class CaptionEvalSettings(EvalSettings):
    """Evaluation settings of vit_captioner (the shared ones plus the report's extras)."""

    text_column: str = TEXT_COLUMN
    controls: list[str] = field(default_factory=lambda: ["deranged", "blind"])
    baselines: list[str] = field(default_factory=lambda: ["nearest"])
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(strategy="beam", num_beams=5, max_new_tokens=39, length_penalty=0.0))
    decodings: dict = field(default_factory=_default_decodings)
    attention_samples: int = 4  # samples whose every word is shown with its cross-attention map
    beam_alternatives: int = 3  # beam hypotheses shown per sample (the best first)


def build(config: ViTCaptionerConfig, tokenizer) -> ViTCaptioner:
    return ViTCaptioner(config, tokenizer)


def load(directory, map_location: str = "cpu") -> ViTCaptioner:
    return ViTCaptioner.from_pretrained(directory, map_location=map_location)


def with_references(records: pd.DataFrame) -> pd.DataFrame:
    """The records plus a ``references`` column: every reference caption of each record."""
    return records.assign(**{REFERENCES_COLUMN: [references_of(r) for r in records.to_dict("records")]})


OBJECT_SLOTS = 3  # objects per caption that can carry an object target (the scene world's most objects)


def object_targets(texts: list[str], colours: list[str], shapes: list[str]) -> torch.Tensor:
    """(colour, shape) class ids of the objects each caption names, (n, OBJECT_SLOTS, 2); -100 where none."""
    from multimodal_lab.evaluation.grounding import extract_pairs

    out = torch.full((len(texts), OBJECT_SLOTS, 2), -100, dtype=torch.long)
    colour_id = {c: i for i, c in enumerate(colours)}
    shape_id = {s: i for i, s in enumerate(shapes)}
    for row, text in enumerate(texts):
        for slot, (colour, shape) in enumerate(extract_pairs(str(text), colours, shapes)[:OBJECT_SLOTS]):
            out[row, slot, 0], out[row, slot, 1] = colour_id[colour], shape_id[shape]
    return out


def training_data(model: ViTCaptioner, records: pd.DataFrame) -> tuple[RecordDataset, RecordCollator]:
    """Each read of a record draws one of its reference captions: over training, all are learned."""
    texts = [TextField(REFERENCES_COLUMN, model.tokenizer, model.config.max_caption_tokens)]
    config = model.config
    extras = {}
    if config.object_loss_weight > 0:
        extras["object_targets"] = lambda kept: object_targets(
            kept[TEXT_COLUMN].fillna("").tolist(), config.object_colours, config.object_shapes)
    dataset = RecordDataset(with_references(records), image=model.image_input, texts=texts, extras=extras)
    return dataset, RecordCollator(texts, extras=tuple(extras))


class CaptionConditioner(ImageTextConditioner):
    """The harness's view of a captioner: image tokens in, captions and likelihoods out.

    Perplexity scores each record's first reference caption.
    """

    def __init__(self, model: ViTCaptioner, settings: CaptionEvalSettings, device: torch.device) -> None:
        super().__init__(model, settings, device)
        self.max_tokens = model.config.max_caption_tokens

    def condition(self, records: pd.DataFrame) -> torch.Tensor:
        return self.model.encode(self.images(records))  # (B, N, D)

    def generate(self, features: torch.Tensor, settings: GenerationSettings | None = None) -> list[str]:
        return self.model.decode(self.model.generate_ids(features, settings or self.settings.generation))

    def reference_texts(self, records: pd.DataFrame) -> list:
        return [refs[0] if refs else "" for refs in (references_of(r) for r in records.to_dict("records"))]


@torch.no_grad()
def evaluate_captioner(model: ViTCaptioner, records: pd.DataFrame, settings: CaptionEvalSettings,
                       train_records: pd.DataFrame | None = None, split: str = "test") -> Evaluation:
    """Caption ``records`` with the model (beam search), its other decodings, controls and baselines.

    Scores: BLEU-1..4 and CIDEr-D against every reference (the whole set at once),
    grounding pair F1 of the objects the captions name, diversity, perplexity. The first
    ``attention_samples`` samples get a cross-attention map per generated word and the
    first few samples their beam alternatives.
    """
    controls, baselines = pick_conditions("vit_captioner", settings, CONTROLS, BASELINES)
    with evaluation_mode(model, settings) as device:
        conditioner = CaptionConditioner(model, settings, device)
        result = evaluate(
            conditioner, records, settings, controls=controls, baselines=baselines,
            suites=("captioning", "grounding", "diversity"), train_records=train_records, split=split,
            headline="cider_d",
        )
        chosen = select_records(records, settings.max_records, settings.seed).reset_index(drop=True)
        _add_sample_extras(model, conditioner, chosen, result, settings)
    result.summary.update(summary_aliases(result.summary, split, settings))
    result.notes.append(
        "BLEU and CIDEr-D are computed once over the whole evaluated set against every reference caption of each "
        "image (CIDEr-D's n-gram weights come from those references), with pycocoevalcap's scorers on "
        "Python-tokenised text (lower case, no punctuation); METEOR and SPICE need Java and are left out.")
    return result


def decoding_name(settings: GenerationSettings) -> str:
    """``greedy``, ``beam<k>`` or ``sample``: the name a decoding's figures go under."""
    return f"beam{settings.num_beams}" if settings.strategy == "beam" else settings.strategy


def summary_aliases(summary: dict[str, float], split: str, settings: CaptionEvalSettings) -> dict[str, float]:
    """Flat keys by decoding and condition: ``greedy/cider_d``, ``beam5/cider_d``, ``baseline_nearest/cider_d``...

    The model's own decoding is the ``<split>/<metric>`` figures; other decodings and the
    controls/baselines are ``<split>/<name>/<metric>`` in the harness's summary.
    """
    out: dict[str, float] = {}
    own = f"{split}/"
    prefixes = {decoding_name(settings.generation): own}
    prefixes.update({name: f"{split}/{name}/" for name in settings.decodings})
    prefixes.update({alias: f"{split}/{name}/" for alias, name in ALIASES.items()})
    for alias, prefix in prefixes.items():
        for key, value in summary.items():
            if key.startswith(prefix) and "/" not in key[len(prefix):]:
                out[f"{alias}/{key[len(prefix):]}"] = value
    return out


def _add_sample_extras(model: ViTCaptioner, conditioner: CaptionConditioner, chosen: pd.DataFrame,
                       result: Evaluation, settings: CaptionEvalSettings) -> None:
    """References, beam alternatives and per-word attention maps for the first samples."""
    from multimodal_lab.reporting.figures import attention_strip_png

    samples = result.samples
    if not samples:
        return
    for i, sample in enumerate(samples):
        sample["references"] = references_of(chosen.iloc[i].to_dict())
    count = min(len(samples), max(settings.attention_samples, 6 if settings.beam_alternatives > 1 else 0))
    if count == 0:
        return
    features = conditioner.condition(chosen.iloc[:count])
    if settings.beam_alternatives > 1 and settings.generation.strategy == "beam":
        k = min(settings.beam_alternatives, settings.generation.num_beams)
        texts = model.decode(model.generate_ids(features, settings.generation, num_return_sequences=k))
        for i in range(count):
            samples[i]["alternatives"] = texts[i * k:(i + 1) * k]
    shown = min(count, settings.attention_samples)
    if shown == 0:
        return
    ids = model.generate_ids(features[:shown], settings.generation)
    maps = model.cross_attention_maps(features[:shown], ids).mean(dim=0)  # (B, L, N): averaged over layers
    for i in range(shown):
        words, heat = word_maps(model.tokenizer, ids[i], maps[i])
        if words:
            samples[i]["figures"] = [{"label": "where each word looked (cross-attention, mean of heads and layers)",
                                      "png": attention_strip_png(samples[i]["images"][0], words, heat)}]


def validator(model: ViTCaptioner, records: pd.DataFrame, count: int, seed: int):
    """CIDEr-D and grounding of greedy captions on a fixed seeded subset of validation records.

    The images are decoded once; each call captions them with the model as it is then:
    ``val_cider_d``, ``val_pair_f1``, ``val_bleu_4``.
    """
    from multimodal_lab.evaluation.suites import get_suite

    chosen = select_records(records, count, seed).reset_index(drop=True)
    pixels = torch.from_numpy(decode_all(chosen["image"].tolist(), model.image_input))
    captioning, grounding = get_suite("captioning"), get_suite("grounding")
    settings = GenerationSettings(max_new_tokens=model.config.max_caption_tokens - 1)

    def validate(current: ViTCaptioner) -> dict[str, float]:
        device = next(current.parameters()).device
        texts: list[str] = []
        with torch.no_grad():
            for start in range(0, len(chosen), 64):
                features = current.encode(arrays_to_tensor(pixels[start:start + 64]).to(device))
                texts.extend(current.decode(current.generate_ids(features, settings)))
        scores = {**captioning.score(texts, chosen).metrics, **grounding.score(texts, chosen).metrics}
        return {f"val_{name}": scores[name] for name in ("cider_d", "pair_f1", "bleu_4")}

    return validate


def folder_inference(model: ViTCaptioner, named: list, settings) -> tuple[list[dict], str]:
    """A caption for each ``(file name, PIL image)``; the page shows where each word looked."""
    from multimodal_lab.inference import Captioner, render_stories_html
    from multimodal_lab.reporting.figures import attention_strip_png

    images = [image for _, image in named]
    captioner = Captioner(model, batch_size=settings.batch_size)
    if settings.attention_maps:
        captions, maps = captioner.caption(images, num_beams=settings.num_beams, return_attention=True,
                                          length_penalty=settings.length_penalty)
    else:
        captions, maps = captioner.caption(images, num_beams=settings.num_beams,
                                           length_penalty=settings.length_penalty), [None] * len(images)
    items = []
    for (name, image), caption, attention in zip(named, captions, maps):
        item = {"name": name, "image": image, "text": caption}
        if attention is not None and attention["words"]:
            item["figure"] = attention_strip_png(image, attention["words"], attention["maps"])
            item["figure_label"] = "where each word looked (cross-attention, mean of heads and layers)"
        items.append(item)
    page = render_stories_html(items, title="Captions")
    return [{"image": name, "caption": caption} for (name, _), caption in zip(named, captions)], page


def _inference_params() -> type:
    from multimodal_lab.inference import CaptionInferenceParams

    return CaptionInferenceParams


def inference(model: ViTCaptioner):
    from multimodal_lab.inference import Captioner

    return Captioner(model)


FAMILY = register_family(
    ModelFamily(
        name="vit_captioner",
        title="image -> caption",
        corpus="caption",
        config_class=ViTCaptionerConfig,
        build=build,
        load=load,
        training_data=training_data,
        evaluate=evaluate_captioner,
        eval_settings_class=CaptionEvalSettings,
        inference=inference,
        folder_inference=folder_inference,
        inference_params_class=_inference_params(),
        validator=validator,
        headline_metric="cider_d",
        description=(
            "A Vision Transformer turns the image into patch tokens; a GPT-2 decoder cross-attends to them in "
            "every block while it writes the caption, decoded with beam search. Captions are scored with BLEU "
            "and CIDEr-D against all reference captions of each image and by grounding (are the (colour, shape) "
            "pairs it names the image's objects?), next to the nearest-neighbour caption, a blind decoder and "
            "the model fed other images' tokens."
        ),
    )
)
