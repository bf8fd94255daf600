"""Reading a folder of the user's sequences for story_continuation's folder inference."""
from __future__ import annotations

import json
import warnings

import pytest
from PIL import Image

from multimodal_lab.inference import ContinuationInferenceParams, read_sequence_folder


def _sequence(folder, frames=4, sentences=("one.", "two.", "three.", "four.")):
    folder.mkdir(parents=True)
    for i in range(frames):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(folder / f"{i}.png")
    if sentences is not None:
        (folder / "sentences.json").write_text(json.dumps(list(sentences)))
    return folder


def test_sequences_in_name_order_with_frames_in_file_order(tmp_path):
    _sequence(tmp_path / "b")
    _sequence(tmp_path / "a", sentences=("w.", "x.", "y.", "z."))
    (tmp_path / "a/.DS_Store").write_bytes(b"\0\1")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("ignored: not a folder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good folder reads without a word (the sidecar is no skipped image)
        read = read_sequence_folder(tmp_path)
    assert [s.name for s in read] == ["a", "b"]
    first = read[0]
    assert first.sentences == ["w.", "x.", "y.", "z."]
    assert first.files == ["0.png", "1.png", "2.png", "3.png"]
    assert [f.getpixel((0, 0))[0] for f in first.frames] == [0, 60, 120, 180]  # 0.png .. 3.png
    assert all(f.size == (16, 16) for f in first.frames)


def _unreadable(p):
    _sequence(p / "s", frames=3)
    (p / "s/3.png").write_bytes(b"not an image")


def _bad_json(p):
    _sequence(p / "s")
    (p / "s/sentences.json").write_text("[oops")


@pytest.mark.parametrize(("build", "message"), [
    (lambda p: _sequence(p / "s", frames=3),
     r"sequence s: holds 3 file\(s\) besides sentences.json \(0.png, 1.png, 2.png\); it needs exactly 4 images"),
    (lambda p: _sequence(p / "s", frames=5), r"sequence s: holds 5 file\(s\)"),
    (lambda p: _sequence(p / "s", frames=0), r"holds 0 file\(s\) besides sentences.json \(none\)"),
    (lambda p: _sequence(p / "s", sentences=None), "sequence s: no sentences.json; write its 4 sentences"),
    (lambda p: _sequence(p / "s", sentences=("only.", "three.", "here.")), r"holds 3 sentence\(s\); it needs exactly 4"),
    (lambda p: (_sequence(p / "s"), (p / "s/sentences.json").write_text('{"a": 1}')), "must be a JSON list of 4 strings"),
    (lambda p: (_sequence(p / "s"), (p / "s/sentences.json").write_text("[1, 2, 3, 4]")), "JSON list of 4 strings"),
    (_bad_json, "sentences.json is not valid UTF-8 JSON"),
    (_unreadable, r"sequence s: frame 3.png cannot be read \(ImageRejected: .*\); replace it with a PNG or JPEG"),
    (lambda p: None, "holds no sequence folder; put each sequence's 4 images"),
])
def test_bad_sequences_fail_naming_what_to_fix(tmp_path, build, message):
    build(tmp_path)
    with pytest.raises(ValueError, match=message):
        read_sequence_folder(tmp_path)


def test_one_sequence_passed_directly_is_told_to_move_into_a_sub_folder(tmp_path):
    _sequence(tmp_path / "s")
    with pytest.raises(ValueError, match="looks like one sequence: move it into a sub-folder"):
        read_sequence_folder(tmp_path / "s")


def test_a_bad_sequence_stops_the_read_whatever_its_place(tmp_path):
    _sequence(tmp_path / "a")
    _sequence(tmp_path / "z", frames=2)
    with pytest.raises(ValueError, match="sequence z:"):
        read_sequence_folder(tmp_path)


def test_missing_folder_and_bad_params(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sequence_folder(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        read_sequence_folder(tmp_path / "file")
    with pytest.raises(ValueError, match="samples must be >= 0"):
        ContinuationInferenceParams(sequences_dir="x", samples=-1)
    assert ContinuationInferenceParams(sequences_dir="x", generation={"strategy": "greedy"}).generation.strategy == "greedy"
