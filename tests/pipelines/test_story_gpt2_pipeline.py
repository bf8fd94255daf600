"""The main job end to end in the test environment (tiny model), through Kedro.

One module-scoped run serves every test here. Its metrics are pinned: moving the family
onto other machinery, or refactoring the loop, must not change what the same seed
produces; a change that means to (new data split, new control) updates the pins in the
same commit and says why.
"""
from __future__ import annotations

import json
import os

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from PIL import Image

from project_copy import make_project_copy
from project_copy import only_version as _only_version

pytestmark = pytest.mark.slow

#: Relative tolerance of the pins. The same code and seed on two machines of this project's kind,
#: with the packages the install resolved on each day, gave perplexities and a final training loss
#: that differ by up to 4e-5 relative (float sums in another order, e.g. another oneDNN kernel)
#: while every other figure was equal; a change of data, seed or model moves them by far more.
PIN_TOLERANCE = 1e-4

#: ``conf/test`` story_gpt2 run, seed 0: metrics per condition (exact up to float noise).
#: History: the move onto the family machinery left the landed main's figures unchanged
#: (model perplexity 137.4074092160537 on the val split); the three-way split by family,
#: the test split as the evaluated one, the mean-prefix control, the nearest-neighbour
#: baseline and per-token validation loss, then scene images encoded at zlib level 1 (new
#: bytes, so new record ids and another draw of the split), then the faster story model
#: (16 attention-pooled prefix tokens, emphasised object words, the region loss) and 60
#: one-thread steps, then the slots mapper (the test environment inherits the default
#: mapper) gave these.
PINNED = {
    ("mean_prefix", "perplexity"): 45.98064275469731,
    ("model", "distinct_1"): 0.045871559633027525,
    ("model", "mean_words"): 18.166666666666668,
    ("model", "pair_f1"): 0.0,
    ("model", "perplexity"): 46.1344857715956,
    ("nearest_neighbour", "colour_f1"): 0.16216216216216214,
    ("nearest_neighbour", "distinct_2"): 0.5573333333333333,
    ("shuffled_images", "perplexity"): 46.067952462500216,
}
PINNED_FINAL_LOSSES = {"train_loss": 6.346925735473633, "val_loss": 9.298225787627862}


@pytest.fixture(scope="module")
def story_run(tmp_path_factory):
    """Run ``story_gpt2`` once in a throw-away project copy; yield (project, kedro run id)."""
    project = make_project_copy(tmp_path_factory.mktemp("story_run"))
    cwd, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(project)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            session.run(pipeline_names=["story_gpt2"])
            yield project, session.session_id
    finally:
        os.chdir(cwd)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri


def test_metrics_of_the_same_seed_are_pinned(story_run):
    project, _ = story_run
    table = pd.read_csv(_only_version(project / "data/08_reporting/story_gpt2/metrics_table.csv"))
    table = table.set_index("condition")
    for (condition, metric), value in PINNED.items():
        assert table.at[condition, metric] == pytest.approx(value, rel=PIN_TOLERANCE, abs=1e-9), (condition, metric)
    training = json.loads(_only_version(project / "data/07_model_output/story_gpt2/training.json").read_text())
    last = training["history"][-1]
    for key, value in PINNED_FINAL_LOSSES.items():
        assert last[key] == pytest.approx(value, rel=PIN_TOLERANCE), key


def test_story_gpt2_writes_model_metrics_report_and_tracks_them(story_run):
    project, run_id = story_run
    data = project / "data"
    report = _only_version(data / "08_reporting/story_gpt2/report.html").read_text()
    metrics = json.loads(_only_version(data / "08_reporting/story_gpt2/metrics.json").read_text())
    table = pd.read_csv(_only_version(data / "08_reporting/story_gpt2/metrics_table.csv"))
    training = json.loads(_only_version(data / "07_model_output/story_gpt2/training.json").read_text())
    tokenizer = json.loads((_only_version(data / "04_feature/story/tokenizer") / "tokenizer.json").read_text())
    vocabulary = len(tokenizer["model"]["vocab"])

    assert list(table["condition"]) == ["model", "shuffled_images", "mean_prefix", "nearest_neighbour"]
    assert list(table["kind"]) == ["model", "control", "control", "baseline"]
    # 24 steps learn the language well below a uniform guess over the vocabulary
    assert 1.0 < metrics["test/perplexity"] < 0.7 * vocabulary
    # the evaluation ran on the test split: its records are the story corpus' test records
    test_ids = set(pd.read_parquet(_only_version(data / "05_model_input/story/test_records.parquet"))["record_id"])
    samples = json.loads(_only_version(data / "07_model_output/story_gpt2/samples.json").read_text())
    assert samples and {s["record_id"] for s in samples} <= test_ids
    # the ledger balanced and went to MLflow with the rest
    summary = json.loads(_only_version(data / "08_reporting/data_summary.json").read_text())
    assert summary["source_rows"] == summary["in_corpora"] + summary["rejected"] > 0
    assert training["steps"] == 60 and training["history"][0]["step"] == 1
    assert training["best_step"] in (20, 40, 60) and training["select_metric"] == "val_loss"
    assert all("val_pair_f1" in row for row in training["history"] if row["step"] % 20 == 0)
    assert training["history"][-1]["train_loss"] < training["history"][0]["train_loss"] - 0.5
    assert "<html" in report.lower() and "shuffled_images" in report and "nearest_neighbour" in report
    # checkpoints of a finished run are cleaned up; the model is in the catalog
    assert not any((data / "06_models/story_gpt2/checkpoints").glob("*/*"))
    saved = json.loads((_only_version(data / "06_models/story_gpt2/model") / "config.json").read_text())
    assert saved["family"] == "story_gpt2"

    # MLflow: live training curve, final metrics, the report as an artefact
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    (run,) = mlflow.search_runs(
        experiment_names=["multimodal_lab_test"], filter_string=f"tags.run_id = '{run_id}'", output_format="list"
    )
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 2
    assert run.data.metrics["test/perplexity"] == pytest.approx(metrics["test/perplexity"])
    assert run.data.metrics["source_rows"] == summary["source_rows"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "story_gpt2")}
    assert "story_gpt2/report.html" in artifacts


def test_inference_reads_the_newest_model_for_the_users_images(story_run, monkeypatch):
    project, _ = story_run
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = project / "data"
    images = data / "01_raw/inference_images"
    images.mkdir(parents=True)
    Image.new("RGBA", (300, 17), (200, 30, 30, 128)).save(images / "wide.png")
    Image.new("L", (40, 90), 128).save(images / "grey.jpg")
    (images / "notes.txt").write_text("not an image")
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test") as session:
        session.run(pipeline_names=["story_gpt2_inference"])
    stories = json.loads(_only_version(data / "07_model_output/story_gpt2_inference/outputs.json").read_text())
    assert sorted(s["image"] for s in stories) == ["grey.jpg", "wide.png"]
    assert all(isinstance(s["story"], str) and s["story"].strip() for s in stories)
    page = _only_version(data / "08_reporting/story_gpt2_inference/page.html").read_text()
    assert "wide.png" in page

    # the generic loader gives the family's inference API for the same directory
    from multimodal_lab.generation.story import GenerationSettings
    from multimodal_lab.inference import StoryTeller, load

    teller = load(_only_version(data / "06_models/story_gpt2/model"))
    assert isinstance(teller, StoryTeller)
    settings = GenerationSettings(max_new_tokens=16)  # as conf/test's story_gpt2_inference
    assert teller.tell(Image.open(images / "wide.png"), settings) == [
        s["story"] for s in stories if s["image"] == "wide.png"
    ]

