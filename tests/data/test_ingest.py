from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from multimodal_lab.data.images import ImagePolicy
from multimodal_lab.data.ingest import (
    ACCEPTED_COLUMNS,
    REJECTED_COLUMNS,
    IngestConfig,
    ingest,
    ingest_summary,
)
from multimodal_lab.data.records import (
    ACCEPTED_EXTRA_COLUMNS,
    RECORD_COLUMNS,
    REJECTED_EXTRA_COLUMNS,
    make_record,
    records_frame,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SMALL = ImagePolicy(size=(16, 16), min_side=4)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def blocks(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(small, np.ones((size // 4, size // 4, 1), dtype=np.uint8)))


def record(image: bytes, license: str | None, caption: str, group: str | None = None):  # noqa: A002
    return make_record(image=image, source="test", corpus="c", caption=caption, license=license,
                       group_id=group)


def test_columns_match_the_record_schema():
    assert ACCEPTED_COLUMNS == [*RECORD_COLUMNS, *ACCEPTED_EXTRA_COLUMNS]
    assert REJECTED_COLUMNS == [*RECORD_COLUMNS, *REJECTED_EXTRA_COLUMNS]


def test_ingest_end_to_end_with_every_stage():
    good = encode(blocks(1))
    rows = [
        record(good, "CC BY 4.0", "kept"),                       # 0 accepted
        record(encode(blocks(2)), "CC BY-NC-ND 4.0", "nc"),      # 1 licence
        record(encode(blocks(3)), None, "no licence"),           # 2 licence
        record(b"", "CC0", "empty"),                             # 3 image
        record(encode(blocks(4), "JPEG"), "public domain", "jpeg"),  # 4 accepted
        record(good, "CC0", "same image, other caption"),        # 5 dedup
        record(encode(blocks(1).convert("P")), "CC0", "palette"),    # 6 accepted (differs)
    ]
    records = records_frame(rows)
    before = records.copy(deep=True)
    accepted, rejected = ingest(records, IngestConfig(image=SMALL, near_duplicate_distance=0))
    pd.testing.assert_frame_equal(records, before)

    ids = records["record_id"].tolist()
    assert list(accepted.columns) == ACCEPTED_COLUMNS
    assert list(rejected.columns) == REJECTED_COLUMNS
    assert accepted["record_id"].tolist() == [ids[0], ids[4], ids[6]]
    assert accepted["license_spdx"].tolist() == ["CC-BY-4.0", "PDM-1.0", "CC0-1.0"]
    assert accepted[["width", "height"]].values.tolist() == [[16, 16]] * 3
    assert rejected["record_id"].tolist() == [ids[1], ids[2], ids[3], ids[5]]
    assert rejected["stage"].tolist() == ["license", "license", "image", "dedup"]
    assert rejected["reason"].tolist() == [
        "license CC-BY-NC-ND-4.0 not in allow-list",
        "license missing",
        "image is empty (0 bytes)",
        f"exact duplicate of record {ids[0]} (identical normalised image, distance 0)",
    ]
    assert ingest_summary(accepted, rejected) == {
        "input": 7, "accepted": 3, "rejected": 4, "rejected_source": 0, "rejected_license": 2,
        "rejected_image": 1, "rejected_duplicate_id": 0, "rejected_dedup": 1,
    }
    # rejected rows say what their image bytes were; image bytes are kept only when they are an image
    # (as received before the image stage; the normalised PNG from dedup on)
    assert rejected["image_size_bytes"].tolist()[:3] == [len(records.at[i, "image"]) for i in (1, 2, 3)]
    assert rejected["image"].isna().tolist() == [False, False, True, False]  # row 3 had no bytes


def test_repeated_ids_text_and_source_problems_each_end_with_a_reason():
    good = encode(blocks(7))
    rows = [
        record(good, "CC0", "<p>A <b>purple</b> square &amp; a <i>tree</i>.</p>"),
        record(good, "CC0", "<p>A <b>purple</b> square &amp; a <i>tree</i>.</p>"),  # the same row twice
        make_record(image=b"", source="local_folder", corpus="scene", problem="metadata.jsonl line 9: invalid JSON"),
        record(b"<html>404 not found</html>", "CC0", "an error page, not an image"),
    ]
    records = records_frame(rows)
    assert records.at[0, "caption"] == "A purple square & a tree."  # normalised when built
    accepted, rejected = ingest(records, IngestConfig(image=SMALL))
    assert accepted["record_id"].tolist() == [records.at[0, "record_id"]]
    assert rejected["stage"].tolist() == ["source", "image", "duplicate_id"]
    assert rejected["reason"].tolist()[0] == "metadata.jsonl line 9: invalid JSON"
    assert rejected["reason"].tolist()[2] == (
        f"repeats record {records.at[0, 'record_id']} (same image bytes and texts), kept from test")
    # the bytes that are not an image are not copied; their hash and size are
    page = rejected.iloc[1]
    assert page["image"] is None and page["image_size_bytes"] == len(b"<html>404 not found</html>")
    assert page["image_sha256"] == hashlib.sha256(b"<html>404 not found</html>").hexdigest()


def test_of_two_copies_with_different_licences_the_usable_one_is_kept():
    image = encode(blocks(8))
    closed = make_record(image=image, source="a", corpus="c", caption="x", license="All rights reserved")
    open_ = make_record(image=image, source="b", corpus="c", caption="x", license="CC0-1.0")
    assert closed["record_id"] == open_["record_id"]  # the id is the content, not the licence
    accepted, rejected = ingest(records_frame([closed, open_]), IngestConfig(image=SMALL))
    assert accepted["source"].tolist() == ["b"] and accepted["license_spdx"].tolist() == ["CC0-1.0"]
    assert rejected["stage"].tolist() == ["license"]


def test_empty_input_gives_empty_frames_with_columns():
    accepted, rejected = ingest(records_frame([]), IngestConfig(image=SMALL))
    assert list(accepted.columns) == ACCEPTED_COLUMNS and accepted.empty
    assert list(rejected.columns) == REJECTED_COLUMNS and rejected.empty
    assert accepted["width"].dtype == "int64" and rejected["frame_index"].dtype == "int64"


def test_missing_record_columns_fail_loudly():
    with pytest.raises(ValueError, match="missing record columns"):
        ingest(pd.DataFrame({"record_id": ["a"]}), IngestConfig())


def test_parallel_ingest_equals_serial():
    rows = [record(encode(blocks(i % 7)), "CC0", f"r{i}", group=f"g{i % 5}") for i in range(20)]
    rows += [record(b"broken", "CC0", "broken")]
    records = records_frame(rows)
    serial = ingest(records, IngestConfig(image=SMALL, workers=1))
    parallel = ingest(records, IngestConfig(image=SMALL, workers=2, chunk_size=4))
    for a, b in zip(serial, parallel):
        pd.testing.assert_frame_equal(a, b)


# ------------------------------------------------------------------------- config

def test_config_from_dict_and_unknown_keys():
    config = IngestConfig.from_dict({
        "license_allow": ["CC0-1.0"],
        "image": {"size": [64, 64], "mode": "center_crop"},
        "near_duplicate_distance": 3,
        "workers": 2,
    })
    assert config.image == ImagePolicy(size=(64, 64), mode="center_crop")
    assert config.near_duplicate_distance == 3 and config.workers == 2
    with pytest.raises(ValueError, match="near_duplicate_distence"):
        IngestConfig.from_dict({"near_duplicate_distence": 3})
    with pytest.raises(ValueError, match="sise"):
        IngestConfig.from_dict({"image": {"sise": [64, 64]}})
    with pytest.raises(ValueError, match="'CC-BY'"):
        IngestConfig(license_allow=["CC-BY"])
    with pytest.raises(ValueError, match="workers"):
        IngestConfig(workers=-1)
    assert IngestConfig(workers=0).workers == (os.cpu_count() or 1)  # 0: one per core


def test_project_parameters_build_a_config():
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_data.yml").read_text())
    config = IngestConfig.from_dict(params["ingest"])
    assert "PDM-1.0" in config.license_allow


# ----------------------------------------------------------------- property: conservation

def _png_of(seed: int, size: tuple[int, int], mode: str) -> bytes:
    image = blocks(seed, 32).resize(size)
    if mode == "I;16":
        array = (np.asarray(image.convert("L"), dtype=np.uint16) * 257)
        return encode(Image.fromarray(array))
    if mode == "CMYK":
        return encode(image.convert("CMYK"), "JPEG")
    return encode(image.convert(mode))


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["png", "png", "sized", "near", "random", "truncated", "empty", "tiny"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=64))
    if kind == "empty":
        return b""
    seed = draw(st.integers(0, 5))  # few seeds: duplicates across records are common
    if kind == "near":  # one pixel away from the "png" kind of the same seed
        array = np.asarray(blocks(seed, 32)).copy()
        array[5, 5] = 255 - array[5, 5]
        return encode(Image.fromarray(array))
    size = (draw(st.integers(8, 40)), draw(st.integers(8, 40))) if kind == "sized" else (32, 32)
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]))
    data = _png_of(seed, size, mode)
    if kind == "truncated":
        return data[: draw(st.integers(1, max(1, len(data) - 1)))]
    if kind == "tiny":
        return _png_of(seed, (2, 3), mode)  # below min_side
    return data


@st.composite
def licenses(draw) -> str | None:
    roll = draw(st.integers(0, 9))
    if roll < 6:  # mostly allowed, so later stages see plenty of records
        return draw(st.sampled_from(
            ["CC0", "CC BY 4.0", "public domain", "https://creativecommons.org/licenses/by-sa/4.0/"]
        ))
    if roll < 9:
        return draw(st.sampled_from(["CC BY-NC 4.0", "All rights reserved", "", None]))
    return draw(st.text(max_size=12))


@st.composite
def record_sets(draw) -> pd.DataFrame:
    n = draw(st.integers(0, 12))
    rows = []
    for _ in range(n):
        if rows and draw(st.booleans()) and draw(st.booleans()):
            rows.append(dict(draw(st.sampled_from(rows))))  # the very same record again
            continue
        rows.append(record(
            draw(image_bytes()),
            draw(licenses()),
            draw(st.sampled_from(["a red star", "two blue squares", None])),
            group=draw(st.sampled_from([None, "story-1", "story-2"])),
        ))
    return records_frame(rows)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=record_sets(), distance=st.sampled_from([-1, 0, 4]))
def test_ingest_never_loses_or_invents_records(records, distance):
    before = records.copy(deep=True)
    accepted, rejected = ingest(records, IngestConfig(image=SMALL, near_duplicate_distance=distance))
    pd.testing.assert_frame_equal(records, before)

    assert len(accepted) + len(rejected) == len(records)
    out = Counter(accepted["record_id"]) + Counter(rejected["record_id"])
    assert out == Counter(records["record_id"])
    assert set(rejected["stage"]) <= {"duplicate_id", "license", "image", "dedup"}
    # the same record twice: the second is rejected, naming the first
    repeats = rejected[rejected["stage"] == "duplicate_id"]
    assert all(f"repeats record {rid}" in reason for rid, reason in zip(repeats["record_id"], repeats["reason"]))
    assert all(isinstance(r, str) and r for r in rejected["reason"])
    assert list(accepted.columns) == ACCEPTED_COLUMNS
    assert list(rejected.columns) == REJECTED_COLUMNS
    for data in accepted["image"]:
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (16, 16)
    # accepted records are unique by id and licence-clean
    assert accepted["record_id"].is_unique
    assert accepted["license_spdx"].isin(IngestConfig().license_allow).all()
