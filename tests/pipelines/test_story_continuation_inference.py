"""story_continuation_inference on a tiny untrained model: the user's sequences -> versioned JSON, PNGs, HTML."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image
from tiny_models import make_word_tokenizer

from multimodal_lab.families.story_continuation import folder_inference
from multimodal_lab.inference import (
    ContinuationInferenceParams,
    Continuer,
    read_sequence_folder,
)
from multimodal_lab.models.story_continuation import (
    StoryContinuation,
    StoryContinuationConfig,
)
from multimodal_lab.pipelines.inference import create_inference_pipeline

ROOT = Path(__file__).resolve().parents[2]
WORDS = ["the", "red", "blue", "ring", "square", "moves", "left", "right", "sits", "in", "meadow"]
SEQUENCES = {
    "b_dark": ([(10, 10, 10)] * 4, ["the blue square sits", "the blue square moves left", "it moves left",
                                    "it moves left"]),
    "a_bright": ([(250, 200, 90), (240, 190, 80), (230, 180, 70), (220, 170, 60)],
                 ["the red ring sits in the meadow", "the red ring moves right", "it moves right",
                  "it moves right"]),
}
SIZE = 16


def tiny_model(**switches) -> StoryContinuation:
    torch.manual_seed(0)
    config = StoryContinuationConfig(image_size=SIZE, channels=[8, 8, 8, 16], latent_channels=4, d_model=16,
                                     cross_heads=4, n_head=2, n_layer=1, state_tokens=2, n_positions=32,
                                     max_sentence_tokens=12, **switches)
    return StoryContinuation(config, make_word_tokenizer(WORDS)).eval()


@pytest.fixture(scope="module")
def sequences_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inference_sequences")
    for name, (colours, sentences) in SEQUENCES.items():
        folder = root / name
        folder.mkdir()
        for i, colour in enumerate(colours):
            Image.new("RGB", (40, 30), colour).save(folder / f"frame{i}.png")  # not the model's size or shape
        (folder / "sentences.json").write_text(json.dumps(sentences))
    return root


def _catalog(tmp_path: Path, model, params: dict, version: str) -> DataCatalog:
    """The project's ``{family}_inference.*`` catalog entries, written under tmp_path."""
    entries = yaml.safe_load((ROOT / "conf/base/catalog_models.yml").read_text())
    config = {name: {**entry, "filepath": str(tmp_path / entry["filepath"])}
              for name, entry in entries.items() if name.startswith("{family}_inference.")}
    catalog = DataCatalog.from_config(config, save_version=version)
    catalog["story_continuation.cross_modal_vae.model"] = MemoryDataset(model)
    catalog["params:story_continuation_inference"] = MemoryDataset(params)
    return catalog


def _run(tmp_path: Path, model, params: dict, version: str) -> Path:
    SequentialRunner().run(create_inference_pipeline("story_continuation"), _catalog(tmp_path, model, params, version))
    return tmp_path / "data"


