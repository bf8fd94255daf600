"""Use trained models from Python: one loader for every family, and the story API.

    from multimodal_lab.inference import load, load_image_folder

    teller = load("data/06_models/story_gpt2/model/<version>/model")  # any family's directory
    for name, image in load_image_folder("my_pictures"):
        print(name, teller.tell(image)[0])

or, for the story model explicitly:

    from multimodal_lab.inference import StoryTeller, load_image_folder

    teller = StoryTeller.from_pretrained("data/06_models/story_gpt2/model/<version>/model")
    for name, image in load_image_folder("my_pictures"):
        print(name, teller.tell(image)[0])

Images may come in any size and PIL mode (RGBA, LA, P with transparency, L, I;16, CMYK,
...): each becomes the model's input exactly as ingest made its training images — the
same RGB conversion and the same fit (size, mode, resampling, background), read from the
model's ``config.json`` (``data.images.ImageInput``). Files are opened with the same byte
and pixel limits as ingest, checked before anything is decoded.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from multimodal_lab.data.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, open_image
from multimodal_lab.generation.story import GenerationSettings, generate_stories
from multimodal_lab.models.preprocess import images_to_tensor
from multimodal_lab.models.story_gpt2 import StoryGPT2
from multimodal_lab.reporting.figures import image_data_uri
from multimodal_lab.reporting.html import render_page


@dataclass
class InferenceParams:
    """Stories for a folder of the user's images (``params:story_gpt2_inference``)."""

    images_dir: str  # the folder of images (read directly inside it, sorted by name)
    batch_size: int = 16  # images generated together
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # decoding

    def __post_init__(self) -> None:
        if not self.images_dir:
            raise ValueError("images_dir must name a folder of images")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class CaptionInferenceParams:
    """Captions for a folder of the user's images (``params:vit_captioner_inference``)."""

    images_dir: str  # the folder of images (read directly inside it, sorted by name)
    batch_size: int = 32  # images captioned together
    num_beams: int = 5  # 1 = greedy search
    length_penalty: float = 0.0  # beam ranking: log-probability / length ** length_penalty
    attention_maps: bool = True  # draw where each word looked on the page

    def __post_init__(self) -> None:
        if not self.images_dir:
            raise ValueError("images_dir must name a folder of images")
        if self.batch_size < 1 or self.num_beams < 1:
            raise ValueError(f"batch_size and num_beams must be >= 1, got {self.batch_size}, {self.num_beams}")


@dataclass
class ContinuationInferenceParams:
    """5th frames and sentences for a folder of the user's sequences (``params:story_continuation_inference``)."""

    sequences_dir: str  # a folder of sequence folders: 4 images + sentences.json each (read_sequence_folder)
    samples: int = 0  # vae variants: this many more 5th frames drawn per sequence
    seed: int = 0  # seed of the draws: the same seed gives the same frames
    generation: GenerationSettings | None = None  # how the sentence is decoded (None: greedy up to the model's limit)

    def __post_init__(self) -> None:
        if not self.sequences_dir:
            raise ValueError("sequences_dir must name a folder of sequence folders")
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if isinstance(self.generation, Mapping):
            self.generation = GenerationSettings(**self.generation)


SENTENCES_FILE = "sentences.json"


@dataclass(frozen=True)
class UserSequence:
    """One sequence of the user's folder, as :func:`read_sequence_folder` reads it."""

    name: str  # the sequence folder's name
    files: list[str]  # the frames' file names, in the order the model reads them
    frames: list[Image.Image]  # the 4 frames, as read (any size and mode; EXIF orientation applied)
    sentences: list[str]  # one per frame, in the same order


def _read_sentences(sequence: Path, count: int) -> list[str]:
    import json

    sidecar = sequence / SENTENCES_FILE
    if not sidecar.is_file():
        raise ValueError(f"sequence {sequence.name}: no {SENTENCES_FILE}; write its {count} sentences there as a "
                         f"JSON list, one per frame in file-name order")
    try:
        sentences = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"sequence {sequence.name}: {SENTENCES_FILE} is not valid UTF-8 JSON ({exc}); write a "
                         f"JSON list of {count} strings") from exc
    if not isinstance(sentences, list) or not all(isinstance(t, str) for t in sentences):
        raise ValueError(f"sequence {sequence.name}: {SENTENCES_FILE} must be a JSON list of {count} strings, "
                         f"got {sentences!r:.120}")
    if len(sentences) != count:
        raise ValueError(f"sequence {sequence.name}: {SENTENCES_FILE} holds {len(sentences)} sentence(s); it needs "
                         f"exactly {count}, one per frame in file-name order")
    return sentences


