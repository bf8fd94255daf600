"""story_continuation end to end in the test environment (tiny models): every variant, one comparison."""
from __future__ import annotations

import json
import math

import pytest
from project_copy import only_version as _only_version
from project_copy import project_runs

pytestmark = pytest.mark.slow

VARIANTS = ("baseline", "cross_modal", "vae", "cross_modal_vae")


def _write_sequence(folder, colours, sentences):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", (80, 80), colour).save(folder / f"frame{i}.png")
    (folder / "sentences.json").write_text(json.dumps(sentences))


SENTENCES = ["A red ring sits in the meadow.", "The red ring moves right.", "The red ring moves right.",
             "The red ring moves right."]


@pytest.fixture(scope="module")
def continuation_run(tmp_path_factory):
    """Train and compare every variant, then continue two sequences of the user's folder."""
    with project_runs(tmp_path_factory.mktemp("continuation_run"), ["story_continuation"]) as project:
        sequences = project / "data/01_raw/inference_sequences"
        _write_sequence(sequences / "b_dark", [(10, 10, 10)] * 4, SENTENCES)
        _write_sequence(sequences / "a_bright", [(250, 200, 90), (240, 190, 80), (230, 180, 70), (220, 170, 60)],
                        SENTENCES)
        from kedro.framework.session import KedroSession

        with KedroSession.create(project_path=project, env="test",
                                 runtime_params={"story_continuation_inference": {"samples": 2}}) as session:
            session.run(pipeline_names=["story_continuation_inference"])
        yield project


def test_inference_pipeline_writes_frames_sentences_and_a_page(continuation_run):
    data = continuation_run / "data"
    rows = json.loads(_only_version(data / "07_model_output/story_continuation_inference/outputs.json").read_text())
    assert [r["sequence"] for r in rows] == ["a_bright", "b_dark"]  # sorted by folder name
    assert all(r["sentences"] == SENTENCES and isinstance(r["sentence"], str) for r in rows)
    images = _only_version(data / "07_model_output/story_continuation_inference/images")
    from PIL import Image

    size = json.loads((_only_version(data / "06_models/story_continuation.cross_modal_vae/model") / "config.json")
                      .read_text())["story_continuation"]["image_size"]
    for row in rows:
        assert row["frame"] == f"{row['sequence']}.predicted.png" and len(row["samples"]) == 2  # the vae variant draws
        for name in (row["frame"], *row["samples"]):
            with Image.open(images / name) as image:
                assert image.size == (size, size) and image.mode == "RGB"
    with Image.open(images / "a_bright.predicted.png") as bright, Image.open(images / "b_dark.predicted.png") as dark:
        # the prediction follows the frames it was given: a bright sequence stays brighter
        assert sum(bright.convert("L").getdata()) > sum(dark.convert("L").getdata())
    page = _only_version(data / "08_reporting/story_continuation_inference/page.html").read_text()
    assert "a_bright" in page and "b_dark" in page and "the predicted 5th frame" in page and "2 drawn 5th frames" in page


def test_metrics_have_every_variant_and_floor(continuation_run):
    metrics = json.loads(_only_version(continuation_run / "data/08_reporting/story_continuation/metrics.json")
                         .read_text())
    for variant in VARIANTS:
        for metric in ("image_mae", "perplexity", "position_error_px", "grounding_f1"):
            assert math.isfinite(metrics[f"{variant}/{metric}"]), (variant, metric)
        assert f"{variant}/control_deranged/image_mae" in metrics
    for key in ("floor_copy_last/image_mae", "floor_mean_image/image_mae", "floor_mean_inputs/image_mae",
                "floor_linear/image_mae", "floor_unigram/perplexity", "floor_text_only/perplexity",
                "floor_copy_sentence/grounding_f1"):
        assert math.isfinite(metrics[key]), key
    # the floors do not depend on the model: copy-last's MAE is the 4th frame's distance to the 5th
    assert 0.0 < metrics["floor_copy_last/image_mae"] < metrics["floor_mean_image/image_mae"]
    # a vae variant reports the spread of its draws; a deterministic one has none
    assert metrics["vae/sample_diversity"] >= 0.0 and math.isnan(metrics["baseline/sample_diversity"])


