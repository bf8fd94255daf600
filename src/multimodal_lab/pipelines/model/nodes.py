"""Generic nodes of every model family: train, evaluate (with controls), report.

Each node receives the family's name (bound by ``create_model_pipeline``), turns its
``params:`` dictionaries into the family's config dataclasses and hands the data to the
family's pieces and the shared library (training loop, evaluation harness, report).
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
from multimodal_lab.families import get_family
from multimodal_lab.tracking import mlflow_metrics_logger

log = logging.getLogger(__name__)


def train_model(
    train_records: pd.DataFrame,
    val_records: pd.DataFrame,
    tokenizer,
    model_params: dict[str, Any],
    train_params: dict[str, Any],
    ingest_params: dict[str, Any],
    *,
    family: str,
    variant: str | None = None,
    metrics_prefix: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build the family's model from its config and train it with the shared loop.

    Args:
        train_records: the corpus' train split.
        val_records: the validation split (validation loss, early stopping).
        tokenizer: the corpus tokenizer (a family may ignore it, e.g. a pretrained LM
            brings its own).
        model_params: ``params:<family>.model`` — fields of the family's config class.
        train_params: ``params:<family>.train`` — fields of ``TrainConfig``.
        ingest_params: ``params:ingest``: its image policy made the training images, so
            it becomes the model's ``image_input`` (saved with the model; inference
            makes its input the same way).
        family: the family's registry name.
        variant: one of the family's variants: its switches override ``model_params``, and
            its live metrics go to MLflow as ``<variant>/<metric>``.
        metrics_prefix: the MLflow prefix of the live metrics instead (e.g. ``vae/seed1/``
            for a repeat with another seed).

    Returns:
        The trained model (best validation weights) and the training history.

    Raises:
        ValueError: when the model's image size differs from the images ingest made.
    """
    from multimodal_lab.training.loop import TrainConfig, train

    spec = get_family(family)
    for split, records in (("train", train_records), ("val", val_records)):
        if records.empty:
            raise ValueError(
                f"{family} trains on the {spec.corpus} corpus, whose {split} split is empty in this run: no "
                f"source gave accepted records for it (see data_summary and rejected_records)"
            )
    if variant is not None:
        if variant not in spec.variants:
            raise ValueError(f"{family} has no variant {variant!r}; its variants are {sorted(spec.variants)}")
        model_params = {**model_params, **spec.variants[variant]}
    model_config = from_params(spec.config_class, model_params, where=f"params:{family}.model")
    model_config = with_image_input(model_config, ingest_params, train_records, family)
    train_config = from_params(TrainConfig, train_params, where=f"params:{family}.train")
    if train_config.checkpoint_dir:
        # Checkpoints of one (settings, data, vocabulary) triple live in their own folder:
        # an interrupted run resumes from it, while any other run starts fresh.
        run_key = fingerprint(model_config, train_config, train_records, val_records, tokenizer)
        train_config = dataclasses.replace(
            train_config, checkpoint_dir=str(Path(train_config.checkpoint_dir) / run_key)
        )
    torch.manual_seed(train_config.seed)  # weight initialisation
    model = spec.build(model_config, tokenizer)
    train_set, collate = spec.training_data(model, train_records)
    val_set, _ = spec.training_data(model, val_records)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("training %s (%.2fM parameters) on %d examples, validating on %d",
             family, n_params / 1e6, len(train_set), len(val_set))
    truncated = {column: count for column, count in getattr(train_set, "truncated", {}).items() if count}
    if truncated:
        # Cut texts lose their end token (the model is not taught that they end there);
        # say how many, since a large share means max_*_tokens is too small.
        log.warning("%s: %s training texts were longer than the model's limit and were cut: %s",
                    family, sum(truncated.values()), truncated)
    validate = None
    if train_config.validation_records:
        if spec.validator is None:
            raise ValueError(f"params:{family}.train.validation_records is set but {family} has no task metric; "
                             "set it to 0 and select on val_loss")
        validate = spec.validator(model, val_records, train_config.validation_records, train_config.seed)
    if metrics_prefix is None:
        metrics_prefix = f"{variant}/" if variant else ""
    logger = mlflow_metrics_logger(prefix=metrics_prefix, every=10)
    result = train(model, train_set, val_set, collate, train_config, log_metrics=logger, validate=validate)
    if train_config.checkpoint_dir:
        # The finished model is saved (versioned) by the catalog; its resume points are
        # no longer needed.
        shutil.rmtree(train_config.checkpoint_dir, ignore_errors=True)
    history = {
        "family": family,
        "variant": variant,
        "steps": result.steps,
        "best_val_loss": result.best_val_loss,
        "select_metric": result.select_metric,
        "best_step": result.best_step,
        "best_score": result.best_score,
        "num_processes": result.num_processes,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "train_seconds": result.train_seconds,
        "parameters": n_params,
        "examples": {"train": len(train_set), "val": len(val_set)},
        "truncated_texts": {"train": dict(getattr(train_set, "truncated", {})),
                            "val": dict(getattr(val_set, "truncated", {}))},
        "history": result.history,
        "model_config": to_params(model_config),
        "train_config": to_params(train_config),
    }
    return model.cpu(), history


