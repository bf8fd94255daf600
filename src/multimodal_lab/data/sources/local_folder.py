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
``family_id``         records that must share a split side and are never
                      deduplicated against each other (optional; the group id)
``frame_index``       position in the group (optional, integer, default 0)
====================  ========================================================

Other keys are kept in the record's ``metadata`` JSON.

Choices:

* Every sidecar row becomes exactly one record. A row that cannot be used — a line that
  is not a JSON object, no ``file``, a file that does not exist, is a folder, lies
  outside the source folder (``..``, an absolute path, a symlink out) or is larger than
  ``max_bytes``, a ``frame_index`` that is not an integer, a text field that is not
  text — still becomes a record, carrying the problem as text (``records.make_record``'s
  ``problem``), so ingest rejects it with that reason and the row is visible in the
  rejected records instead of vanishing. Nothing outside the folder is ever read.
* Only a sidecar that cannot be read as a whole (missing, not UTF-8, malformed CSV
  quoting) stops the run, naming the file and line.
* Images in the folder that no sidecar row names are ignored (there is no licence
  for them); their count is logged.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from multimodal_lab.data.images import DEFAULT_MAX_BYTES
from multimodal_lab.data.records import make_record, records_frame

logger = logging.getLogger(__name__)

SOURCE = "local_folder"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_KNOWN_KEYS = frozenset(
    {"file", "caption", "story", "license", "author", "attribution", "url", "group_id", "family_id", "frame_index"}
)


@dataclass
class LocalFolderConfig:
    """Where the folder is and what its records are (``params:sources.local_folder``)."""

    path: str  # the folder of images (relative paths are taken from the project root)
    sidecar: str = "metadata.jsonl"  # metadata file inside the folder: .jsonl or .csv
    corpus: str = "scene"  # the records' corpus: which model families read them
    max_bytes: int = DEFAULT_MAX_BYTES  # larger image files are not read (rejected with a reason)


class RowProblem(ValueError):
    """A sidecar row that cannot become a usable record; the message is the reason."""


def _rows_jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, RowProblem(
                f"{path.name} line {number}: invalid JSON ({exc.msg} at column {exc.colno}); each line "
                f'must be one JSON object such as {{"file": "a.png", "caption": "...", "license": "CC-BY-4.0"}}'
            )
            continue
        if not isinstance(row, dict):
            yield number, RowProblem(f"{path.name} line {number}: expected a JSON object, got {type(row).__name__}")
            continue
        yield number, row


