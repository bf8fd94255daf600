"""A user's folder of images, end to end through the real data pipelines.

The folder built here holds what real folders hold: images in every common mode and
format, damaged and hostile files, duplicates, licences written many ways, messy texts
and a sidecar with broken lines. It runs once through ``sources`` (local folder only) ->
``ingest`` -> ``captioning`` (off) -> ``prepare`` (one split, every corpus, the ledger) on
an in-memory catalog, with the project's own licence allow-list and image policy (only
the output size is made small). Then every sidecar row is looked up by its case: it must
be in the corpora, or in ``rejected_records`` once, at the stage and with the reason the
case table says.

How a row is found again: every sidecar row carries a ``case`` key, which the source
keeps in the record's metadata. A row the source cannot use loses its metadata (it
becomes a record with the problem as text and ``sidecar_line``), so those are found by
their sidecar line.

The local folder gives one corpus to all its records, so the records are ``scene`` and
every corpus namespace is pointed at ``scene`` here (art: captions; sequence: complete
5-frame groups), which makes all four corpora and the ledger run on the folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image, PngImagePlugin

from multimodal_lab.data.images import DEFAULT_MAX_BYTES
from multimodal_lab.data.split import SplitConfig, group_fraction
from multimodal_lab.pipelines import captioning, ingest, prepare, sources
from multimodal_lab.pipelines.sources.nodes import load_local_folder

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIDECAR = "metadata.jsonl"
SPLITS = ("train", "val", "test")
SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2, "salt": ""}
IMAGE_SIZE = 32  # output side; the real policy's min_side (32) and limits are kept
WHITE = (255, 255, 255)
SECRET_MARKER = b"OUTSIDE-THE-FOLDER-3f9c2a"  # inside the file that lives outside the folder

ACCEPTED = "accepted"

HTML_CAPTION = "<p>A <b>purple</b> square &amp; a <i>tree</i>.</p>"
NFD_CAPTION = unicodedata.normalize("NFD", "Café crème near the fjörd, Zoë waves.")
CONTROL_CAPTION = "A red\u0000 kite\u0007 over\tthe\r\nhill\u001b."
EMOJI_CAPTION = "A black cat 🐈\u200d⬛ naps beside a 🌵 cactus."
RTL_CAPTION = "قطة على السجادة — חתול על השטיח"
LONG_STORY = " ".join(f"Sentence {i} tells how the lighthouse keeper counted {i} gulls." for i in range(1, 400))


# ----------------------------------------------------------------------------------------
# Image crafting
# ----------------------------------------------------------------------------------------

def _blocks(seed: int, size: tuple[int, int] = (48, 48), block: int = 8, channels: int = 3,
            high: int = 200) -> np.ndarray:
    """Blocky noise (uint8, height x width x channels): different seeds are never near duplicates."""
    width, height = size
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, high + 1, (-(-height // block), -(-width // block), channels), dtype=np.uint8)
    return np.kron(cells, np.ones((block, block, 1), dtype=np.uint8))[:height, :width]


def _rgb(seed: int, size: tuple[int, int] = (48, 48)) -> Image.Image:
    return Image.fromarray(_blocks(seed, size))


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png(seed: int, size: tuple[int, int] = (48, 48)) -> bytes:
    return _encode(_rgb(seed, size), "PNG")


def _rgba_png() -> bytes:
    array = np.dstack([_blocks(2), np.full((48, 48, 1), 255, np.uint8)])
    array[:, :16, 3] = 0  # a fully transparent band on the left
    array[:, 16:24, 3] = 128
    return _encode(Image.fromarray(array, "RGBA"), "PNG")


def _palette_png() -> bytes:
    image = _rgb(3).quantize(colors=16)
    return _encode(image, "PNG", transparency=0)


def _grey_png() -> bytes:
    return _encode(Image.fromarray(_blocks(4, channels=1)[:, :, 0], "L"), "PNG")


def _grey16_levels() -> np.ndarray:
    """8-bit levels of the 16-bit picture (its 16-bit values are these * 257)."""
    return _blocks(5, channels=1)[:, :, 0]


def _grey16_png() -> bytes:
    image = Image.fromarray(_grey16_levels().astype(np.uint16) * 257)
    assert image.mode == "I;16"
    return _encode(image, "PNG")


def _cmyk_jpeg() -> bytes:
    return _encode(_rgb(6).convert("CMYK"), "JPEG", quality=95)


def _exif_rotated_jpeg() -> bytes:
    """48x32 as stored, blue with a red block at the stored top-left; EXIF says: turn 90 degrees clockwise.

    Shown upright it is 32x48 (portrait) with the red block at the top right.
    """
    array = np.zeros((32, 48, 3), np.uint8)
    array[:, :] = (20, 40, 220)
    array[:16, :16] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return _encode(Image.fromarray(array), "JPEG", quality=95, exif=exif.tobytes())


def _gif() -> bytes:
    return _encode(_rgb(8).quantize(colors=32), "GIF")


def _panorama() -> bytes:
    return _png(9, size=(128, 32))  # 4:1, shorter side exactly min_side


def _near_copy(data: bytes) -> bytes:
    """The same picture a little brighter, re-encoded as JPEG (full-resolution colour)."""
    array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
    brighter = Image.fromarray(np.clip(array + 6, 0, 255).astype(np.uint8))
    return _encode(brighter, "JPEG", quality=92, subsampling=0)


def _cut(data: bytes) -> bytes:
    """The first 60% of a file: the header is intact, the pixel data stops short (a broken download)."""
    return data[: len(data) * 6 // 10]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb(side: int) -> bytes:
    """A ~100-byte PNG whose header claims side x side RGB pixels (never decodable, never decoded)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


