"""BLIP-2 captions for records that lack one, cached by image content.

``caption_records`` picks the records whose caption is missing (None, NaN or blank; or
every record with ``overwrite``), looks each image up in the caption cache, and only
when something is left loads BLIP-2 (``Blip2Processor`` + ``Blip2ForConditionalGeneration``)
and captions the remaining unique images in batches. A corpus that already has all its
captions (the scene world) therefore passes through without the model being loaded.

Each caption written records where it came from in the record's metadata JSON under
``"caption_source"``: ``{"model", "settings", "image_sha256"}``. ``record_id`` is not
recomputed: it keeps identifying the record as its source produced it.

The model is loaded from local files by default (``local_files_only``), because the
machines that run the pipelines cannot download at run time.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from multimodal_lab.captioning.cache import CaptionCache, as_cache, image_sha256, lookup
from multimodal_lab.config import from_params
from multimodal_lab.data.images import open_image, to_rgb

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class Blip2ModelNotFoundError(OSError):
    """The BLIP-2 weights or processor cannot be found where the config points."""


@dataclass
class Blip2Config:
    """Parameters of BLIP-2 captioning (``params:captioning`` in the wiring)."""

    model: str = "Salesforce/blip2-opt-2.7b"  # Hub id (in the local HF cache) or a save_pretrained directory
    batch_size: int = 8  # images per generate() call
    prompt: str | None = None  # text prefix to continue (e.g. "a photo of"); the caption is the continuation
    max_new_tokens: int = 30  # longest caption, in tokens
    num_beams: int = 1  # 1 = greedy decoding
    overwrite: bool = False  # also recaption records that already have a caption
    dtype: str = "auto"  # "auto" (bf16 on CUDA if supported, else fp16; fp32 on CPU), "float32", "float16", "bfloat16"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    local_files_only: bool = True  # never download; set false only where the Hub is reachable
    revision: str | None = None  # Hub revision to pin (ignored for local directories)
    progress: bool = True  # tqdm progress bar over batches

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"caption: batch_size={self.batch_size} must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"caption: max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.num_beams < 1:
            raise ValueError(f"caption: num_beams={self.num_beams} must be >= 1")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"caption: dtype={self.dtype!r} is not one of {['auto', *sorted(_DTYPES)]}")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> Blip2Config:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="Blip2Config")

    def settings(self) -> dict[str, Any]:
        """The generation settings a caption depends on (stored with every caption)."""
        return {"prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA when supported, fp16 on other CUDA, fp32 on CPU."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_blip2(config: Blip2Config) -> tuple[Any, Any, torch.device]:
    """Load processor and model, in eval mode on the resolved device and dtype.

    Returns:
        ``(processor, model, device)``.

    Raises:
        Blip2ModelNotFoundError: the model or processor is not where ``config.model``
            points (with how to point it at a local copy).
    """
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    options = {"local_files_only": config.local_files_only, "revision": config.revision}
    try:
        processor = Blip2Processor.from_pretrained(config.model, **options)
        model = Blip2ForConditionalGeneration.from_pretrained(config.model, dtype=dtype, **options)
    except (OSError, ValueError) as error:
        where = "locally (local_files_only is true)" if config.local_files_only else "locally or on the Hub"
        raise Blip2ModelNotFoundError(
            f"BLIP-2 model {config.model!r} was not found {where}: {type(error).__name__}: {error}. "
            f"Set params:captioning.model to a local directory containing a saved Blip2ForConditionalGeneration "
            f"and its Blip2Processor (model.save_pretrained(dir) and processor.save_pretrained(dir)), or "
            f"download {config.model!r} into the Hugging Face cache on a machine with internet "
            f"(`hf download {config.model}`) and copy the cache here."
        ) from error
    model = model.to(device).eval()
    if getattr(processor, "num_query_tokens", None) is None:
        # older saved processors do not know how many image tokens to insert
        processor.num_query_tokens = model.config.num_query_tokens
    image_token_id = processor.tokenizer.convert_tokens_to_ids(str(processor.image_token))
    if image_token_id != model.config.image_token_id:
        raise ValueError(
            f"processor of {config.model!r} maps the image token to id {image_token_id} but the model expects "
            f"{model.config.image_token_id}; save the processor and model from the same checkpoint"
        )
    return processor, model, device


def generate_captions(images: Sequence[Image.Image], processor: Any, model: Any, device: torch.device,
                      config: Blip2Config) -> list[str]:
    """Caption one batch of images.

    Args:
        images: RGB PIL images, length B.
        processor: the model's ``Blip2Processor``.
        model: ``Blip2ForConditionalGeneration`` in eval mode on ``device``.
        device: where the model is.
        config: generation settings (prompt, max_new_tokens, num_beams).

    Returns:
        B captions (the generated continuation of the prompt, special tokens removed).
    """
    prompts = [config.prompt or ""] * len(images)  # same prompt for all: no padding, batched == one by one
    inputs = processor(images=list(images), text=prompts, return_tensors="pt")
    inputs = {key: value.to(device) for key, value in inputs.items()}
    # the vision tower's dtype, not model.dtype: BLIP-2 keeps some modules in fp32
    vision_dtype = next(model.vision_model.parameters()).dtype
    inputs["pixel_values"] = inputs["pixel_values"].to(vision_dtype)  # (B, 3, H, W)
    prompt_length = inputs["input_ids"].shape[1]  # image tokens + BOS + prompt tokens
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=config.max_new_tokens, num_beams=config.num_beams, do_sample=False,
        )  # (B, prompt_length + new)
    texts = processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
    return [" ".join(text.split()) for text in texts]


def _needs_caption(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _rgb(image: bytes) -> Image.Image | None:
    """The image as RGB, opened within the project's byte and pixel limits (None when it cannot be)."""
    try:
        return to_rgb(open_image(image))
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad data
        return None


