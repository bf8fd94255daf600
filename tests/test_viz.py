"""kedro-viz shows every pipeline with its layers (tested in-process through its API)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

LAYERS = {"raw", "intermediate", "primary", "feature", "model_input"}


@pytest.fixture
def viz_client(kedro_project):
    from kedro_viz.api.apps import create_api_app_from_project
    from kedro_viz.server import load_and_populate_data

    load_and_populate_data(kedro_project, env="test")
    return TestClient(create_api_app_from_project(kedro_project))


def test_viz_lists_the_registered_pipelines_with_layers(viz_client):
    main = viz_client.get("/api/main")
    assert main.status_code == 200
    body = main.json()
    ids = {p["id"] for p in body["pipelines"]}
    assert {"data_preparation", "ingest", "story_gpt2", "story_gpt2_inference", "vit_captioner",
            "vit_captioner_inference"} <= ids
    assert LAYERS <= set(body["layers"])


def test_viz_pipeline_endpoint_shows_the_story_path(viz_client):
    response = viz_client.get("/api/pipelines/story_gpt2")
    assert response.status_code == 200
    body = response.json()
    nodes = body["nodes"]
    names = {n["name"] for n in nodes}
    assert {"load_scene_world", "ingest_records", "assign_splits", "select_corpus", "build_tokenizer",
            "account_records", "train_model", "evaluate_model", "report_model"} <= names
    assert {"story.train_records", "story.test_records", "story.tokenizer", "rejected_records",
            "story_gpt2.model", "story_gpt2.report"} <= names
    # the corpus and the family namespaces are collapsible groups
    assert {"story", "story_gpt2"} <= set(body["modular_pipelines"])
    layer_of = {n["name"]: n.get("layer") for n in nodes if n["type"] == "data"}
    assert layer_of.get("raw_records") == "raw"
    assert layer_of.get("accepted_records") == "intermediate"
    assert layer_of.get("story_gpt2.model") == "models" and layer_of.get("story_gpt2.report") == "reporting"