def test_pipeline_writes_rows_pngs_and_a_page(tmp_path, sequences_dir, one_thread):
    model = tiny_model(cross_modal=True, vae=True)
    # sampled words: an untrained model's greedy sentence is empty, a seeded draw is not
    params = {"sequences_dir": str(sequences_dir), "samples": 2, "seed": 3,
              "generation": {"strategy": "sample", "seed": 1, "max_new_tokens": 6}}
    version = "2026-01-01T00.00.00.000Z"
    data = _run(tmp_path, model, params, version)

    rows = json.loads((data / f"07_model_output/story_continuation_inference/outputs.json/{version}/outputs.json")
                      .read_text())
    assert [r["sequence"] for r in rows] == ["a_bright", "b_dark"]  # sorted by folder name
    for row in rows:
        assert row["sentences"] == SEQUENCES[row["sequence"]][1]
        assert isinstance(row["sentence"], str)
        assert row["frame"] == f"{row['sequence']}.predicted.png"
        assert row["samples"] == [f"{row['sequence']}.sample0.png", f"{row['sequence']}.sample1.png"]

    images = data / f"07_model_output/story_continuation_inference/images/{version}/images"
    assert sorted(p.name for p in images.iterdir()) == sorted(n for r in rows for n in (r["frame"], *r["samples"]))
    for path in images.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (SIZE, SIZE)

    page = (data / f"08_reporting/story_continuation_inference/page.html/{version}/page.html").read_text()

    # the written frame and sentence are the Continuer's for the same frames, sentences and settings
    bright = next(s for s in read_sequence_folder(sequences_dir) if s.name == "a_bright")
    settings = ContinuationInferenceParams(**params)
    direct = Continuer(model, device="cpu").continue_story(bright.frames, bright.sentences, samples=2, seed=3,
                                                           settings=settings.generation)
    assert rows[0]["sentence"] == direct["sentence"] and direct["sentence"].strip()
    assert f'<p class="story">{direct["sentence"]}</p>' in page
    with Image.open(images / "a_bright.predicted.png") as written:
        assert np.array_equal(np.asarray(written), np.asarray(direct["image"]))
    for k, sample in enumerate(direct["samples"]):
        with Image.open(images / f"a_bright.sample{k}.png") as written:
            assert np.array_equal(np.asarray(written), np.asarray(sample))

    assert "<title>Story continuations</title>" in page and "2 sequence(s); the model: cross_modal on, vae on" in page
    assert page.index("<h2>a_bright</h2>") < page.index("<h2>b_dark</h2>")
    for _, sentences in SEQUENCES.values():
        assert all(s in page for s in sentences)
    assert "frame 1 (frame0.png)" in page and "frame 4 (frame3.png)" in page
    assert "the predicted 5th frame" in page and "2 drawn 5th frames (seed 3)" in page
    assert page.count("data:image/png;base64,") == 2 * (4 + 1 + 2)  # per sequence: inputs, prediction, draws

    # the same seed gives the same draws in a new version
    again = _run(tmp_path, model, params, "2026-01-02T00.00.00.000Z")
    second = again / "07_model_output/story_continuation_inference/images/2026-01-02T00.00.00.000Z/images"
    assert all((second / p.name).read_bytes() == p.read_bytes() for p in images.iterdir())


def test_other_variants_draw_no_samples_and_a_text_only_model_no_frame(sequences_dir, one_thread):
    settings = ContinuationInferenceParams(sequences_dir=str(sequences_dir), samples=2,
                                           generation={"max_new_tokens": 4})
    sequences = read_sequence_folder(sequences_dir)
    rows, page, images = folder_inference(tiny_model(cross_modal=True), sequences, settings)
    assert [r["samples"] for r in rows] == [[], []] and sorted(images) == ["a_bright.predicted.png",
                                                                           "b_dark.predicted.png"]
    assert "drawn 5th frames" not in page and "vae off" in page
    rows, page, images = folder_inference(tiny_model(use_images=False), sequences, settings)
    assert [r["frame"] for r in rows] == [None, None] and images == {}
    assert all(isinstance(r["sentence"], str) for r in rows)
    assert "a text-only model draws no frame" in page and page.count("data:image/png;base64,") == 2 * 4


def test_a_bad_folder_stops_the_pipeline_with_the_readers_message(tmp_path, one_thread):
    bad = tmp_path / "sequences/only_three"
    bad.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(bad / f"{i}.png")
    (bad / "sentences.json").write_text(json.dumps(["a", "b", "c", "d"]))
    params = {"sequences_dir": str(tmp_path / "sequences")}
    with pytest.raises(ValueError, match=r"sequence only_three: holds 3 file\(s\)"):
        _run(tmp_path, tiny_model(cross_modal=True, vae=True), params, "2026-01-01T00.00.00.000Z")
    assert not (tmp_path / "data/07_model_output").exists()  # nothing half-written
