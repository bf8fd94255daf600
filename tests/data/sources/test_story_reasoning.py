"""StoryReasoning parsing and windowing on a tiny dataset with the real schema, saved and reloaded."""
from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from multimodal_lab.data.records import RECORD_COLUMNS
from multimodal_lab.data.sources.story_reasoning import (
    StoryReasoningConfig,
    grounded_entities,
    load_story_reasoning,
    parse_frames,
    strip_grounding,
    window_starts,
)

FEATURES = datasets.Features({
    "story_id": datasets.Value("string"),
    "images": datasets.List(datasets.Image()),
    "frame_count": datasets.Value("int32"),
    "chain_of_thought": datasets.Value("string"),
    "story": datasets.Value("string"),
})


def frame_text(story: str, n: int) -> str:
    return (f'<gdi image{n + 1}>\n  In frame {n + 1} of {story}, <gdo char1>James</gdo> '
            f'<gda char1>walks</gda> past <gdo obj{n} bg2>a   table</gdo> near <gdl lm1>the tower</gdl>.\n</gdi>')


def make_story(story_id: str, frames: int, missing: tuple[int, ...] = ()) -> dict:
    return {
        "story_id": story_id,
        "images": [Image.new("RGB", (64, 48), (10 * i, 100, 200)) for i in range(frames)],
        "frame_count": frames,
        "chain_of_thought": "## Image 1\n### Characters\n| Character ID | Name |",
        "story": "\n".join(frame_text(story_id, i) for i in range(frames) if i not in missing),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The same tiny dataset saved both ways StoryReasoning can be provided offline."""
    root = tmp_path_factory.mktemp("story_reasoning")
    train_rows = [make_story("101", 12), make_story("102", 5), make_story("103", 4),
                  make_story("104", 10, missing=(7,))]
    columns = {key: [row[key] for row in train_rows] for key in FEATURES}
    train = datasets.Dataset.from_dict(columns, features=FEATURES)
    test = datasets.Dataset.from_dict({k: [v] for k, v in make_story("900", 6).items()}, features=FEATURES)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(root / "saved"))
    (root / "parquet" / "data").mkdir(parents=True)
    train.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"))
    test.to_parquet(str(root / "parquet" / "data" / "test-00000-of-00001.parquet"))
    return root


def test_parse_and_strip_tags():
    story = frame_text("s", 0) + "\n" + frame_text("s", 1)
    frames = parse_frames(story)
    assert sorted(frames) == [0, 1]
    assert strip_grounding(frames[1]) == "In frame 2 of s, James walks past a table near the tower."
    entities = grounded_entities(frames[0])
    assert [e["tag"] for e in entities] == ["gdo", "gda", "gdo", "gdl"]
    assert entities[2] == {"tag": "gdo", "ids": ["obj0", "bg2"], "text": "a table"}
    assert parse_frames("no tags at all") == {}


def test_window_starts():
    assert window_starts(12, 5) == [0, 5]
    assert window_starts(5, 5) == [0]
    assert window_starts(4, 5) == []
    assert window_starts(7, 5, stride=1) == [0, 1, 2]


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_windows_records_and_drops(saved, layout, tmp_path, caplog):
    config = StoryReasoningConfig(path=str(saved / layout), split="train", max_side=32,
                                  cache_dir=str(tmp_path / "hf_cache"))
    with caplog.at_level("INFO"):
        frame = load_story_reasoning(config)
    assert list(frame.columns) == list(RECORD_COLUMNS)
    # 101: 12 frames -> 2 windows (2 frames dropped); 102: 1; 103: too short; 104: 2nd window lacks frame 7's text
    assert sorted(frame["group_id"].unique()) == ["101-w0", "101-w1", "102-w0", "104-w0"]
    assert len(frame) == 4 * 5
    assert (frame.groupby("group_id")["frame_index"].apply(list) == [[0, 1, 2, 3, 4]] * 4).all()
    assert set(frame["corpus"]) == {"sequence"} and set(frame["source"]) == {"huggingface"}
    assert set(frame["license"]) == {"CC-BY-ND-4.0"}
    second = frame[frame["group_id"] == "101-w1"].iloc[0]
    assert second["caption"] == "In frame 6 of 101, James walks past a table near the tower."
    meta = json.loads(second["metadata"])
    assert (meta["story_id"], meta["source_frame"], meta["window_start"], meta["frame_count"]) == ("101", 5, 5, 12)
    assert {"tag": "gdl", "ids": ["lm1"], "text": "the tower"} in meta["entities"]
    image = Image.open(io.BytesIO(second["image"]))
    assert image.format == "PNG" and image.size == (32, 24)
    assert image.getpixel((16, 12)) == pytest.approx((50, 100, 200), abs=2)  # frame 5's colour
    assert "dropped 1 stories shorter than 5 frames and 1 windows" in caplog.text


def test_stride_max_stories_and_test_split(saved):
    overlapping = load_story_reasoning(StoryReasoningConfig(path=str(saved / "saved"), stride=1, max_stories=1))
    assert overlapping["group_id"].nunique() == 8  # 12 frames, stride 1 -> starts 0..7
    assert len(set(overlapping["record_id"])) == len(overlapping)
    test = load_story_reasoning(StoryReasoningConfig(path=str(saved / "saved"), split="test", max_side=None))
    assert test["group_id"].unique().tolist() == ["900-w0"]
    assert Image.open(io.BytesIO(test["image"].iloc[0])).size == (64, 48)


def test_config_errors():
    with pytest.raises(ValueError, match="window"):
        StoryReasoningConfig(window=0)
    with pytest.raises(ValueError, match="strid"):
        StoryReasoningConfig.from_dict({"strid": 2})
