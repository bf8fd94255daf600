"""Exact and near-duplicate removal: the dedup stage of ingest.

Two records are duplicates when their normalised images are identical (same
``image_hash``: the sha256 of size and pixels the image stage gives) or perceptually
alike (64-bit pHash within ``max_distance`` bits, Hamming distance, optionally confirmed
by a small colour-thumbnail comparison: pHash is computed on grey levels, so distinct
images with the same layout can share a hash).
Records of the same family (``family_id``: the frames of one sequence, the windows of
one story) are never compared: they are meant to look alike, and the split keeps them
on one side anyway. Records with the same ``record_id`` are always duplicates (the same
record delivered twice), whatever their family.

Order: records are visited in input order and each is compared with the records
kept so far, so the first occurrence is the one kept and the result does not
depend on anything but the input order.

Scale: candidates are found by pigeonhole bands instead of comparing all pairs.
Split the 64 bits into ``max_distance + 1`` bands; two hashes within
``max_distance`` bits differ in at most ``max_distance`` bands, so they agree
exactly on at least one band. Each kept hash is indexed under each of its band
values, and a query only checks records that share a band value with it (for
large distances, fewer and wider bands probed within one bit; see
:class:`_NearIndex`). When the hashes are so alike that the bands stop narrowing
the search, a vectorised scan of the kept hashes is used instead (same answer,
bounded cost).
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from multimodal_lab.data.records import split_rejections

logger = logging.getLogger(__name__)

PHASH_BITS = 64  # imagehash.phash with hash_size=8
_PHASH_SIZE = 8
# Narrower exact-match bands hold too many records each to narrow the search.
_MIN_BAND_BITS = 12
# Scan all kept hashes when candidates exceed 1/_SCAN_FACTOR of them.
_SCAN_FACTOR = 8
# Thumbnail compared by the optional pixel check; coarse enough to ignore re-encoding noise.
_THUMB_SIZE = (16, 16)


def phash_of_image(image: Image.Image) -> str:
    """64-bit perceptual hash of a decoded image, as 16 hex characters."""
    return str(imagehash.phash(image, hash_size=_PHASH_SIZE))


def phash_of_bytes(data: bytes) -> str:
    """64-bit perceptual hash of an encoded image, as 16 hex characters."""
    with Image.open(io.BytesIO(data)) as image:
        return phash_of_image(image)


def thumbnail(data: bytes) -> np.ndarray:
    """Small colour thumbnail with each channel's mean removed, for :func:`pixel_difference`."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB").resize(_THUMB_SIZE, Image.Resampling.BOX)
    array = np.asarray(small, dtype=np.float32)
    # Centring forgives a uniform brightness or colour shift, which keeps an image a copy.
    return array - array.mean(axis=(0, 1))


def pixel_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0-255 scale) of two :func:`thumbnail` arrays."""
    return float(np.abs(a - b).mean())


def hamming(a: str, b: str) -> int:
    """Hamming distance between two hex hashes of equal length."""
    return int(int(a, 16) ^ int(b, 16)).bit_count()


def _bands(bits: int, n_bands: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``n_bands`` contiguous bit ranges that cover ``bits`` bits."""
    edges = np.linspace(0, bits, n_bands + 1).round().astype(int)
    return [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]


class _NearIndex:
    """Kept pHashes indexed by band value (multi-index hashing), with their group codes.

    With ``m`` bands, two hashes within ``d`` bits have at least one band within
    ``d // m`` bits of each other. Bands are searched exactly (radius 0, ``d + 1``
    bands) while that leaves bands of at least :data:`_MIN_BAND_BITS` bits; for larger
    distances radius 1 is used (``d // 2 + 1`` wider bands, each probed at its value
    and the values one bit away), which keeps buckets small.
    """

    def __init__(self, max_distance: int, capacity: int) -> None:
        self.max_distance = max_distance
        self.radius = 0 if PHASH_BITS // (max_distance + 1) >= _MIN_BAND_BITS else 1
        self.bands = _bands(PHASH_BITS, max_distance // (self.radius + 1) + 1)
        self.buckets: list[dict[int, list[int]]] = [{} for _ in self.bands]
        self.hashes = np.zeros(capacity, dtype=np.uint64)
        self.groups = np.zeros(capacity, dtype=np.int64)
        self.size = 0

    def add(self, value: int, group: int) -> None:
        slot = self.size
        self.hashes[slot] = value
        self.groups[slot] = group
        self.size += 1
        for (shift, mask), buckets in zip(self.bands, self.buckets):
            buckets.setdefault((value >> shift) & mask, []).append(slot)

    def _candidates(self, value: int) -> tuple[list[list[int]], int]:
        lists, total = [], 0
        for (shift, mask), buckets in zip(self.bands, self.buckets):
            key = (value >> shift) & mask
            probes = [key] if self.radius == 0 else [key] + [key ^ (1 << b) for b in range(mask.bit_length())]
            for probe in probes:
                found = buckets.get(probe)
                if found:
                    lists.append(found)
                    total += len(found)
        return lists, total

    def matches_other_group(self, value: int, group: int) -> list[tuple[int, int]]:
        """(slot, distance) of every kept hash of another group within range.

        Closest first; ties go to the earliest kept record.
        """
        if self.size == 0:
            return []
        lists, total = self._candidates(value)
        if not lists:
            return []
        if total * _SCAN_FACTOR >= self.size:
            # The bands barely narrow the search: one vectorised pass is cheaper.
            slots = None
            hashes, groups = self.hashes[: self.size], self.groups[: self.size]
        else:
            slots = np.unique(np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]))
            hashes, groups = self.hashes[slots], self.groups[slots]
        distances = np.bitwise_count(hashes ^ np.uint64(value))
        hit = np.flatnonzero((distances <= self.max_distance) & (groups != group))
        if hit.size == 0:
            return []
        # Positions are in slot (= keep) order; a stable sort on distance keeps that order
        # among equal distances.
        hit = hit[np.argsort(distances[hit], kind="stable")]
        found = hit if slots is None else slots[hit]
        return [(int(s), int(d)) for s, d in zip(found, distances[hit])]