HTML_ERROR_PAGE = (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
                   b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n")
TEXT_FILE = b"This is not a picture, just some notes I saved with the wrong name.\n"

#: name in the folder -> bytes; the odd entries (links, folders, a huge file) are made in _build_folder
FILES: dict[str, Callable[[], bytes]] = {
    "rgb.png": lambda: _png(1),
    "rgba.png": _rgba_png,
    "palette_trns.png": _palette_png,
    "grey.png": _grey_png,
    "grey16.png": _grey16_png,
    "cmyk.jpg": _cmyk_jpeg,
    "rotated.jpg": _exif_rotated_jpeg,
    "animated_or_not.gif": _gif,
    "photo.webp": lambda: _encode(_rgb(10), "WEBP", quality=90),
    "scan.bmp": lambda: _encode(_rgb(11), "BMP"),
    "scan.tiff": lambda: _encode(_rgb(12), "TIFF"),
    "panorama.png": _panorama,
    "tiny.png": lambda: _png(13, size=(20, 20)),
    "sub/nested.png": lambda: _png(14),
    "truncated.png": lambda: _cut(_png(15)),
    "truncated.jpg": lambda: _cut(_encode(_rgb(16), "JPEG", quality=95)),
    "empty.png": lambda: b"",
    "notes.png": lambda: TEXT_FILE,
    "error_page.jpg": lambda: HTML_ERROR_PAGE,
    "bomb.png": lambda: _bomb(7000),  # 49 Mpx: above max_pixels (40 Mpx), below PIL's own limits
    "bomb_huge.png": lambda: _bomb(100_000),  # 10 Gpx: PIL's own bomb error
    "same.png": lambda: _png(17),
    "same_copy.png": lambda: _png(17),
    "same_other_caption.png": lambda: _png(17),
    "near_original.png": lambda: _png(18, size=(64, 64)),
    "near_copy.jpg": lambda: _near_copy(_png(18, size=(64, 64))),
    "dupkeys.png": lambda: _png(19),
    "frame_float.png": lambda: _png(20),
    "repeat_licence.png": lambda: _png(21),
    "bad_frame.png": lambda: _png(22),
    "number_caption.png": lambda: _png(23),
    **{f"lic_{i}.png": (lambda i=i: _png(30 + i)) for i in range(9)},
    **{f"text_{i}.png": (lambda i=i: _png(50 + i)) for i in range(8)},
    **{f"seq_{s}_{f}.png": (lambda s=s, f=f: _png(100 + 10 * SPLITS.index(s) + f))
       for s in SPLITS for f in range(5)},
    **{f"pair_{f}.png": (lambda f=f: _png(140 + f)) for f in range(2)},
}


# ----------------------------------------------------------------------------------------
# The case table: one sidecar row each, and where it must end
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One sidecar row and its expected outcome: ACCEPTED, or (stage, reason substring)."""

    key: str
    expect: str | tuple[str, str]
    row: dict[str, Any] | None = None  # written as a JSON line, with "case": key added
    line: str | None = None  # a raw sidecar line instead of a row
    bug: str | None = None  # a known product bug: the case is expected to fail (strict xfail)


_DROP = object()


def row(key: str, file: Any, expect: str | tuple[str, str] = ACCEPTED, bug: str | None = None,
        **fields: Any) -> Case:
    """A case whose sidecar row names ``file``; caption and licence have defaults (``_DROP`` removes one)."""
    values = {"file": file, "caption": f"A picture for the {key.replace('_', ' ')} case.",
              "license": "CC0-1.0", "author": "A. Photographer", **fields}
    return Case(key, expect, row={k: v for k, v in values.items() if v is not _DROP}, bug=bug)


def _family_in(split: str) -> str:
    """A family id that the configured split puts in ``split`` (so that no split is empty)."""
    config = SplitConfig(**SPLIT)
    return next(f"walk-{split}-{n}" for n in range(1000)
                if config.side(group_fraction(f"walk-{split}-{n}", config.salt)) == split)


SEQUENCE_FAMILY = {split: _family_in(split) for split in SPLITS}
BOM_CASE = "bom_first_row"
BLANK_AFTER = {"rgba_png", "lic_garbage"}  # a blank line, then a line of spaces, follows these rows

CASES: list[Case] = [
    # --- good images in many modes and formats
    row(BOM_CASE, "rgb.png", story="The file starts with a byte-order mark. This row still reads."),
    row("rgba_png", "rgba.png"),
    row("palette_transparency", "palette_trns.png"),
    row("grey_l", "grey.png"),
    row("grey_16bit", "grey16.png"),
    row("cmyk_jpeg", "cmyk.jpg"),
    row("exif_rotated", "rotated.jpg"),
    row("gif", "animated_or_not.gif"),
    row("webp", "photo.webp"),
    row("bmp", "scan.bmp"),
    row("tiff", "scan.tiff"),
    row("panorama", "panorama.png"),
    row("nested_path", "sub/nested.png", attribution="Studio B (photo)", camera="x100"),
    row("tiny", "tiny.png", ("image", "below min_side 32")),
    # --- damaged files
    row("truncated_png", "truncated.png", ("image", "cannot decode image")),
    row("truncated_jpeg", "truncated.jpg", ("image", "cannot decode image")),
    row("zero_bytes", "empty.png", ("image", "image is empty (0 bytes)")),
    row("text_named_png", "notes.png", ("image", "not a recognised image format")),
    row("html_error_page", "error_page.jpg", ("image", "not a recognised image format")),
    row("decompression_bomb", "bomb.png", ("image", "above max_pixels 40000000 (decompression-bomb guard)")),
    row("decompression_bomb_huge", "bomb_huge.png", ("image", "decompression bomb guard")),
    row("above_max_bytes", "huge.png", ("source", f"above max_bytes {DEFAULT_MAX_BYTES}; not read")),
    # --- duplicates
    row("listed_once", "same.png", caption="One file, listed twice.", story="It is the same file. Twice."),
    row("listed_twice", "same.png", ("duplicate_id", "(same image bytes and texts), kept from local_folder same.png"),
        caption="One file, listed twice.", story="It is the same file. Twice."),
    # the 30-file folder: a copy under another name with the same texts used to vanish
    row("same_bytes_same_texts", "same_copy.png",
        ("duplicate_id", "(same image bytes and texts), kept from local_folder same.png"),
        caption="One file, listed twice.", story="It is the same file. Twice."),
    row("same_bytes_other_caption", "same_other_caption.png", ("dedup", "exact duplicate of record"),
        caption="The same pixels, described differently."),
    row("near_original", "near_original.png"),
    row("near_copy", "near_copy.jpg", ("dedup", "near duplicate of record")),
    # --- licences
    row("lic_cc0", "lic_0.png", license="CC0"),
    row("lic_cc_by_spdx", "lic_1.png", license="CC-BY-4.0"),
    row("lic_cc_by_lower", "lic_2.png", license="cc by 4.0"),
    row("lic_cc_by_url", "lic_3.png", license="https://creativecommons.org/licenses/by/4.0/"),
    row("lic_public_domain", "lic_4.png", license="Public Domain"),
    row("lic_non_commercial", "lic_5.png", ("license", "license CC-BY-NC-4.0 not in allow-list"),
        license="CC BY-NC 4.0"),
    row("lic_all_rights_reserved", "lic_6.png",
        ("license", "license LicenseRef-All-Rights-Reserved not in allow-list"),
        license="© 2021 Jo. All rights reserved."),
    row("lic_missing", "lic_7.png", ("license", "license missing"), license=_DROP),
    row("lic_garbage", "lic_8.png", ("license", "not recognised"), license="free for all, just ask me lol"),
    # the same material twice, first under a licence the allow-list refuses, then under CC0
    row("repeat_refused_licence", "repeat_licence.png", ("license", "LicenseRef-All-Rights-Reserved not in allow-list"),
        caption="Shared twice, licensed once.", license="All rights reserved"),
    row("repeat_allowed_licence", "repeat_licence.png", ACCEPTED, caption="Shared twice, licensed once.",
        license="CC0-1.0"),  # the usable copy is the one kept
    # --- texts
    row("html_caption", "text_0.png", caption=HTML_CAPTION),
    row("blank_caption_no_story", "text_1.png", ("text", "no caption and no story"), caption="    "),
    row("control_characters", "text_2.png", caption=CONTROL_CAPTION),
    row("decomposed_unicode", "text_3.png", caption=NFD_CAPTION, story=NFD_CAPTION + " " + NFD_CAPTION),
    row("long_story_only", "text_4.png", caption=_DROP, story=LONG_STORY),
    row("emoji", "text_5.png", caption=EMOJI_CAPTION),
    row("right_to_left", "text_6.png", caption=RTL_CAPTION, story=RTL_CAPTION + ". " + RTL_CAPTION + "."),
    Case("duplicate_keys", ACCEPTED, line='{"file": "dupkeys.png", "caption": "A first caption.", '
                                          '"caption": "The later caption wins.", "license": "CC0-1.0", '
                                          '"case": "duplicate_keys"}'),
    # --- sidecar troubles
    Case("not_json", ("source", "invalid JSON (Expecting property name"),
         line='{"file": "text_7.png", caption: "no quotes", "case": 1'),
    Case("json_array", ("source", "expected a JSON object, got list"), line='["text_7.png", "An array.", "CC0-1.0"]'),
    row("no_file_key", _DROP, ("source", "'file' is missing")),
    row("file_does_not_exist", "holiday/beach.png", ("source", "file 'holiday/beach.png' does not exist")),
    row("dotdot_escape", "../outside/secret.png", ("source", "points outside the source folder; nothing was read")),
    row("absolute_path", "<absolute secret path>", ("source", "points outside the source folder; nothing was read")),
    row("symlink_out", "link_out.png", ("source", "points outside the source folder; nothing was read")),
    row("folder_named_png", "album.png", ("source", "'album.png' is not a file")),
    row("frame_index_word", "bad_frame.png", ("source", "frame_index 'two' is not an integer"), frame_index="two"),
    row("frame_index_fraction", "frame_float.png", ("source", "frame_index 1.5 is not an integer"),
        frame_index=1.5),
    row("caption_is_a_number", "number_caption.png", ("source", "'caption' must be a string, got 42"), caption=42),
    # --- groups: three complete 5-frame walks (one per split) and a 2-frame pair
    *[row(f"walk_{s}_{f}", f"seq_{s}_{f}.png", caption=f"Step {f} of the {s} walk: the path bends.",
          story=f"On the {s} walk we stopped {f + 1} times. The light changed.",
          group_id=SEQUENCE_FAMILY[s], family_id=SEQUENCE_FAMILY[s], frame_index=f)
      for s in SPLITS for f in range(5)],
    *[row(f"pair_{f}", f"pair_{f}.png", caption=f"Half {f} of a diptych.", group_id="diptych",
          family_id="diptych", frame_index=f) for f in range(2)],
]
CASE_BY_KEY = {case.key: case for case in CASES}
assert len(CASE_BY_KEY) == len(CASES) >= 45


# ----------------------------------------------------------------------------------------
# The folder and the run
# ----------------------------------------------------------------------------------------

def _build_folder(root: Path) -> tuple[Path, Path, dict[int, str]]:
    """The user's folder (and a file outside it); returns folder, outside file and sidecar line -> case."""
    folder, outside = root / "my_images", root / "outside"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    secret_info = PngImagePlugin.PngInfo()
    secret_info.add_text("Comment", SECRET_MARKER.decode())
    secret = outside / "secret.png"
    secret.write_bytes(_encode(_rgb(999), "PNG", pnginfo=secret_info))
    for name, make in FILES.items():
        (folder / name).write_bytes(make())
    os.symlink(secret, folder / "link_out.png")
    (folder / "album.png").mkdir()
    with open(folder / "huge.png", "wb") as handle:  # sparse: costs no disk and is never read
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(DEFAULT_MAX_BYTES + 1)

    lines, line_case = [], {}
    for case in CASES:
        if case.line is not None:
            text = case.line
        else:
            values = dict(case.row or {}, case=case.key)
            if values.get("file") == "<absolute secret path>":
                values["file"] = str(secret)
            text = json.dumps(values, ensure_ascii=False)
        lines.append(text)
        line_case[len(lines)] = case.key
        if case.key in BLANK_AFTER:
            lines += ["", "   "]
    (folder / SIDECAR).write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder, secret, line_case


class _Kept(MemoryDataset):
    """In memory and never released by the runner, so every intermediate can be inspected."""

    def _release(self) -> None:
        pass


def _parameters(folder: Path) -> dict[str, Any]:
    conf = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_data.yml").read_text())
    ingest_params = dict(conf["ingest"], workers=1)
    ingest_params["image"] = dict(conf["ingest"]["image"], size=[IMAGE_SIZE, IMAGE_SIZE])
    params = {
        "sources.scene_world": {"enabled": False},
        "sources.local_folder": {"enabled": True, "path": str(folder), "sidecar": SIDECAR, "corpus": "scene"},
        "sources.web": {"enabled": False},
        "sources.huggingface": {"enabled": False},
        "sources.story_reasoning": {"enabled": False},
        "sources.coco": {"enabled": False},
        "ingest": ingest_params,
        "captioning": {"enabled": False},
        "split": SPLIT,
        "story.corpus": conf["story"]["corpus"],
        "caption.corpus": conf["caption"]["corpus"],
        # the folder's records are all 'scene': the art and sequence corpora read them too
        "art.corpus": dict(conf["art"]["corpus"], corpus=["scene"]),
        "sequence.corpus": dict(conf["sequence"]["corpus"], corpus=["scene"]),
    }
    assert params["story.corpus"]["corpus"] == params["caption.corpus"]["corpus"] == ["scene"]
    return params


@dataclass
class Run:
    outputs: dict[str, Any]
    folder: Path
    secret: Path
    line_case: dict[int, str]
    placed: dict[str, set[str]] = field(default_factory=dict)  # case -> splits it is in (any corpus)
    placed_row: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> its record in a corpus

    def case_of(self, metadata: str) -> str:
        values = json.loads(metadata)
        return values["case"] if "case" in values else self.line_case[values["sidecar_line"]]

    def with_cases(self, name: str) -> pd.DataFrame:
        frame = self.outputs[name]
        return frame.assign(case=[self.case_of(m) for m in frame["metadata"]])

    def corpus_frames(self):
        for corpus in prepare.CORPORA:
            for split in SPLITS:
                yield corpus, split, self.outputs[f"{corpus}.{split}_records"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    folder, secret, line_case = _build_folder(tmp_path_factory.mktemp("user"))
    pipeline = (sources.create_pipeline() + ingest.create_pipeline() + captioning.create_pipeline()
                + prepare.create_pipeline())
    inputs = {f"params:{name}": value for name, value in _parameters(folder).items()}
    inputs["caption_cache"] = {}
    assert set(pipeline.inputs()) == set(inputs)
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in inputs.items()})
    for name in pipeline.all_outputs():
        catalog[name] = _Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    outputs = {name: catalog.load(name) for name in pipeline.all_outputs()}

    result = Run(outputs, folder, secret, line_case)
    for _, split, frame in result.corpus_frames():
        for record in frame.to_dict("records"):
            key = result.case_of(record["metadata"])
            result.placed.setdefault(key, set()).add(split)
            result.placed_row.setdefault(key, record)
    return result


