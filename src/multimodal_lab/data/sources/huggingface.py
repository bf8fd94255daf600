"""A Hugging Face ``datasets`` source: any image/text dataset mapped onto records.

``path`` may be a Hub id (``"user/name"``), a directory written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, a local folder of data files
(parquet, json, an imagefolder, ...), or a packaged builder name (``"parquet"``,
``"imagefolder"``) together with ``data_files`` / ``data_dir``. A column mapping says
which dataset column fills which record field.

Images are read *without* letting ``datasets`` decode them (rows are read as Arrow, so an
image arrives as its stored bytes or as a file path), then decoded one at a time through
``data.images.open_image`` and re-encoded as PNG.

Choices:

* Every dataset row becomes exactly one record. A row that cannot be used still becomes a
  record, carrying the problem as text (``records.make_record``'s ``problem``), so ingest
  rejects it with that reason and the row is visible in the rejected records instead of
  vanishing: a row without an image, an image file that is missing or lies outside the
  dataset's folder, an image above ``max_bytes`` or ``max_pixels``, a ``frame_index``
  that is not an integer.
* An image stored as a file path (a string, or a ``{"path": ...}`` value without bytes)
  is read only from inside the dataset's own local folder (the ``save_to_disk`` directory,
  the folder of data files, or ``data_dir``): an absolute path or a ``..`` that leaves it,
  and a symlink resolving out of it, are refused without reading anything outside. A
  dataset without a local folder (a Hub dataset loaded by name, or a builder given only
  ``data_files``) has no folder to be inside of, so its path-only images are refused too;
  save such a dataset with its images embedded (``save_to_disk`` embeds them) and read the
  saved directory instead.
* The byte limit is checked before a file is read and the pixel limit from the image
  header before anything is decoded (the same limits as ingest); an image above either
  becomes a problem record and is never decoded.
* An image within the limits that Pillow cannot decode is kept as its raw bytes with an
  ``image_error`` note in the metadata, so that ingest's image stage rejects it with a
  reason instead of the whole load failing.
"""
from __future__ import annotations

import io
import json
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from multimodal_lab.config import from_params
from multimodal_lab.data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    open_image,
)
from multimodal_lab.data.records import make_record, records_frame

logger = logging.getLogger(__name__)

#: Record fields a dataset column can fill, and what each one expects.
MAPPABLE_FIELDS: dict[str, str] = {
    "image": "an image: Image feature, encoded bytes, a {'bytes', 'path'} dict or a file path (required)",
    "caption": "a string",
    "story": "a string",
    "license": "a string; rows without one get HFSourceConfig.license",
    "attribution": "a string; rows without one get HFSourceConfig.attribution",
    "group_id": "any value (made a string); records sharing it form one item (a sequence, a story)",
    "family_id": "any value (made a string); records sharing it stay on one side of the split and are "
    "never deduplicated against each other; default the group id",
    "frame_index": "an int",
    "url": "a string; default '<path>#<split>/<row>'",
}

#: Files that mark a directory written by ``save_to_disk``.
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class HFSourceError(RuntimeError):
    """A dataset could not be opened or does not fit the column mapping."""


class RowProblem(ValueError):
    """A dataset row (or one image of it) that cannot become a usable record; the message is the reason."""