def read_sequence_folder(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                         max_pixels: int = DEFAULT_MAX_PIXELS) -> list[UserSequence]:
    """Read a folder of the user's sequences: one sub-folder per sequence, in name order.

    Layout::

        <path>/
          <sequence>/
            1.png 2.png 3.png 4.png   # the 4 frames, in file-name order (any size and mode)
            sentences.json            # a JSON list of the 4 frames' sentences, in the same order

    Every file of a sequence folder other than ``sentences.json`` is one of its frames;
    hidden files and folders (".DS_Store") are ignored everywhere, and so are loose files
    directly in ``path``. Frames are opened with the same byte and pixel limits as ingest.

    Args:
        path: the folder of sequence folders.
        max_bytes: largest frame file read.
        max_pixels: largest frame width * height decoded.

    Returns:
        One :class:`UserSequence` per sequence folder, sorted by folder name.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
        ValueError: no sequence folder, or a sequence without exactly 4 readable images and a
            ``sentences.json`` of 4 strings (the message names the sequence, the file and the fix).
    """
    from multimodal_lab.models.story_continuation import INPUT_FRAMES

    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"sequence folder {folder} does not exist; pass a directory of sequence folders")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; pass a directory of sequence folders")
    sequences = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sequences:
        hint = (f" ({folder} looks like one sequence: move it into a sub-folder of its own)"
                if (folder / SENTENCES_FILE).is_file() else "")
        raise ValueError(f"{folder} holds no sequence folder{hint}; put each sequence's {INPUT_FRAMES} images and "
                         f"{SENTENCES_FILE} in a folder of its own inside it")
    out = []
    for sequence in sequences:
        sentences = _read_sentences(sequence, INPUT_FRAMES)
        files = sorted(p for p in sequence.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.name != SENTENCES_FILE)
        if len(files) != INPUT_FRAMES:
            listed = ", ".join(p.name for p in files) or "none"
            raise ValueError(f"sequence {sequence.name}: holds {len(files)} file(s) besides {SENTENCES_FILE} "
                             f"({listed}); it needs exactly {INPUT_FRAMES} images, its frames")
        frames = []
        for file in files:
            try:
                frames.append(_open_user_image(file, max_bytes, max_pixels))
            except Exception as error:  # PIL raises many unrelated types for bad files
                raise ValueError(f"sequence {sequence.name}: frame {file.name} cannot be read "
                                 f"({type(error).__name__}: {error}); replace it with a PNG or JPEG") from error
        out.append(UserSequence(sequence.name, [p.name for p in files], frames, sentences))
    return out


def load(directory: str | os.PathLike, device: str | torch.device | None = None) -> Any:
    """Load any family's saved model directory and return that family's inference API.

    The family is read from the directory's ``config.json`` (e.g. a story_gpt2 model
    gives a :class:`StoryTeller`).

    Args:
        directory: a model directory written by a family's ``save_pretrained`` (the
            ``<family>.model`` catalog entry: ``data/06_models/<family>/model/<version>/model``).
        device: where to run; None picks CUDA when available.

    Raises:
        FileNotFoundError: the directory holds no model.
        ValueError: its config names no known family, or the family has no inference API.
    """
    from multimodal_lab.families import family_of_directory

    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model directory {path} does not exist; pass a folder under data/06_models/<family>/model/<version>/"
        )
    family = family_of_directory(path)
    if family.inference is None:
        raise ValueError(f"the {family.name} family has no inference API yet")
    api = family.inference(family.load(path, "cpu"))
    if device is not None and hasattr(api, "to"):
        api = api.to(device)
    return api


