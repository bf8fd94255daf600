"""What a model family is: the few pieces that are truly its own.

Everything else — parameters to config dataclasses, the training loop, checkpoints,
the evaluation harness with its controls, the report, versioned catalog entries and
MLflow tracking — is shared machinery that reads these pieces.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from multimodal_lab.evaluation.harness import EvalSettings, Evaluation


@dataclass
class SeedRepeats:
    """``params:<family>.compare`` of a family with variants: its best variants trained again.

    Which variant wins can be the luck of one training seed; the ``top`` best variants by the
    family's headline metric (on the evaluated split) are trained and evaluated again with each
    of ``seeds``, and the report puts every seed's figures side by side.
    """

    top: int = 2  # how many of the best variants train again
    seeds: list[int] = field(default_factory=list)  # the extra training seeds; [] = no repeats

    def __post_init__(self) -> None:
        if self.top < 0:
            raise ValueError(f"SeedRepeats.top must be >= 0, got {self.top}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"SeedRepeats.seeds must not repeat a seed, got {self.seeds}")


@dataclass(frozen=True)
class ModelFamily:
    """One kind of model, as the shared machinery sees it.

    The name is also the Kedro pipeline name, the parameter block
    (``params:<name>.model|train|evaluation``) and the catalog namespace
    (``<name>.model``, ``<name>.metrics``, ``<name>.report``, ...).
    """

    name: str  # registry name, e.g. "story_gpt2"
    title: str  # one line for reports, e.g. "image -> story"
    corpus: str  # the prepared corpus it trains on: "story", "caption", "art" or "sequence"
    config_class: type  # model config dataclass, built from params:<name>.model
    # (config, corpus tokenizer) -> a freshly initialised model
    build: Callable[[Any, Any], nn.Module]
    # (model directory, map_location) -> the saved model
    load: Callable[[str | os.PathLike, str], nn.Module]
    # (model, records) -> (torch dataset, collate function) for training and validation
    training_data: Callable[[nn.Module, pd.DataFrame], tuple[Dataset, Callable]]
    # (model, records, settings, train_records, split) -> scores of the model, its controls and baselines
    evaluate: Callable[..., Evaluation]
    eval_settings_class: type = EvalSettings  # built from params:<name>.evaluation
    # (model, val records, how many, seed) -> a function scoring the model's task on a fixed
    # subset of them during training ({"val_pair_f1": ...}); None = the family has none
    validator: Callable[[nn.Module, pd.DataFrame, int, int], Callable[[nn.Module], dict[str, float]]] | None = None
    # model -> the family's inference API object (e.g. StoryTeller); None = none yet
    inference: Callable[[nn.Module], Any] | None = None
    # (model, [(file name, PIL image)], params:<name>_inference settings) -> (JSON-safe rows, HTML page),
    # plus {file name: PIL image} with folder_images: what the family writes for a folder of the
    # user's items; None = no folder inference
    folder_inference: Callable[[nn.Module, list, Any], tuple] | None = None
    # (params:<name>_inference settings) -> the items folder_inference takes; None = the
    # (file name, PIL image) pairs of the folder settings.images_dir
    folder_reader: Callable[[Any], list] | None = None
    # True: folder_inference also returns {file name: PIL image}, written as versioned PNGs
    # (``<name>_inference.images``)
    folder_images: bool = False
    # with variants: the variant whose newest model the folder inference reads (<name>.<variant>.model)
    inference_variant: str | None = None
    # The parameter key of a scene world of the family's own (e.g. "params:story_continuation.data.scene_world"):
    # its pipeline then prepares the corpus from it (``<name>_data.<corpus>.*``) instead of running the
    # shared data preparation. None: the shared corpus.
    world_params: str | None = None
    inference_params_class: type | None = None  # the config class of params:<name>_inference
    headline_metric: str | None = None  # the metric reports and bars lead with, e.g. "pair_f1"
    headline_higher_is_better: bool = True  # which way the headline metric improves
    description: str = ""  # a paragraph for the report: what the model does and how it is judged
    # Variants trained and evaluated side by side by the family's pipeline: name -> model config
    # fields that override params:<name>.model. Empty: one model.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ({variant: Evaluation}, split) -> (the combined Evaluation for one report, flat metrics with the
    # variant in their names); required with variants
    compare: Callable[..., tuple[Evaluation, dict[str, float]]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # anything else a family's own code shares
    # More datasets the evaluate node reads, passed to ``evaluate`` as keyword arguments: argument ->
    # dataset name (e.g. {"judge": "art_generator.judge"}, a model trained by the family's own nodes)
    evaluation_inputs: dict[str, str] = field(default_factory=dict)
    # (the corpus prefix, e.g. "art_generator_data.art") -> nodes of the family's own that run before
    # its models are evaluated (e.g. training art_generator's judge); None = none
    auxiliary_pipeline: Callable[[str], Any] | None = None
    # parameter blocks its own nodes read: dotted name -> config class (checked like every block),
    # e.g. {"art_generator.judge": JudgeSettings}
    parameter_blocks: dict[str, type] = field(default_factory=dict)

    @property
    def corpus_prefix(self) -> str:
        """Where the family's corpus datasets live: ``<corpus>`` or ``<name>_data.<corpus>``."""
        return f"{self.name}_data.{self.corpus}" if self.world_params else self.corpus

    def __post_init__(self) -> None:
        if self.variants and self.compare is None:
            raise ValueError(f"family {self.name!r} has variants but no compare function")
        if self.inference_variant is not None and self.inference_variant not in self.variants:
            raise ValueError(f"family {self.name!r}: inference_variant {self.inference_variant!r} is not one of "
                             f"its variants {sorted(self.variants)}")
