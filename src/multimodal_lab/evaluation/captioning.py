"""Caption metrics: BLEU-1..4 and CIDEr-D with the COCO caption scorers, against every reference.

The scorers are ``pycocoevalcap``'s pure-Python ``Bleu`` and ``Cider`` (the latter is
CIDEr-D: Gaussian length penalty, clipped n-gram counts, x10). Their usual PTB tokenizer
needs Java, so texts are tokenised here in Python the way it does for these captions:
lower case, punctuation removed, split on whitespace. METEOR and SPICE (Java too) are
left out.

CIDEr-D weighs n-grams by their document frequency *over the references being scored*,
so a score depends on the whole set: :func:`caption_scores` always scores one whole
evaluation set at once (never per batch), and scores of different sets are not
comparable.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from multimodal_lab.data.records import references_of
from multimodal_lab.evaluation.suites import SuiteResult, register_suite

_PUNCTUATION = re.compile(r"[^\w\s']|_")

BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")


def tokenize_caption(text: str) -> str:
    """Lower case, punctuation removed, single spaces (what the PTB tokenizer step gives here)."""
    return " ".join(_PUNCTUATION.sub(" ", str(text).lower()).split())


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D of one candidate per image against its references.

    Args:
        candidates: one generated caption per image.
        references: the reference captions of each image (at least one each).

    Returns:
        ``bleu_1`` .. ``bleu_4`` (0..1) and ``cider_d`` (0..10; 1 is a typical COCO
        model's score) over the whole set.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} reference sets")
    keep = [i for i, refs in enumerate(references) if refs]
    if not keep:
        return {**dict.fromkeys(BLEU_KEYS, math.nan), "cider_d": math.nan}
    # The scorers need non-empty strings; an empty candidate becomes a token no reference has.
    res = {i: [tokenize_caption(candidates[i]) or "<empty>"] for i in keep}
    gts = {i: [tokenize_caption(r) for r in references[i]] for i in keep}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{key: float(value) for key, value in zip(BLEU_KEYS, bleu)}, "cider_d": float(cider)}


@register_suite("captioning")
class CaptioningSuite:
    """BLEU-1..4 and CIDEr-D against all of each record's reference captions (whole set at once)."""

    name = "captioning"
    columns = (*BLEU_KEYS, "cider_d", "num_references")

    def score(self, texts: Sequence[str], records: pd.DataFrame) -> SuiteResult:
        references = [references_of(row) for row in records.to_dict("records")]
        metrics = caption_scores(texts, references)
        counted = [len(refs) for refs in references if refs]
        metrics["num_references"] = float(sum(counted) / len(counted)) if counted else math.nan
        return SuiteResult(metrics)

    def reference_notes(self, records: pd.DataFrame) -> list[str] | None:
        return None