class StoryTeller:
    """A loaded story model that turns PIL images into stories.

    Args:
        model: a trained ``StoryGPT2``.
        device: where to run ("cpu", "cuda", ...); None picks CUDA when available.
        batch_size: images generated together.
    """

    def __init__(self, model: StoryGPT2, device: str | torch.device | None = None, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device | None = None,
                        batch_size: int = 16) -> StoryTeller:
        """Load a model directory written by ``StoryGPT2.save_pretrained``.

        Args:
            directory: the model directory (``config.json``, ``model.safetensors``, ``tokenizer/``).
            device: where to run; None picks CUDA when available.
            batch_size: images generated together.
        """
        path = Path(directory)
        if not path.is_dir():
            raise FileNotFoundError(
                f"model directory {path} does not exist; pass the folder written by "
                "StoryGPT2.save_pretrained (the story_gpt2.model catalog entry)"
            )
        return cls(StoryGPT2.from_pretrained(path), device=device, batch_size=batch_size)

    def to(self, device: str | torch.device) -> StoryTeller:
        """Move the model to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @torch.no_grad()
    def tell(self, images: Image.Image | Sequence[Image.Image],
             settings: GenerationSettings | None = None) -> list[str]:
        """Write one story per image.

        Args:
            images: one PIL image or a sequence of them, any size and mode.
            settings: decoding settings (default: greedy, 64 new tokens).

        Returns:
            One story per image, in input order.
        """
        batch = _pil_batch(images)
        settings = settings or GenerationSettings()
        stories: list[str] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            pixels = images_to_tensor(chunk, self.model.image_input).to(self.device)  # (B, 3, S, S)
            stories.extend(generate_stories(self.model, pixels, settings))
        return stories


class Captioner:
    """A loaded captioner that turns PIL images into captions (and, on request, attention maps).

    Args:
        model: a trained ``ViTCaptioner``.
        device: where to run ("cpu", "cuda", ...); None picks CUDA when available.
        batch_size: images captioned together.
    """

    def __init__(self, model, device: str | torch.device | None = None, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)

    def to(self, device: str | torch.device) -> Captioner:
        """Move the model to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def caption(self, images: Image.Image | Sequence[Image.Image], num_beams: int = 5, max_new_tokens: int | None = None,
                return_attention: bool = False, length_penalty: float = 0.0) -> list[str] | tuple[list[str], list[dict[str, Any]]]:
        """Write one caption per image.

        Args:
            images: one PIL image or a sequence of them, any size and mode.
            num_beams: 1 = greedy search; more = beam search with that many beams.
            max_new_tokens: longest caption in tokens (default: the model's limit).
            return_attention: also return, per image, ``{"words": [...], "maps": array
                (words, g, g)}``: where each generated word looked (cross-attention over the
                g x g patch grid, averaged over heads and layers).
            length_penalty: beams are ranked by log-probability / length ** length_penalty
                (0, the evaluated setting: plain log-probability).

        Returns:
            The captions in input order (and the attention maps when asked).
        """
        from multimodal_lab.models.vit_captioner import word_maps

        batch = _pil_batch(images)
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        limit = self.model.config.max_caption_tokens - 1
        settings = GenerationSettings(strategy="beam" if num_beams > 1 else "greedy", num_beams=max(num_beams, 2),
                                      max_new_tokens=min(max_new_tokens or limit, limit), length_penalty=length_penalty)
        captions: list[str] = []
        maps: list[dict[str, Any]] = []
        for start in range(0, len(batch), self.batch_size):
            pixels = images_to_tensor(batch[start:start + self.batch_size], self.model.image_input).to(self.device)
            features = self.model.encode(pixels)
            ids = self.model.generate_ids(features, settings)
            captions.extend(self.model.decode(ids))
            if return_attention:
                heat = self.model.cross_attention_maps(features, ids).mean(dim=0)  # (B, L, N)
                for row in range(ids.shape[0]):
                    words, grids = word_maps(self.model.tokenizer, ids[row], heat[row])
                    maps.append({"words": words, "maps": grids})
        return (captions, maps) if return_attention else captions