@dataclass
class HFSourceConfig:
    """Parameters of a Hugging Face dataset source (``params:sources.huggingface`` in the wiring)."""

    path: str  # Hub id, save_to_disk directory, data-files folder, or builder name ("parquet", "imagefolder")
    columns: dict[str, str] = field(default_factory=lambda: {"image": "image"})  # record field -> dataset column
    name: str | None = None  # dataset configuration name (load_dataset's `name`)
    split: str = "train"  # which split to read
    data_files: Any = None  # load_dataset's data_files (a path, glob, list or {split: paths})
    data_dir: str | None = None  # load_dataset's data_dir
    revision: str | None = None  # Hub revision (branch, tag or commit) to pin
    cache_dir: str | None = None  # where datasets keeps its Arrow cache; None = the datasets default
    streaming: bool = False  # read rows lazily (with max_rows, avoids preparing the whole dataset)
    license: str | None = None  # licence of the dataset, used for rows whose own licence is empty
    attribution: str = ""  # credit line for rows without their own attribution
    corpus: str = "huggingface"  # corpus name written into every record
    max_rows: int | None = None  # read at most this many rows (from the start); None = all
    max_side: int | None = None  # downscale images so the longer side is at most this; None keeps size
    max_bytes: int = DEFAULT_MAX_BYTES  # larger images are not read or decoded (rejected with a reason)
    max_pixels: int = DEFAULT_MAX_PIXELS  # images whose header claims more pixels are never decoded (rejected)
    metadata_columns: list[str] = field(default_factory=list)  # extra columns copied into metadata JSON

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(MAPPABLE_FIELDS))
        if unknown:
            raise ValueError(f"huggingface source: columns has unknown record field(s) {unknown}; "
                             f"mappable fields are {sorted(MAPPABLE_FIELDS)}")
        if "image" not in self.columns:
            raise ValueError("huggingface source: columns must map 'image' to the dataset's image column, "
                             "e.g. columns: {image: image, caption: text}")
        if self.max_rows is not None and self.max_rows < 0:
            raise ValueError(f"huggingface source: max_rows={self.max_rows} must be >= 0 or null")
        if self.max_side is not None and self.max_side <= 0:
            raise ValueError(f"huggingface source: max_side={self.max_side} must be > 0 or null")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"huggingface source: max_bytes={self.max_bytes} and max_pixels={self.max_pixels} "
                             f"must be >= 1")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> HFSourceConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="HFSourceConfig")


def is_saved_dataset_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory written by ``save_to_disk``."""
    folder = Path(path)
    return folder.is_dir() and any((folder / marker).is_file() for marker in _SAVED_MARKERS)


def open_dataset(
    path: str,
    *,
    split: str,
    name: str | None = None,
    data_files: Any = None,
    data_dir: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
    param_prefix: str = "params:sources.huggingface",
) -> Any:
    """Open one split: ``load_from_disk`` for saved dirs, ``load_dataset`` otherwise.

    Args:
        path: Hub id, saved dataset directory, data-files folder or builder name.
        split: split name; for a saved ``DatasetDict`` it must be one of its keys.
        param_prefix: how the caller's parameters are named, for error messages.

    Returns:
        A ``datasets.Dataset`` (or ``IterableDataset`` when streaming).

    Raises:
        HFSourceError: the dataset cannot be opened (with what to do about it).
    """
    import datasets  # local: importing datasets is slow and only this source needs it

    if is_saved_dataset_dir(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise HFSourceError(f"split {split!r} not in the saved dataset at {path!r}; it has "
                                    f"{sorted(loaded)}; set {param_prefix}.split to one of them")
            loaded = loaded[split]
        if streaming:
            loaded = loaded.to_iterable_dataset()
        return loaded
    try:
        return datasets.load_dataset(
            path, name, split=split, data_files=data_files, data_dir=data_dir,
            revision=revision, cache_dir=cache_dir, streaming=streaming,
        )
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds (network, offline, bad split)
        if "split" in str(error).lower():
            hint = f"set {param_prefix}.split to a split the dataset has"
        else:
            hint = (
                f"without internet, download it where there is: datasets.load_dataset({path!r}, "
                f"split={split!r}).save_to_disk('<dir>'), copy <dir> here and set {param_prefix}.path to it "
                f"(or point it at a folder holding the dataset's parquet files)"
            )
        raise HFSourceError(
            f"cannot load dataset {path!r} (split {split!r}): {type(error).__name__}: {error}; {hint}"
        ) from error


def iter_raw_rows(dataset: Any, max_rows: int | None = None, batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """Rows as plain dicts, with image features left encoded ({'bytes', 'path'} dicts).

    Args:
        dataset: a ``datasets.Dataset`` or ``IterableDataset``.
        max_rows: stop after this many rows; None reads all.
        batch_size: rows converted from Arrow at a time (bounds memory).
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        if max_rows is not None:
            dataset = dataset.take(max_rows)
        yield from dataset.decode(False)
        return
    if max_rows is not None and max_rows < len(dataset):
        dataset = dataset.select(range(max_rows))
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from table.to_pylist()