def _raw_id(run: Run, key: str) -> str:
    raw = run.with_cases("raw_records")
    return raw.loc[raw["case"] == key, "record_id"].item()


def _rejected_row(run: Run, key: str) -> dict[str, Any]:
    rejected = run.with_cases("rejected_records")
    rows = rejected[rejected["case"] == key].to_dict("records")
    assert len(rows) == 1, f"{key}: {len(rows)} rejected rows"
    return rows[0]


GOOD_IMAGES = ("bom_first_row", "rgba_png", "palette_transparency", "grey_l", "grey_16bit", "cmyk_jpeg",
               "exif_rotated", "gif", "webp", "bmp", "tiff", "panorama", "nested_path")


def _pixels(record: dict[str, Any]) -> np.ndarray:
    image = Image.open(io.BytesIO(record["image"]))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(image, dtype=np.int16)


# ----------------------------------------------------------------------------------------
# Conservation: every row is somewhere, once
# ----------------------------------------------------------------------------------------

def test_every_stage_conserves_the_rows(run):
    out = run.outputs
    sidecar_lines = (run.folder / SIDECAR).read_text(encoding="utf-8-sig").splitlines()
    raw = run.with_cases("raw_records")
    assert len(raw) == len([line for line in sidecar_lines if line.strip()]) == len(CASES)
    assert raw["case"].tolist() == [case.key for case in CASES]  # one record per row, in sidecar order
    assert set(raw["source"]) == {"local_folder"} and set(raw["corpus"]) == {"scene"}

    accepted, ingest_rejected = out["accepted_records"], out["ingest_rejected_records"]
    assert len(accepted) + len(ingest_rejected) == len(raw)
    assert Counter(accepted["record_id"]) + Counter(ingest_rejected["record_id"]) == Counter(raw["record_id"])
    assert out["ingest_summary"]["source_rows"] == len(raw)

    captioned, text_rejected = out["captioned_records"], out["text_rejected_records"]
    assert len(captioned) + len(text_rejected) == len(accepted)
    assert Counter(captioned["record_id"]) + Counter(text_rejected["record_id"]) == Counter(accepted["record_id"])
    assert set(text_rejected["stage"]) == {"text"}
    assert len(out["record_splits"]) == len(captioned)