def caption_records(
    records: pd.DataFrame,
    config: Blip2Config,
    cache: Mapping[str, Any] | pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, CaptionCache]:
    """Fill missing captions with BLIP-2, reusing cached captions by image hash.

    Args:
        records: a record frame (extra columns are kept); not modified.
        config: model and generation settings.
        cache: the caption cache from the last run, as a dict or a frame
            (see :mod:`multimodal_lab.captioning.cache`); None starts empty.

    Returns:
        ``(records_out, cache_out)``: a copy of the records with captions filled and
        ``caption_source`` in their metadata, and the cache (dict form) with the new
        captions added. The model is loaded only if some image is not in the cache.
    """
    out = records.copy()
    cache_out = as_cache(cache)
    settings = config.settings()
    todo = [i for i, caption in enumerate(out["caption"]) if config.overwrite or _needs_caption(caption)]
    keys = {i: image_sha256(out["image"].iat[i]) for i in todo}
    missing = sorted({key for key in keys.values() if lookup(cache_out, key, config.model, settings) is None})
    if missing:
        images_by_key = {}
        for i in todo:
            if keys[i] in missing and keys[i] not in images_by_key:
                images_by_key[keys[i]] = out["image"].iat[i]
        _caption_into_cache(images_by_key, config, cache_out)

    captions = out["caption"].astype(object).tolist()
    metadata = out["metadata"].tolist()
    written = 0
    for i, key in keys.items():
        caption = lookup(cache_out, key, config.model, settings)
        if caption is None:
            continue  # undecodable image: left for ingest or a later stage to judge
        captions[i] = caption
        meta = json.loads(metadata[i]) if metadata[i] else {}
        meta["caption_source"] = {"model": config.model, "settings": settings, "image_sha256": key}
        metadata[i] = json.dumps(meta, sort_keys=True)
        written += 1
    caption_dtype = records["caption"].dtype
    out["caption"] = pd.Series(captions, index=out.index, dtype=object if caption_dtype.kind == "f" else caption_dtype)
    out["metadata"] = pd.Series(metadata, index=out.index, dtype=records["metadata"].dtype)
    logger.info("caption: %d of %d records needed a caption; %d captioned by %s (%d images generated, %d from "
                "cache)", len(todo), len(out), written, config.model, len(missing),
                len(set(keys.values())) - len(missing))
    return out, cache_out


def _caption_into_cache(images_by_key: Mapping[str, bytes], config: Blip2Config, cache: CaptionCache) -> None:
    """Load the model and caption the given images, writing each result into ``cache``."""
    decodable = {}
    for key, data in images_by_key.items():
        image = _rgb(data)
        if image is None:
            logger.warning("caption: image %s cannot be decoded; left uncaptioned", key[:12])
        else:
            decodable[key] = image
    if not decodable:
        return
    processor, model, device = load_blip2(config)
    keys = list(decodable)
    batches = range(0, len(keys), config.batch_size)
    for start in tqdm(batches, desc="BLIP-2 captions", unit="batch", disable=not config.progress):
        batch_keys = keys[start:start + config.batch_size]
        captions = generate_captions([decodable[k] for k in batch_keys], processor, model, device, config)
        for key, caption in zip(batch_keys, captions):
            cache[key] = {"caption": caption, "model": config.model, "settings": config.settings()}
