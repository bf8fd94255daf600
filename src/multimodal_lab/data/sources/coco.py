"""COCO-format captions: a folder of images plus a ``captions_*.json`` -> records.

Layout (COCO 2017; Flickr30k or any other set once its captions are in this layout)::

    coco/
      train2017/                    the images folder: ``path``
        000000000009.jpg
      annotations/
        captions_train2017.json     found automatically (see below), or ``annotations``

The captions file is one JSON object with three lists; other keys are ignored:

================  ==============================================================
key               what is read
================  ==============================================================
``images``        ``{"id", "file_name", "license"?, "coco_url"?, "flickr_url"?}``:
                  one entry per image; ``file_name`` relative to ``path``
``annotations``   ``{"id", "image_id", "caption"}``: one entry per caption, several
                  per image (COCO has five)
``licenses``      ``{"id", "name", "url"}``: the licences that ``images[].license``
                  points at (optional)
================  ==============================================================

Choices:

* One record per listed image, in image-id order: ``caption`` is the image's first
  caption by annotation id, ``metadata["references"]`` all of its captions in
  annotation-id order, each through ``data.text.normalize_text`` (blank ones dropped),
  so ``references[0]`` is the record's caption; ``metadata["coco_image_id"]`` the id.
  ``group_id`` and ``family_id`` are ``"coco:<image id>"``: everything of one image stays
  on one side of the split. ``url`` is ``coco_url``, else ``flickr_url``, else the file
  name; ``attribution`` names the dataset (``info.description``) and the licence.
* Every listed image becomes exactly one record. An image without a caption has
  ``caption`` None (captioning may fill it, otherwise ingest's text stage rejects it).
  An entry that cannot be used — no usable ``id`` or ``file_name``, an id listed twice,
  a file that is missing, is not a regular file, lies outside the images folder (``..``,
  an absolute path, a symlink out) or is above ``max_bytes`` — still becomes a record,
  carrying the problem as text (``records.make_record``'s ``problem``), so ingest rejects
  it with that reason. Nothing outside the images folder is read.
* Captions whose ``image_id`` is not among the images have no image: they are counted
  and logged as a warning, as are caption entries that are not usable (no ``image_id``,
  a ``caption`` that is not text).
* Licences: an image's licence entry is mapped to an SPDX id by its ``url``, then its
  ``name`` (``data.licenses.normalize_license``:
  ``http://creativecommons.org/licenses/by-nc-sa/2.0/`` -> ``CC-BY-NC-SA-2.0``), or by
  ``license_map`` when the user maps it explicitly. An entry that is recognised neither
  way keeps its name (e.g. COCO's "No known copyright restrictions", which is not a
  public-domain statement), so the licence stage rejects it as not recognised; nothing
  is guessed. An image whose licence the file does not give (no ``license``, or an id
  missing from ``licenses``) gets ``license`` from the config; with ``license: null``
  ingest rejects it as having no licence.
* The whole file is read up front; a file that cannot be read as a COCO captions file
  (not JSON, no ``images`` list, annotations without captions as in an
  ``instances_*.json``) stops the run naming the file.
* With ``max_side`` unset the image bytes are kept as read (ingest validates and
  normalises them); with ``max_side`` set they are decoded within the ``max_bytes`` /
  ``max_pixels`` limits, downscaled and re-encoded as PNG on load, which keeps a large
  folder within memory (an undecodable file is kept raw for ingest's image stage to
  reject, see ``data.sources.huggingface``).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from multimodal_lab.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from multimodal_lab.data.licenses import DEFAULT_LICENSE_ALLOW, normalize_license
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.sources.huggingface import RowProblem, encode_image, read_image_file
from multimodal_lab.data.text import normalize_text

logger = logging.getLogger(__name__)

SOURCE = "coco"
#: Name pattern of a COCO captions file, looked for when ``annotations`` is not given.
CAPTIONS_GLOB = "captions_*.json"


@dataclass
class COCOSourceConfig:
    """Where the images and their COCO captions file are (``params:sources.coco``)."""

    path: str  # the images folder, e.g. data/01_raw/coco/train2017 (relative paths: from the project root)
    # the COCO captions JSON; None = the one captions_*.json in path, path/annotations or path/../annotations
    annotations: str | None = None
    license: str | None = None  # SPDX id for images whose licence the file does not give; None = rejected
    # COCO licence id, url or name -> SPDX id, for licence entries that are not recognised on their own
    license_map: dict[str, str] = field(default_factory=dict)
    corpus: str = "scene"  # the records' corpus: which model families read them
    max_images: int | None = None  # read only the first this many images by image id; None = all
    max_side: int | None = None  # decode and downscale images on load to this longer side; None keeps the bytes
    max_bytes: int = DEFAULT_MAX_BYTES  # larger image files are not read (rejected with a reason)
    max_pixels: int = DEFAULT_MAX_PIXELS  # with max_side: images claiming more pixels are not decoded
    progress: bool = True  # show a tqdm progress bar over the images

    def __post_init__(self) -> None:
        if self.license is not None and normalize_license(self.license) is None:
            raise ValueError(f"coco source: license {self.license!r} is not a recognised licence; use an SPDX id "
                             f"such as {', '.join(DEFAULT_LICENSE_ALLOW[:3])}, or null")
        mapped = {}
        for key, value in dict(self.license_map or {}).items():
            spdx = normalize_license(value) if isinstance(value, str) else None
            if spdx is None:
                raise ValueError(f"coco source: license_map[{key!r}] = {value!r} is not a recognised licence; "
                                 f"map each COCO licence id, url or name to an SPDX id such as 'PDM-1.0'")
            mapped[_map_key(key)] = spdx
        self.license_map = mapped
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"coco source: max_images={self.max_images} must be >= 0 or null")
        if self.max_side is not None and self.max_side <= 0:
            raise ValueError(f"coco source: max_side={self.max_side} must be > 0 or null")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"coco source: max_bytes={self.max_bytes} and max_pixels={self.max_pixels} must be >= 1")


def _map_key(value: Any) -> str:
    """How a ``license_map`` key and a licence entry's id, url or name are compared."""
    return " ".join(str(value).split()).lower()


