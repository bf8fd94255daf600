"""story_gpt2 nodes: train the image -> story model, evaluate it against controls, report.

The nodes only turn parameters into config dataclasses and hand data to the library
(models/, training/, generation/, evaluation/, reporting/).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from multimodal_lab.config import from_params, to_params
from multimodal_lab.tracking import mlflow_metrics_logger

log = logging.getLogger(__name__)


def train_story_model(
    train_records: pd.DataFrame,
    val_records: pd.DataFrame,
    tokenizer,
    model_params: dict[str, Any],
    train_params: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """Build the model from its config and train it with the shared loop.

    Args:
        train_records: the story corpus' train split (image bytes + story).
        val_records: the validation split (for validation loss and early stopping).
        tokenizer: the corpus tokenizer (ignored when the LM is loaded pretrained,
            which brings its own).
        model_params: ``params:story_gpt2.model`` — fields of ``StoryGPT2Config``.
        train_params: ``params:story_gpt2.train`` — fields of ``TrainConfig``.

    Returns:
        The trained model (best validation weights) and the training history.
    """
    from multimodal_lab.data.story_dataset import StoryCollator, StoryDataset
    from multimodal_lab.models.story_gpt2 import StoryGPT2Config, build_story_gpt2
    from multimodal_lab.training.loop import TrainConfig, train

    model_config = from_params(StoryGPT2Config, model_params, where="params:story_gpt2.model")
    train_config = from_params(TrainConfig, train_params, where="params:story_gpt2.train")
    if train_config.checkpoint_dir:
        # Checkpoints of one (config, data) pair live in their own folder: an interrupted
        # run resumes from it, while a run with other settings or data starts fresh.
        run_key = _fingerprint(model_config, train_config, train_records)
        train_config = dataclasses.replace(
            train_config, checkpoint_dir=str(Path(train_config.checkpoint_dir) / run_key)
        )
    torch.manual_seed(train_config.seed)  # weight initialisation
    model = build_story_gpt2(
        model_config, None if model_config.lm_source == "pretrained" else tokenizer
    )
    datasets = [
        StoryDataset(
            records,
            model.tokenizer,
            image_size=model_config.image_size,
            max_story_tokens=model_config.max_story_tokens,
        )
        for records in (train_records, val_records)
    ]
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "training story_gpt2 (%.2fM parameters) on %d stories, validating on %d",
        n_params / 1e6, len(datasets[0]), len(datasets[1]),
    )
    result = train(
        model,
        datasets[0],
        datasets[1],
        StoryCollator(pad_token_id=model.tokenizer.pad_token_id),
        train_config,
        log_metrics=mlflow_metrics_logger(every=10),
    )
    if train_config.checkpoint_dir:
        # The finished model is saved (versioned) by the catalog; its resume points are
        # no longer needed.
        shutil.rmtree(train_config.checkpoint_dir, ignore_errors=True)
    history = {
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "train_seconds": result.train_seconds,
        "parameters": n_params,
        "history": result.history,
        "model_config": to_params(model_config),
        "train_config": to_params(train_config),
    }
    return model.cpu(), history


def _fingerprint(model_config, train_config, train_records: pd.DataFrame) -> str:
    """Short hash of the settings and the training data that a checkpoint belongs to."""
    settings = {**to_params(model_config), **to_params(train_config), "checkpoint_dir": None}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update("\n".join(sorted(train_records["record_id"].astype(str))).encode())
    return digest.hexdigest()[:12]


def evaluate_story_model(
    model, val_records: pd.DataFrame, params: dict[str, Any]
) -> tuple[Any, dict[str, float], pd.DataFrame, list[dict[str, Any]]]:
    """Score the model and its controls (shuffled images, zeroed prefix) on validation.

    Returns:
        The full evaluation (for the report), a flat metrics dict (to MLflow and a
        versioned JSON), the metrics table (one row per condition) and the generated
        samples (JSON-safe, without image bytes).
    """
    from multimodal_lab.evaluation.story_eval import EvalSettings, evaluate_story_model as _evaluate

    settings = from_params(EvalSettings, params, where="params:story_gpt2.evaluation")
    evaluation = _evaluate(model, val_records, settings)
    summary = {k: (float(v) if v == v else math.nan) for k, v in evaluation.summary.items()}
    log.info("story_gpt2 evaluation: %s", {k: round(v, 4) for k, v in summary.items()})
    samples = [{k: v for k, v in s.items() if k != "image"} for s in evaluation.samples]
    return evaluation, summary, evaluation.metrics, _json_safe(samples)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def report_story_model(
    evaluation, training: dict[str, Any], parameters: dict[str, Any]
) -> str:
    """Render the self-contained HTML report (samples, curves, metrics, parameters)."""
    from multimodal_lab.reporting.html import render_story_report

    return render_story_report(
        evaluation, training["history"], parameters, title="story_gpt2: image -> story"
    )
