"""``prepare``: ``captioned_records`` -> one split for all corpora -> per corpus: splits and tokenizer -> ledger.

The per-corpus part is one template, instantiated per corpus under a namespace, so all
four model families read corpora made by the same code: ``story.train_records``,
``art.test_records``, ``caption.tokenizer``, ... The ledger (``rejected_records``,
``data_summary``) accounts for every source row.
"""
from functools import partial

from kedro.pipeline import Pipeline, node

from .nodes import account_records, assign_record_splits, build_tokenizer, select_corpus

#: corpus namespaces, each read by one or more model families
CORPORA = ("story", "caption", "art", "sequence")


def corpus_template() -> Pipeline:
    return Pipeline(
        [
            node(
                select_corpus,
                ["records", "record_splits", "params:corpus"],
                ["train_records", "val_records", "test_records", "skipped_records"],
                name="select_corpus",
            ),
            node(build_tokenizer, ["train_records", "params:corpus"], "tokenizer", name="build_tokenizer"),
        ]
    )


def create_corpus_pipeline(name: str) -> Pipeline:
    return Pipeline(
        corpus_template(),
        namespace=name,
        inputs={"records": "captioned_records", "record_splits": "record_splits"},
        tags="data_preparation",
    )


def create_pipeline(**kwargs) -> Pipeline:
    split = Pipeline(
        [node(assign_record_splits, ["captioned_records", "params:split"], "record_splits", name="assign_splits")],
        tags="data_preparation",
    )
    corpus_inputs = [f"{c}.{part}" for c in CORPORA for part in ("train_records", "val_records", "test_records",
                                                                  "skipped_records")]
    ledger_func = partial(account_records, corpora=CORPORA)
    ledger_func.__name__ = ledger_func.__qualname__ = "account_records"
    ledger_func.__module__ = account_records.__module__
    ledger = Pipeline(
        [
            node(
                ledger_func,
                ["raw_records", "ingest_rejected_records", "text_rejected_records", "captioned_records",
                 "record_splits", "params:ingest", *corpus_inputs],
                ["rejected_records", "data_summary"],
                name="account_records",
            )
        ],
        tags="data_preparation",
    )
    return split + sum((create_corpus_pipeline(name) for name in CORPORA), Pipeline([])) + ledger
