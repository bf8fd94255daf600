"""Local folder source: a folder of images plus a sidecar metadata file -> records.

Layout::

    my_images/
      metadata.jsonl        one JSON object per line (or metadata.csv with a header row)
      cat.png
      sub/dog.jpg

Each sidecar row describes one image:

====================  ========================================================
key                   meaning
====================  ========================================================
``file``              path of the image relative to the folder (required)
``caption``           one-sentence caption (optional)
``story``             multi-sentence story (optional)
``license``           licence as written by its owner (optional; ingest rejects
                      records without a recognised licence)
``author`` /          credit line; ``attribution`` wins when both are given
``attribution``
``url``               origin URL; the relative file path when absent
``group_id``          story / sequence id (optional; a standalone image is its
                      own group)
``frame_index``       position in the group (optional, integer, default 0)
====================  ========================================================

Other keys are kept in the record's ``metadata`` JSON.

Choices:

* A sidecar row naming a file that does not exist still becomes a record, with empty
  image bytes, so ingest rejects it with a reason ("image is empty (0 bytes)") and
  the row is visible in the rejected records instead of vanishing. A warning lists
  such files.
* Images in the folder that no sidecar row names are ignored (there is no licence
  for them); their count is logged.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from multimodal_lab.data.records import make_record, records_frame

logger = logging.getLogger(__name__)

SOURCE = "local_folder"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_KNOWN_KEYS = frozenset(
    {"file", "caption", "story", "license", "author", "attribution", "url", "group_id", "frame_index"}
)


def _rows_jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno}); each line "
                f"must be one JSON object such as "
                f'{{"file": "a.png", "caption": "...", "license": "CC-BY-4.0"}}'
            ) from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{path} line {number}: expected a JSON object, got {type(row).__name__}"
            )
        yield number, row


def _rows_csv(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # StringIO with newline="" keeps newlines inside quoted cells (multi-line stories).
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if reader.fieldnames is None:
        raise ValueError(f"{path} is empty; it needs a header row with at least a 'file' column")
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                raise ValueError(
                    f"{path} line {number}: more fields than the header "
                    f"({len(reader.fieldnames)} columns); quote values that contain commas"
                )
            # An empty CSV cell means "not given", like a missing JSON key.
            yield number, {k: v for k, v in row.items() if v not in (None, "")}
    except csv.Error as exc:
        raise ValueError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None


def _text(row: dict[str, Any], key: str, path: Path, number: int) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{path} line {number}: '{key}' must be a string, got {value!r}")
    return value


def _read_sidecar(sidecar_path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = sidecar_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{sidecar_path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ValueError(f"cannot read sidecar {sidecar_path}: {exc.strerror}") from None
    suffix = sidecar_path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _rows_jsonl(sidecar_path, text)
    if suffix == ".csv":
        return _rows_csv(sidecar_path, text)
    raise ValueError(
        f"sidecar {sidecar_path.name!r} has an unknown format; use a .jsonl (JSON Lines) or .csv file"
    )


def load_local_folder(
    path: str | Path, sidecar: str = "metadata.jsonl", corpus: str = "local"
) -> pd.DataFrame:
    """Read a folder of images and its sidecar metadata into records.

    Args:
        path: the folder.
        sidecar: name of the metadata file inside the folder (``.jsonl`` or ``.csv``).
        corpus: value for the records' ``corpus`` column.

    Returns:
        A record frame (``records.RECORD_COLUMNS``), one row per sidecar row, in
        sidecar order, with ``source="local_folder"``.

    Raises:
        FileNotFoundError: the folder or the sidecar does not exist.
        ValueError: the sidecar is malformed (the message names the file and line).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"source folder {folder} does not exist; set the local folder path in the "
            f"parameters (sources.local_folder.path in parameters_data.yml) to a folder of "
            f"images with a {sidecar}"
        )
    sidecar_path = folder / sidecar
    if not sidecar_path.is_file():
        raise FileNotFoundError(
            f"sidecar {sidecar_path} not found; add a {sidecar} with one row per image "
            f"(keys: file, caption, story, license, author, url, group_id)"
        )
    root = folder.resolve()
    records = []
    named: set[Path] = set()
    missing: list[str] = []
    for number, row in _read_sidecar(sidecar_path):
        name = row.get("file")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{sidecar_path} line {number}: 'file' is missing; name the image file")
        image_path = (folder / name).resolve()
        if not image_path.is_relative_to(root):
            raise ValueError(
                f"{sidecar_path} line {number}: file {name!r} points outside the source folder"
            )
        named.add(image_path)
        try:
            frame_index = int(row.get("frame_index", 0))
        except (TypeError, ValueError):
            raise ValueError(
                f"{sidecar_path} line {number}: frame_index {row.get('frame_index')!r} is not an integer"
            ) from None
        if image_path.is_file():
            image = image_path.read_bytes()
        else:
            image = b""
            missing.append(name)
        attribution = _text(row, "attribution", sidecar_path, number) or _text(
            row, "author", sidecar_path, number
        )
        group_id = row.get("group_id")
        extras = {k: v for k, v in row.items() if k not in _KNOWN_KEYS}
        records.append(
            make_record(
                image=image,
                source=SOURCE,
                corpus=corpus,
                caption=_text(row, "caption", sidecar_path, number),
                story=_text(row, "story", sidecar_path, number),
                license=_text(row, "license", sidecar_path, number),
                attribution=attribution or "",
                url=_text(row, "url", sidecar_path, number) or name,
                group_id=None if group_id is None else str(group_id),
                frame_index=frame_index,
                metadata={"file": name, **extras},
            )
        )
    if missing:
        logger.warning(
            "%d sidecar row(s) in %s name missing files (kept with empty image bytes, so "
            "ingest rejects them): %s",
            len(missing), sidecar_path, ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
        )
    unlisted = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in named
    ]
    if unlisted:
        logger.info("%d image(s) in %s are not in %s and were ignored", len(unlisted), folder, sidecar)
    logger.info("local folder %s: %d records", folder, len(records))
    return records_frame(records)
