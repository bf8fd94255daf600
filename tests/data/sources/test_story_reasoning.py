"""StoryReasoning parsing and windowing on a tiny dataset with the real schema, saved and reloaded."""
from __future__ import annotations

import io
import json
import struct
import zlib
from collections import Counter

import datasets
import pytest
from PIL import Image

from story_reasoning_fixtures import FEATURES, frame_text, make_story

from multimodal_lab.data.records import RECORD_COLUMNS
from multimodal_lab.data.sources.story_reasoning import (
    StoryReasoningConfig,
    grounded_entities,
    load_story_reasoning,
    parse_frames,
    strip_grounding,
    window_starts,
)

TRAIN_FRAMES = {"101": 12, "102": 5, "103": 4, "104": 10}  # the train split of the fixture, frames per story


def problem_of(record) -> str | None:
    return json.loads(record["metadata"]).get("source_problem")


def records_per_frame(frame) -> Counter:
    """(story id, frame of the story) -> how many records hold it."""
    return Counter((m["story_id"], m["source_frame"]) for m in map(json.loads, frame["metadata"]))


def every_frame(stories: dict[str, int]) -> set[tuple[str, int]]:
    return {(story, i) for story, count in stories.items() for i in range(count)}


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
def test_windows_records_and_problem_frames(saved, layout, tmp_path, caplog):
    config = StoryReasoningConfig(path=str(saved / layout), split="train", max_side=32,
                                  cache_dir=str(tmp_path / "hf_cache"))
    with caplog.at_level("INFO"):
        frame = load_story_reasoning(config)
    assert list(frame.columns) == list(RECORD_COLUMNS)
    # non-overlapping windows: every frame of every story is exactly one record
    assert len(frame) == sum(TRAIN_FRAMES.values())
    assert records_per_frame(frame) == Counter(every_frame(TRAIN_FRAMES))
    assert frame["record_id"].is_unique
    problems = frame[[problem_of(r) is not None for _, r in frame.iterrows()]]
    windows = frame.drop(problems.index)
    # 101: 12 frames -> 2 windows (frames 10, 11 left over); 102: 1; 103: too short; 104: 2nd window lacks frame 7's text
    assert sorted(windows["group_id"].unique()) == ["101-w0", "101-w1", "102-w0", "104-w0"]
    assert len(windows) == 4 * 5
    assert (windows.groupby("group_id")["frame_index"].apply(list) == [[0, 1, 2, 3, 4]] * 4).all()
    assert set(frame["corpus"]) == {"sequence"} and set(frame["source"]) == {"huggingface"}
    assert set(frame["license"]) == {"CC-BY-ND-4.0"}
    assert (frame["family_id"] == [json.loads(m)["story_id"] for m in frame["metadata"]]).all()
    second = windows[windows["group_id"] == "101-w1"].iloc[0]
    assert second["caption"] == "In frame 6 of 101, James walks past a table near the tower."
    meta = json.loads(second["metadata"])
    assert (meta["story_id"], meta["source_frame"], meta["window_start"], meta["frame_count"]) == ("101", 5, 5, 12)
    assert {"tag": "gdl", "ids": ["lm1"], "text": "the tower"} in meta["entities"]
    image = Image.open(io.BytesIO(second["image"]))
    assert image.format == "PNG" and image.size == (32, 24)
    assert image.getpixel((16, 12)) == pytest.approx((50, 100, 200), abs=2)  # frame 5's colour

    reasons = {(json.loads(r["metadata"])["story_id"], r["frame_index"]): problem_of(r) for _, r in problems.iterrows()}
    assert sorted(reasons) == [("101", 10), ("101", 11), ("103", 0), ("103", 1), ("103", 2), ("103", 3),
                               ("104", 5), ("104", 6), ("104", 7), ("104", 8), ("104", 9)]
    assert reasons["101", 11] == ("story 101 frame 11: falls after the story's last window (frames 5-9; "
                                  "window 5, stride 5)")
    assert reasons["103", 2] == "story 103 frame 2: the story has 4 frames; a window needs 5"
    assert reasons["104", 6] == ("story 104 frame 6: its window (frames 5-9) is not kept: frame 7 has no text "
                                 "(its <gdi image8> block is missing or empty)")
    assert reasons["104", 7].startswith("story 104 frame 7: its window (frames 5-9) is not kept")
    assert (problems["image"] == b"").all()
    assert (problems["group_id"] == problems["family_id"]).all()  # in the story's group and family
    assert problems.loc[problems["frame_index"] == 6, "caption"].tolist() == [
        "In frame 7 of 104, James walks past a table near the tower."]
    assert ("1 stories shorter than 5 frames, 1 windows with a frame lacking text, "
            "2 frames after or between windows") in caplog.text


