"""StoryDataset and StoryCollator: record frames to padded, labelled batches."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.story_dataset import StoryCollator, StoryDataset, encode_texts

WORDS = "a red blue circle square sat there . it was calm and the end".split()


def word_tokenizer(pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<eos>" if pad_is_eos else "<pad>",
                                   bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def png(colour, size=(20, 10), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def frame():
    return records_frame([
        make_record(image=png((255, 0, 0)), source="test", corpus="scene", story="a red circle sat there ."),
        make_record(image=png(0, mode="L", size=(8, 8)), source="test", corpus="scene",
                    story="a blue square . it was calm and the end ."),
        make_record(image=png((0, 0, 255)), source="test", corpus="scene", story=None),
    ])


def test_items_and_batches():
    tokenizer = word_tokenizer()
    with pytest.warns(UserWarning, match="dropped 1 records"):
        dataset = StoryDataset(frame(), tokenizer, image_size=8, max_story_tokens=32)
    assert len(dataset) == 2 and dataset.dropped == 1
    item = dataset[0]
    assert item["pixels"].shape == (8, 8, 3) and item["pixels"].dtype == torch.uint8
    ids = item["input_ids"].tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[1:-1]) == "a red circle sat there ."

    batch = StoryCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 8, 8)
    assert torch.allclose(batch["images"][0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert batch["images"][1].max() == 0.0
    length = len(dataset[1]["input_ids"])
    assert batch["input_ids"].shape == (2, length)
    assert batch["attention_mask"][0].tolist() == [1] * len(ids) + [0] * (length - len(ids))
    labels = batch["labels"]
    assert labels[:, 0].tolist() == [-100, -100]  # bos is never a target
    assert labels[0, len(ids):].eq(-100).all()  # padding
    assert labels[0, len(ids) - 1] == tokenizer.eos_token_id  # eos is learned
    assert torch.equal(labels[1, 1:], batch["input_ids"][1, 1:])


def test_eos_stays_a_target_when_pad_equals_eos():
    tokenizer = word_tokenizer(pad_is_eos=True)
    dataset = StoryDataset(frame().iloc[:2], tokenizer, image_size=8, max_story_tokens=32)
    batch = StoryCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    short = len(dataset[0]["input_ids"])
    assert batch["labels"][0, short - 1] == tokenizer.eos_token_id
    assert batch["labels"][0, short:].eq(-100).all()


def test_long_texts_are_cut_keeping_eos():
    tokenizer = word_tokenizer()
    ids = encode_texts(["a blue square . it was calm and the end ."], tokenizer, max_tokens=5)[0]
    assert len(ids) == 5 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[1:-1]) == "a blue square"
    with pytest.raises(ValueError, match="max_tokens must be >= 2"):
        encode_texts(["a"], tokenizer, max_tokens=1)


def test_lazy_and_cached_decoding_agree():
    tokenizer = word_tokenizer()
    records = frame().iloc[:2]
    cached = StoryDataset(records, tokenizer, image_size=6, max_story_tokens=16, cache_images=True)
    lazy = StoryDataset(records, tokenizer, image_size=6, max_story_tokens=16, cache_images=False)
    assert lazy.pixels is None and cached.pixels is not None
    assert torch.equal(cached.image_tensor(), lazy.image_tensor())
    assert torch.equal(cached[1]["pixels"], lazy[1]["pixels"])


def test_caption_column_and_missing_column():
    tokenizer = word_tokenizer()
    records = frame().assign(caption=["a red circle .", "a blue square .", "the end ."])
    dataset = StoryDataset(records, tokenizer, image_size=4, max_story_tokens=16, text_column="caption")
    assert len(dataset) == 3
    with pytest.raises(ValueError, match="lack the column 'summary'"):
        StoryDataset(records, tokenizer, image_size=4, max_story_tokens=16, text_column="summary")
