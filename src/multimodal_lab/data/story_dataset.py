"""Torch dataset and collate function from record DataFrames to story-model batches.

Each item is one image with its text tokenised as ``bos text eos``. The collator pads a
batch to its longest text and builds the labels: the token ids, with -100 on bos and on
padding (the model adds -100 for its prefix itself), so the loss covers exactly the
story words and the end-of-story token.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from multimodal_lab.models.preprocess import arrays_to_tensor, decode_image, image_to_array

#: Above this many bytes of decoded pixels the dataset decodes images lazily.
CACHE_LIMIT_BYTES = 512 * 2**20


def encode_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> list[list[int]]:
    """Tokenise texts as ``[bos] + tokens + [eos]``, cut to ``max_tokens`` (eos kept).

    Args:
        texts: the stories (or captions).
        tokenizer: a fast tokenizer with bos and eos tokens (bos falls back to eos).
        max_tokens: longest result, bos and eos included.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 to hold bos and eos, got {max_tokens}")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; the story model needs one to learn where stories end")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[bos, *ids[: max_tokens - 2], eos] for ids in encoded]


class StoryDataset(Dataset):
    """Images and tokenised texts of a record DataFrame.

    Args:
        records: a record frame (see ``data.records``) with ``image`` bytes and the
            text column; rows whose text is missing are dropped with a warning.
        tokenizer: the text tokenizer.
        image_size: side S of the square model input.
        max_story_tokens: longest tokenised text, bos and eos included.
        text_column: which column to learn ("story" or "caption").
        cache_images: decode every image once up front (fast epochs) or on access;
            None decides by size (cached while under ``CACHE_LIMIT_BYTES``).
    """

    def __init__(
        self,
        records: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int,
        max_story_tokens: int,
        text_column: str = "story",
        cache_images: bool | None = None,
    ) -> None:
        for column in ("image", text_column):
            if column not in records.columns:
                raise ValueError(f"records lack the column {column!r}; pass a record frame (data.records)")
        present = records[text_column].notna() & (records[text_column].astype(str).str.strip() != "")
        self.dropped = int((~present).sum())
        if self.dropped:
            warnings.warn(f"StoryDataset: dropped {self.dropped} records without a {text_column!r}", stacklevel=2)
        kept = records.loc[present]
        self.image_size = int(image_size)
        self.images: list[bytes] = list(kept["image"])
        self.texts: list[str] = [str(t) for t in kept[text_column]]
        self.record_ids: list[str] = list(kept["record_id"]) if "record_id" in kept.columns else []
        self.token_ids = encode_texts(self.texts, tokenizer, max_story_tokens)
        if cache_images is None:
            cache_images = len(self.images) * self.image_size**2 * 3 <= CACHE_LIMIT_BYTES
        self.pixels: torch.Tensor | None = None
        if cache_images and self.images:
            self.pixels = torch.from_numpy(np.stack([self._decode(i) for i in range(len(self.images))]))

    def _decode(self, index: int) -> np.ndarray:
        return image_to_array(decode_image(self.images[index]), self.image_size)  # (S, S, 3) uint8

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = self.pixels[index] if self.pixels is not None else torch.from_numpy(self._decode(index))
        return {"pixels": pixels, "input_ids": torch.tensor(self.token_ids[index], dtype=torch.long)}

    def image_tensor(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Float images (B, 3, S, S) in [0, 1] for the given indices (all when None)."""
        indices = range(len(self)) if indices is None else indices
        if self.pixels is not None:
            return arrays_to_tensor(self.pixels[list(indices)])
        return arrays_to_tensor(torch.from_numpy(np.stack([self._decode(i) for i in indices])))


@dataclass
class StoryCollator:
    """Pads items into a batch ``{images, input_ids, attention_mask, labels}``.

    ``images`` is (B, 3, S, S) float in [0, 1]; the three text tensors are (B, T) with T
    the longest text of the batch; ``labels`` is -100 on bos and padding.
    """

    pad_token_id: int  # id written into padded positions (masked anyway)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        lengths = [len(item["input_ids"]) for item in items]
        longest = max(lengths)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (item, length) in enumerate(zip(items, lengths)):
            input_ids[row, :length] = item["input_ids"]
            attention_mask[row, :length] = 1
        # Mask by attention, not by token id: pad may equal eos, and eos must be learned.
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, 0] = -100  # bos is given, never predicted
        images = arrays_to_tensor(torch.stack([item["pixels"] for item in items]))
        return {"images": images, "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