def test_the_ledger_puts_every_row_in_one_split_or_rejects_it_once(run):
    out = run.outputs
    raw, rejected, summary = out["raw_records"], out["rejected_records"], out["data_summary"]
    split_of: dict[str, set[str]] = {}
    for _, split, frame in run.corpus_frames():
        assert frame["record_id"].is_unique
        for rid in frame["record_id"]:
            split_of.setdefault(rid, set()).add(split)
    assert all(len(splits) == 1 for splits in split_of.values()), "a record is in two splits"
    # an id both placed and rejected can only be a row repeated in the sidecar (one copy kept)
    repeated = {rid for rid, n in Counter(raw["record_id"]).items() if n > 1}
    assert set(split_of) & set(rejected["record_id"]) <= repeated
    assert Counter(raw["record_id"]) == Counter(split_of.keys()) + Counter(rejected["record_id"])
    assert summary["source_rows"] == len(raw) == summary["in_corpora"] + summary["rejected"]
    assert summary["in_corpora"] == len(split_of) == len(out["captioned_records"])
    assert summary["rejected"] == len(rejected)
    assert summary["rejected_by_stage"] == dict(Counter(rejected["stage"]))
    for corpus in prepare.CORPORA:
        assert all(n > 0 for n in summary["corpora"][corpus].values()), (corpus, summary["corpora"][corpus])


