"""Project pipelines.

Every model family's pipeline runs the whole way on a fresh clone: ``kedro run
--pipeline=story_gpt2`` runs the one shared data preparation (every corpus and the
ledger that accounts for every source row), then trains, evaluates on the test split
and reports. The family pipelines are made by one template (``pipelines.model``) from
the family registry.
"""
from __future__ import annotations

from kedro.pipeline import Pipeline

from multimodal_lab.families import available_families
from multimodal_lab.pipelines import captioning, ingest, prepare, sources
from multimodal_lab.pipelines.model import create_model_pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    from multimodal_lab.families import get_family
    from multimodal_lab.pipelines.inference import create_inference_pipeline
    from multimodal_lab.pipelines.prepare.pipeline import create_world_pipeline

    pipes: dict[str, Pipeline] = {
        "sources": sources.create_pipeline(),
        "ingest": ingest.create_pipeline(),
        "captioning": captioning.create_pipeline(),
        "prepare": prepare.create_pipeline(),
    }
    pipes["data_preparation"] = pipes["sources"] + pipes["ingest"] + pipes["captioning"] + pipes["prepare"]
    default = pipes["data_preparation"]
    for name in available_families():
        spec = get_family(name)
        model = create_model_pipeline(name)
        pipes[f"{name}_model"] = model
        if spec.world_params:  # a corpus of its own, prepared by its own data chain
            model = create_world_pipeline(f"{name}_data", spec.corpus, spec.world_params) + model
            pipes[name] = model
        else:
            pipes[name] = pipes["data_preparation"] + model
        default += model
        if spec.folder_inference is not None:
            pipes[f"{name}_inference"] = create_inference_pipeline(name)
    pipes["__default__"] = default
    return pipes
