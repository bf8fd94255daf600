"""One torch dataset and one collator from record frames to model batches, for every family.

A family says which record columns become which tensors: the images, and any number of
text fields, each with its tokenizer and length limit. Records that form groups (the
5-frame sequences) are read group by group, frames in order:

    texts = [TextField(column="story", tokenizer=tok, max_tokens=72)]
    dataset = RecordDataset(records, image=ImageInput(size=64), texts=texts)
    batch = RecordCollator(texts)([dataset[0], dataset[1]])
    # batch["images"]: (B, 3, S, S); batch["input_ids"|"attention_mask"|"labels"]: (B, T)

With ``group_size=G`` every item is one group: ``images`` (B, G, 3, S, S) and each text
field (B, G, T). Each text is tokenised as ``bos text eos``; the labels repeat the ids
with -100 on bos and padding, so a loss covers exactly the words and the end token. A
text longer than its limit is cut *without* its end token (the model must not learn that
stories end there) and counted in ``truncated``.

A text column may hold a list of texts per record (several reference captions of one
image): each read of the item draws one of them with torch's generator, so over training
every reference is learned; ``lengths()`` counts the first.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from multimodal_lab.data.images import ImageInput
from multimodal_lab.models.preprocess import (
    arrays_to_tensor,
    as_image_input,
    decode_image,
    image_to_array,
)

#: Above this many bytes of decoded pixels the dataset decodes images lazily.
CACHE_LIMIT_BYTES = 512 * 2**20


def decode_all(images: Sequence[bytes], spec: ImageInput, threads: int | None = None) -> np.ndarray:
    """Decode encoded images into one uint8 array (N, S, S, 3), in order.

    Pillow releases the GIL while it inflates and resamples, so a few threads decode a
    large set faster than one; ``threads`` defaults to torch's intra-op thread count.
    """
    out = np.empty((len(images), spec.size, spec.size, 3), dtype=np.uint8)

    def fill(start: int, stop: int) -> None:
        for index in range(start, stop):
            out[index] = image_to_array(decode_image(images[index]), spec)

    threads = max(1, threads or torch.get_num_threads())
    if threads == 1 or len(images) < 256:
        fill(0, len(images))
        return out
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(images) // (threads * 8))
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(fill, start, min(start + step, len(images)))
                       for start in range(0, len(images), step)]:
            future.result()  # re-raises a decoding error
    return out


def encode_texts(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> list[list[int]]:
    """Tokenise texts as ``[bos] + tokens + [eos]``; a longer text is cut to ``max_tokens``
    without its eos (it did not end there).

    Args:
        texts: the stories (or captions).
        tokenizer: a fast tokenizer with bos and eos tokens (bos falls back to eos).
        max_tokens: longest result, bos and eos included.
    """
    return encode_texts_counted(texts, tokenizer, max_tokens)[0]


def encode_texts_counted(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                         max_tokens: int) -> tuple[list[list[int]], int]:
    """:func:`encode_texts` plus the number of texts that had to be cut."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 to hold bos and eos, got {max_tokens}")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; the model needs one to learn where texts end")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    out, truncated = [], 0
    for ids in encoded:
        if len(ids) > max_tokens - 2:
            out.append([bos, *ids[: max_tokens - 1]])
            truncated += 1
        else:
            out.append([bos, *ids, eos])
    return out, truncated


@dataclass(frozen=True)
class TextField:
    """One text column of the records and the batch tensors it becomes."""

    column: str  # record column holding the text ("story", "caption", ...)
    tokenizer: PreTrainedTokenizerBase  # turns the text into ids (needs an eos token)
    max_tokens: int  # longest tokenised text, bos and eos included (longer texts are cut)
    key: str = ""  # batch key prefix: "" gives input_ids / attention_mask / labels, "ctx" ctx_input_ids, ...

    def name(self, tensor: str) -> str:
        return f"{self.key}_{tensor}" if self.key else tensor