def test_every_rejection_has_a_stage_and_a_reason(run):
    rejected = run.outputs["rejected_records"]
    assert len(rejected) > 0
    assert rejected["stage"].isin(["source", "duplicate_id", "license", "image", "dedup", "text", "corpus"]).all()
    assert rejected["reason"].map(lambda r: isinstance(r, str) and len(r.strip()) > 5).all()


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.key, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [])
     for case in CASES],
)
def test_each_row_ends_where_its_case_says(run, case):
    rejected = run.with_cases("rejected_records")
    mine = rejected[rejected["case"] == case.key]
    placed = run.placed.get(case.key, set())
    if case.expect == ACCEPTED:
        assert mine.empty, f"rejected: {mine[['stage', 'reason']].to_dict('records')}"
        assert len(placed) == 1, f"in splits {placed}"
    else:
        stage, reason = case.expect
        assert not placed, f"accepted into {placed}"
        assert len(mine) == 1, f"{len(mine)} rejected rows"
        assert (mine["stage"].item(), reason in mine["reason"].item()) == (stage, True), mine["reason"].item()


# ----------------------------------------------------------------------------------------
# Specific values
# ----------------------------------------------------------------------------------------

def test_texts_come_out_normalised(run):
    def texts(key):
        record = run.placed_row[key]
        return record["caption"], record["story"]

    assert texts("html_caption")[0] == "A purple square & a tree."
    caption, story = texts("decomposed_unicode")
    nfc = unicodedata.normalize("NFC", NFD_CAPTION)
    assert caption == nfc != NFD_CAPTION and story == f"{nfc} {nfc}"
    assert unicodedata.is_normalized("NFC", caption) and "é" in caption and "e\u0301" not in caption
    assert texts("control_characters")[0] == "A red kite over the hill."
    assert texts("emoji")[0] == EMOJI_CAPTION  # the zero-width joiner of the black cat stays
    assert texts("right_to_left")[0] == RTL_CAPTION
    assert texts("long_story_only") == (None, LONG_STORY)
    assert texts("duplicate_keys")[0] == "The later caption wins."
    # a story-only record is in the story corpus, not the caption corpus
    story_ids = {rid for c, _, f in run.corpus_frames() if c == "story" for rid in f["record_id"]}
    caption_ids = {rid for c, _, f in run.corpus_frames() if c == "caption" for rid in f["record_id"]}
    long_id = run.placed_row["long_story_only"]["record_id"]
    assert long_id in story_ids and long_id not in caption_ids
    blank = _rejected_row(run, "blank_caption_no_story")
    assert (blank["caption"], blank["story"]) == (None, None)
    nested = run.placed_row["nested_path"]
    assert nested["attribution"] == "Studio B (photo)" and json.loads(nested["metadata"])["camera"] == "x100"
    assert run.placed_row["lic_cc_by_url"]["license_spdx"] == "CC-BY-4.0"
    assert run.placed_row["lic_cc_by_lower"]["license_spdx"] == "CC-BY-4.0"
    assert run.placed_row["lic_public_domain"]["license_spdx"] == "PDM-1.0"