def column_names(dataset: Any) -> list[str] | None:
    """The dataset's columns, or None when a streaming dataset does not know them yet."""
    names = getattr(dataset, "column_names", None)
    return list(names) if names else None


def check_columns(dataset: Any, wanted: Mapping[str, str], path: str, param: str) -> None:
    """Fail with the available columns when a mapped column is missing."""
    available = column_names(dataset)
    if available is None:
        return
    missing = {key: col for key, col in wanted.items() if col not in available}
    if missing:
        raise HFSourceError(f"dataset {path!r} has no column(s) {missing} (from {param}); "
                            f"its columns are {available}")


def dataset_folder(path: str, data_dir: str | None = None) -> Path | None:
    """The local folder a dataset's image files must lie in, or None when it has none.

    A ``save_to_disk`` directory or a folder of data files is its own folder; a packaged
    builder (``"imagefolder"``, ``"parquet"``) reads from its ``data_dir``. A Hub dataset
    loaded by name, or a builder given only ``data_files``, has no folder.
    """
    for candidate in (path, data_dir):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


# Opening flags for an image file: no symlink at the last step (the path was resolved just
# before, so a link appearing there was swapped in since) and no blocking on a FIFO.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def read_image_file(name: str, folder: Path | str | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Bytes of an image file that a dataset row names, read only from inside ``folder``.

    Args:
        name: the path as the row gives it; a relative path is taken from ``folder``.
        folder: the dataset's own folder (see :func:`dataset_folder`); None refuses every path.
        max_bytes: a larger file is refused before it is read.

    Returns:
        The file's bytes.

    Raises:
        RowProblem: the file lies outside the folder (``..``, an absolute path elsewhere, a
            symlink out of it), does not exist, is not a regular file or is above
            ``max_bytes``; nothing outside the folder was read.
    """
    if folder is None:
        raise RowProblem(
            f"image file {name!r} is only a path and the dataset has no local folder to read it from; "
            "nothing was read (save the dataset with its images embedded, e.g. with save_to_disk, and read that)"
        )
    folder = Path(os.path.normpath(Path(folder).absolute()))
    root = folder.resolve()
    given = Path(name)
    candidate = given if given.is_absolute() else folder / given
    outside = RowProblem(f"image file {name!r} points outside the dataset folder; nothing was read")
    # A path that plainly leaves the folder is refused before anything is looked up, so
    # nothing outside the folder is even stat'ed for it.
    lexical = Path(os.path.normpath(candidate))
    if not (lexical.is_relative_to(root) or lexical.is_relative_to(folder)):
        raise outside
    try:
        # resolve() follows symlinks, so a link inside the folder that points out of it is caught too
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as error:  # symlink loops, NUL bytes in the name
        raise RowProblem(f"image file {name!r} cannot be resolved ({error})") from None
    if not resolved.is_relative_to(root):
        raise outside
    try:
        descriptor = os.open(resolved, _OPEN_FLAGS)
    except FileNotFoundError:
        raise RowProblem(f"image file {name!r} does not exist in the dataset folder") from None
    except OSError as error:
        raise RowProblem(f"image file {name!r} cannot be opened ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RowProblem(f"image file {name!r} is not a regular file")
        if info.st_size > max_bytes:
            raise RowProblem(f"image file {name!r} is {info.st_size} bytes, above max_bytes {max_bytes}; not read")
        data = file.read(max_bytes + 1)  # one byte more shows a file that grew since fstat
    if len(data) > max_bytes:
        raise RowProblem(f"image file {name!r} is above max_bytes {max_bytes}; not read")
    return data


def read_image_bytes(value: Any, *, folder: Path | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Encoded bytes of an image value as ``datasets`` stores or returns it.

    Args:
        value: raw bytes, a ``{'bytes', 'path'}`` dict (stored bytes win over the path), a
            file path, or a ``PIL.Image`` (encoded as PNG).
        folder: the dataset's folder; paths are read only from inside it (see
            :func:`read_image_file`).
        max_bytes: larger encoded images are refused (files before they are read).
        max_pixels: a ``PIL.Image`` with more pixels is refused.

    Raises:
        RowProblem: the value holds no image, names a file that cannot be read from the
            folder, or is above a limit.
    """
    if isinstance(value, Image.Image):
        # Already decoded by whoever made it; the pixel limit still bounds what is encoded.
        if value.width * value.height > max_pixels:
            raise RowProblem(f"image is {value.width}x{value.height} pixels, above max_pixels {max_pixels}")
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, Mapping):
        if value.get("bytes"):
            data = bytes(value["bytes"])
        elif value.get("path"):
            return read_image_file(str(value["path"]), folder, max_bytes=max_bytes)
        else:
            raise RowProblem("image value has neither bytes nor a path")
    elif isinstance(value, (str, os.PathLike)):
        return read_image_file(os.fspath(value), folder, max_bytes=max_bytes)
    else:
        raise RowProblem(f"cannot read an image from a {type(value).__name__}")
    if len(data) > max_bytes:
        raise RowProblem(f"image is {len(data)} bytes, above max_bytes {max_bytes}; not decoded")
    return data