class RecordDataset(Dataset):
    """Images and tokenised texts of a record frame, one item per record or per group.

    Args:
        records: a record frame (see ``data.records``) with ``image`` bytes and the
            text columns; records (or groups) missing a text are dropped with a warning.
        image: how pictures become the model input (size, fit, resampling), or a side
            length S for a bilinear stretch; images already at that size pass untouched.
        texts: the text fields to tokenise.
        group_size: 1 = one item per record; G > 1 = one item per ``group_id`` holding
            exactly frames 0..G-1 (other groups are dropped with a warning).
        cache_images: decode every image once up front (fast epochs) or on access;
            None decides by size (cached while under ``CACHE_LIMIT_BYTES``).
        extras: more batch tensors a family derives from the records: name -> a
            function of the kept records giving one row per record (group_size 1 only).
    """

    def __init__(
        self,
        records: pd.DataFrame,
        *,
        image: ImageInput | int,
        texts: Sequence[TextField],
        group_size: int = 1,
        cache_images: bool | None = None,
        extras: Mapping[str, Callable[[pd.DataFrame], torch.Tensor]] | None = None,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        for column in ("image", *(field.column for field in texts)):
            if column not in records.columns:
                raise ValueError(f"records lack the column {column!r}; pass a record frame (data.records)")
        self.image_input = as_image_input(image)
        self.image_size = self.image_input.size
        self.group_size = int(group_size)
        self.text_fields = list(texts)
        present = pd.Series(True, index=records.index)
        for field in self.text_fields:
            present &= records[field.column].map(_has_text).astype(bool)
        groups = self._groups(records, present)
        self.dropped = int(len(records) - sum(len(g) for g in groups))
        if self.dropped:
            names = ", ".join(repr(f.column) for f in self.text_fields)
            warnings.warn(f"RecordDataset: dropped {self.dropped} records without {names}"
                          + (f" or outside a whole group of {group_size}" if group_size > 1 else ""),
                          stacklevel=2)
        rows = [i for group in groups for i in group]  # positions into ``records``, group by group
        # Columns as lists once: a per-row ``.iat`` costs seconds over ~20k records.
        images = records["image"].tolist()
        self.images: list[bytes] = [images[i] for i in rows]
        record_ids = records["record_id"].tolist() if "record_id" in records.columns else None
        self.record_ids: list[str] = [str(record_ids[i]) for i in rows] if record_ids is not None else []
        self.token_ids: dict[str, list[list[int]]] = {}
        self.alternatives: dict[str, list[list[list[int]]]] = {}  # column -> per row, every text's ids
        self.truncated: dict[str, int] = {}
        for field in self.text_fields:
            column = records[field.column].tolist()
            values = [_texts(column[i]) for i in rows]
            flat = [text for texts in values for text in texts]
            ids, self.truncated[field.column] = encode_texts_counted(flat, field.tokenizer, field.max_tokens)
            if len(flat) == len(values):
                self.token_ids[field.column] = ids
                continue
            grouped, start = [], 0
            for texts in values:
                grouped.append(ids[start:start + len(texts)])
                start += len(texts)
            self.alternatives[field.column] = grouped
            self.token_ids[field.column] = [options[0] for options in grouped]
        self._length = len(groups)
        self.extras: dict[str, torch.Tensor] = {}
        if extras:
            if self.group_size != 1:
                raise ValueError("extras are per record; they need group_size 1")
            kept = records.iloc[rows]
            for name, make in extras.items():
                values = make(kept)
                if len(values) != len(rows):
                    raise ValueError(f"extra {name!r} gave {len(values)} rows for {len(rows)} records")
                self.extras[name] = values
        if cache_images is None:
            cache_images = len(self.images) * self.image_size**2 * 3 <= CACHE_LIMIT_BYTES
        self.pixels: torch.Tensor | None = None
        if cache_images and self.images:
            self.pixels = torch.from_numpy(decode_all(self.images, self.image_input))

    def _groups(self, records: pd.DataFrame, present: pd.Series) -> list[list[int]]:
        """Positions of the kept records, as one list per item."""
        keep = np.flatnonzero(present.to_numpy())
        if self.group_size == 1:
            return [[int(i)] for i in keep]
        for column in ("group_id", "frame_index"):
            if column not in records.columns:
                raise ValueError(f"group_size {self.group_size} needs the record column {column!r}")
        frames = records.iloc[keep].assign(_pos=keep)
        groups = []
        for _, group in frames.groupby("group_id", sort=False):
            group = group.sort_values("frame_index", kind="stable")
            if group["frame_index"].tolist() == list(range(self.group_size)):
                groups.append(group["_pos"].astype(int).tolist())
        return groups

    def _decode(self, index: int) -> np.ndarray:
        return image_to_array(decode_image(self.images[index]), self.image_input)  # (S, S, 3) uint8

    def __len__(self) -> int:
        return self._length

    def _frames(self, index: int) -> range:
        return range(index * self.group_size, (index + 1) * self.group_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        frames = self._frames(index)
        if self.pixels is not None:
            pixels = self.pixels[frames.start:frames.stop]
        else:
            pixels = torch.from_numpy(np.stack([self._decode(i) for i in frames]))
        item: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "pixels": pixels[0] if self.group_size == 1 else pixels  # (S, S, 3) or (G, S, S, 3)
        }
        for field in self.text_fields:
            ids = [torch.tensor(self._ids(field.column, i), dtype=torch.long) for i in frames]
            item[field.column] = ids[0] if self.group_size == 1 else ids
        for name, values in self.extras.items():
            item[name] = values[index]
        return item

    def _ids(self, column: str, row: int) -> list[int]:
        options = self.alternatives.get(column)
        if options is None or len(options[row]) == 1:
            return self.token_ids[column][row]
        return options[row][int(torch.randint(len(options[row]), ()))]

    def lengths(self) -> list[int]:
        """Tokens of each item's texts (all fields and frames), for length bucketing."""
        frames = [range(i * self.group_size, (i + 1) * self.group_size) for i in range(self._length)]
        return [sum(len(self.token_ids[f.column][j]) for f in self.text_fields for j in rows) for rows in frames]

    def image_tensor(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Float images (B, 3, S, S) in [0, 1] of the given records (all when None; group_size 1)."""
        indices = range(len(self.images)) if indices is None else indices
        if self.pixels is not None:
            return arrays_to_tensor(self.pixels[list(indices)])
        return arrays_to_tensor(torch.from_numpy(np.stack([self._decode(i) for i in indices])))


def _texts(value) -> list[str]:
    """A record's text cell as a list: one text, or the non-blank texts of a list of them."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value if isinstance(v, str) and v.strip()]
    return [str(value)]


def _has_text(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return bool(_texts(value))
    return isinstance(value, str) and bool(value.strip())


def pad_texts(sequences: Sequence[torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token id sequences into ``input_ids``, ``attention_mask`` and ``labels`` (N, T).

    Labels are the ids with -100 on padding and on the first token (bos is given, never
    predicted). Padding is found through the mask, not the id: pad may equal eos, and eos
    must be learned.
    """
    lengths = [len(ids) for ids in sequences]
    longest = max(lengths)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, (ids, length) in enumerate(zip(sequences, lengths)):
        input_ids[row, :length] = ids
        attention_mask[row, :length] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, 0] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass
class RecordCollator:
    """Pads :class:`RecordDataset` items into one batch.

    ``images`` is (B, 3, S, S) — or (B, G, 3, S, S) for groups — float in [0, 1]; each
    text field gives ``input_ids``, ``attention_mask`` and ``labels`` (B, T) — or
    (B, G, T) — under its key prefix, padded to the longest text in the batch.
    """

    texts: Sequence[TextField]  # the dataset's text fields
    extras: Sequence[str] = ()  # the dataset's extra tensors, stacked as they are

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([item["pixels"] for item in items])  # (B, [G,] S, S, 3)
        if pixels.ndim == 5:
            batch, group = pixels.shape[:2]
            out = {"images": arrays_to_tensor(pixels.flatten(0, 1)).unflatten(0, (batch, group))}
        else:
            batch, group = pixels.shape[0], 0
            out = {"images": arrays_to_tensor(pixels)}
        for field in self.texts:
            sequences = [item[field.column] for item in items]
            if group:
                sequences = [ids for frames in sequences for ids in frames]
            padded = pad_texts(sequences, field.tokenizer.pad_token_id)
            for name, tensor in padded.items():
                out[field.name(name)] = tensor.unflatten(0, (batch, group)) if group else tensor
        for name in self.extras:
            out[name] = torch.stack([item[name] for item in items])
        return out