def test_exif_orientation_is_applied_before_resizing(run):
    # Upright the picture is portrait (32x48), so padding to a square adds white columns left
    # and right, and the red block sits at the top right. Unrotated (48x32), the padding
    # would be white rows above and below, and the block at the left.
    pixels = _pixels(run.placed_row["exif_rotated"])
    assert (pixels[16, 0] == WHITE).all() and (pixels[16, IMAGE_SIZE - 1] == WHITE).all()
    assert not (pixels[0, 16] == WHITE).all() and not (pixels[IMAGE_SIZE - 1, 16] == WHITE).all()
    red, blue = pixels[4, 22], pixels[28, 12]
    assert red[0] > 180 and red[2] < 90, red
    assert blue[2] > 180 and blue[0] < 90, blue


def test_modes_convert_to_rgb_as_designed(run):
    panorama = _pixels(run.placed_row["panorama"])  # 128x32 -> 32x8 band, white above and below
    assert (panorama[:10] == WHITE).all() and (panorama[-10:] == WHITE).all()
    assert not (panorama[14:18] == WHITE).all()
    rgba = _pixels(run.placed_row["rgba_png"])  # the transparent band is composited over white
    assert (rgba[:, :9] == WHITE).all()
    grey16 = _pixels(run.placed_row["grey_16bit"])  # 16-bit grey scaled to 8 bits, not clipped to white
    assert (grey16[..., 0] == grey16[..., 1]).all() and (grey16[..., 1] == grey16[..., 2]).all()
    assert abs(grey16[..., 0].mean() - _grey16_levels().mean()) < 8
    for key in GOOD_IMAGES:  # every mode and format comes out as a square RGB PNG
        _pixels(run.placed_row[key])