def _rows_csv(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    # StringIO with newline="" keeps newlines inside quoted cells (multi-line stories).
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    if reader.fieldnames is None:
        raise ValueError(f"{path} is empty; it needs a header row with at least a 'file' column")
    try:
        for row in reader:
            number = reader.line_num
            if None in row:
                yield number, RowProblem(
                    f"{path.name} line {number}: more fields than the header "
                    f"({len(reader.fieldnames)} columns); quote values that contain commas"
                )
                continue
            # An empty CSV cell means "not given", like a missing JSON key.
            yield number, {k: v for k, v in row.items() if v not in (None, "")}
    except csv.Error as exc:
        raise ValueError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None


def _text(row: dict[str, Any], key: str, path: Path, number: int) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowProblem(f"{path.name} line {number}: '{key}' must be a string, got {value!r}")
    return value


def _read_sidecar(sidecar_path: Path) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    try:
        # utf-8-sig: a byte-order mark that some editors write is not part of the first key
        text = sidecar_path.read_text(encoding="utf-8-sig")
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


def _image_file(folder: Path, root: Path, name: Any, where: str, max_bytes: int) -> tuple[Path | None, bytes]:
    """The row's image path (for bookkeeping) and bytes; RowProblem when they cannot be used."""
    if not isinstance(name, str) or not name.strip():
        raise RowProblem(f"{where}: 'file' is missing; name the image file")
    if "\x00" in name:
        raise RowProblem(f"{where}: file name {name!r} contains a null byte")
    candidate = folder / name
    try:
        # resolve() follows symlinks, so a link that points out of the folder is caught too
        image_path = candidate.resolve()
        if Path(name).is_absolute() or not image_path.is_relative_to(root):
            raise RowProblem(f"{where}: file {name!r} points outside the source folder; nothing was read")
        if not image_path.exists():
            raise RowProblem(f"{where}: file {name!r} does not exist")
        if not image_path.is_file():
            raise RowProblem(f"{where}: {name!r} is not a file")
        size = image_path.stat().st_size
    except RowProblem:
        raise
    except (OSError, RuntimeError, ValueError) as error:  # too long, a symlink loop, ...
        raise RowProblem(f"{where}: file {name!r} cannot be opened ({type(error).__name__}: {error})") from None
    if size > max_bytes:
        raise RowProblem(f"{where}: file {name!r} is {size} bytes, above max_bytes {max_bytes}; not read")
    return image_path, image_path.read_bytes()


def _frame_index(value: Any, where: str) -> int:
    """An integer frame index: an int, or digits in a string (CSV cells are text); not 1.5 or true."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise RowProblem(f"{where}: frame_index {value!r} is not an integer")


def _row_record(row: dict[str, Any], folder: Path, root: Path, sidecar_path: Path, number: int,
                config: LocalFolderConfig) -> tuple[dict[str, Any], Path]:
    where = f"{sidecar_path.name} line {number}"
    image_path, image = _image_file(folder, root, row.get("file"), where, config.max_bytes)
    frame_index = _frame_index(row.get("frame_index", 0), where)
    attribution = _text(row, "attribution", sidecar_path, number) or _text(row, "author", sidecar_path, number)
    group_id, family_id = row.get("group_id"), row.get("family_id")
    extras = {k: v for k, v in row.items() if k not in _KNOWN_KEYS}
    name = row["file"]
    record = make_record(
        image=image,
        source=SOURCE,
        corpus=config.corpus,
        caption=_text(row, "caption", sidecar_path, number),
        story=_text(row, "story", sidecar_path, number),
        license=_text(row, "license", sidecar_path, number),
        attribution=attribution or "",
        url=_text(row, "url", sidecar_path, number) or name,
        group_id=None if group_id is None else str(group_id),
        family_id=None if family_id is None else str(family_id),
        frame_index=frame_index,
        metadata={"file": name, **extras},
    )
    return record, image_path


def load_local_folder(config: LocalFolderConfig | str | Path, sidecar: str | None = None,
                      corpus: str | None = None) -> pd.DataFrame:
    """Read a folder of images and its sidecar metadata into records.

    Args:
        config: the folder's settings, or the folder's path (then ``sidecar`` and
            ``corpus`` may be given too).
        sidecar: name of the metadata file inside the folder (``.jsonl`` or ``.csv``).
        corpus: value for the records' ``corpus`` column.

    Returns:
        A record frame (``records.RECORD_COLUMNS``), one row per sidecar row, in
        sidecar order, with ``source="local_folder"``; rows that cannot be used carry
        their problem (ingest rejects them with it).

    Raises:
        FileNotFoundError: the folder or the sidecar does not exist.
        ValueError: the sidecar cannot be read as a whole (the message names the file).
    """
    if not isinstance(config, LocalFolderConfig):
        config = LocalFolderConfig(path=str(config), **{k: v for k, v in (("sidecar", sidecar), ("corpus", corpus))
                                                         if v is not None})
    folder = Path(config.path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"source folder {folder} does not exist; set params:sources.local_folder.path "
            f"(conf/base/parameters_data.yml) to a folder of images with a {config.sidecar}"
        )
    sidecar_path = folder / config.sidecar
    if not sidecar_path.is_file():
        raise FileNotFoundError(
            f"sidecar {sidecar_path} not found; add a {config.sidecar} with one row per image "
            f"(keys: file, caption, story, license, author, url, group_id, family_id, frame_index)"
        )
    root = folder.resolve()
    records = []
    named: set[Path] = set()
    problems = 0
    for number, row in _read_sidecar(sidecar_path):
        try:
            if isinstance(row, RowProblem):
                raise row
            record, image_path = _row_record(row, folder, root, sidecar_path, number, config)
            named.add(image_path)
        except RowProblem as problem:
            problems += 1
            record = make_record(image=b"", source=SOURCE, corpus=config.corpus, url=f"{config.sidecar}:{number}",
                                 metadata={"sidecar_line": number}, problem=str(problem))
        records.append(record)
    if problems:
        logger.warning("%d sidecar row(s) in %s cannot be used; ingest rejects them with the reason "
                       "(see rejected_records)", problems, sidecar_path)
    unlisted = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in named
    ]
    if unlisted:
        logger.info("%d image(s) in %s are not in %s and were ignored", len(unlisted), folder, config.sidecar)
    logger.info("local folder %s: %d records", folder, len(records))
    return records_frame(records)
