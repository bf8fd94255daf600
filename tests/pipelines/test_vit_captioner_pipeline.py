"""vit_captioner end to end in the test environment (tiny model), through Kedro."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from project_copy import only_version as _only_version
from project_copy import project_runs

pytestmark = pytest.mark.slow

REQUIRED_KEYS = ["test/bleu_4", "test/cider_d", "test/pair_f1", "greedy/cider_d", "beam3/cider_d", "beam5/cider_d",
                 "baseline_nearest/cider_d", "baseline_blind/cider_d", "control_deranged/pair_f1"]


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    """Run ``vit_captioner`` then its inference pipeline once in a throw-away project copy."""
    with project_runs(tmp_path_factory.mktemp("caption_run"), ["vit_captioner"]) as project:
        images = project / "data/01_raw/inference_images"
        images.mkdir(parents=True)
        Image.new("RGB", (120, 80), (30, 60, 200)).save(images / "blue.png")
        Image.new("LA", (50, 50), (200, 255)).save(images / "grey.png")
        from kedro.framework.session import KedroSession

        with KedroSession.create(project_path=project, env="test") as session:
            session.run(pipeline_names=["vit_captioner_inference"])
        yield project


def test_metrics_table_has_every_decoding_control_and_baseline(caption_run):
    data = caption_run / "data"
    metrics = json.loads(_only_version(data / "08_reporting/vit_captioner/metrics.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in metrics, key
    assert metrics["beam5/cider_d"] == metrics["test/cider_d"]  # the model's own decoding is beam 5
    assert 0.0 <= metrics["test/bleu_4"] <= 1.0 and metrics["test/num_references"] == 5.0  # every reference
    training = json.loads(_only_version(data / "07_model_output/vit_captioner/training.json").read_text())
    assert training["history"][-1]["train_loss"] < training["history"][0]["train_loss"] - 0.5
    assert all("val_cider_d" in row for row in training["history"] if row["step"] % 20 == 0)


def test_report_shows_references_beams_and_attention(caption_run):
    data = caption_run / "data"
    report = _only_version(data / "08_reporting/vit_captioner/report.html").read_text()
    for text in ("baseline", "nearest", "blind", "deranged", "beam3", "greedy", "references (5)",
                 "beam alternatives", "where each word looked", "over the whole evaluated set"):
        assert text in report, text
    samples = json.loads(_only_version(data / "07_model_output/vit_captioner/samples.json").read_text())
    assert len(samples[0]["references"]) == 5 and "figures" not in samples[0]


def test_inference_pipeline_and_loader_agree(caption_run, monkeypatch):
    data = caption_run / "data"
    rows = json.loads(_only_version(data / "07_model_output/vit_captioner_inference/outputs.json").read_text())
    assert [r["image"] for r in rows] == ["blue.png", "grey.png"]
    page = _only_version(data / "08_reporting/vit_captioner_inference/page.html").read_text()
    assert "blue.png" in page and "where each word looked" in page
    from multimodal_lab.inference import Captioner, load

    captioner = load(_only_version(data / "06_models/vit_captioner/model"))
    assert isinstance(captioner, Captioner)
    image = Image.open(data / "01_raw/inference_images/blue.png")
    assert captioner.caption(image, num_beams=5) == [rows[0]["caption"]]
    captions, maps = captioner.caption([image], num_beams=1, return_attention=True)
    assert len(maps[0]["words"]) == maps[0]["maps"].shape[0] and maps[0]["maps"].shape[1:] == (8, 8)