def find_annotations(folder: str | Path) -> Path:
    """The COCO captions file of an images folder, when none is configured.

    Looks for ``captions_*.json`` in the folder, in ``<folder>/annotations`` and in
    ``<folder>/../annotations`` (the COCO 2017 layout). A file named after the folder
    (``captions_train2017.json`` for ``train2017/``) wins; otherwise there must be
    exactly one.

    Raises:
        FileNotFoundError: no captions file was found (the message lists where it looked).
        ValueError: several were found and none is named after the folder (it lists them).
    """
    folder = Path(folder)
    places = [folder, folder / "annotations", folder.parent / "annotations"]
    found: dict[Path, Path] = {}
    for place in places:
        if place.is_dir():
            for candidate in sorted(place.glob(CAPTIONS_GLOB)):
                if candidate.is_file():
                    found.setdefault(candidate.resolve(), candidate)
    looked = ", ".join(str(p) for p in places)
    if not found:
        raise FileNotFoundError(
            f"no {CAPTIONS_GLOB} found for images folder {folder}; looked in {looked}; set "
            f"params:sources.coco.annotations to the COCO captions JSON"
        )
    named = [p for p in found.values() if p.name == f"captions_{folder.resolve().name}.json"]
    if len(named) == 1:
        return named[0]
    candidates = named or list(found.values())
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"several captions files found for images folder {folder} (looked in {looked}): "
        f"{', '.join(str(p) for p in candidates)}; set params:sources.coco.annotations to the one to read"
    )


def read_captions_file(path: str | Path) -> dict[str, Any]:
    """The captions file as a dict with ``images``, ``annotations``, ``licenses`` and ``info``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not UTF-8 JSON in the COCO captions layout (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO captions file {path} not found; set params:sources.coco.annotations to "
                                f"an existing captions_*.json (or null to look for one next to the images)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold one JSON object with 'images' and 'annotations', "
                         f"got {type(data).__name__}")
    lists: dict[str, Any] = {}
    for key, required in (("images", True), ("annotations", False), ("licenses", False)):
        value = data.get(key)
        if value is None and not required:
            value = []
        if not isinstance(value, list):
            raise ValueError(f"{path}: '{key}' must be a list of objects, got "
                             f"{'nothing' if value is None else type(value).__name__}; is this a COCO captions file?")
        lists[key] = value
    annotations = lists["annotations"]
    if annotations and not any(isinstance(a, dict) and "caption" in a for a in annotations):
        raise ValueError(f"{path}: none of its {len(annotations)} annotations has a 'caption'; it is not a captions "
                         f"file (instances_*.json and person_keypoints_*.json hold boxes, not captions); point "
                         f"params:sources.coco.annotations at a captions_*.json")
    info = data.get("info")
    return {**lists, "info": info if isinstance(info, dict) else {}}


def _id_key(value: Any) -> str | None:
    """An image or annotation id as a dictionary key: ints and non-empty strings; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _order(value: Any, position: int) -> tuple[int, Any, int]:
    """Sort key by id: integer ids numerically, then string ids, then entries without one in file order."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (0, value, position)
    if _id_key(value) is not None:
        return (1, str(value), position)
    return (2, "", position)


def _captions_by_image(annotations: list[Any], known: set[str], name: str) -> dict[str, list[str]]:
    """The normalised captions of each image id, in annotation-id order; unusable entries are logged."""
    usable: dict[str, list[tuple[tuple[int, Any, int], str]]] = {}
    unknown: Counter[str] = Counter()
    bad = 0
    for position, entry in enumerate(annotations):
        if not isinstance(entry, dict):
            bad += 1
            continue
        image = _id_key(entry.get("image_id"))
        caption = entry.get("caption")
        if image is None or not isinstance(caption, str):
            bad += 1
            continue
        if image not in known:
            unknown[image] += 1
            continue
        text = normalize_text(caption)
        if text is not None:
            usable.setdefault(image, []).append((_order(entry.get("id"), position), text))
    if unknown:
        examples = ", ".join(list(unknown)[:5])
        logger.warning("coco source: %d caption(s) in %s name %d image id(s) that are not in its images "
                       "(e.g. %s); they have no image and were skipped", sum(unknown.values()), name,
                       len(unknown), examples)
    if bad:
        logger.warning("coco source: %d annotation(s) in %s have no usable image_id or caption text and were "
                       "skipped", bad, name)
    return {image: [text for _, text in sorted(entries)] for image, entries in usable.items()}


@dataclass
class _Licence:
    """What an image's licence entry gives a record."""

    license: str | None
    attribution: str
    entry: dict[str, Any] | None


