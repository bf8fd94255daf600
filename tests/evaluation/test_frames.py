"""The frame scorer: the palette detector, pixel metrics and the floors, on real scene-world sequences."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from multimodal_lab.data.scene_world import SceneWorldConfig, sequence_records
from multimodal_lab.evaluation import frames as F


@pytest.fixture(scope="module")
def sequences():
    config = SceneWorldConfig(n_sequences=40, damaged_fraction=0.0, bad_license_fraction=0.0)
    images, metadata = [], []
    for index in range(40):
        records = sequence_records(config, index)
        images.append([np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in records])
        md = records[-1]["metadata"]
        metadata.append(json.loads(md) if isinstance(md, str) else md)
    return np.stack(images), metadata  # (40, 5, 64, 64, 3)


def test_the_detector_finds_every_object_of_a_true_frame_where_it_is(sequences):
    images, metadata = sequences
    for frame, md in zip(images[:, 4], metadata):
        blobs = F.detect_objects(frame, [o["colour"] for o in md["objects"]])
        for obj in md["objects"]:
            nearest = min((b for b in blobs if b.colour == obj["colour"]),
                          key=lambda b: (b.x - obj["x"] * 64) ** 2 + (b.y - obj["y"] * 64) ** 2)
            # the blob's centroid lies inside the object (radius >= 0.12 * 64 = 7.7 px)
            assert np.hypot(nearest.x - obj["x"] * 64, nearest.y - obj["y"] * 64) < 0.5 * obj["radius"] * 64


def test_a_perfect_prediction_scores_perfectly(sequences):
    images, metadata = sequences
    scores = F.frame_metrics(images[:, 4], images[:, 4], metadata)
    assert scores["image_mae"] == 0.0 and scores["image_mse"] == 0.0
    assert scores["position_error_px"] == 0.0 and scores["detection_rate"] == 1.0
    assert scores["size_accuracy"] == 1.0 and scores["colour_accuracy"] == 1.0
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-4)


def test_a_shifted_frame_costs_its_shift_in_position_error(sequences):
    images, metadata = sequences
    true = images[:, 4]
    shifted = np.roll(true, 3, axis=2)  # every object 3 px to the right (the wrapped edge holds no object)
    scores = F.object_metrics(shifted, true, metadata)
    assert scores["position_error_px"] == pytest.approx(3.0, abs=0.05)
    assert scores["detection_rate"] == 1.0


def test_a_blank_prediction_finds_nothing_and_costs_the_image_side(sequences):
    images, metadata = sequences
    blank = np.full_like(images[:, 4], 128)
    scores = F.object_metrics(blank, images[:, 4], metadata)
    assert scores["detection_rate"] == 0.0
    assert scores["position_error_px"] == 64.0


def test_floors(sequences):
    images, _ = sequences
    inputs = images[:, :4]
    np.testing.assert_array_equal(F.copy_last(inputs), inputs[:, 3])
    f3, f4 = inputs[:, 2].astype(int), inputs[:, 3].astype(int)
    np.testing.assert_array_equal(F.linear_extrapolation(inputs), np.clip(2 * f4 - f3, 0, 255))
    mean = F.mean_of_inputs(inputs)
    assert np.abs(mean.astype(float) - inputs.mean(axis=1)).max() <= 0.5
    floor = F.mean_image(images[:, 4], 7)
    assert floor.shape == (7, 64, 64, 3) and (floor == floor[0]).all()
    # the mean image varies not at all across inputs; the true frames do
    assert F.spread(floor) == 0.0 and F.spread(images[:, 4]) > 0.1


def test_copying_the_last_frame_misses_moved_objects(sequences):
    """The floors are not straw men, and not perfect: copy-last is right about still objects only."""
    images, metadata = sequences
    scores = F.frame_metrics(F.copy_last(images[:, :4]), images[:, 4], metadata)
    assert 0.0 < scores["image_mae"] < 0.05
    assert scores["position_error_px"] > 3.0


def test_pixel_metrics_check_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        F.pixel_metrics(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
