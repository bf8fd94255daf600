"""``ingest``: ``raw_records`` -> ``accepted_records`` + ``ingest_rejected_records``."""
from kedro.pipeline import Pipeline, node

from .nodes import ingest_records


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                ingest_records,
                ["raw_records", "params:ingest"],
                ["accepted_records", "ingest_rejected_records", "ingest_summary"],
                name="ingest_records",
            )
        ],
        tags="data_preparation",
    )
