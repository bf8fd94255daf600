"""A tiny saved model of every family, laid out as the catalog versions them, for the demo's tests.

The models are untrained (the test environment's sizes, ``conf/test/parameters.yml`` over
``conf/base``), except the composer's layout statistics, gathered from real engravings' layouts
so that it can place objects: the demo's tests check that what the browser shows is what each
family's inference API returns, not that the models are good.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from multimodal_lab.config import from_params

PROJECT = Path(__file__).resolve().parents[1]
VERSION = "2026-01-01T00.00.00.000Z"
TEXTS = [
    "A small red circle and a large blue star in the sky.",
    "An engraving of a medium square and a small heart on the meadow.",
    "The green ring moves to the right. It drifts over the sea at night.",
    "A line engraving showing a large cross, a small diamond and a medium triangle in the fog.",
]


def _merged(family: str) -> dict:
    base = yaml.safe_load((PROJECT / f"conf/base/parameters_{family}.yml").read_text())[family]["model"]
    test = (yaml.safe_load((PROJECT / "conf/test/parameters.yml").read_text()).get(family) or {}).get("model") or {}

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return merge(base, test)


def save_tiny_models(root: Path, families: tuple[str, ...] = ("story_gpt2", "vit_captioner", "art_generator",
                                                                 "story_continuation")) -> dict[str, Path]:
    """Save each family's tiny model where ``demo.newest_model`` finds it under ``root``; returns the directories."""
    from art_fixtures import engraving_records

    from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
    from multimodal_lab.demo import model_dataset
    from multimodal_lab.families import get_family
    from multimodal_lab.models.art_composer import layout_of

    tokenizer = train_tokenizer(TEXTS, VocabConfig(kind="word"))
    out = {}
    for family in families:
        spec = get_family(family)
        params = _merged(family)
        if spec.inference_variant:
            params = {**params, **spec.variants[spec.inference_variant]}
        torch.manual_seed(0)
        model = spec.build(from_params(spec.config_class, params, where=family), tokenizer)
        if family == "story_gpt2":
            with torch.no_grad():  # untrained, greedy decoding repeats bos or ends at once: tie the special
                tok = model.tokenizer  # tokens' (tied) embeddings to 0 so that words win
                for token in {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id} - {None}:
                    model.lm.get_input_embeddings().weight[token] = 0.0
        if family == "art_generator":
            _, metadata, _ = engraving_records(60, model.config.image_size)
            model.prior.observe(torch.stack([layout_of(m, model.config) for m in metadata]))
        directory = root / model_dataset(family).removesuffix(".model") / "model" / VERSION / "model"
        model.save_pretrained(directory)
        out[family] = directory
    return out


def save_test_sequences(data: Path, count: int = 3) -> Path:
    """A story_continuation test split of ``count`` scene-world sequences where the demo looks for
    its examples (``<data>/05_model_input/story_continuation_data.sequence/test_records.parquet/<version>/``)."""
    from multimodal_lab.pipelines.sources.nodes import load_scene_world

    frame = load_scene_world({"enabled": True, "n_scenes": 0, "n_engravings": 0, "n_sequences": count,
                              "bad_license_fraction": 0.0, "damaged_fraction": 0.0, "workers": 1, "cache_dir": None})
    folder = data / "05_model_input/story_continuation_data.sequence/test_records.parquet" / VERSION
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "test_records.parquet")
    return folder / "test_records.parquet"