class Continuer:
    """A loaded story_continuation model: 4 frames and their sentences in, the 5th frame and sentence out.

    Args:
        model: a trained ``StoryContinuation`` (any variant).
        device: where to run ("cpu", "cuda", ...); None picks CUDA when available.
    """

    def __init__(self, model, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    def to(self, device: str | torch.device) -> Continuer:
        """Move the model to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def continue_story(self, frames: Sequence[Image.Image], sentences: Sequence[str], samples: int = 0,
                       seed: int = 0, settings: GenerationSettings | None = None) -> dict[str, Any]:
        """The 5th frame and sentence of one sequence.

        Args:
            frames: the 4 input frames (PIL images, any size and mode: made the model's input
                the way training images were).
            sentences: the 4 sentences, one per frame.
            samples: with a ``vae`` variant, this many more 5th frames drawn from the latent
                (seeded by ``seed``: the same seed gives the same draws).
            seed: seed of the draws.
            settings: how the sentence is decoded (default: greedy).

        Returns:
            ``{"image": PIL image or None (text-only model), "sentence": str, "samples": [PIL images]}``.

        Raises:
            ValueError: not 4 frames and 4 sentences, or samples asked of a model without a latent.
        """
        from multimodal_lab.data.record_dataset import encode_texts, pad_texts
        from multimodal_lab.generation.story import generate_from_prefix
        from multimodal_lab.models.story_continuation import INPUT_FRAMES

        frames, sentences = list(frames), [str(s) for s in sentences]
        if len(frames) != INPUT_FRAMES or len(sentences) != INPUT_FRAMES:
            raise ValueError(f"continue_story takes {INPUT_FRAMES} frames and {INPUT_FRAMES} sentences, got "
                             f"{len(frames)} and {len(sentences)}")
        if samples and not self.model.config.vae:
            raise ValueError("samples need a vae variant (this model has no latent to draw from); use samples=0")
        model = self.model
        pixels = images_to_tensor(frames, model.image_input).unsqueeze(0).to(self.device)  # (1, 4, 3, S, S)
        ids = encode_texts(sentences, model.tokenizer, model.config.max_sentence_tokens)
        batch = pad_texts([torch.tensor(t) for t in ids], model.tokenizer.pad_token_id)
        encoded = model.encode(pixels, batch["input_ids"].unsqueeze(0).to(self.device),
                               batch["attention_mask"].unsqueeze(0).to(self.device))
        limit = model.config.max_sentence_tokens - 1
        settings = settings or GenerationSettings(max_new_tokens=limit)
        sentence = generate_from_prefix(model, encoded["prefix"], settings)[0]
        if model.unet is None:
            return {"image": None, "sentence": sentence, "samples": []}

        def to_pil(image: torch.Tensor) -> Image.Image:
            array = image[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            return Image.fromarray(array)

        generator = torch.Generator(device=self.device).manual_seed(seed)
        draws = [to_pil(model.predict_image(encoded, sample=True, generator=generator)) for _ in range(samples)]
        return {"image": to_pil(model.predict_image(encoded)), "sentence": sentence, "samples": draws}


class ArtGenerator:
    """A loaded art_generator model: seeds in, engravings and their captions out.

    The same seed gives the same PNG bytes and caption on CPU whatever the batch it is drawn
    in, its place there and the thread count (every seed has its own random numbers, and
    samples are decoded in fixed-size chunks).

    Args:
        model: a trained ``ArtComposer`` (the default design) or ``SeedVAE``.
        device: where to run; None = CPU, where the bytes are reproducible (on a GPU the
            same seed gives the same caption and layout, but pixels may differ in the last bit).
    """

    def __init__(self, model, device: str | torch.device | None = None) -> None:
        if not hasattr(model, "generate") or not hasattr(model, "tokenizer"):
            raise TypeError(f"ArtGenerator needs an art_generator design (composer or seed_vae), got "
                            f"{type(model).__name__}")
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()

    def to(self, device: str | torch.device) -> ArtGenerator:
        """Move the model to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def generate(self, seed: int, settings: GenerationSettings | None = None) -> tuple[Image.Image, str, dict]:
        """One seed -> (PIL image, caption, metadata)."""
        return self.generate_batch([seed], settings)[0]

    def generate_batch(self, seeds: Sequence[int], settings: GenerationSettings | None = None,
                       ) -> list[tuple[Image.Image, str, dict]]:
        """Seeds -> one (PIL image, caption, metadata) per seed, in order.

        ``settings``: how the composer samples its caption (default: sampling with top_p 0.9,
        the evaluation's setting); metadata: the seed, the design and, for the composer, the
        layout it drew (backdrop; each object's shape, size, tone, centre and radius).
        """
        from multimodal_lab.models.art_composer import ArtComposer, default_sampling

        seeds = [int(s) for s in seeds]
        model = self.model
        settings = settings or default_sampling()
        if isinstance(model, ArtComposer):
            images, captions, layouts = model.generate(seeds, settings, with_layouts=True)
            extra = [{"design": "composer", **model.describe_layout(layout)} for layout in layouts]
        else:
            images, captions = model.generate(seeds, settings)
            extra = [{"design": "seed_vae"} for _ in seeds]
        return [(Image.fromarray(image), caption, {"seed": seed, **meta})
                for seed, image, caption, meta in zip(seeds, images, captions, extra)]


def _pil_batch(images: Image.Image | Sequence[Image.Image]) -> list[Image.Image]:
    batch = [images] if isinstance(images, Image.Image) else list(images)
    for index, image in enumerate(batch):
        if not isinstance(image, Image.Image):
            raise TypeError(
                f"images[{index}] is a {type(image).__name__}, not a PIL image; "
                "open files with PIL.Image.open or use load_image_folder"
            )
    return batch


def _open_user_image(file: Path, max_bytes: int, max_pixels: int) -> Image.Image:
    """A user's image file, within the limits, turned the way a viewer shows it (EXIF orientation)."""
    return ImageOps.exif_transpose(open_image(file, max_bytes=max_bytes, max_pixels=max_pixels))


def load_image_folder(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[str, Image.Image]]:
    """Read every image file directly inside a folder, sorted by file name.

    Hidden files (".DS_Store") are ignored; other files that cannot be read — not an
    image, damaged, or above the byte or pixel limits (checked before decoding) — are
    skipped with one warning that lists them and why. EXIF orientation is applied, so
    photos come out the way a viewer shows them.

    Args:
        path: a directory.
        max_bytes: largest file read.
        max_pixels: largest width * height decoded.

    Returns:
        ``(file name, loaded PIL image)`` pairs.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file.
        ValueError: the folder holds no readable image.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist; pass a directory that holds images")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; pass the directory that holds the images")
    loaded: list[tuple[str, Image.Image]] = []
    skipped: list[str] = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            image = _open_user_image(file, max_bytes, max_pixels)
        except Exception as error:  # noqa: BLE001 - PIL raises many unrelated types for bad files
            skipped.append(f"{file.name} ({type(error).__name__}: {error})")
            continue
        loaded.append((file.name, image))
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable file(s) in {folder}: " + "; ".join(skipped), stacklevel=2
        )
    if not loaded:
        raise ValueError(
            f"no readable images found in {folder}"
            + (f" ({len(skipped)} file(s) could not be read)" if skipped else " (the folder is empty)")
            + "; put PNG or JPEG files directly in it"
        )
    return loaded


def _item_fields(item: Any) -> tuple[str, Any, str]:
    if isinstance(item, Mapping):
        return str(item["name"]), item["image"], str(item.get("story", item.get("text", "")))
    name, image, story = item
    return str(name), image, str(story)


def render_stories_html(items: Iterable[tuple[str, Image.Image | bytes, str] | Mapping[str, Any]],
                        title: str = "Stories", image_side: int = 320) -> str:
    """A self-contained HTML page with each image beside its story.

    Args:
        items: ``(name, image, story)`` tuples or ``{"name", "image", "story"}`` dicts
            (``"text"`` instead of ``"story"`` works too; an optional ``"figure"`` of PNG
            bytes with a ``"figure_label"`` is shown under the text); the image is a PIL
            image or encoded bytes.
        title: page title.
        image_side: longest side of the embedded thumbnails, in pixels.

    Returns:
        The HTML page (all text escaped, images inlined as base64 PNG).
    """
    from multimodal_lab.reporting.figures import png_data_uri

    rows = []
    for item in items:
        name, image, story = _item_fields(item)
        figure = item.get("figure") if isinstance(item, Mapping) else None
        rows.append({"name": name, "story": story, "image_uri": image_data_uri(image, max_side=image_side),
                     "figure_uri": png_data_uri(figure) if figure else None,
                     "figure_label": item.get("figure_label", "") if isinstance(item, Mapping) else ""})
    return render_page("stories.html", title=title, subtitle=f"{len(rows)} image(s)", items=rows)