def to_png(data: bytes, max_side: int | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode image bytes within the limits and re-encode as PNG (RGB or RGBA), downscaled to ``max_side``.

    Raises:
        ImageRejected: above a limit (checked before decoding; see ``data.images.open_image``)
            or not decodable.
    """
    with open_image(data, max_bytes=max_bytes, max_pixels=max_pixels) as image:
        mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
        converted = image.convert(mode)
    if max_side is not None and max(converted.size) > max_side:
        converted.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue()


def _above_limit(reason: str) -> bool:
    """Whether an ``open_image`` rejection is a limit (the header was read, nothing decoded).

    Matches the wording of ``data.images.open_image``: its own pixel check, and Pillow's
    decompression-bomb error for headers far beyond Pillow's limit. The byte limit is
    already checked by :func:`read_image_bytes`.
    """
    return "above max_pixels" in reason or "above max_bytes" in reason or reason.startswith("decompression bomb")


def encode_image(value: Any, *, max_side: int | None = None, folder: Path | str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, str]:
    """PNG bytes of an image value, or its raw bytes plus an error note when undecodable.

    Args:
        value: an image value (see :func:`read_image_bytes`).
        max_side: downscale so the longer side is at most this; None keeps the size.
        folder: the dataset's folder; file paths are read only from inside it.
        max_bytes: larger images are refused before they are read or decoded.
        max_pixels: images whose header claims more pixels are refused before decoding.

    Returns:
        ``(image_bytes, error)``; ``error`` is "" when the image was re-encoded. Bytes that
        are within the limits but cannot be decoded are returned raw with the reason, for
        ingest's image stage to reject.

    Raises:
        RowProblem: the value cannot be read (see :func:`read_image_bytes`) or is above a
            limit; nothing was decoded.
    """
    raw = read_image_bytes(value, folder=folder, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return to_png(raw, max_side, max_bytes=max_bytes, max_pixels=max_pixels), ""
    except ImageRejected as rejected:
        reason = str(rejected)
        if _above_limit(reason):
            raise RowProblem(f"{reason}; not decoded") from None
        return raw, reason
    except Exception as error:  # noqa: BLE001 - Pillow raises many types while converting bad data
        return raw, f"{type(error).__name__}: {error}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _mapped_fields(row: Mapping[str, Any], index: int, config: HFSourceConfig) -> dict[str, Any]:
    """The record fields the column mapping fills, besides the image; RowProblem when one is unusable."""
    cols = config.columns

    def text(key: str) -> str | None:
        return _text(row.get(cols[key])) if key in cols else None

    group = row.get(cols["group_id"]) if "group_id" in cols else None
    family = row.get(cols["family_id"]) if "family_id" in cols else None
    frame_index = row.get(cols["frame_index"]) if "frame_index" in cols else None
    try:
        frame_index = 0 if frame_index is None else int(frame_index)
    except (TypeError, ValueError):
        raise RowProblem(f"row {index}: frame_index {frame_index!r} in column {cols['frame_index']!r} "
                         f"is not an integer") from None
    return {
        "caption": text("caption"),
        "story": text("story"),
        "license": text("license") or config.license,
        "attribution": text("attribution") or config.attribution,
        "url": text("url") or f"{config.path}#{config.split}/{index}",
        "group_id": None if group is None else str(group),
        "family_id": None if family is None else str(family),
        "frame_index": frame_index,
    }


def _row_record(row: Mapping[str, Any], index: int, config: HFSourceConfig,
                folder: Path | None) -> tuple[dict[str, Any], str]:
    """One dataset row as one record, and how it went: "ok", "problem" or "undecodable".

    A row that cannot be used carries its problem; an undecodable image is kept raw.
    """
    column = config.columns["image"]
    metadata: dict[str, Any] = {"dataset": config.path, "split": config.split, "row": index}
    metadata.update({c: _json_safe(row.get(c)) for c in config.metadata_columns})
    fields: dict[str, Any] = {
        "source": "huggingface", "corpus": config.corpus, "license": config.license,
        "attribution": config.attribution, "url": f"{config.path}#{config.split}/{index}", "metadata": metadata,
    }
    try:
        fields |= _mapped_fields(row, index, config)
        value = row.get(column)
        if value is None:
            raise RowProblem(f"row {index} has no image in column {column!r}")
        if isinstance(value, list):
            raise HFSourceError(f"column {column!r} holds a list of images; the generic source takes one "
                                f"image per row (use the story_reasoning source for image sequences)")
        try:
            image, error = encode_image(value, max_side=config.max_side, folder=folder,
                                        max_bytes=config.max_bytes, max_pixels=config.max_pixels)
        except RowProblem as problem:
            raise RowProblem(f"row {index}, column {column!r}: {problem}") from None
    except RowProblem as problem:
        # The row number in the problem keeps the ids of problem rows distinct.
        return make_record(image=b"", **fields, problem=str(problem)), "problem"
    if error:
        metadata["image_error"] = error
    return make_record(image=image, **fields), "undecodable" if error else "ok"


def load_hf_records(config: HFSourceConfig) -> pd.DataFrame:
    """Read one split of a dataset into records (source "huggingface").

    Args:
        config: where the dataset is and how its columns map onto record fields.

    Returns:
        A record frame, one row per dataset row (up to ``max_rows``), in dataset order;
        rows that cannot be used carry their problem (ingest rejects them with it).

    Raises:
        HFSourceError: the dataset cannot be opened or does not fit the column mapping.
    """
    dataset = open_dataset(
        config.path, split=config.split, name=config.name, data_files=config.data_files,
        data_dir=config.data_dir, revision=config.revision, cache_dir=config.cache_dir,
        streaming=config.streaming,
    )
    wanted = dict(config.columns) | {f"metadata_columns[{c}]": c for c in config.metadata_columns}
    check_columns(dataset, wanted, config.path, "params:sources.huggingface.columns")
    folder = dataset_folder(config.path, config.data_dir)
    records = []
    outcomes: Counter[str] = Counter()
    for index, row in enumerate(iter_raw_rows(dataset, config.max_rows)):
        record, outcome = _row_record(row, index, config, folder)
        records.append(record)
        outcomes[outcome] += 1
    if outcomes["problem"]:
        logger.warning("huggingface source: %d row(s) of %s[%s] cannot be used; ingest rejects them with the "
                       "reason (see rejected_records)", outcomes["problem"], config.path, config.split)
    logger.info("huggingface source: %d records from %s[%s] (%d undecodable images kept raw for ingest)",
                len(records), config.path, config.split, outcomes["undecodable"])
    return records_frame(records)
