"""Data preparation after captioning: one split for all corpora, each corpus, its tokenizer, the ledger.

``assign_record_splits`` runs once; ``select_corpus`` and ``build_tokenizer`` serve every
corpus (``pipeline.py`` instantiates them under a Kedro namespace per corpus); the
ledger (``account_records``) checks that every source row ended in a corpus split or in
``rejected_records``.
"""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from multimodal_lab.config import from_params
from multimodal_lab.data.corpora import CorpusSelection, CorpusSpec

log = logging.getLogger(__name__)


def _spec(params: dict[str, Any]) -> CorpusSpec:
    return from_params(CorpusSpec, params, where="params:<corpus>.corpus")


def assign_record_splits(records: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The split of every accepted record, by a hash of its family id (one split for all corpora).

    Args:
        records: the captioned records.
        params: ``params:split`` — fields of ``SplitConfig`` (shares and salt).

    Returns:
        ``record_id``, ``family_id`` and ``split`` of each record, in input order.
    """
    from multimodal_lab.data.split import SplitConfig, assign_splits, family_ids

    config = from_params(SplitConfig, params, where="params:split")
    return pd.DataFrame({
        "record_id": records["record_id"].astype(str).to_numpy(),
        "family_id": family_ids(records).to_numpy(),
        "split": assign_splits(records, config).to_numpy(),
    })


def _splits_of(records: pd.DataFrame, record_splits: pd.DataFrame) -> pd.Series:
    if len(record_splits) != len(records) or (
        record_splits["record_id"].to_numpy() != records["record_id"].astype(str).to_numpy()
    ).any():
        raise ValueError("record_splits does not match the captioned records row for row; rerun the split "
                         "(kedro run --pipelines=prepare) rather than pinning one of the two")
    return pd.Series(record_splits["split"].to_numpy(), index=records.index)


def select_corpus(
    records: pd.DataFrame, record_splits: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Pick one corpus from the captioned records and split it by the assigned splits.

    A corpus with no material at all in this run (the art corpus when only a folder of
    photos is read) gives empty splits and a warning: a model family that needs it fails
    with a clear message when it is trained, and the other families run.

    Returns:
        train, val and test records, and the candidates skipped (``record_id``, ``reason``).

    Raises:
        ValueError: When the corpus has records but one of its splits is empty, naming
            what to change.
    """
    from multimodal_lab.data.corpora import select_corpus as _select

    spec = _spec(params)
    selection = _select(records, _splits_of(records, record_splits), spec, name="/".join(spec.corpus))
    sizes = {k: len(v) for k, v in selection.splits.items()}
    log.info("corpus %s: %s records, %d skipped", spec.corpus, sizes, len(selection.skipped))
    empty = [k for k, n in sizes.items() if n == 0]
    if len(empty) == 3:
        log.warning("corpus %s has no records in this run (no accepted record of corpus %s with a %r); "
                    "model families that read it cannot be trained", spec.corpus, spec.corpus, spec.text_field)
    elif empty:
        raise ValueError(
            f"corpus {spec.corpus} has no {' or '.join(empty)} records ({sizes}); it needs accepted records "
            f"with corpus in {spec.corpus} and a non-empty '{spec.text_field}' — add data, or change the split "
            "shares (params:split)"
        )
    return selection.splits["train"], selection.splits["val"], selection.splits["test"], selection.skipped


def build_tokenizer(train: pd.DataFrame, params: dict[str, Any]):
    """Train the corpus tokenizer on the TRAIN split only (no validation or test leakage).

    Records with several reference texts (``metadata["references"]``) lend all of them.
    """
    from multimodal_lab.data.records import references_of
    from multimodal_lab.data.vocab import VocabConfig, train_tokenizer

    spec = _spec(params)
    config = from_params(VocabConfig, spec.vocab, where="params:<corpus>.corpus.vocab")
    texts = train[spec.text_field].fillna("").tolist()
    if spec.text_field == "caption" and "metadata" in train.columns:
        # Only the two columns references_of reads: a whole-frame to_dict copies every image.
        extra = [ref for record in train[["metadata", "caption"]].to_dict("records")
                 for ref in references_of(record)[1:]]
        texts += extra
    tokenizer = train_tokenizer(texts, config, allow_empty=train.empty)
    log.info("tokenizer: %d tokens (%s)", len(tokenizer), config)
    return tokenizer


def account_records(
    raw_records: pd.DataFrame,
    ingest_rejected: pd.DataFrame,
    text_rejected: pd.DataFrame,
    captioned_records: pd.DataFrame,
    record_splits: pd.DataFrame,
    ingest_params: dict[str, Any],
    *corpus_parts: pd.DataFrame,
    corpora: tuple[str, ...],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The ledger: every source row in a corpus split or in ``rejected_records``, with a reason.

    Args:
        raw_records: every row the sources yielded.
        ingest_rejected: ingest's rejections.
        text_rejected: records left without any text after captioning.
        captioned_records: the records the corpora select from.
        record_splits: their splits.
        ingest_params: ``params:ingest`` (the image limits for the rejected rows' bytes).
        *corpus_parts: train, val, test, skipped of each corpus, in the order of ``corpora``.
        corpora: the corpus names.

    Returns:
        All rejected records (stage and reason each) and a summary of where rows went.
    """
    from multimodal_lab.data.corpora import account
    from multimodal_lab.data.ingest import IngestConfig, describe_rejected_images

    if len(corpus_parts) != 4 * len(corpora):
        raise ValueError(f"account_records needs train, val, test and skipped for each of {corpora}")
    selections = {
        name: CorpusSelection(
            splits=dict(zip(("train", "val", "test"), corpus_parts[4 * i:4 * i + 3])),
            skipped=corpus_parts[4 * i + 3],
        )
        for i, name in enumerate(corpora)
    }
    config = from_params(IngestConfig, ingest_params, where="params:ingest")
    text_part = describe_rejected_images(text_rejected, config.image) if len(text_rejected) else text_rejected
    columns = list(ingest_rejected.columns)
    ledger = account(
        raw_records,
        [ingest_rejected, text_part.reindex(columns=columns)],
        captioned_records,
        _splits_of(captioned_records, record_splits),
        selections,
        describe=lambda frame: describe_rejected_images(frame, config.image).reindex(columns=columns),
    )
    ledger.rejected["frame_index"] = ledger.rejected["frame_index"].astype("int64")
    return ledger.rejected, ledger.summary