def test_the_top_two_variants_are_trained_again_with_the_second_seed(continuation_run):
    data = continuation_run / "data"
    metrics = json.loads(_only_version(data / "08_reporting/story_continuation/metrics.json").read_text())
    repeats = json.loads(_only_version(data / "07_model_output/story_continuation/seed_repeats.json").read_text())
    # the two lowest test MAEs of the first seed, in order (the text-only floor has none)
    ranked = sorted(VARIANTS, key=lambda v: metrics[f"{v}/image_mae"])
    assert list(repeats) == ranked[:2]
    for variant in ranked[:2]:
        assert set(repeats[variant]) == {"0", "1"}
        assert repeats[variant]["0"]["image_mae"] == metrics[f"{variant}/image_mae"]  # the first run, as it was
        assert metrics[f"{variant}/seed1/image_mae"] == repeats[variant]["1"]["image_mae"]
        assert repeats[variant]["1"]["image_mae"] != repeats[variant]["0"]["image_mae"]  # another seed, another model
    assert not any(key.startswith(f"{ranked[2]}/seed") for key in metrics)
    report = _only_version(data / "08_reporting/story_continuation/report.html").read_text()
    assert f"{ranked[0]} (seed 1)" in report and "Seeds (image_mae, the top 2 trained again)" in report


def test_each_variant_is_versioned_and_trained_with_its_switches(continuation_run):
    data = continuation_run / "data"
    for variant, switches in {"baseline": (False, False), "cross_modal_vae": (True, True)}.items():
        config = json.loads((_only_version(data / f"06_models/story_continuation.{variant}/model") / "config.json")
                            .read_text())["story_continuation"]
        assert (config["cross_modal"], config["vae"]) == switches
        training = json.loads(_only_version(data / f"07_model_output/story_continuation.{variant}/training.json")
                              .read_text())
        assert training["variant"] == variant
        assert training["history"][-1]["train_loss"] < training["history"][0]["train_loss"]
    text_only = json.loads((_only_version(data / "06_models/story_continuation.text_only/model") / "config.json")
                           .read_text())["story_continuation"]
    assert text_only["use_images"] is False


def test_one_report_compares_the_variants(continuation_run):
    report = _only_version(continuation_run / "data/08_reporting/story_continuation/report.html").read_text()
    for text in (*VARIANTS, "copy_last", "mean_image", "text_only", "unigram", "deranged",
                 "Best variant per metric", "input frames 1-4", "<div class=\"label\">cross_modal_vae</div>",
                 "vae: predicted 5th frame (mean), then draws", "baseline: predicted 5th frame"):
        assert text in report, text


def test_a_trained_variant_continues_a_test_sequence_through_load(continuation_run):
    """``load`` gives any variant's model back as a Continuer: a 5th frame and sentence, seeded VAE draws,
    clear errors for a wrong input, no image from the text-only floor."""
    import io

    import pandas as pd
    from PIL import Image

    from multimodal_lab.inference import Continuer, load

    data = continuation_run / "data"
    continuer = load(_only_version(data / "06_models/story_continuation.vae/model"), device="cpu")
    assert isinstance(continuer, Continuer)
    test = pd.read_parquet(_only_version(data / "05_model_input/story_continuation_data.sequence/test_records.parquet"))
    group = test[test["group_id"] == test["group_id"].iloc[0]].sort_values("frame_index")
    frames = [Image.open(io.BytesIO(b)) for b in group["image"].iloc[:4]]
    sentences = group["caption"].iloc[:4].tolist()
    out = continuer.continue_story(frames, sentences, samples=2, seed=3)
    assert out["image"].size == (64, 64) and isinstance(out["sentence"], str) and len(out["samples"]) == 2
    again = continuer.continue_story(frames, sentences, samples=2, seed=3)
    assert [s.tobytes() for s in again["samples"]] == [s.tobytes() for s in out["samples"]]  # seeded draws
    assert out["image"].tobytes() == again["image"].tobytes()
    with pytest.raises(ValueError, match="4 frames and 4 sentences"):
        continuer.continue_story(frames[:3], sentences)
    baseline = load(_only_version(data / "06_models/story_continuation.baseline/model"), device="cpu")
    with pytest.raises(ValueError, match="vae variant"):
        baseline.continue_story(frames, sentences, samples=1)
    text_only = load(_only_version(data / "06_models/story_continuation.text_only/model"), device="cpu")
    assert text_only.continue_story(frames, sentences)["image"] is None