def with_image_input(model_config, ingest_params: dict[str, Any], records: pd.DataFrame, family: str):
    """The model config with ``image_input`` set from the ingest policy, after checking sizes agree."""
    from multimodal_lab.data.images import ImageInput
    from multimodal_lab.data.ingest import IngestConfig

    policy = from_params(IngestConfig, ingest_params, where="params:ingest").image
    spec = ImageInput.from_policy(policy)
    size = getattr(model_config, "image_size", None)
    if size is not None and size != spec.size:
        raise ValueError(
            f"params:{family}.model.image_size is {size} but ingest makes {spec.size}x{spec.size} images "
            f"(params:ingest.image.size); set both to the same size"
        )
    if {"width", "height"} <= set(records.columns):
        sizes = set(zip(records["width"].astype(int), records["height"].astype(int)))
        if sizes != {(spec.size, spec.size)}:
            raise ValueError(
                f"the training records have image sizes {sorted(sizes)[:5]} but params:ingest.image.size is "
                f"{spec.size}; rerun data preparation (kedro run --pipelines=data_preparation) so they agree"
            )
    if not any(f.name == "image_input" for f in dataclasses.fields(model_config)):
        raise TypeError(f"{type(model_config).__name__} has no image_input field; every family's config needs one")
    return dataclasses.replace(model_config, image_input=spec.to_dict())


