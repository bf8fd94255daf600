"""Real scene-world engravings for the art judge's tests, rendered once per session."""
from __future__ import annotations

import functools

import numpy as np

from multimodal_lab.evaluation.art import real_engravings


@functools.lru_cache(maxsize=4)
def engravings(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[frozenset]]:
    """``count`` engravings (N, S, S, 3) uint8 and their (shape, size) object sets."""
    images, objects, _captions = real_engravings(count, seed, size)
    return images, objects


@functools.lru_cache(maxsize=4)
def engraving_records(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[dict], list[str]]:
    """``count`` engravings (N, S, S, 3) uint8 with their full metadata (layouts) and captions."""
    import io
    import json

    from PIL import Image

    from multimodal_lab.data.scene_world import SceneWorldConfig, engraving_record

    config = SceneWorldConfig(seed=seed, n_scenes=0, n_engravings=count, n_sequences=0, image_size=size,
                              damaged_fraction=0.0, bad_license_fraction=0.0)
    records = [engraving_record(config, i) for i in range(count)]
    images = np.stack([np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB")) for r in records])
    metadata = [r["metadata"] if isinstance(r["metadata"], dict) else json.loads(r["metadata"]) for r in records]
    return images, metadata, [str(r["caption"]) for r in records]


def png_bytes(array: np.ndarray) -> bytes:
    """One (S, S, 3) uint8 image as PNG bytes (the bytes a generated sample is written as)."""
    from multimodal_lab.data.scene_render import encode_png

    from PIL import Image

    return encode_png(Image.fromarray(array))


def generate_in_another_process(model_class: str, directory, seeds: list[int]) -> tuple[np.ndarray, list[str]]:
    """``model_class.from_pretrained(directory).generate(seeds)`` in a fresh Python at 1 thread:
    images (N, S, S, 3) uint8 and captions. ``model_class``: "module:Class"."""
    import json
    import subprocess
    import sys

    module, name = model_class.split(":")
    script = (f"import sys, json, torch; from {module} import {name}; torch.set_num_threads(1); "
              f"m = {name}.from_pretrained(sys.argv[1]); images, captions = m.generate(json.loads(sys.argv[2])); "
              "sys.stdout.buffer.write(json.dumps([list(images.shape), captions]).encode() + b'\\n' + images.tobytes())")
    out = subprocess.run([sys.executable, "-c", script, str(directory), json.dumps(seeds)], capture_output=True,
                         check=True).stdout
    head, _, pixels = out.partition(b"\n")
    shape, captions = json.loads(head)
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape), captions


def fit_composer(model, images: np.ndarray, metadata: list[dict], captions: list[str], *, steps: int,
                 batch_size: int, lr: float, seed: int = 0) -> list[tuple[float, float, float]]:
    """Fit an ``ArtComposer`` with Adam on rendered engravings (random batches, seeded); returns
    each step's (caption cross-entropy, pixel MSE, backdrop reader cross-entropy)."""
    import torch

    from multimodal_lab.data.record_dataset import encode_texts, pad_texts
    from multimodal_lab.models.art_composer import layout_of

    ids = [torch.tensor(t) for t in encode_texts(captions, model.tokenizer, model.config.max_caption_tokens)]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    layouts = torch.stack([layout_of(m, model.config) for m in metadata])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(images), (batch_size,), generator=generator)
        padded = pad_texts([ids[i] for i in rows], model.tokenizer.pad_token_id)
        labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
        labels[:, 0] = -100
        out = model(pixels[rows], padded["input_ids"], padded["attention_mask"], labels, layouts[rows])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append((float(out.caption_ce), float(out.mse), float(out.reader_ce)))
    return history
