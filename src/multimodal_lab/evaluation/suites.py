"""Metric suites: pluggable scorers of generated texts against their records.

A suite turns the texts one condition generated (one per record) into named metrics,
and may add a short note per record for the report ("predicted: red star"). Families
list the suites they want by name; a family with a new kind of output adds its suite
here (BLEU/CIDEr, image errors, ...) and registers it with :func:`register_suite`.

    suite = get_suite("grounding")
    result = suite.score(texts, records)  # result.metrics["pair_f1"], result.notes[i]
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from multimodal_lab.data.records import metadata_of
from multimodal_lab.data.scene_world import COLOURS, SHAPES, object_pairs
from multimodal_lab.evaluation.grounding import extract_pairs, grounding_scores
from multimodal_lab.evaluation.text import distinct_n, repeated_ngram_rate, words


@dataclass
class SuiteResult:
    """What a suite measured for one condition."""

    metrics: dict[str, float]  # metric name -> value (NaN where it does not apply)
    notes: list[str] | None = None  # one short note per record for the report, or None


class MetricSuite(Protocol):
    """Scores one condition's outputs; ``columns`` lists its metrics in table order."""

    name: str
    columns: tuple[str, ...]

    def score(self, texts: Sequence[str], records: pd.DataFrame) -> SuiteResult: ...

    def reference_notes(self, records: pd.DataFrame) -> list[str] | None: ...


_SUITES: dict[str, Callable[[], MetricSuite]] = {}
#: Suites that live in their own module (imported on first use): name -> module.
BUILTIN_SUITES: dict[str, str] = {"captioning": "multimodal_lab.evaluation.captioning"}


def register_suite(name: str) -> Callable[[Callable[[], MetricSuite]], Callable[[], MetricSuite]]:
    """Decorator that makes a suite factory available to :func:`get_suite` by name."""

    def decorator(factory: Callable[[], MetricSuite]) -> Callable[[], MetricSuite]:
        _SUITES[name] = factory
        return factory

    return decorator


def get_suite(name: str) -> MetricSuite:
    """A fresh suite by name.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in _SUITES and name in BUILTIN_SUITES:
        import importlib

        importlib.import_module(BUILTIN_SUITES[name])
    if name not in _SUITES:
        raise ValueError(f"unknown metric suite {name!r}; known suites: {sorted(set(_SUITES) | set(BUILTIN_SUITES))}")
    return _SUITES[name]()


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


def format_pairs(pairs: Sequence[Sequence[str]] | set | None) -> str:
    """Show (colour, shape) pairs as 'blue cube, red ball' (sorted; '' for none)."""
    if not pairs:
        return ""
    return ", ".join(sorted(" ".join(str(part) for part in pair) for pair in pairs))


@register_suite("grounding")
class GroundingSuite:
    """Are the (colour, shape) pairs a text names the image's real objects? (micro P/R/F1)

    Records without scene-world truth (real material, engravings) are left out; when no
    record has truth the metrics are NaN and ``num_grounded`` is 0.
    """

    name = "grounding"
    columns = ("pair_precision", "pair_recall", "pair_f1", "colour_f1", "shape_f1", "num_grounded")

    def score(self, texts: Sequence[str], records: pd.DataFrame) -> SuiteResult:
        truths = [true_pairs_of(row) for row in records.to_dict("records")]
        predicted = [set(extract_pairs(text, COLOURS, SHAPES)) for text in texts]
        grounded = [i for i, truth in enumerate(truths) if truth is not None]
        scores = grounding_scores([predicted[i] for i in grounded], [truths[i] for i in grounded]) if grounded else {}
        nan = math.nan
        metrics = {
            "pair_precision": scores.get("precision", nan),
            "pair_recall": scores.get("recall", nan),
            "pair_f1": scores.get("f1", nan),
            "colour_f1": scores.get("colour_f1", nan),
            "shape_f1": scores.get("shape_f1", nan),
            "num_grounded": float(len(grounded)),
        }
        return SuiteResult(metrics, notes=[format_pairs(pairs) for pairs in predicted])

    def reference_notes(self, records: pd.DataFrame) -> list[str] | None:
        truths = [true_pairs_of(row) for row in records.to_dict("records")]
        return ["" if truth is None else format_pairs(truth) for truth in truths]


@register_suite("diversity")
class DiversitySuite:
    """Distinct-n across texts (one story for every image scores low), loops inside a text, length."""

    name = "diversity"
    columns = ("distinct_1", "distinct_2", "repeated_3gram_rate", "mean_words")

    def score(self, texts: Sequence[str], records: pd.DataFrame) -> SuiteResult:
        return SuiteResult(
            {
                "distinct_1": distinct_n(texts, 1),
                "distinct_2": distinct_n(texts, 2),
                "repeated_3gram_rate": repeated_ngram_rate(texts, 3),
                "mean_words": float(np.mean([len(words(t)) for t in texts])) if len(texts) else math.nan,
            }
        )

    def reference_notes(self, records: pd.DataFrame) -> list[str] | None:
        return None