def _column_or(records: pd.DataFrame, column: str, compute, label: str, progress) -> list[str]:
    if column in records.columns:
        return records[column].tolist()
    disable = None if progress is None else not progress
    return [compute(x) for x in tqdm(records["image"].tolist(), desc=label, disable=disable)]


def deduplicate(
    records: pd.DataFrame,
    max_distance: int,
    *,
    max_pixel_difference: float | None = None,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dedup stage of ingest: drop exact and near-duplicate images across families.

    Args:
        records: record frame with decodable ``image`` bytes (normally the output of
            the image stage). ``image_hash`` and ``phash`` columns are used when
            present and computed from ``image`` otherwise (then exact duplicates are
            byte-identical files). Not modified.
        max_distance: largest pHash Hamming distance (bits of 64) still counted as a
            near duplicate; 0 catches only perceptually identical images, and a
            negative value turns near-duplicate detection off (exact only).
        max_pixel_difference: when set, a pHash match counts only if the two images'
            16x16 colour thumbnails (channel means removed) differ by at most this
            mean absolute value (0-255). pHash sees grey-level layout only, so
            different scenes with the same layout can match; this check tells them
            apart. Only matched pairs are decoded, so it costs little. ``None``: off.
            On scene-world images a JPEG copy (quality 75) differs by at most ~3 and
            distinct scenes sharing a pHash by 4.3 or more; JPEG chroma subsampling of
            saturated, finely detailed images can reach ~8, so pick the value on your data.
        progress: progress bar on/off; ``None`` = only on a terminal.

    Returns:
        ``(kept, rejected)`` with the input columns; ``rejected`` adds ``stage``
        (``"dedup"``) and ``reason``, which names the kept record and the distance.
        Every input row is in exactly one of them, in input order.
    """
    if max_distance >= PHASH_BITS:
        raise ValueError(
            f"near_duplicate_distance {max_distance} must be below {PHASH_BITS} (the pHash "
            f"length); values around 4-10 are usual"
        )
    n = len(records)
    record_ids = records["record_id"].tolist()
    # Frames without a family column (older frames) fall back to their group.
    family = records["family_id"] if "family_id" in records.columns else records["group_id"]
    group_codes, _ = pd.factorize(family, use_na_sentinel=False)
    exact_keys = _column_or(
        records, "image_hash", lambda b: hashlib.sha256(bytes(b)).hexdigest(), "hash images", progress
    )
    near = max_distance >= 0
    phashes = _column_or(records, "phash", phash_of_bytes, "perceptual hashes", progress) if near else []

    if max_pixel_difference is not None and max_pixel_difference < 0:
        raise ValueError(f"max_pixel_difference must be >= 0 or None, got {max_pixel_difference}")
    images = records["image"].tolist()
    thumbs: dict[int, np.ndarray] = {}  # row position -> thumbnail, filled on demand

    def thumb(pos: int) -> np.ndarray:
        if pos not in thumbs:
            thumbs[pos] = thumbnail(images[pos])
        return thumbs[pos]

    index = _NearIndex(max(max_distance, 0), n)
    kept_slot_record: list[int] = []  # slot in the near index -> row position
    first_by_id: dict[str, int] = {}  # record_id -> row position of the kept one
    kept_by_hash: dict[str, list[int]] = {}  # image sha256 -> row positions kept
    reasons: list[str | None] = [None] * n

    disable = None if progress is None else not progress
    for pos in tqdm(range(n), desc="dedup", unit="rec", disable=disable):
        rid, group = record_ids[pos], int(group_codes[pos])
        if rid in first_by_id:
            reasons[pos] = f"duplicate of record {rid} (same record id, distance 0)"
            continue
        same_image = [k for k in kept_by_hash.get(exact_keys[pos], []) if group_codes[k] != group]
        if same_image:
            reasons[pos] = (
                f"exact duplicate of record {record_ids[same_image[0]]} "
                f"(identical normalised image, distance 0)"
            )
            continue
        if near:
            value = int(phashes[pos], 16)
            for slot, distance in index.matches_other_group(value, group):
                other = kept_slot_record[slot]
                detail = f"pHash distance {distance} <= {max_distance}"
                if max_pixel_difference is not None:
                    difference = pixel_difference(thumb(pos), thumb(other))
                    if difference > max_pixel_difference:
                        continue
                    detail += f", pixel difference {difference:.1f} <= {max_pixel_difference}"
                reasons[pos] = f"near duplicate of record {record_ids[other]} ({detail})"
                break
            if reasons[pos] is not None:
                continue
            index.add(value, group)
            kept_slot_record.append(pos)
        first_by_id[rid] = pos
        kept_by_hash.setdefault(exact_keys[pos], []).append(pos)

    kept, rejected = split_rejections(records, reasons, "dedup")
    if len(rejected):
        logger.info("dedup: kept %d, rejected %d", len(kept), len(rejected))
    return kept.reset_index(drop=True), rejected.reset_index(drop=True)


def near_duplicate_pairs(phashes: Sequence[str], max_distance: int) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` within ``max_distance`` (brute force).

    A reference for tests and small audits; quadratic, so not for full datasets.
    """
    values = [int(h, 16) for h in phashes]
    return [
        (i, j, (values[i] ^ values[j]).bit_count())
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= max_distance
    ]
