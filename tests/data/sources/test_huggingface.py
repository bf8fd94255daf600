"""The generic Hugging Face source on small datasets saved locally and loaded back."""
from __future__ import annotations

import io
import json
import os
import struct
import zlib

import datasets
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data.records import RECORD_COLUMNS
from multimodal_lab.data.sources.huggingface import (
    HFSourceConfig,
    HFSourceError,
    RowProblem,
    encode_image,
    is_saved_dataset_dir,
    load_hf_records,
)


def png(color, size=(20, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in its header and holds no pixel data.

    Decoding it fails, so a record that names a limit (not a decode error) proves the limit
    was applied before decoding.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IEND", b"")


def problem_of(record) -> str | None:
    return json.loads(record["metadata"]).get("source_problem")


@pytest.fixture
def captions_dataset() -> datasets.Dataset:
    features = datasets.Features({
        "img": datasets.Image(),
        "text": datasets.Value("string"),
        "lic": datasets.Value("string"),
        "author": datasets.Value("string"),
        "album": datasets.Value("int64"),
        "note": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(
        {
            "img": [Image.new("RGB", (40, 20), (200, 10, 10)), {"bytes": png((10, 200, 10)), "path": None},
                    {"bytes": b"not an image", "path": None}],
            "text": ["A red box.", "  ", "Broken."],
            "lic": ["CC-BY-4.0", None, ""],
            "author": ["Ann", None, "Cid"],
            "album": [7, 7, 8],
            "note": ["x", "y", "z"],
        },
        features=features,
    )


MAPPING = {"image": "img", "caption": "text", "license": "lic", "attribution": "author", "group_id": "album"}


def test_saved_dataset_dir_maps_columns_and_defaults(tmp_path, captions_dataset):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": captions_dataset}).save_to_disk(str(folder))
    assert is_saved_dataset_dir(folder) and not is_saved_dataset_dir(tmp_path)
    config = HFSourceConfig(path=str(folder), columns=MAPPING, license="CC0-1.0", attribution="The archive",
                            corpus="boxes", metadata_columns=["note"], max_side=16)
    frame = load_hf_records(config)
    assert list(frame.columns) == list(RECORD_COLUMNS) and len(frame) == 3
    assert (frame["source"] == "huggingface").all() and (frame["corpus"] == "boxes").all()
    assert frame["license"].tolist() == ["CC-BY-4.0", "CC0-1.0", "CC0-1.0"]  # dataset licence fills gaps
    assert frame["attribution"].tolist() == ["Ann", "The archive", "Cid"]
    assert frame["caption"].iloc[0] == "A red box." and pd.isna(frame["caption"].iloc[1])
    assert frame["group_id"].tolist() == ["7", "7", "8"]
    first = decoded(frame["image"].iloc[0])
    assert first.format == "PNG" and first.size == (16, 8)  # downscaled, aspect kept
    assert first.getpixel((8, 4)) == pytest.approx((200, 10, 10), abs=2)
    meta = [json.loads(m) for m in frame["metadata"]]
    assert meta[0]["note"] == "x" and meta[0]["row"] == 0 and "image_error" not in meta[0]
    # the undecodable image is kept raw, with the reason, for ingest to reject
    assert frame["image"].iloc[2] == b"not an image" and "image_error" in meta[2]


def test_parquet_folder_and_max_rows(tmp_path, captions_dataset):
    folder = tmp_path / "pq"
    (folder / "data").mkdir(parents=True)
    captions_dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    config = HFSourceConfig(path=str(folder), columns={"image": "img", "caption": "text"}, max_rows=2,
                            cache_dir=str(tmp_path / "hf_cache"))
    frame = load_hf_records(config)
    assert len(frame) == 2
    assert decoded(frame["image"].iloc[1]).getpixel((0, 0)) == (10, 200, 10)
    assert frame["license"].isna().all()  # no licence anywhere: stays empty, the filter rejects it
    assert frame["url"].iloc[1] == f"{folder}#train/1"


def test_imagefolder_builder_reads_images_by_path(tmp_path):
    folder = tmp_path / "imgs" / "train"
    folder.mkdir(parents=True)
    for name, color in (("a.png", (1, 2, 3)), ("b.png", (4, 5, 6))):
        (folder / name).write_bytes(png(color))
    (folder / "metadata.csv").write_text("file_name,text\na.png,first\nb.png,second\n")
    config = HFSourceConfig(path="imagefolder", data_dir=str(tmp_path / "imgs"),
                            columns={"image": "image", "caption": "text"}, cache_dir=str(tmp_path / "hf_cache"))
    frame = load_hf_records(config).sort_values("caption")
    assert frame["caption"].tolist() == ["first", "second"]
    assert decoded(frame["image"].iloc[1]).getpixel((0, 0)) == (4, 5, 6)


def test_streaming_reads_the_same_rows(tmp_path, captions_dataset):
    folder = tmp_path / "saved"
    captions_dataset.save_to_disk(str(folder))
    plain = load_hf_records(HFSourceConfig(path=str(folder), columns=MAPPING))
    streamed = load_hf_records(HFSourceConfig(path=str(folder), columns=MAPPING, streaming=True, max_rows=2))
    assert streamed["record_id"].tolist() == plain["record_id"].tolist()[:2]


def test_errors_name_the_problem(tmp_path, captions_dataset):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": captions_dataset}).save_to_disk(str(folder))
    with pytest.raises(HFSourceError, match=r"'caption': 'txt'.*columns are"):
        load_hf_records(HFSourceConfig(path=str(folder), columns={"image": "img", "caption": "txt"}))
    with pytest.raises(HFSourceError, match=r"split 'validation'.*\['train'\]"):
        load_hf_records(HFSourceConfig(path=str(folder), columns=MAPPING, split="validation"))
    with pytest.raises(HFSourceError, match="save_to_disk"):
        load_hf_records(HFSourceConfig(path=str(tmp_path / "nowhere"), columns=MAPPING))
    with pytest.raises(ValueError, match="captions"):
        HFSourceConfig(path="x", columns={"image": "i", "captions": "c"})
    with pytest.raises(ValueError, match="'image'"):
        HFSourceConfig(path="x", columns={"caption": "c"})
    with pytest.raises(ValueError, match="max_row"):
        HFSourceConfig.from_dict({"path": "x", "max_row": 3})


def test_encode_image_keeps_alpha_and_reports_errors():
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (1, 2, 3, 100)).save(buffer, format="PNG")
    data, error = encode_image({"bytes": buffer.getvalue(), "path": None})
    assert error == "" and decoded(data).mode == "RGBA"
    raw, error = encode_image(b"\x89PNG broken")
    assert raw == b"\x89PNG broken" and error


IMAGE_FEATURES = datasets.Features({"img": datasets.Image(), "text": datasets.Value("string")})


def save_parquet_folder(folder, images, features=IMAGE_FEATURES) -> None:
    """Rows with image values stored as given (to_parquet, unlike save_to_disk, embeds no file).

    An explicit batch size stops ``to_parquet`` from measuring the named files.
    """
    (folder / "data").mkdir(parents=True)
    rows = {"img": images, "text": [f"row {i}" for i in range(len(images))]}
    target = str(folder / "data" / "train-00000-of-00001.parquet")
    datasets.Dataset.from_dict(rows, features=features).to_parquet(target, batch_size=100)


@pytest.fixture
def hostile(tmp_path):
    """A dataset folder whose rows name files inside it, outside it, and over the limits."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(png((1, 2, 3)))
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "inside.png").write_bytes(png((9, 8, 7)))
    (folder / "big.png").write_bytes(png((5, 5, 5)) + b"\0" * 5000)
    (folder / "link.png").symlink_to(outside)
    images = [
        {"path": "inside.png", "bytes": None},                        # 0: fine
        {"path": "../outside.png", "bytes": None},                    # 1: .. escape
        {"path": str(outside), "bytes": None},                        # 2: absolute path elsewhere
        {"path": "link.png", "bytes": None},                          # 3: symlink out of the folder
        None,                                                         # 4: no image
        {"path": "big.png", "bytes": None},                           # 5: file above max_bytes
        {"path": None, "bytes": png_header(10_000, 5_000)},           # 6: above max_pixels
        {"path": None, "bytes": png_header(100_000, 100_000)},        # 7: far above (Pillow's bomb error)
        {"path": "missing.png", "bytes": None},                       # 8: no such file
        {"path": str(folder / "inside.png"), "bytes": None},          # 9: absolute, inside (imagefolder style)
        {"path": None, "bytes": b"not an image"},                     # 10: undecodable, kept raw
    ]
    save_parquet_folder(folder, images)
    return tmp_path, folder, outside, len(images)


def test_rows_naming_files_outside_the_folder_or_over_limits_become_problem_records(hostile, monkeypatch):
    tmp_path, folder, outside, rows = hostile
    opened = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    config = HFSourceConfig(path=str(folder), columns={"image": "img", "caption": "text"}, max_bytes=4000,
                            cache_dir=str(tmp_path / "hf_cache"))
    frame = load_hf_records(config)
    assert len(frame) == rows  # nothing lost
    assert frame["record_id"].is_unique
    problems = [problem_of(r) for _, r in frame.iterrows()]
    for row, name in ((1, "../outside.png"), (2, str(outside)), (3, "link.png")):
        assert problems[row] == (f"row {row}, column 'img': image file {name!r} points outside the dataset "
                                 f"folder; nothing was read")
        assert frame["image"].iloc[row] == b""
    assert problems[4] == "row 4 has no image in column 'img'"
    size = (folder / "big.png").stat().st_size
    assert problems[5] == f"row 5, column 'img': image file 'big.png' is {size} bytes, above max_bytes 4000; not read"
    assert "above max_pixels" in problems[6] and problems[6].endswith("not decoded")
    assert "decompression bomb" in problems[7] and problems[7].endswith("not decoded")
    assert problems[8] == "row 8, column 'img': image file 'missing.png' does not exist in the dataset folder"
    for row in (4, 5, 6, 7, 8):
        assert frame["image"].iloc[row] == b""
        assert "image_error" not in json.loads(frame["metadata"].iloc[row])  # not decoded
    for row in (0, 9):
        assert problems[row] is None and decoded(frame["image"].iloc[row]).getpixel((0, 0)) == (9, 8, 7)
    assert problems[10] is None and frame["image"].iloc[10] == b"not an image"
    assert "image_error" in json.loads(frame["metadata"].iloc[10])
    opened = {os.path.realpath(p) for p in opened}
    assert str((folder / "inside.png").resolve()) in opened  # the spy sees the source's reads
    assert str(outside.resolve()) not in opened  # and the file outside was never opened
    assert (frame["caption"] == [f"row {i}" for i in range(rows)]).all()  # problem rows keep their texts


def test_path_only_images_are_refused_without_a_local_folder(tmp_path):
    folder = tmp_path / "files"
    (folder / "inside.png").parent.mkdir()
    (folder / "inside.png").write_bytes(png((9, 8, 7)))
    images = [{"path": str(folder / "inside.png"), "bytes": None}, {"path": "inside.png", "bytes": None},
              {"path": None, "bytes": png((4, 5, 6))}]
    save_parquet_folder(folder, images)
    # a builder name with data_files only, as a Hub dataset loaded by name: no folder to be inside of
    config = HFSourceConfig(path="parquet", data_files={"train": str(folder / "data" / "train-00000-of-00001.parquet")},
                            columns={"image": "img"}, cache_dir=str(tmp_path / "hf_cache"))
    frame = load_hf_records(config)
    assert len(frame) == 3
    for row in (0, 1):
        problem = problem_of(frame.iloc[row])
        assert problem.startswith(f"row {row}, column 'img': ") and "no local folder" in problem
        assert frame["image"].iloc[row] == b""
    assert problem_of(frame.iloc[2]) is None and decoded(frame["image"].iloc[2]).getpixel((0, 0)) == (4, 5, 6)


def test_string_paths_in_a_saved_dataset_stay_inside_it(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png((1, 2, 3)))
    folder = tmp_path / "saved"
    features = datasets.Features({"file": datasets.Value("string"), "pos": datasets.Value("string"),
                                  "story": datasets.Value("string")})
    rows = {"file": ["a.png", "../outside.png", "a.png"], "pos": ["0", "1", "x"], "story": ["s1", "s1", "s2"]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    (folder / "a.png").write_bytes(png((9, 8, 7)))
    config = HFSourceConfig(path=str(folder), columns={"image": "file", "frame_index": "pos", "group_id": "story"})
    frame = load_hf_records(config)
    assert len(frame) == 3
    assert problem_of(frame.iloc[0]) is None and frame["frame_index"].iloc[0] == 0
    assert "outside the dataset folder" in problem_of(frame.iloc[1]) and frame["image"].iloc[1] == b""
    assert problem_of(frame.iloc[2]) == "row 2: frame_index 'x' in column 'pos' is not an integer"


def test_family_id_column_and_its_default(tmp_path, captions_dataset):
    folder = tmp_path / "saved"
    captions_dataset.save_to_disk(str(folder))
    plain = load_hf_records(HFSourceConfig(path=str(folder), columns=MAPPING))
    assert plain["family_id"].tolist() == plain["group_id"].tolist() == ["7", "7", "8"]
    families = load_hf_records(HFSourceConfig(path=str(folder), columns=MAPPING | {"family_id": "note"}))
    assert families["family_id"].tolist() == ["x", "y", "z"] and families["group_id"].tolist() == ["7", "7", "8"]
    assert families["record_id"].tolist() == plain["record_id"].tolist()  # the family is not part of the id


def test_encode_image_applies_the_limits_before_decoding(tmp_path):
    with pytest.raises(RowProblem, match=r"40x40 = 1600 pixels, above max_pixels 100.*not decoded"):
        encode_image(png((1, 1, 1), size=(40, 40)), max_pixels=100)
    with pytest.raises(RowProblem, match="above max_bytes 10; not decoded"):
        encode_image({"bytes": png((1, 1, 1)), "path": None}, max_bytes=10)
    with pytest.raises(RowProblem, match="no local folder"):
        encode_image("a.png")
    with pytest.raises(ValueError, match="max_bytes"):
        HFSourceConfig(path="x", max_bytes=0)