def fingerprint(model_config, train_config, train_records: pd.DataFrame, val_records: pd.DataFrame,
                tokenizer) -> str:
    """Short hash of everything a checkpoint depends on: settings, both splits and the vocabulary."""
    settings = {**to_params(model_config), **to_params(train_config), "checkpoint_dir": None}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for records in (train_records, val_records):
        digest.update(b"\x00" + "\n".join(sorted(records["record_id"].astype(str))).encode())
    if tokenizer is not None:
        digest.update(b"\x00" + json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()[:12]


def evaluate_model(
    model, records: pd.DataFrame, train_records: pd.DataFrame, params: dict[str, Any], *, family: str,
    split: str = "test", **inputs: Any,
) -> tuple[Any, dict[str, float], pd.DataFrame, list[dict[str, Any]]]:
    """Score the model, its controls and its baselines on the held-out records.

    ``inputs``: the family's ``evaluation_inputs`` (e.g. art_generator's judge), passed on to its
    ``evaluate``.

    Returns:
        The full evaluation (for the report), a flat metrics dict (to MLflow and a
        versioned JSON), the metrics table (one row per condition) and the samples
        (JSON-safe, without image bytes).
    """
    from multimodal_lab.evaluation.harness import samples_for_json

    spec = get_family(family)
    settings = from_params(spec.eval_settings_class, params, where=f"params:{family}.evaluation")
    evaluation = spec.evaluate(model, records, settings, train_records=train_records, split=split, **inputs)
    summary = {k: (float(v) if v == v else math.nan) for k, v in evaluation.summary.items()}
    log.info("%s evaluation: %s", family, {k: round(v, 4) for k, v in summary.items()})
    return evaluation, summary, evaluation.metrics, samples_for_json(evaluation.samples)


def report_model(evaluation, training: dict[str, Any], model_params: dict[str, Any],
                 train_params: dict[str, Any], eval_params: dict[str, Any], *, family: str) -> str:
    """Render the family's self-contained HTML report (one template for all families)."""
    from multimodal_lab.reporting.html import render_report

    spec = get_family(family)
    params = {"model": model_params, "train": train_params, "evaluation": eval_params}
    return render_report(evaluation, training["history"], params, title=f"{family}: {spec.title}",
                         description=spec.description)


def _model_row(evaluation) -> dict[str, float]:
    row = evaluation.metrics.set_index("condition").loc["model"].drop("kind")
    return {k: float(v) for k, v in row.items()}


def repeat_top_variants(
    train_records: pd.DataFrame, val_records: pd.DataFrame, eval_records: pd.DataFrame, tokenizer,
    model_params: dict[str, Any], train_params: dict[str, Any], eval_params: dict[str, Any],
    ingest_params: dict[str, Any], compare_params: dict[str, Any], *, family: str, split: str = "test",
    **evaluations: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """Train and evaluate the best variants again with other seeds (``params:<family>.compare``).

    Args:
        evaluations: ``evaluation__<variant>`` of every variant (and ``input__<name>``, the family's
            evaluation inputs); the ``top`` best by the
            family's headline metric (variants without it, e.g. a text-only floor, are not
            ranked) are repeated.

    Returns:
        ``{variant: {seed: {metric: value}}}`` with the model row of every seed, the first
        run's seed included; empty when no repeats are asked for.
    """
    from multimodal_lab.families.base import SeedRepeats
    from multimodal_lab.training.loop import TrainConfig

    spec = get_family(family)
    inputs = {name.removeprefix("input__"): evaluations.pop(name) for name in list(evaluations)
              if name.startswith("input__")}
    settings = from_params(SeedRepeats, compare_params, where=f"params:{family}.compare")
    if not settings.top or not settings.seeds:
        return {}
    metric = spec.headline_metric
    if metric is None:
        raise ValueError(f"{family} has no headline_metric to rank its variants by; set params:{family}.compare.seeds "
                         "to []")
    scores = {name.removeprefix("evaluation__"): _model_row(evaluation).get(metric, math.nan)
              for name, evaluation in evaluations.items()}
    ranked = sorted((v for v, score in scores.items() if score == score),
                    key=lambda v: -scores[v] if spec.headline_higher_is_better else scores[v])
    first_seed = from_params(TrainConfig, train_params, where=f"params:{family}.train").seed
    repeats: dict[str, dict[str, dict[str, float]]] = {}
    for variant in ranked[:settings.top]:
        repeats[variant] = {str(first_seed): _model_row(evaluations[f"evaluation__{variant}"])}
        for seed in settings.seeds:
            if seed == first_seed:
                continue
            log.info("%s: training %s again with seed %d", family, variant, seed)
            model, _ = train_model(train_records, val_records, tokenizer, model_params, {**train_params, "seed": seed},
                                   ingest_params, family=family, variant=variant,
                                   metrics_prefix=f"{variant}/seed{seed}/")
            evaluation, _, _, _ = evaluate_model(model, eval_records, train_records, eval_params, family=family,
                                                 split=split, **inputs)
            repeats[variant][str(seed)] = _model_row(evaluation)
    return repeats


def _seed_table(repeats: dict[str, dict[str, dict[str, float]]], metric: str, higher: bool) -> tuple[pd.DataFrame, str]:
    """Rows ``<variant> (seed <s>)`` for the report and one sentence: does the winner win on every seed?"""
    rows = [{"condition": f"{variant} (seed {seed})", "kind": "model", **values}
            for variant, seeds in repeats.items() for seed, values in seeds.items()]
    variants = list(repeats)
    parts = [f"{v}: " + ", ".join(f"seed {s} {vals.get(metric, math.nan):.4g}" for s, vals in repeats[v].items())
             for v in variants]
    note = f"Seeds ({metric}, the top {len(variants)} trained again): " + "; ".join(parts) + "."
    if len(variants) >= 2:
        a, b = variants[:2]
        common = [s for s in repeats[a] if s in repeats[b]]
        better = [(repeats[a][s][metric] > repeats[b][s][metric]) == higher for s in common]
        note += (f" {a} beats {b} on every seed." if all(better) else
                 f" {a} beats {b} on {sum(better)} of {len(common)} seeds: the order is within seed noise.")
    return pd.DataFrame(rows), note


def compare_variants(*, family: str, split: str = "test", model_params: dict[str, Any], train_params: dict[str, Any],
                     eval_params: dict[str, Any], repeats: dict[str, dict[str, dict[str, float]]] | None = None,
                     **results: Any) -> tuple[dict[str, float], pd.DataFrame, list, str]:
    """Put every variant's evaluation in one table and one report (the family's ``compare``).

    Args:
        repeats: :func:`repeat_top_variants`' figures: rows ``<variant> (seed <s>)`` join the
            table, ``<variant>/seed<s>/<metric>`` the metrics, and a note says whether the
            winner wins on every seed.
        results: ``evaluation__<variant>`` (the evaluate node's full evaluation) and
            ``training__<variant>`` (the training history) of every variant.

    Returns:
        Flat metrics with the variant in their names (to MLflow and a versioned JSON), the
        combined metrics table, the samples (JSON-safe) and the HTML report.
    """
    from multimodal_lab.evaluation.harness import samples_for_json
    from multimodal_lab.reporting.html import render_report

    spec = get_family(family)
    evaluations = {name: results[f"evaluation__{name}"] for name in spec.variants}
    histories = {name: results[f"training__{name}"]["history"] for name in spec.variants}
    combined, flat = spec.compare(evaluations, split=split)
    flat = {k: float(v) for k, v in flat.items()}
    if repeats:
        table, note = _seed_table(repeats, spec.headline_metric, spec.headline_higher_is_better)
        combined.metrics = pd.concat([combined.metrics, table], ignore_index=True)
        combined.notes.append(note)
        flat.update({f"{v}/seed{s}/{k}": float(x) for v, seeds in repeats.items() for s, vals in seeds.items()
                     for k, x in vals.items()})
    log.info("%s comparison: %s", family, {k: round(v, 4) for k, v in flat.items() if "/control_" not in k})
    params = {"model": model_params, "train": train_params, "evaluation": eval_params,
              "variants": dict(spec.variants)}
    report = render_report(combined, histories, params, title=f"{family}: {spec.title}",
                           description=spec.description, samples_with_controls=len(combined.samples))
    return flat, combined.metrics, samples_for_json(combined.samples), report
