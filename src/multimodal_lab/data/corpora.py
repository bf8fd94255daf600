"""Corpora and the record ledger: where every source row ended up, and why.

A *corpus* is the material one kind of model reads (``story``: scene images with
stories; ``caption``: the same scenes with captions; ``art``: engravings; ``sequence``:
5-frame sequences). :func:`select_corpus` picks its records from the accepted ones and
splits them by the split assigned once for all corpora (``data.split``).

:func:`account` closes the books: every row a source yielded must end in exactly one
place — in one split of at least one corpus (a scene's record is in both the story and
the caption corpus, on the same side), or in the rejected records with the stage that
rejected it and a reason. A record that passed ingest and captioning but that no corpus
takes (a sequence missing a frame, a record of a corpus nobody reads) is rejected there,
at stage ``corpus``, with each corpus's reason. The ledger fails loudly if a row is lost
or counted twice.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from multimodal_lab.data.split import SPLITS

logger = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["record_id", "reason"]


@dataclass(frozen=True)
class CorpusSpec:
    """Which accepted records form one corpus (``params:<corpus>.corpus``)."""

    corpus: list[str]  # values of the records' `corpus` column that belong to this corpus
    text_field: str  # "caption" or "story": the text the corpus' models learn to write
    group_size: int = 0  # > 0: keep only groups with exactly frames 0..group_size-1 (sequences)
    vocab: dict[str, Any] = field(default_factory=dict)  # fields of data.vocab.VocabConfig

    def __post_init__(self) -> None:
        if self.text_field not in ("caption", "story"):
            raise ValueError(f"text_field must be 'caption' or 'story', got {self.text_field!r}")
        if self.group_size < 0:
            raise ValueError(f"group_size must be >= 0, got {self.group_size}")


@dataclass
class CorpusSelection:
    """One corpus: its records per split, and why candidates were left out."""

    splits: dict[str, pd.DataFrame]  # "train" / "val" / "test" -> records (input columns, input order)
    skipped: pd.DataFrame  # record_id, reason: records of this corpus's kinds that it did not take


def select_corpus(records: pd.DataFrame, splits: pd.Series, spec: CorpusSpec, name: str = "corpus") -> CorpusSelection:
    """Pick one corpus from the accepted records and split it by the records' assigned split.

    Args:
        records: accepted (and captioned) records; not modified.
        splits: the split of each record, aligned with ``records``.
        spec: which records belong, which text they need, group size.
        name: the corpus name, for messages.

    Returns:
        The corpus's records per split and the skipped candidates with reasons.
    """
    if len(splits) != len(records):
        raise ValueError(f"{len(splits)} split labels for {len(records)} records")
    candidates = records["corpus"].isin(spec.corpus)
    text = records[spec.text_field].fillna("").astype(str).str.strip() != ""
    reasons = pd.Series([None] * len(records), index=records.index, dtype=object)
    reasons[candidates & ~text] = f"corpus {name}: no {spec.text_field}"
    taken = candidates & text
    if spec.group_size > 0:
        frames = records.loc[taken].groupby("group_id")["frame_index"].agg(lambda s: sorted(s.tolist()))
        wanted = list(range(spec.group_size))
        incomplete = frames[frames.apply(lambda f: f != wanted)]
        for group, present in incomplete.items():
            rows = taken & (records["group_id"] == group)
            reasons[rows] = (f"corpus {name}: group {group} has frames {present}, not 0-{spec.group_size - 1} "
                             "(the other frames were rejected earlier or never came)")
        taken &= ~records["group_id"].isin(incomplete.index)
    out = {}
    for split in SPLITS:
        part = records.loc[taken & (splits == split)]
        if spec.group_size > 0:
            part = part.sort_values(["group_id", "frame_index"], kind="stable")
        out[split] = part.reset_index(drop=True)
    skipped = pd.DataFrame({"record_id": records.loc[reasons.notna(), "record_id"].astype(str),
                            "reason": reasons[reasons.notna()]}, columns=SKIPPED_COLUMNS).reset_index(drop=True)
    return CorpusSelection(splits=out, skipped=skipped)


@dataclass
class Ledger:
    """The books of one data preparation run."""

    rejected: pd.DataFrame  # every rejected row, with stage and reason
    summary: dict[str, Any]  # counts: source rows, rejected per stage, records per corpus and split


def account(
    raw: pd.DataFrame,
    rejected_parts: Sequence[pd.DataFrame],
    accepted: pd.DataFrame,
    splits: pd.Series,
    corpora: Mapping[str, CorpusSelection],
    describe: Any = None,
) -> Ledger:
    """Check that every source row ended in exactly one place; reject records no corpus took.

    Args:
        raw: every row the sources yielded.
        rejected_parts: the rejected records of the stages so far (ingest, text).
        accepted: the records that passed every stage (what the corpora select from).
        splits: the split of each accepted record, aligned with ``accepted``.
        corpora: the selection of every prepared corpus.
        describe: optional function applied to the corpus-stage rejections before they
            join the others (ingest's ``describe_rejected_images``).

    Returns:
        The complete rejected records and a summary of counts.

    Raises:
        RuntimeError: a row was lost, counted twice, or placed inconsistently (a bug).
    """
    placed: Counter[str] = Counter()
    split_of: dict[str, str] = {}
    for name, selection in corpora.items():
        seen: Counter[str] = Counter()
        for split, frame in selection.splits.items():
            for rid in frame["record_id"].astype(str):
                seen[rid] += 1
                if split_of.setdefault(rid, split) != split:
                    raise RuntimeError(f"record {rid} is in {split_of[rid]} of one corpus and {split} of {name}")
        twice = [rid for rid, n in seen.items() if n > 1]
        if twice:
            raise RuntimeError(f"corpus {name} holds record(s) {twice[:5]} more than once")
        placed.update(seen.keys())
    ids = accepted["record_id"].astype(str)
    unplaced = ~ids.isin(placed.keys())
    reasons: dict[str, list[str]] = {}
    for selection in corpora.values():
        for rid, reason in zip(selection.skipped["record_id"], selection.skipped["reason"]):
            reasons.setdefault(str(rid), []).append(str(reason))
    names = ", ".join(corpora)
    corpus_reasons = []
    for rid, kind in zip(ids[unplaced], accepted.loc[unplaced, "corpus"]):
        why = reasons.get(rid) or [f"no prepared corpus ({names}) reads records of corpus {kind!r}"]
        corpus_reasons.append("; ".join(why))
    rejected_corpus = accepted.loc[unplaced].copy()
    rejected_corpus["stage"] = "corpus"
    rejected_corpus["reason"] = pd.Series(corpus_reasons, index=rejected_corpus.index, dtype=object)
    if describe is not None and len(rejected_corpus):
        rejected_corpus = describe(rejected_corpus)
    parts = [p for p in [*rejected_parts, rejected_corpus] if len(p)]
    columns = list(rejected_parts[0].columns) if rejected_parts else list(rejected_corpus.columns)
    rejected = (pd.concat([p.loc[:, columns] for p in parts], ignore_index=True) if parts
                else pd.DataFrame(columns=columns))

    # Every source row: accepted-and-placed, or rejected; as a multiset of ids.
    ended = Counter(ids[~unplaced]) + Counter(rejected["record_id"].astype(str))
    if ended != Counter(raw["record_id"].astype(str)):
        lost = Counter(raw["record_id"].astype(str)) - ended
        extra = ended - Counter(raw["record_id"].astype(str))
        raise RuntimeError(f"the ledger does not balance: {sum(lost.values())} source row(s) lost "
                           f"(e.g. {list(lost)[:3]}), {sum(extra.values())} counted twice (e.g. {list(extra)[:3]})")

    summary: dict[str, Any] = {
        "source_rows": int(len(raw)),
        "in_corpora": int((~unplaced).sum()),
        "rejected": int(len(rejected)),
        "rejected_by_stage": {str(k): int(v) for k, v in rejected["stage"].value_counts().items()},
        "corpora": {
            name: {split: int(len(frame)) for split, frame in selection.splits.items()}
            for name, selection in corpora.items()
        },
        "families_by_split": {split: int(accepted.loc[splits == split].pipe(_families).nunique()) for split in SPLITS},
    }
    logger.info("ledger: %d source rows = %d in corpora + %d rejected %s", len(raw), summary["in_corpora"],
                len(rejected), summary["rejected_by_stage"])
    return Ledger(rejected=rejected.reset_index(drop=True), summary=summary)


def _families(frame: pd.DataFrame) -> pd.Series:
    return frame["family_id"] if "family_id" in frame.columns else frame["group_id"]