def test_unreadable_bytes_are_described_not_stored(run):
    for key, name in (("html_error_page", "error_page.jpg"), ("text_named_png", "notes.png"),
                      ("decompression_bomb", "bomb.png"), ("decompression_bomb_huge", "bomb_huge.png")):
        data = (run.folder / name).read_bytes()
        rejected = _rejected_row(run, key)
        assert rejected["image"] is None, key
        assert (rejected["image_sha256"], rejected["image_size_bytes"]) == (hashlib.sha256(data).hexdigest(),
                                                                            len(data)), key
    # a recognised image within the limits keeps its bytes, damaged or not
    for key, name in (("truncated_png", "truncated.png"), ("truncated_jpeg", "truncated.jpg")):
        assert _rejected_row(run, key)["image"] == (run.folder / name).read_bytes(), key
    empty = _rejected_row(run, "zero_bytes")
    assert (empty["image"], empty["image_sha256"], empty["image_size_bytes"]) == (None, "", 0)
    huge = _rejected_row(run, "above_max_bytes")  # refused before reading
    assert (huge["image"], huge["image_sha256"], huge["image_size_bytes"]) == (None, "", 0)


def test_nothing_outside_the_folder_is_read(run):
    secret = run.secret.read_bytes()
    digest = hashlib.sha256(secret).hexdigest()
    for key in ("dotdot_escape", "absolute_path", "symlink_out"):
        rejected = _rejected_row(run, key)
        assert (rejected["stage"], rejected["image_size_bytes"], rejected["image_sha256"]) == ("source", 0, ""), key
    for name, value in run.outputs.items():
        blob = pickle.dumps(value)
        assert SECRET_MARKER not in blob and secret not in blob, name
        assert digest.encode() not in blob, name


