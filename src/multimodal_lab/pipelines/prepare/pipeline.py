"""``prepare``: ``captioned_records`` -> per corpus: train/val split and tokenizer.

One template, instantiated per corpus under a namespace, so all four model families
read corpora made by the same code: ``story.train_records``, ``art.tokenizer``, ...
"""
from kedro.pipeline import Pipeline, node

from .nodes import build_tokenizer, select_corpus, split_records

#: corpus namespace -> the model family that reads it
CORPORA = ("story", "caption", "art", "sequence")


def corpus_template() -> Pipeline:
    return Pipeline(
        [
            node(select_corpus, ["records", "params:corpus"], "corpus_records", name="select_corpus"),
            node(
                split_records,
                ["corpus_records", "params:corpus"],
                ["train_records", "val_records"],
                name="split_records",
            ),
            node(build_tokenizer, ["train_records", "params:corpus"], "tokenizer", name="build_tokenizer"),
        ]
    )


def create_corpus_pipeline(name: str) -> Pipeline:
    return Pipeline(
        corpus_template(),
        namespace=name,
        inputs={"records": "captioned_records"},
        tags="data_preparation",
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_corpus_pipeline(name) for name in CORPORA), Pipeline([]))
