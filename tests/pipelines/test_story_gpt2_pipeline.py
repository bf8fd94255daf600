"""The main job end to end in the test environment (tiny model), through Kedro."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from PIL import Image


def _only_version(folder: Path) -> Path:
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(versions) == 1, f"expected one version under {folder}, got {versions}"
    return versions[0] / folder.name


@pytest.mark.slow
def test_story_gpt2_runs_end_to_end_and_inference_reads_its_model(kedro_project):
    bootstrap_project(kedro_project)
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["story_gpt2"])
        run_id = session.session_id

    data = kedro_project / "data"
    report = _only_version(data / "08_reporting/story_gpt2/report.html").read_text()
    metrics = json.loads(_only_version(data / "08_reporting/story_gpt2/metrics.json").read_text())
    table = pd.read_csv(_only_version(data / "08_reporting/story_gpt2/metrics_table.csv"))
    training = json.loads(_only_version(data / "07_model_output/story_gpt2/training.json").read_text())

    assert set(table["condition"]) == {"model", "shuffled_images", "zeroed_prefix"}
    assert 0.0 <= metrics["val/pair_f1"] <= 1.0 and metrics["val/perplexity"] > 1.0
    assert training["steps"] > 0 and training["history"][0]["step"] >= 1
    # the tiny model still learns something in 24 steps
    assert training["history"][-1]["train_loss"] < training["history"][0]["train_loss"]
    assert "<html" in report.lower() and "shuffled" in report.lower()
    # checkpoints of a finished run are cleaned up; the model is in the catalog
    assert not any((data / "06_models/story_gpt2/checkpoints").glob("*/*"))
    assert (_only_version(data / "06_models/story_gpt2/model") / "config.json").is_file()

    # MLflow: live training curve, final metrics, the report as an artefact
    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(
        experiment_names=["multimodal_lab_test"], filter_string=f"tags.run_id = '{run_id}'", output_format="list"
    )
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
    assert run.data.metrics["val/pair_f1"] == pytest.approx(metrics["val/pair_f1"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "story_gpt2")}
    assert "story_gpt2/report.html" in artifacts

    # inference on the user's own images (any size and mode) with the newest model
    images = data / "01_raw/inference_images"
    images.mkdir(parents=True)
    Image.new("RGBA", (300, 17), (200, 30, 30, 128)).save(images / "wide.png")
    Image.new("L", (40, 90), 128).save(images / "grey.jpg")
    (images / "notes.txt").write_text("not an image")
    with KedroSession.create(project_path=kedro_project, env="test") as session:
        session.run(pipeline_names=["story_gpt2_inference"])
    stories = json.loads(_only_version(data / "07_model_output/story_gpt2_inference/stories.json").read_text())
    assert sorted(s["image"] for s in stories) == ["grey.jpg", "wide.png"]
    assert all(isinstance(s["story"], str) and s["story"].strip() for s in stories)
    page = _only_version(data / "08_reporting/story_gpt2_inference/stories.html").read_text()
    assert "wide.png" in page