def test_overlapping_windows_share_the_story_family(saved):
    config = StoryReasoningConfig(path=str(saved / "saved"), stride=1)
    frame = load_story_reasoning(config)
    per_frame = records_per_frame(frame)
    assert set(per_frame) == every_frame(TRAIN_FRAMES)  # no frame lost
    problems = frame[[problem_of(r) is not None for _, r in frame.iterrows()]]
    problem_frames = {(json.loads(r["metadata"])["story_id"], r["frame_index"]) for _, r in problems.iterrows()}
    # 101: starts 0-7 cover all 12 frames; 102: one window; 103: too short;
    # 104: the windows at 3, 4 and 5 hold frame 7 (no text), so frames 7-9 are in no kept window
    assert problem_frames == {("103", i) for i in range(4)} | {("104", 7), ("104", 8), ("104", 9)}
    assert all(per_frame[key] == 1 for key in problem_frames)  # a frame in no window: exactly one record
    assert per_frame["101", 5] == 5 and per_frame["104", 2] == 3  # in a window: one record per window
    assert len(frame) == 8 * 5 + 5 + 4 + 3 * 5 + 3
    story = frame[frame["family_id"] == "101"]
    assert story["group_id"].nunique() == 8 and set(story["family_id"]) == {"101"}
    assert frame["record_id"].is_unique


def test_stride_beyond_window_leaves_frames_between_windows(saved):
    frame = load_story_reasoning(StoryReasoningConfig(path=str(saved / "saved"), stride=7, max_stories=1))
    assert len(frame) == 12 and records_per_frame(frame) == Counter(every_frame({"101": 12}))
    assert sorted(frame["group_id"].unique()) == ["101", "101-w0", "101-w1"]
    gap = frame[frame["group_id"] == "101"]
    assert gap["frame_index"].tolist() == [5, 6]
    assert problem_of(gap.iloc[0]) == ("story 101 frame 5: falls between the windows of frames 0-4 and 7-11 "
                                       "(window 5, stride 7)")


def test_stride_max_stories_and_test_split(saved):
    overlapping = load_story_reasoning(StoryReasoningConfig(path=str(saved / "saved"), stride=1, max_stories=1))
    assert overlapping["group_id"].nunique() == 8  # 12 frames, stride 1 -> starts 0..7
    assert len(set(overlapping["record_id"])) == len(overlapping)
    test = load_story_reasoning(StoryReasoningConfig(path=str(saved / "saved"), split="test", max_side=None))
    assert test["group_id"].tolist() == ["900-w0"] * 5 + ["900"]  # frame 5 of 6 left over
    assert Image.open(io.BytesIO(test["image"].iloc[0])).size == (64, 48)


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` pixels with no pixel data (decoding it would fail)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IEND", b"")


def test_frames_outside_the_folder_or_over_limits_are_problems_in_their_window(tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    folder = tmp_path / "ds"
    (folder / "frames").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / "frames" / f"{i}.png")
    story = make_story("300", 5)
    story["images"] = [{"path": f"frames/{i}.png", "bytes": None} for i in range(3)] + [
        {"path": "../outside.png", "bytes": None}, {"path": None, "bytes": png_header(10_000, 5_000)}]
    dataset = datasets.Dataset.from_dict({k: [v] for k, v in story.items()}, features=FEATURES)
    (folder / "data").mkdir()
    # to_parquet keeps the paths as given; the batch size stops it from measuring the files
    dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"), batch_size=10)
    frame = load_story_reasoning(StoryReasoningConfig(path=str(folder), cache_dir=str(tmp_path / "hf_cache")))
    assert len(frame) == 5 and set(frame["group_id"]) == {"300-w0"} and set(frame["family_id"]) == {"300"}
    problems = [problem_of(r) for _, r in frame.iterrows()]
    assert problems[:3] == [None] * 3 and Image.open(io.BytesIO(frame["image"].iloc[2])).getpixel((0, 0)) == (2, 2, 2)
    assert problems[3] == ("story 300 frame 3: image file '../outside.png' points outside the dataset folder; "
                           "nothing was read")
    assert problems[4].startswith("story 300 frame 4: image is 10000x5000") and "above max_pixels" in problems[4]
    assert (frame["image"].iloc[3:] == b"").all()


def test_config_errors():
    with pytest.raises(ValueError, match="window"):
        StoryReasoningConfig(window=0)
    with pytest.raises(ValueError, match="strid"):
        StoryReasoningConfig.from_dict({"strid": 2})
    with pytest.raises(ValueError, match="max_pixels"):
        StoryReasoningConfig(max_pixels=0)
