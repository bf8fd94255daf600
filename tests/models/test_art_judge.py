"""The art judge: labels, a judge that learns to read real engravings, save/load."""
from __future__ import annotations

import pytest
import torch
from art_fixtures import engravings

from multimodal_lab.models.art_judge import ArtJudge, ArtJudgeConfig, objects_of, set_accuracy, train_judge


def test_object_sets_and_labels_round_trip():
    judge = ArtJudge(ArtJudgeConfig(image_size=16, width=4))
    sets = [frozenset({("star", "small"), ("ring", "large")}), frozenset()]
    labels = judge.labels(sets)
    assert labels.shape == (2, len(judge.config.shapes))
    assert labels[0, judge.config.shapes.index("ring")] == 3 and labels[1].sum() == 0
    assert judge.to_objects(labels) == sets
    with pytest.raises(ValueError, match="knows shapes"):
        judge.labels([frozenset({("blob", "small")})])
    assert objects_of('{"objects": [{"shape": "star", "size": "large", "x": 0.5}]}') == {("star", "large")}


def test_shapes_of_the_judge():
    judge = ArtJudge(ArtJudgeConfig(image_size=32, width=8))
    images = torch.rand(3, 3, 32, 32)
    assert judge(images).shape == (3, len(judge.config.shapes), 4)
    assert judge.features(images).shape == (3, judge.num_features) == (3, 64)


@pytest.mark.slow
def test_the_judge_learns_to_read_engravings():
    """Trained on 2,700 real engravings for 8 epochs (~20 s), it reads held-out ones far better than
    the majority class (every shape absent) and than an untrained judge."""
    images, objects = engravings(3000, 64)
    config = ArtJudgeConfig(image_size=64, width=16, epochs=8, batch_size=64, lr=0.004)
    judge, history = train_judge(images[:2700], objects[:2700], config, images[2700:], objects[2700:], log_every=0)
    losses = [row["train_loss"] for row in history["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    trained = set_accuracy(judge, images[2700:], objects[2700:])
    untrained = set_accuracy(ArtJudge(config).eval(), images[2700:], objects[2700:])
    majority = 1 - sum(len(o) for o in objects[2700:]) / (300 * len(config.shapes))  # "absent" everywhere
    assert trained["shape_accuracy"] > majority + 0.05 and trained["shape_accuracy"] > untrained["shape_accuracy"] + 0.05
    assert trained["set_accuracy"] > 0.15 > untrained["set_accuracy"]
    assert history["epochs"][-1]["val_set_accuracy"] == trained["set_accuracy"]


def test_train_judge_refuses_bad_input():
    images, objects = engravings(4, 32)
    with pytest.raises(ValueError, match="one object set per image"):
        train_judge(images[:4], objects[:3], ArtJudgeConfig(image_size=32))
    with pytest.raises(ValueError, match="configured for 64 px"):
        train_judge(images[:4], objects[:4], ArtJudgeConfig(image_size=64))
    with pytest.raises(ValueError, match="3 positive counts"):
        ArtJudgeConfig(blocks=[1, 1])


def test_save_and_load_give_the_same_readings(tmp_path):
    torch.manual_seed(0)
    judge = ArtJudge(ArtJudgeConfig(image_size=16, width=4)).eval()
    images = torch.rand(5, 3, 16, 16)
    judge.save_pretrained(tmp_path / "judge")
    loaded = ArtJudge.from_pretrained(tmp_path / "judge")
    torch.testing.assert_close(loaded(images), judge(images))
    assert loaded.read(images) == judge.read(images)