def _licence_table(licenses: list[Any], config: COCOSourceConfig, name: str) -> dict[str, _Licence]:
    """Licence id -> SPDX id (or the entry's own name when unrecognised) and a credit line."""
    table: dict[str, _Licence] = {}
    unrecognised = []
    for entry in licenses:
        if not isinstance(entry, dict) or _id_key(entry.get("id")) is None:
            continue
        url, title = (entry.get(k).strip() if isinstance(entry.get(k), str) else "" for k in ("url", "name"))
        mapped = [config.license_map[_map_key(k)] for k in (entry["id"], url, title)
                  if k != "" and _map_key(k) in config.license_map]
        spdx = mapped[0] if mapped else normalize_license(url) or normalize_license(title)
        if spdx is None and (title or url):
            unrecognised.append(title or url)
        credit = f"{title} ({url})" if title and url else title or url
        table[_id_key(entry["id"])] = _Licence(license=spdx or title or url or None, attribution=credit,
                                               entry={k: entry.get(k) for k in ("id", "name", "url")})
    if unrecognised:
        logger.info("coco source: licence(s) in %s not recognised, left to the licence stage (map them with "
                    "params:sources.coco.license_map if you know their terms): %s", name, unrecognised)
    return table


def _image_bytes(file_name: str, folder: Path, config: COCOSourceConfig) -> tuple[bytes, str]:
    """The image's bytes (as read, or PNG when downscaled) and an error note; RowProblem when unusable."""
    if config.max_side is None:
        return read_image_file(file_name, folder, max_bytes=config.max_bytes), ""
    return encode_image(file_name, max_side=config.max_side, folder=folder, max_bytes=config.max_bytes,
                        max_pixels=config.max_pixels)


def _image_record(entry: Any, position: int, seen: dict[str, int], captions: Mapping[str, list[str]],
                  licences: Mapping[str, _Licence], folder: Path, config: COCOSourceConfig, name: str,
                  dataset: str) -> tuple[dict[str, Any], str]:
    """One ``images`` entry as one record, and how it went: "ok", "problem" or "undecodable"."""
    where = f"{name} images[{position}]"
    if not isinstance(entry, dict):
        problem = f"{where}: expected a JSON object, got {type(entry).__name__}"
        return make_record(image=b"", source=SOURCE, corpus=config.corpus, license=config.license,
                           url=f"{name}#images[{position}]", metadata={"images_index": position},
                           problem=problem), "problem"
    raw_id = entry.get("id")
    key = _id_key(raw_id)
    file_name = entry.get("file_name")
    references = captions.get(key, []) if key is not None else []
    licence = _licence_for(entry, licences, config)
    url = next((u for u in (entry.get("coco_url"), entry.get("flickr_url")) if isinstance(u, str) and u.strip()),
               file_name if isinstance(file_name, str) else f"{name}#images[{position}]")
    metadata: dict[str, Any] = {"coco_image_id": raw_id, "file": file_name, "references": references,
                                "annotations_file": name, "coco_license": licence.entry}
    if isinstance(entry.get("flickr_url"), str) and entry["flickr_url"] != url:
        metadata["flickr_url"] = entry["flickr_url"]
    fields: dict[str, Any] = {
        "source": SOURCE, "corpus": config.corpus, "caption": references[0] if references else None,
        "license": licence.license, "attribution": "; ".join(p for p in (dataset, licence.attribution) if p),
        "url": url, "group_id": None if key is None else f"coco:{key}",
        "family_id": None if key is None else f"coco:{key}", "metadata": metadata,
    }
    try:
        if key is None:
            raise RowProblem(f"{where}: 'id' {raw_id!r} is not an integer or a string; the image cannot be "
                             f"matched to its captions")
        if key in seen:
            raise RowProblem(f"{where}: image id {raw_id!r} is listed twice (first at images[{seen[key]}])")
        seen[key] = position
        if not isinstance(file_name, str) or not file_name.strip():
            raise RowProblem(f"{where}: image {raw_id!r} has no 'file_name'")
        try:
            image, error = _image_bytes(file_name, folder, config)
        except RowProblem as problem:
            raise RowProblem(f"{name} image {raw_id!r}: {problem}") from None
    except RowProblem as problem:
        return make_record(image=b"", **fields, problem=str(problem)), "problem"
    if error:
        metadata["image_error"] = error
    return make_record(image=image, **fields), "undecodable" if error else "ok"


