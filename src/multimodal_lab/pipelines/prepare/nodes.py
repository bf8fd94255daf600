"""Per-corpus preparation: select a corpus, split it by group, train its tokenizer.

The same three nodes serve every model family; ``pipeline.py`` instantiates them once
per corpus under a Kedro namespace (``story``, ``caption``, ``art``, ``sequence``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusSpec:
    corpus: list[str]  # values of the records' `corpus` column that belong to this corpus
    text_field: str  # "caption" or "story": the text the corpus' models learn to write
    group_size: int = 0  # > 0: keep only groups with exactly frames 0..group_size-1 (sequences)
    val_ratio: float = 0.1  # share of groups held out for validation
    split_salt: str = ""  # change to draw a different, still deterministic, split
    vocab: dict[str, Any] = field(default_factory=dict)  # fields of data.vocab.VocabConfig


def _spec(params: dict[str, Any]) -> CorpusSpec:
    spec = from_params(CorpusSpec, params, where="params:<corpus>.corpus")
    if spec.text_field not in ("caption", "story"):
        raise ValueError(f"text_field must be 'caption' or 'story', got {spec.text_field!r}")
    return spec


def select_corpus(records: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Keep the records of one corpus that carry its text (and, for sequences, whole groups).

    Raises:
        ValueError: When the corpus ends up empty, naming the corpus values looked for.
    """
    spec = _spec(params)
    selected = records[records["corpus"].isin(spec.corpus)]
    selected = selected[selected[spec.text_field].fillna("").str.strip() != ""]
    if spec.group_size > 0:
        frames = selected.groupby("group_id")["frame_index"].agg(lambda s: sorted(s.tolist()))
        whole = frames[frames.apply(lambda f: f == list(range(spec.group_size)))].index
        dropped = selected["group_id"].nunique() - len(whole)
        if dropped:
            log.info("dropping %d incomplete groups (fewer than %d frames)", dropped, spec.group_size)
        selected = selected[selected["group_id"].isin(whole)]
        selected = selected.sort_values(["group_id", "frame_index"], kind="stable")
    if selected.empty:
        raise ValueError(
            f"corpus {spec.corpus} is empty after ingest: no accepted record has corpus in "
            f"{spec.corpus} with a non-empty '{spec.text_field}'"
        )
    return selected.reset_index(drop=True)


def split_records(
    records: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by a hash of the group id (stable when records are added)."""
    from multimodal_lab.data.split import split_by_group

    spec = _spec(params)
    train, val = split_by_group(records, val_ratio=spec.val_ratio, salt=spec.split_salt)
    log.info("split: %d train / %d val records", len(train), len(val))
    if train.empty or val.empty:
        raise ValueError(
            f"split gave {len(train)} train and {len(val)} val records; the corpus has "
            f"{records['group_id'].nunique()} groups — add data or change val_ratio"
        )
    return train, val


def build_tokenizer(train: pd.DataFrame, params: dict[str, Any]):
    """Train the corpus tokenizer on the TRAIN split only (no validation leakage)."""
    from multimodal_lab.data.vocab import VocabConfig, train_tokenizer

    spec = _spec(params)
    config = from_params(VocabConfig, spec.vocab, where="params:<corpus>.corpus.vocab")
    texts = train[spec.text_field].fillna("").tolist()
    tokenizer = train_tokenizer(texts, config)
    log.info("tokenizer: %d tokens (%s)", len(tokenizer), config)
    return tokenizer
