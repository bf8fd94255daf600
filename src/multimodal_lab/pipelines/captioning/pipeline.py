"""``captioning``: ``accepted_records`` -> ``captioned_records``."""
from kedro.pipeline import Pipeline, node

from .nodes import caption_missing


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                caption_missing,
                ["accepted_records", "params:captioning"],
                "captioned_records",
                name="caption_missing",
            )
        ],
        tags="data_preparation",
    )
