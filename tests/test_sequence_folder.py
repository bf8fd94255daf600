"""Reading a folder of the user's sequences for story_continuation's folder inference."""
from __future__ import annotations

import json

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
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("ignored: not a folder")
    read = read_sequence_folder(tmp_path)
    assert [name for name, _, _ in read] == ["a", "b"]
    name, frames, sentences = read[0]
    assert sentences == ["w.", "x.", "y.", "z."]
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 60, 120, 180]  # 0.png .. 3.png


@pytest.mark.parametrize(("build", "message"), [
    (lambda p: _sequence(p / "s", frames=3), "needs exactly 4 readable images"),
    (lambda p: _sequence(p / "s", frames=5), "needs exactly 4 readable images"),
    (lambda p: _sequence(p / "s", sentences=None), "no sentences.json"),
    (lambda p: _sequence(p / "s", sentences=("only.", "three.", "here.")), "JSON list of 4 strings"),
    (lambda p: (_sequence(p / "s"), (p / "s/sentences.json").write_text("[oops")), "not valid JSON"),
    (lambda p: (_sequence(p / "s", frames=3), (p / "s/3.png").write_bytes(b"not an image")),
     "found 3 readable of 4"),
    (lambda p: None, "holds no sequence folder"),
])
def test_bad_sequences_fail_naming_what_to_fix(tmp_path, build, message):
    build(tmp_path)
    with pytest.raises(ValueError, match=message):
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