def _licence_for(entry: Mapping[str, Any], licences: Mapping[str, _Licence], config: COCOSourceConfig) -> _Licence:
    """The image's licence entry, or the configured fallback when the file gives none usable."""
    key = _id_key(entry.get("license"))
    if key is not None and key in licences:
        return licences[key]
    return _Licence(config.license, "", None)


def load_coco(config: COCOSourceConfig | str | Path, annotations: str | None = None,
              corpus: str | None = None) -> pd.DataFrame:
    """Read an images folder and its COCO captions file into records (source ``"coco"``).

    Args:
        config: the source's settings, or the images folder's path (then ``annotations``
            and ``corpus`` may be given too).
        annotations: path of the captions JSON; None looks for one (see :func:`find_annotations`).
        corpus: value for the records' ``corpus`` column.

    Returns:
        A record frame (``records.RECORD_COLUMNS``), one row per listed image (up to
        ``max_images``), in image-id order; images that cannot be used carry their
        problem (ingest rejects them with it).

    Raises:
        FileNotFoundError: the folder or the captions file does not exist.
        ValueError: the captions file cannot be read as one, or several were found.
    """
    if not isinstance(config, COCOSourceConfig):
        config = COCOSourceConfig(path=str(config), annotations=annotations,
                                  **({} if corpus is None else {"corpus": corpus}))
    folder = Path(config.path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"images folder {folder} does not exist; set params:sources.coco.path (conf/base/parameters_data.yml) "
            f"to the folder holding the images, e.g. data/01_raw/coco/train2017"
        )
    captions_path = Path(config.annotations) if config.annotations else find_annotations(folder)
    data = read_captions_file(captions_path)
    name = captions_path.name
    entries = sorted(enumerate(data["images"]),
                     key=lambda item: _order(item[1].get("id") if isinstance(item[1], dict) else None, item[0]))
    known = {k for _, e in entries if isinstance(e, dict) and (k := _id_key(e.get("id"))) is not None}
    captions = _captions_by_image(data["annotations"], known, name)
    licences = _licence_table(data["licenses"], config, name)
    if config.max_images is not None:
        entries = entries[:config.max_images]
    description = data["info"].get("description")
    dataset = description.strip() if isinstance(description, str) else ""

    records = []
    outcomes: Counter[str] = Counter()
    seen: dict[str, int] = {}
    for position, entry in tqdm(entries, desc="coco images", unit="img", disable=not config.progress):
        record, outcome = _image_record(entry, position, seen, captions, licences, folder, config, name, dataset)
        records.append(record)
        outcomes[outcome] += 1
    dangling = sum(1 for _, e in entries if isinstance(e, dict) and _id_key(e.get("license")) is not None
                   and _id_key(e.get("license")) not in licences)
    if dangling:
        logger.warning("coco source: %d image(s) of %s name a licence id that is not in its licenses; they get "
                       "params:sources.coco.license (%s)", dangling, name, config.license)
    uncaptioned = sum(1 for r in records if r["caption"] is None)
    if outcomes["problem"]:
        logger.warning("coco source: %d image(s) of %s cannot be used; ingest rejects them with the reason "
                       "(see rejected_records)", outcomes["problem"], name)
    if uncaptioned:
        logger.info("coco source: %d image(s) of %s have no caption", uncaptioned, name)
    logger.info("coco source: %d records from %s (%d listed images; %d undecodable images kept raw for ingest)",
                len(records), name, len(data["images"]), outcomes["undecodable"])
    return records_frame(records)
