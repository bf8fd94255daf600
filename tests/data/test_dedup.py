from __future__ import annotations

import io
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.data.dedup import (
    deduplicate,
    hamming,
    near_duplicate_pairs,
    phash_of_bytes,
)
from multimodal_lab.data.images import ImagePolicy, validate_images
from multimodal_lab.data.records import make_record, records_frame


def noise(seed: int, size: int = 64) -> np.ndarray:
    """Blocky noise: perceptually distinct for different seeds."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((size // 8, size // 8, 1), dtype=np.uint8))


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def one_pixel_changed(array: np.ndarray) -> np.ndarray:
    changed = array.copy()
    changed[10, 10] = 255 - changed[10, 10]
    return changed


def normalised(arrays, groups=None, captions=None) -> pd.DataFrame:
    """Records run through the image stage, as dedup sees them in ingest."""
    groups = groups or [None] * len(arrays)
    captions = captions or [f"caption {i}" for i in range(len(arrays))]
    records = records_frame(
        make_record(image=png(a), source="test", corpus="c", caption=c, license="CC0",
                    group_id=g, frame_index=i)
        for i, (a, g, c) in enumerate(zip(arrays, groups, captions))
    )
    kept, rejected = validate_images(records, ImagePolicy(size=(64, 64), min_side=8), progress=False)
    assert rejected.empty
    return kept


def test_one_pixel_change_is_caught_as_near_duplicate():
    base = noise(0)
    records = normalised([base, one_pixel_changed(base)])
    assert records["image_hash"][0] != records["image_hash"][1]  # not an exact duplicate
    distance = hamming(records["phash"][0], records["phash"][1])
    assert distance <= 4

    kept, rejected = deduplicate(records, max_distance=4)
    first, second = records["record_id"].tolist()
    assert kept["record_id"].tolist() == [first]
    assert rejected["record_id"].tolist() == [second]
    assert rejected["stage"].tolist() == ["dedup"]
    assert rejected["reason"].tolist() == [
        f"near duplicate of record {first} (pHash distance {distance} <= 4)"
    ]


def test_different_images_are_all_kept():
    records = normalised([noise(seed) for seed in range(8)])
    assert near_duplicate_pairs(records["phash"].tolist(), 4) == []  # they really differ
    kept, rejected = deduplicate(records, max_distance=4)
    assert kept["record_id"].tolist() == records["record_id"].tolist()
    assert rejected.empty


def test_same_group_near_duplicates_are_kept():
    base = noise(3)
    frames = [base, one_pixel_changed(base), base]  # alike, even identical, frames
    records = normalised(frames, groups=["story-1"] * 3)
    kept, rejected = deduplicate(records, max_distance=4)
    assert len(kept) == 3 and rejected.empty


def test_other_group_duplicate_of_a_sequence_frame_is_rejected():
    base = noise(4)
    records = normalised([base, base, base], groups=["seq-a", "seq-a", "seq-b"])
    kept, rejected = deduplicate(records, max_distance=2)
    ids = records["record_id"].tolist()
    assert kept["record_id"].tolist() == ids[:2]
    assert rejected["reason"].tolist() == [
        f"exact duplicate of record {ids[0]} (identical normalised image, distance 0)"
    ]


def test_exact_duplicate_keeps_first_occurrence_in_input_order():
    image = noise(5)
    records = normalised([image, image], captions=["first", "second"])
    ids = records["record_id"].tolist()
    kept, rejected = deduplicate(records, max_distance=0)
    assert kept["record_id"].tolist() == [ids[0]]
    assert rejected["reason"].tolist() == [
        f"exact duplicate of record {ids[0]} (identical normalised image, distance 0)"
    ]
    # Reversing the input keeps the other one.
    kept, rejected = deduplicate(records.iloc[::-1].reset_index(drop=True), max_distance=0)
    assert kept["record_id"].tolist() == [ids[1]]


def test_same_record_twice_is_a_duplicate_even_in_one_group():
    records = normalised([noise(6)])
    doubled = pd.concat([records, records], ignore_index=True)
    kept, rejected = deduplicate(doubled, max_distance=4)
    rid = records["record_id"][0]
    assert kept["record_id"].tolist() == [rid]
    assert rejected["reason"].tolist() == [f"duplicate of record {rid} (same record id, distance 0)"]


def test_negative_distance_turns_near_dedup_off_but_keeps_exact():
    base = noise(7)
    records = normalised([base, one_pixel_changed(base), base])
    kept, rejected = deduplicate(records, max_distance=-1)
    assert kept["record_id"].tolist() == records["record_id"].tolist()[:2]
    assert rejected["reason"][0].startswith("exact duplicate of record")


def test_hashes_are_computed_when_columns_are_absent():
    base = noise(8)
    records = records_frame(
        make_record(image=png(a), source="t", corpus="c", caption=str(i))
        for i, a in enumerate([base, one_pixel_changed(base), noise(9)])
    )
    kept, rejected = deduplicate(records, max_distance=4)
    assert len(kept) == 2 and len(rejected) == 1
    assert phash_of_bytes(records["image"][0]) == phash_of_bytes(records["image"][0])


def test_input_not_mutated_and_empty_input():
    records = normalised([noise(1), noise(1)])
    before = records.copy(deep=True)
    deduplicate(records, max_distance=4)
    pd.testing.assert_frame_equal(records, before)

    kept, rejected = deduplicate(records.iloc[:0], max_distance=4)
    assert kept.empty and rejected.empty
    assert list(kept.columns) == list(records.columns)
    assert list(rejected.columns) == [*records.columns, "stage", "reason"]


def test_distance_must_be_below_hash_length():
    with pytest.raises(ValueError, match="below 64"):
        deduplicate(normalised([noise(1)]), max_distance=64)


# ----------------------------------------------------------------- index vs brute force

def hash_frame(values: np.ndarray, groups: list[str]) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)],
        "group_id": groups,
        "image": [b""] * n,
        "image_hash": [f"h{i}" for i in range(n)],  # all distinct: near dedup only
        "phash": [f"{int(v):016x}" for v in values],
    })


def brute_force(frame: pd.DataFrame, max_distance: int) -> dict[str, str]:
    """The specification, quadratically: record id -> reason for every rejected record."""
    kept: list[int] = []
    reasons = {}
    values = [int(h, 16) for h in frame["phash"]]
    groups, ids = frame["group_id"].tolist(), frame["record_id"].tolist()
    for i in range(len(frame)):
        hits = [
            ((values[i] ^ values[k]).bit_count(), k)
            for k in kept
            if groups[k] != groups[i] and (values[i] ^ values[k]).bit_count() <= max_distance
        ]
        if hits:
            distance, k = min(hits)
            reasons[ids[i]] = (
                f"near duplicate of record {ids[k]} (pHash distance {distance} <= {max_distance})"
            )
        else:
            kept.append(i)
    return reasons


def clustered_hashes(n: int, centres: int, flips: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 1 << 62, centres, dtype=np.int64).astype(np.uint64) * np.uint64(3)
    values = base[rng.integers(0, centres, n)]
    count = rng.integers(0, flips + 1, n)  # some records keep their centre exactly
    for step in range(flips):
        bit = np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
        values ^= np.where(count > step, bit, np.uint64(0))
    return values


@pytest.mark.parametrize("max_distance", [0, 2, 4, 5, 8, 13])
def test_banded_index_matches_brute_force(max_distance):
    values = clustered_hashes(600, centres=40, flips=4, seed=max_distance)
    rng = np.random.default_rng(100 + max_distance)
    groups = [f"g{int(g)}" for g in rng.integers(0, 300, len(values))]  # some shared groups
    frame = hash_frame(values, groups)
    kept, rejected = deduplicate(frame, max_distance)
    expected = brute_force(frame, max_distance)
    assert dict(zip(rejected["record_id"], rejected["reason"])) == expected
    assert len(expected) > 0  # the clusters do produce duplicates
    assert len(kept) + len(rejected) == len(frame)


def test_fifty_thousand_records_finish_quickly():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 1 << 62, 50_000, dtype=np.int64).astype(np.uint64) * np.uint64(4)
    values[1::1000] = values[0::1000] ^ np.uint64(0b101)  # 50 planted pairs at distance 2
    frame = hash_frame(values, [f"g{i}" for i in range(len(values))])
    start = time.perf_counter()
    kept, rejected = deduplicate(frame, max_distance=4)
    elapsed = time.perf_counter() - start
    assert rejected["record_id"].tolist() == [f"r{i}" for i in range(1, 50_000, 1000)]
    assert elapsed < 20, f"dedup of 50k records took {elapsed:.1f}s"


# ----------------------------------------------------------------- pixel confirmation

def square_on_gradient(colour) -> np.ndarray:
    array = np.zeros((64, 64, 3), dtype=np.uint8)
    array[:] = np.linspace(30, 220, 64, dtype=np.uint8)[:, None, None]
    array[20:40, 24:44] = colour
    return array


def test_pixel_check_keeps_same_layout_in_other_colours():
    # Grey-level layout is identical, so pHash alone calls them duplicates.
    records = normalised([square_on_gradient((200, 40, 40)), square_on_gradient((40, 160, 40))])
    assert hamming(records["phash"][0], records["phash"][1]) == 0
    kept, rejected = deduplicate(records, max_distance=2)
    assert len(rejected) == 1
    kept, rejected = deduplicate(records, max_distance=2, max_pixel_difference=3.5)
    assert len(kept) == 2 and rejected.empty


def test_pixel_check_still_catches_copies():
    base = noise(11)
    buffer = io.BytesIO()
    # 4:4:4: chroma subsampling smears these saturated 8 px blocks (difference ~8),
    # a known limit of the pixel check on synthetic colour noise.
    Image.fromarray(base).save(buffer, format="JPEG", quality=75, subsampling=0)
    jpeg_copy = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    records = normalised([base, one_pixel_changed(base), jpeg_copy])
    kept, rejected = deduplicate(records, max_distance=4, max_pixel_difference=3.5)
    first = records["record_id"][0]
    assert kept["record_id"].tolist() == [first]
    reasons = rejected["reason"].tolist()
    assert all(r.startswith(f"near duplicate of record {first} (pHash distance ") for r in reasons)
    assert all("pixel difference" in r and r.endswith("<= 3.5)") for r in reasons)


def test_pixel_check_rejects_negative_threshold():
    with pytest.raises(ValueError, match="max_pixel_difference"):
        deduplicate(normalised([noise(1)]), max_distance=2, max_pixel_difference=-1)
