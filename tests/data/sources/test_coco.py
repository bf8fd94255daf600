"""The COCO-format captions source on a tiny COCO folder built in the test's temporary directory."""
from __future__ import annotations

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data.images import ImagePolicy
from multimodal_lab.data.ingest import IngestConfig, ingest
from multimodal_lab.data.records import RECORD_COLUMNS, metadata_of, references_of, source_problem
from multimodal_lab.data.sources.coco import COCOSourceConfig, find_annotations, load_coco
from multimodal_lab.pipelines.sources.nodes import load_coco as load_coco_node

BY = {"id": 4, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"}
NC = {"id": 2, "name": "Attribution-NonCommercial License", "url": "http://creativecommons.org/licenses/by-nc/2.0/"}
COMMONS = {"id": 7, "name": "No known copyright restrictions", "url": "http://flickr.com/commons/usage/"}

#: Image 7's captions in file order, with their annotation ids: the source orders them by id.
CAPTIONS_7 = [
    (305, "A red square\tnext to a   blue one."),
    (101, "  A small &amp; red box.  "),
    (999, "Two coloured squares."),
    (150, "Red and blue <b>blocks</b> on grey."),
    (220, "Cafe\u0301 colours in a grid."),
]
REFERENCES_7 = [
    "A small & red box.",
    "Red and blue blocks on grey.",
    "Caf\u00e9 colours in a grid.",
    "A red square next to a blue one.",
    "Two coloured squares.",
]


def image_bytes(seed: int, fmt: str = "PNG", size: int = 40) -> bytes:
    """Blocky noise, so images of different seeds are not near duplicates."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    array = np.kron(blocks, np.ones((size // 4, size // 4, 1), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def captions_file() -> dict:
    images = [  # deliberately not in id order
        {"id": 42, "file_name": "b.jpg", "license": 2, "coco_url": "http://images.example.org/val2017/b.jpg",
         "flickr_url": "http://farm.example.org/b.jpg"},
        {"id": 7, "file_name": "a.png", "license": 4, "flickr_url": "http://farm.example.org/a.jpg"},
        {"id": 9, "file_name": "c.png"},                          # no licence given
        {"id": 13, "file_name": "missing.png", "license": 4},     # listed, not on disk
        {"id": 15, "file_name": "../escape.png", "license": 4},   # tries to leave the folder
        {"id": 20, "file_name": "sub/d.png", "license": 7},       # no caption at all
    ]
    annotations = [{"id": ann, "image_id": 7, "caption": text} for ann, text in CAPTIONS_7]
    next_id = 1000
    for image_id in (42, 9, 13, 15):
        for k in range(5):
            annotations.append({"id": next_id, "image_id": image_id, "caption": f"Image {image_id} caption {k}."})
            next_id += 1
    annotations.append({"id": 5000, "image_id": 12345, "caption": "An image nobody listed."})
    return {
        "info": {"description": "Tiny COCO test set", "year": 2017},
        "licenses": [NC, BY, COMMONS],
        "images": images,
        "annotations": annotations,
    }


@pytest.fixture
def coco(tmp_path):
    """``<tmp>/coco/val2017`` (images) and ``<tmp>/coco/annotations/captions_val2017.json``."""
    root = tmp_path / "coco"
    images = root / "val2017"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(image_bytes(0))
    (images / "b.jpg").write_bytes(image_bytes(1, "JPEG"))
    (images / "c.png").write_bytes(image_bytes(2))
    (images / "sub" / "d.png").write_bytes(image_bytes(3))
    (root / "escape.png").write_bytes(image_bytes(4))  # exists, outside the images folder
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(captions_file()), encoding="utf-8")
    return images


def by_image_id(records) -> dict[int, dict]:
    return {metadata_of(r)["coco_image_id"]: r for r in records.to_dict("records")}


def test_one_record_per_listed_image_with_all_captions_as_references(coco, caplog):
    with caplog.at_level(logging.INFO, logger="multimodal_lab.data.sources.coco"):
        records = load_coco(COCOSourceConfig(path=str(coco), progress=False))

    assert list(records.columns) == list(RECORD_COLUMNS)
    assert len(records) == 6  # every listed image, the missing and the escaping ones included
    assert [metadata_of(r)["coco_image_id"] for r in records.to_dict("records")] == [7, 9, 13, 15, 20, 42]
    assert records["group_id"].tolist() == ["coco:7", "coco:9", "coco:13", "coco:15", "coco:20", "coco:42"]
    assert records["family_id"].tolist() == records["group_id"].tolist()
    assert (records["source"] == "coco").all() and (records["corpus"] == "scene").all()
    assert records["record_id"].is_unique

    rows = by_image_id(records)
    first = rows[7]
    assert first["caption"] == "A small & red box."  # the caption with the lowest annotation id
    meta = metadata_of(first)
    assert meta["references"] == REFERENCES_7  # annotation-id order, each normalised
    assert references_of(first) == REFERENCES_7 and references_of(first)[0] == first["caption"]
    assert meta["file"] == "a.png" and meta["annotations_file"] == "captions_val2017.json"
    assert first["image"] == (coco / "a.png").read_bytes()  # kept as read: ingest normalises
    assert first["url"] == "http://farm.example.org/a.jpg"
    assert first["attribution"] == ("Tiny COCO test set; Attribution License "
                                    "(http://creativecommons.org/licenses/by/2.0/)")
    assert source_problem(first["metadata"]) is None

    assert rows[42]["url"] == "http://images.example.org/val2017/b.jpg"  # coco_url before flickr_url
    assert metadata_of(rows[42])["references"] == [f"Image 42 caption {k}." for k in range(5)]
    assert rows[9]["url"] == "c.png"  # no URL in the file: the file name
    assert pd.isna(rows[20]["caption"]) and metadata_of(rows[20])["references"] == []  # no caption, still a record
    assert rows[20]["image"] == (coco / "sub" / "d.png").read_bytes()

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.WARNING and "1 caption(s)" in m and "12345" in m and "not in its images" in m
               for level, m in messages)
    assert any(level == logging.WARNING and "2 image(s)" in m and "cannot be used" in m for level, m in messages)


def test_licences_are_mapped_to_spdx_ids(coco):
    rows = by_image_id(load_coco(COCOSourceConfig(path=str(coco), progress=False)))
    assert rows[7]["license"] == "CC-BY-2.0"
    assert rows[42]["license"] == "CC-BY-NC-2.0"
    assert pd.isna(rows[9]["license"])  # the file gives none and no fallback is configured
    assert rows[20]["license"] == "No known copyright restrictions"  # not recognised: left to the licence stage
    assert metadata_of(rows[7])["coco_license"] == BY

    fallback = by_image_id(load_coco(COCOSourceConfig(path=str(coco), license="CC0-1.0", progress=False)))
    assert fallback[9]["license"] == "CC0-1.0" and fallback[7]["license"] == "CC-BY-2.0"

    mapped = by_image_id(load_coco(COCOSourceConfig(path=str(coco), license_map={7: "Public Domain Mark 1.0"},
                                                    progress=False)))
    assert mapped[20]["license"] == "PDM-1.0"
    by_name = by_image_id(load_coco(COCOSourceConfig(
        path=str(coco), license_map={"no known copyright restrictions": "PDM-1.0"}, progress=False)))
    assert by_name[20]["license"] == "PDM-1.0"


def test_missing_and_escaping_files_become_records_with_a_problem(coco):
    rows = by_image_id(load_coco(COCOSourceConfig(path=str(coco), progress=False)))
    missing, escaping = rows[13], rows[15]
    assert source_problem(missing["metadata"]) == (
        "captions_val2017.json image 13: image file 'missing.png' does not exist in the dataset folder")
    assert source_problem(escaping["metadata"]) == (
        "captions_val2017.json image 15: image file '../escape.png' points outside the dataset folder; "
        "nothing was read")
    for row in (missing, escaping):
        assert row["image"] == b""
        assert row["caption"] == f"Image {metadata_of(row)['coco_image_id']} caption 0."  # texts kept
        assert row["group_id"] == f"coco:{metadata_of(row)['coco_image_id']}"


def test_symlink_out_of_the_folder_is_not_followed(coco):
    outside = coco.parent / "escape.png"
    (coco / "a.png").unlink()
    (coco / "a.png").symlink_to(outside)
    rows = by_image_id(load_coco(COCOSourceConfig(path=str(coco), progress=False)))
    assert "points outside the dataset folder" in source_problem(rows[7]["metadata"])
    assert rows[7]["image"] == b""


def test_ingest_rejects_what_cannot_be_used_with_a_reason(coco):
    records = load_coco(COCOSourceConfig(path=str(coco), progress=False))
    config = IngestConfig(license_allow=["CC-BY-2.0"], image=ImagePolicy(size=(32, 32), min_side=8))
    accepted, rejected = ingest(records, config)
    assert by_image_id(accepted).keys() == {7}
    reasons = {metadata_of(r)["coco_image_id"]: (r["stage"], r["reason"]) for r in rejected.to_dict("records")}
    assert reasons[13][0] == reasons[15][0] == "source"
    assert reasons[42] == ("license", "license CC-BY-NC-2.0 not in allow-list")
    assert reasons[9] == ("license", "license missing")
    assert reasons[20] == ("license", "license 'No known copyright restrictions' not recognised")
    assert metadata_of(accepted.iloc[0])["references"] == REFERENCES_7  # references survive ingest


def test_max_images_takes_the_first_images_by_id_and_max_side_downscales(coco):
    records = load_coco(COCOSourceConfig(path=str(coco), max_images=2, max_side=16, progress=False))
    assert records["group_id"].tolist() == ["coco:7", "coco:9"]
    image = Image.open(io.BytesIO(records["image"].iloc[0]))
    assert image.format == "PNG" and image.size == (16, 16)


def test_annotations_are_found_next_to_the_images(coco, tmp_path):
    expected = coco.parent / "annotations" / "captions_val2017.json"
    assert find_annotations(coco) == expected
    # COCO 2017 ships train and val captions side by side: the one named after the folder wins
    (coco.parent / "annotations" / "captions_train2017.json").write_text('{"images": []}', encoding="utf-8")
    assert find_annotations(coco) == expected
    # a file inside the images folder is found as well
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "captions_mine.json").write_text('{"images": []}', encoding="utf-8")
    assert find_annotations(flat) == flat / "captions_mine.json"
    assert load_coco(COCOSourceConfig(path=str(flat), progress=False)).empty


def test_no_or_several_captions_files_say_where_they_looked(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_coco(folder)
    message = str(info.value)
    assert "no captions_*.json found" in message and "params:sources.coco.annotations" in message
    for place in (folder, folder / "annotations", tmp_path / "annotations"):
        assert str(place) in message
    for name in ("captions_a.json", "captions_b.json"):
        (folder / name).write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"several captions files .*captions_a\.json, .*captions_b\.json"):
        find_annotations(folder)


def test_files_that_are_not_coco_captions_stop_the_run_naming_them(tmp_path):
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match="instances_val2017.json: none of its 1 annotations has a 'caption'"):
        load_coco(tmp_path, annotations=str(path))
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances_val2017.json is not valid JSON"):
        load_coco(tmp_path, annotations=str(path))
    path.write_text('{"annotations": []}')
    with pytest.raises(ValueError, match="'images' must be a list"):
        load_coco(tmp_path, annotations=str(path))
    with pytest.raises(FileNotFoundError, match="COCO captions file .*nope.json not found"):
        load_coco(tmp_path, annotations=str(tmp_path / "nope.json"))


def test_unusable_image_entries_still_become_records(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(5))
    data = {"images": [{"id": 1, "file_name": "a.png", "license": 99}, {"id": 1, "file_name": "a.png"}, {"file_name": "a.png"},
                       {"id": 2}, "nonsense"],
            "annotations": [{"id": 1, "image_id": 1, "caption": "One."}, {"id": 2, "image_id": 1, "caption": 3}]}
    (tmp_path / "captions_x.json").write_text(json.dumps(data), encoding="utf-8")
    records = load_coco(COCOSourceConfig(path=str(tmp_path), license="CC0-1.0", progress=False))
    problems = [source_problem(m) for m in records["metadata"]]
    assert len(records) == 5 and records["record_id"].is_unique
    assert problems[0] is None and records["caption"].iloc[0] == "One."
    assert records["license"].iloc[0] == "CC0-1.0"  # licence id 99 is not in the file: the fallback
    assert problems[1] == "captions_x.json images[1]: image id 1 is listed twice (first at images[0])"
    assert problems[2] == "captions_x.json images[3]: image 2 has no 'file_name'"
    assert problems[3] == ("captions_x.json images[2]: 'id' None is not an integer or a string; the image "
                           "cannot be matched to its captions")
    assert problems[4] == "captions_x.json images[4]: expected a JSON object, got str"


def test_config_rejects_unknown_licences_and_bad_limits():
    with pytest.raises(ValueError, match="license 'CC-BY-5.0' is not a recognised licence"):
        COCOSourceConfig(path="x", license="CC-BY-5.0")
    with pytest.raises(ValueError, match=r"license_map\[7\] = 'free' is not a recognised licence"):
        COCOSourceConfig(path="x", license_map={7: "free"})
    with pytest.raises(ValueError, match="max_images=-1"):
        COCOSourceConfig(path="x", max_images=-1)


def test_pipeline_node_is_switched_and_checks_its_parameters(coco):
    frame = load_coco_node({"enabled": False, "path": "anything"})
    assert frame.empty and list(frame.columns) == list(RECORD_COLUMNS)
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['path'\] in params:sources.coco"):
        load_coco_node({"enabled": True})
    with pytest.raises(ValueError, match=r"unknown parameter 'max_image' \(did you mean 'max_images'\?\)"):
        load_coco_node({"enabled": True, "path": str(coco), "max_image": 2})
    with pytest.raises(TypeError, match="params:sources.coco.max_images' must be an integer"):
        load_coco_node({"enabled": True, "path": str(coco), "max_images": "2"})
    records = load_coco_node({"enabled": True, "path": str(coco), "license_map": {7: "PDM-1.0"}, "progress": False})
    assert len(records) == 6 and by_image_id(records)[20]["license"] == "PDM-1.0"
