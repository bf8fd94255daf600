from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from multimodal_lab.data.images import ImagePolicy
from multimodal_lab.data.ingest import IngestConfig, ingest
from multimodal_lab.data.records import RECORD_COLUMNS, metadata_of, source_problem
from multimodal_lab.data.sources.local_folder import load_local_folder


def png(seed: int, size: int = 40) -> bytes:
    """Blocky noise, so images of different seeds are not near duplicates."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    array = np.kron(blocks, np.ones((size // 4, size // 4, 1), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "sub" / "b.png").write_bytes(png(1))
    (tmp_path / "unlisted.jpg").write_bytes(png(2))
    write_jsonl(tmp_path / "metadata.jsonl", [
        {"file": "a.png", "caption": "A red square.", "story": "It was red. It stayed red.",
         "license": "CC BY 4.0", "author": "Ann", "url": "https://example.org/a", "camera": "x1"},
        {"file": "sub/b.png", "caption": "A green square.", "license": "CC0",
         "attribution": "Bo (photo)", "author": "ignored", "group_id": "walk", "frame_index": 2},
        {"file": "gone.png", "caption": "Missing.", "license": "CC0"},
    ])
    return tmp_path


def test_jsonl_folder_becomes_records(folder, caplog):
    with caplog.at_level(logging.INFO, logger="multimodal_lab.data.sources.local_folder"):
        records = load_local_folder(folder, corpus="photos")

    assert list(records.columns) == list(RECORD_COLUMNS)
    assert len(records) == 3
    a, b, gone = records.to_dict("records")
    assert a["image"] == (folder / "a.png").read_bytes()
    assert (a["caption"], a["story"], a["license"]) == ("A red square.", "It was red. It stayed red.", "CC BY 4.0")
    assert (a["attribution"], a["url"], a["source"], a["corpus"]) == (
        "Ann", "https://example.org/a", "local_folder", "photos"
    )
    assert metadata_of(a) == {"file": "a.png", "camera": "x1"}
    assert a["group_id"] == a["record_id"]  # standalone image: its own group
    assert (b["attribution"], b["url"], b["group_id"], b["frame_index"]) == ("Bo (photo)", "sub/b.png", "walk", 2)
    assert gone["image"] == b"" and gone["url"] == "metadata.jsonl:3"
    assert source_problem(gone["metadata"]) == "metadata.jsonl line 3: file 'gone.png' does not exist"

    messages = [r.getMessage() for r in caplog.records]
    assert any("1 sidecar row(s)" in m and "cannot be used" in m and r.levelno == logging.WARNING
               for m, r in zip(messages, caplog.records))
    assert any(m.startswith("1 image(s)") and "ignored" in m for m in messages)


def test_missing_file_is_rejected_by_ingest_with_a_reason(folder):
    records = load_local_folder(folder)
    accepted, rejected = ingest(records, IngestConfig(image=ImagePolicy(size=(32, 32), min_side=8)))
    assert len(accepted) == 2
    assert rejected["stage"].tolist() == ["source"]
    assert rejected["reason"].tolist() == ["metadata.jsonl line 3: file 'gone.png' does not exist"]


def test_csv_sidecar_with_quotes_and_multiline_story(tmp_path):
    (tmp_path / "a.png").write_bytes(png(3))
    (tmp_path / "metadata.csv").write_text(
        'file,caption,story,license,author\n'
        'a.png,"A dot, small.","Line one.\nLine two.",CC0,\n',
        encoding="utf-8",
    )
    records = load_local_folder(tmp_path, sidecar="metadata.csv")
    row = records.iloc[0]
    assert row["caption"] == "A dot, small."
    assert row["story"] == "Line one. Line two."  # one text normalisation: whitespace collapsed
    assert row["license"] == "CC0"
    assert row["attribution"] == ""  # empty cell = not given


def test_missing_folder_says_what_to_do(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="source folder .*nope does not exist; set"):
        load_local_folder(missing)


def test_missing_sidecar(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.jsonl not found"):
        load_local_folder(tmp_path)


def _only_problem(records) -> str:
    problems = [source_problem(m) for m in records["metadata"]]
    assert len(problems) == 1 and problems[0], problems
    return problems[0]


def test_malformed_json_line_becomes_a_record_naming_file_and_line(tmp_path):
    (tmp_path / "a.png").write_bytes(png(5))
    (tmp_path / "metadata.jsonl").write_text('{"file": "a.png", "license": "CC0"}\n{"file": "b.png",\n',
                                             encoding="utf-8")
    records = load_local_folder(tmp_path)
    assert len(records) == 2 and source_problem(records.at[0, "metadata"]) is None
    assert source_problem(records.at[1, "metadata"]).startswith("metadata.jsonl line 2: invalid JSON")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"caption": "no file"}\n', "line 1: 'file' is missing"),
        ('\n["a.png"]\n', "line 2: expected a JSON object"),
        ('{"file": "../outside.png"}\n', "line 1: file '../outside.png' points outside"),
        ('{"file": "/etc/hostname"}\n', "line 1: file '/etc/hostname' points outside"),
        ('{"file": "a.png", "frame_index": "two"}\n', "line 1: frame_index 'two' is not an integer"),
        ('{"file": "a.png", "caption": 3}\n', "line 1: 'caption' must be a string"),
        ('{"file": "sub"}\n', "line 1: 'sub' is not a file"),
    ],
)
def test_bad_rows_become_records_naming_the_line(tmp_path, content, match):
    (tmp_path / "a.png").write_bytes(png(6))
    (tmp_path / "sub").mkdir()
    (tmp_path / "metadata.jsonl").write_text(content, encoding="utf-8")
    records = load_local_folder(tmp_path)
    assert match in _only_problem(records)
    assert records.at[0, "image"] == b""  # nothing outside the folder (or unusable) was read


def test_symlink_out_of_the_folder_is_not_followed(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(7))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "link.png").symlink_to(outside)
    (folder / "metadata.jsonl").write_text('{"file": "link.png", "license": "CC0"}\n', encoding="utf-8")
    records = load_local_folder(folder)
    assert "points outside the source folder" in _only_problem(records)
    assert records.at[0, "image"] == b""


def test_files_above_max_bytes_are_not_read(tmp_path):
    from multimodal_lab.data.sources.local_folder import LocalFolderConfig

    (tmp_path / "a.png").write_bytes(png(8))
    (tmp_path / "metadata.jsonl").write_text('{"file": "a.png", "license": "CC0"}\n', encoding="utf-8")
    records = load_local_folder(LocalFolderConfig(path=str(tmp_path), max_bytes=100))
    assert "above max_bytes 100; not read" in _only_problem(records)


def test_csv_row_with_too_many_fields(tmp_path):
    (tmp_path / "metadata.csv").write_text("file,caption\na.png,x\nb.png,y,z\n", encoding="utf-8")
    records = load_local_folder(tmp_path, sidecar="metadata.csv")
    problems = [source_problem(m) for m in records["metadata"]]
    assert problems[0] == "metadata.csv line 2: file 'a.png' does not exist"
    assert problems[1].startswith("metadata.csv line 3: more fields than the header")


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path):
    (tmp_path / "a.png").write_bytes(png(9))
    (tmp_path / "metadata.jsonl").write_bytes('{"file": "a.png", "license": "CC0"}\n'.encode("utf-8-sig"))
    records = load_local_folder(tmp_path)
    assert source_problem(records.at[0, "metadata"]) is None and records.at[0, "license"] == "CC0"


def test_non_utf8_and_unknown_format(tmp_path):
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file": "\xff.png"}\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        load_local_folder(tmp_path)
    (tmp_path / "metadata.xml").write_text("<x/>", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown format"):
        load_local_folder(tmp_path, sidecar="metadata.xml")


def test_empty_sidecar_gives_empty_records(tmp_path):
    (tmp_path / "metadata.jsonl").write_text("\n", encoding="utf-8")
    records = load_local_folder(tmp_path)
    assert records.empty and list(records.columns) == list(RECORD_COLUMNS)
