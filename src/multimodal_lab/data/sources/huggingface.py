"""A Hugging Face ``datasets`` source: any image/text dataset mapped onto records.

``path`` may be a Hub id (``"user/name"``), a directory written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, a local folder of data files
(parquet, json, an imagefolder, ...), or a packaged builder name (``"parquet"``,
``"imagefolder"``) together with ``data_files`` / ``data_dir``. A column mapping says
which dataset column fills which record field.

Images are read *without* letting ``datasets`` decode them (rows are read as Arrow, so an
image arrives as its stored bytes or path), then decoded one at a time with Pillow and
re-encoded as PNG. An image Pillow cannot decode is kept as its raw bytes with an
``image_error`` note in the metadata, so that ingest rejects it with a reason instead of
the whole load failing.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from multimodal_lab.config import from_params
from multimodal_lab.data.records import make_record, records_frame

logger = logging.getLogger(__name__)

#: Record fields a dataset column can fill, and what each one expects.
MAPPABLE_FIELDS: dict[str, str] = {
    "image": "an image: Image feature, encoded bytes, a {'bytes', 'path'} dict or a file path (required)",
    "caption": "a string",
    "story": "a string",
    "license": "a string; rows without one get HFSourceConfig.license",
    "attribution": "a string; rows without one get HFSourceConfig.attribution",
    "group_id": "any value (made a string); records sharing it are split together",
    "frame_index": "an int",
    "url": "a string; default '<path>#<split>/<row>'",
}

#: Files that mark a directory written by ``save_to_disk``.
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class HFSourceError(RuntimeError):
    """A dataset could not be opened or does not fit the column mapping."""


@dataclass
class HFSourceConfig:
    """Parameters of a Hugging Face dataset source (``params:huggingface`` in the wiring)."""

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
    param_prefix: str = "params:huggingface",
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


def read_image_bytes(value: Any, *, base_dir: str | None = None) -> bytes:
    """Encoded bytes of an image value as ``datasets`` stores or returns it.

    Accepts a ``PIL.Image`` (encoded as PNG), raw bytes, a ``{'bytes', 'path'}`` dict
    or a file path (relative paths are resolved against ``base_dir``).
    """
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return read_image_bytes(str(value["path"]), base_dir=base_dir)
        raise ValueError("image value has neither bytes nor path")
    if isinstance(value, (str, Path)):
        file = Path(value)
        if not file.is_absolute() and base_dir is not None:
            file = Path(base_dir) / file
        return file.read_bytes()
    raise TypeError(f"cannot read an image from a {type(value).__name__}")


def to_png(data: bytes, max_side: int | None = None) -> bytes:
    """Decode image bytes and re-encode as PNG (RGB or RGBA), downscaled to ``max_side``.

    Raises:
        OSError / ValueError: Pillow cannot decode ``data``.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
        converted = image.convert(mode)
    if max_side is not None and max(converted.size) > max_side:
        converted.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_image(value: Any, *, max_side: int | None = None, base_dir: str | None = None) -> tuple[bytes, str]:
    """PNG bytes of an image value, or its raw bytes plus an error note when undecodable.

    Returns:
        ``(image_bytes, error)``; ``error`` is "" when the image was re-encoded.
    """
    raw = read_image_bytes(value, base_dir=base_dir)
    try:
        return to_png(raw, max_side), ""
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad data
        return raw, f"{type(error).__name__}: {error}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def load_hf_records(config: HFSourceConfig) -> pd.DataFrame:
    """Read one split of a dataset into records (source "huggingface").

    Args:
        config: where the dataset is and how its columns map onto record fields.

    Returns:
        A record frame, one row per dataset row (up to ``max_rows``), in dataset order.
    """
    dataset = open_dataset(
        config.path, split=config.split, name=config.name, data_files=config.data_files,
        data_dir=config.data_dir, revision=config.revision, cache_dir=config.cache_dir,
        streaming=config.streaming,
    )
    wanted = dict(config.columns) | {f"metadata_columns[{c}]": c for c in config.metadata_columns}
    check_columns(dataset, wanted, config.path, "params:huggingface.columns")
    base_dir = config.path if Path(config.path).is_dir() else None
    cols = config.columns
    records = []
    broken = 0
    for index, row in enumerate(iter_raw_rows(dataset, config.max_rows)):
        value = row.get(cols["image"])
        if value is None:
            logger.warning("huggingface source: row %d has no image in column %r; skipped", index, cols["image"])
            continue
        if isinstance(value, list):
            raise HFSourceError(f"column {cols['image']!r} holds a list of images; the generic source takes one "
                                f"image per row (use the story_reasoning source for image sequences)")
        image, error = encode_image(value, max_side=config.max_side, base_dir=base_dir)
        broken += bool(error)
        metadata: dict[str, Any] = {"dataset": config.path, "split": config.split, "row": index}
        metadata.update({c: _json_safe(row.get(c)) for c in config.metadata_columns})
        if error:
            metadata["image_error"] = error
        group = row.get(cols["group_id"]) if "group_id" in cols else None
        frame_index = row.get(cols["frame_index"]) if "frame_index" in cols else None
        records.append(
            make_record(
                image=image,
                source="huggingface",
                corpus=config.corpus,
                caption=_text(row.get(cols["caption"])) if "caption" in cols else None,
                story=_text(row.get(cols["story"])) if "story" in cols else None,
                license=(_text(row.get(cols["license"])) if "license" in cols else None) or config.license,
                attribution=(_text(row.get(cols["attribution"])) if "attribution" in cols else None)
                or config.attribution,
                url=(_text(row.get(cols["url"])) if "url" in cols else None)
                or f"{config.path}#{config.split}/{index}",
                group_id=None if group is None else str(group),
                frame_index=0 if frame_index is None else int(frame_index),
                metadata=metadata,
            )
        )
    logger.info("huggingface source: %d records from %s[%s] (%d undecodable images kept raw for ingest)",
                len(records), config.path, config.split, broken)
    return records_frame(records)
