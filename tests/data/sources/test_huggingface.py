"""The generic Hugging Face source on small datasets saved locally and loaded back."""
from __future__ import annotations

import io
import json

import datasets
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data.records import RECORD_COLUMNS
from multimodal_lab.data.sources.huggingface import (
    HFSourceConfig,
    HFSourceError,
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
