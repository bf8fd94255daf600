"""The model families and their registry.

A *family* is everything the shared machinery needs to train, evaluate, report and serve
one kind of model (see :class:`ModelFamily`). The Kedro wiring loops over the registry,
so a new family is one module here plus its model file and parameters:

    family = get_family("story_gpt2")
    model = load_model("data/06_models/story_gpt2/model/<version>/model")  # any family
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from multimodal_lab.families.base import ModelFamily

#: Families that ship with the project: name -> module that registers it on import.
BUILTIN_FAMILIES: dict[str, str] = {
    "story_gpt2": "multimodal_lab.families.story_gpt2",
    "vit_captioner": "multimodal_lab.families.vit_captioner",
    "story_continuation": "multimodal_lab.families.story_continuation",
    "art_generator": "multimodal_lab.families.art_generator",
}

_FAMILIES: dict[str, ModelFamily] = {}

CONFIG_FILE = "config.json"


def register_family(family: ModelFamily) -> ModelFamily:
    """Make ``family`` known by its name (a module calls this when it is imported)."""
    known = _FAMILIES.get(family.name)
    if known is not None and known is not family:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def available_families() -> list[str]:
    """Names of every family (built-in and registered), sorted."""
    return sorted(set(BUILTIN_FAMILIES) | set(_FAMILIES))


def get_family(name: str) -> ModelFamily:
    """The family called ``name``, importing its module on first use.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in _FAMILIES and name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name])
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {available_families()}")
    return _FAMILIES[name]


def family_of_directory(directory: str | os.PathLike) -> ModelFamily:
    """The family that wrote a model directory, read from its ``config.json``.

    Raises:
        FileNotFoundError: the directory has no ``config.json``.
        ValueError: the config names no known family.
    """
    path = Path(directory)
    config = path / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(
            f"{path} has no {CONFIG_FILE}; pass a model directory saved by the pipelines "
            "(data/06_models/<family>/model/<version>/model)"
        )
    payload = json.loads(config.read_text())
    name = payload.get("family")
    if name is None:  # directories written before the family key existed name their family as a key
        name = next((key for key in available_families() if key in payload), None)
    if name is None:
        raise ValueError(f"{config} names no model family; known families: {available_families()}")
    return get_family(name)


def served_model_dataset(family: str) -> str:
    """The catalog name of the model a family serves (its inference pipeline, the demo and MLflow's
    registry read it): ``story_gpt2.model``, or ``<family>.<inference_variant>.model`` with variants."""
    spec = get_family(family)
    return f"{family}.{spec.inference_variant}.model" if spec.inference_variant else f"{family}.model"


def load_model(directory: str | os.PathLike, map_location: str = "cpu"):
    """Load any family's saved model directory (the family is read from its config)."""
    return family_of_directory(directory).load(directory, map_location)


__all__ = [
    "BUILTIN_FAMILIES",
    "ModelFamily",
    "available_families",
    "family_of_directory",
    "get_family",
    "load_model",
    "register_family",
    "served_model_dataset",
]