def test_repeats_name_the_record_that_was_kept(run):
    kept_id = _raw_id(run, "listed_once")
    assert _raw_id(run, "listed_twice") == _raw_id(run, "same_bytes_same_texts") == kept_id
    assert "listed_once" in run.placed
    for key in ("listed_twice", "same_bytes_same_texts"):  # the silently dropped row
        reason = _rejected_row(run, key)["reason"]
        assert reason == f"repeats record {kept_id} (same image bytes and texts), kept from local_folder same.png"
    assert f"exact duplicate of record {kept_id}" in _rejected_row(run, "same_bytes_other_caption")["reason"]
    original = run.placed_row["near_original"]["record_id"]
    assert f"near duplicate of record {original}" in _rejected_row(run, "near_copy")["reason"]


def test_groups_stay_together_in_one_split(run):
    for split in SPLITS:
        keys = [f"walk_{split}_{f}" for f in range(5)]
        assert all(run.placed[key] == {split} for key in keys), {key: run.placed.get(key) for key in keys}
        sequences = run.outputs[f"sequence.{split}_records"]
        walk = sequences[sequences["group_id"] == SEQUENCE_FAMILY[split]]
        assert walk["frame_index"].tolist() == [0, 1, 2, 3, 4]
        assert set(sequences["group_id"]) == {SEQUENCE_FAMILY[split]}  # only complete groups
    assert len(run.placed["pair_0"] | run.placed["pair_1"]) == 1
    splits = run.outputs["record_splits"]
    assert splits.groupby("family_id")["split"].nunique().max() == 1


# ----------------------------------------------------------------------------------------
# File names that should make a rejected row, not stop the whole run
# ----------------------------------------------------------------------------------------

def _bad_name_folder(path: Path, name_kind: str) -> str:
    if name_kind == "null byte":
        return "photo\u0000.png"
    if name_kind == "name too long":
        return "x" * 300 + ".png"
    os.symlink("loop_b.png", path / "loop_a.png")
    os.symlink("loop_a.png", path / "loop_b.png")
    return "loop_a.png"


@pytest.mark.parametrize("name_kind", ["null byte", "name too long", "symlink loop"],
                         ids=lambda kind: kind.replace(" ", "_"))
def test_an_unusable_file_name_is_a_rejected_row_not_a_crash(tmp_path, name_kind):
    (tmp_path / "ok.png").write_bytes(_png(1))
    name = _bad_name_folder(tmp_path, name_kind)
    (tmp_path / SIDECAR).write_text(
        json.dumps({"file": "ok.png", "caption": "Fine.", "license": "CC0-1.0"}) + "\n"
        + json.dumps({"file": name, "caption": "Odd name.", "license": "CC0-1.0"}) + "\n", encoding="utf-8")
    records = load_local_folder({"enabled": True, "path": str(tmp_path), "corpus": "scene"})
    problems = [json.loads(m).get("source_problem") for m in records["metadata"]]
    assert len(records) == 2 and problems[0] is None, problems
    assert isinstance(problems[1], str) and f"{SIDECAR} line 2" in problems[1], problems

