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


def create_world_pipeline(prefix: str, corpus: str, world_params: str) -> Pipeline:
    """A data chain of one family's own: its sources -> ingest -> split -> one corpus and tokenizer.

    For a family that needs far more of one corpus than the shared preparation draws
    (story_continuation's thousands of sequences), without the main job paying for it.
    The same nodes as the shared chain (licence and image checks, dedup, the family-id
    split, the corpus selection and tokenizer with ``params:<corpus>.corpus``), under
    ``<prefix>.*`` dataset names: ``<prefix>.raw_records``, ``<prefix>.accepted_records``,
    ``<prefix>.<corpus>.train_records``, ``<prefix>.<corpus>.tokenizer``...

    Args:
        prefix: dataset name prefix, e.g. ``story_continuation_data``.
        corpus: the corpus namespace whose ``params:<corpus>.corpus`` block selects the records.
        world_params: the parameter key of the scene-world config, e.g.
            ``params:story_continuation.data.scene_world``. Its sibling ``story_reasoning``
            (e.g. ``params:story_continuation.data.story_reasoning``, off unless ``enabled``)
            adds StoryReasoning's windows to the same chain (the ``gpu`` environment's corpus).
    """
    from multimodal_lab.pipelines.ingest.nodes import ingest_records
    from multimodal_lab.pipelines.sources.nodes import load_scene_world, load_story_reasoning, merge_sources

    out = f"{prefix}.{corpus}"
    story_reasoning = world_params.rsplit(".", 1)[0] + ".story_reasoning"
    return Pipeline(
        [
            node(load_scene_world, world_params, f"{prefix}.scene_world_records", name=f"{prefix}.load_scene_world"),
            node(load_story_reasoning, story_reasoning, f"{prefix}.story_reasoning_records",
                 name=f"{prefix}.load_story_reasoning"),
            node(merge_sources, [f"{prefix}.scene_world_records", f"{prefix}.story_reasoning_records"],
                 f"{prefix}.raw_records", name=f"{prefix}.merge_sources"),
            node(ingest_records, [f"{prefix}.raw_records", "params:ingest"],
                 [f"{prefix}.accepted_records", f"{prefix}.ingest_rejected_records", f"{prefix}.ingest_summary"],
                 name=f"{prefix}.ingest_records"),
            node(assign_record_splits, [f"{prefix}.accepted_records", "params:split"], f"{prefix}.record_splits",
                 name=f"{prefix}.assign_splits"),
            node(select_corpus, [f"{prefix}.accepted_records", f"{prefix}.record_splits", f"params:{corpus}.corpus"],
                 [f"{out}.train_records", f"{out}.val_records", f"{out}.test_records", f"{out}.skipped_records"],
                 name=f"{out}.select_corpus"),
            node(build_tokenizer, [f"{out}.train_records", f"params:{corpus}.corpus"], f"{out}.tokenizer",
                 name=f"{out}.build_tokenizer"),
        ],
        tags=[f"{prefix}"],
    )
