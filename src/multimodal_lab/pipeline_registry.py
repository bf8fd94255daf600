"""Project pipelines.

The data-preparation pipelines are composed explicitly so that each model pipeline
runs the whole way on a fresh clone: ``kedro run --pipeline=story_gpt2`` prepares the
data, trains, evaluates and reports.
"""
from __future__ import annotations

from kedro.pipeline import Pipeline

from multimodal_lab.pipelines import captioning, ingest, prepare, sources


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    from multimodal_lab.pipelines import story_gpt2, story_gpt2_inference

    pipes: dict[str, Pipeline] = {
        "sources": sources.create_pipeline(),
        "ingest": ingest.create_pipeline(),
        "captioning": captioning.create_pipeline(),
        "prepare": prepare.create_pipeline(),
    }
    pipes["data_preparation"] = pipes["sources"] + pipes["ingest"] + pipes["captioning"] + pipes["prepare"]
    story_prep = pipes["sources"] + pipes["ingest"] + pipes["captioning"] + prepare.create_corpus_pipeline("story")
    pipes["story_gpt2_model"] = story_gpt2.create_pipeline()
    pipes["story_gpt2"] = story_prep + pipes["story_gpt2_model"]
    pipes["story_gpt2_inference"] = story_gpt2_inference.create_pipeline()
    pipes["__default__"] = pipes["data_preparation"] + pipes["story_gpt2_model"]
    return pipes
