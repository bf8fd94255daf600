"""``captioning``: ``accepted_records`` -> ``captioned_records`` (BLIP-2 where missing) + records with no text."""
from kedro.pipeline import Pipeline, node

from .nodes import caption_missing


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                caption_missing,
                ["accepted_records", "caption_cache", "params:captioning"],
                ["captioned_records", "caption_cache_updated", "text_rejected_records"],
                name="caption_missing",
            )
        ],
        tags="data_preparation",
    )
