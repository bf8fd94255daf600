"""RecordDataset and RecordCollator: record frames to padded, labelled batches (records and groups)."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.record_dataset import RecordCollator, RecordDataset, TextField, encode_texts

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


def story_dataset(records, tokenizer, image_size, max_tokens, column="story", **kwargs):
    fields = [TextField(column, tokenizer, max_tokens)]
    return RecordDataset(records, image=image_size, texts=fields, **kwargs), RecordCollator(fields)


def test_items_and_batches():
    tokenizer = word_tokenizer()
    with pytest.warns(UserWarning, match="dropped 1 records"):
        dataset, collate = story_dataset(frame(), tokenizer, 8, 32)
    assert len(dataset) == 2 and dataset.dropped == 1
    item = dataset[0]
    assert item["pixels"].shape == (8, 8, 3) and item["pixels"].dtype == torch.uint8
    ids = item["story"].tolist()
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[1:-1]) == "a red circle sat there ."

    batch = collate([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 8, 8)
    assert torch.allclose(batch["images"][0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert batch["images"][1].max() == 0.0
    length = len(dataset[1]["story"])
    assert batch["input_ids"].shape == (2, length)
    assert batch["attention_mask"][0].tolist() == [1] * len(ids) + [0] * (length - len(ids))
    labels = batch["labels"]
    assert labels[:, 0].tolist() == [-100, -100]  # bos is never a target
    assert labels[0, len(ids):].eq(-100).all()  # padding
    assert labels[0, len(ids) - 1] == tokenizer.eos_token_id  # eos is learned
    assert torch.equal(labels[1, 1:], batch["input_ids"][1, 1:])


def test_eos_stays_a_target_when_pad_equals_eos():
    tokenizer = word_tokenizer(pad_is_eos=True)
    dataset, collate = story_dataset(frame().iloc[:2], tokenizer, 8, 32)
    batch = collate([dataset[0], dataset[1]])
    short = len(dataset[0]["story"])
    assert batch["labels"][0, short - 1] == tokenizer.eos_token_id
    assert batch["labels"][0, short:].eq(-100).all()


def test_long_texts_are_cut_without_an_end_token():
    tokenizer = word_tokenizer()
    ids = encode_texts(["a blue square . it was calm and the end ."], tokenizer, max_tokens=5)[0]
    # the story goes on: teaching eos here would teach stories to stop early
    assert len(ids) == 5 and ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids[1:]) == "a blue square ."
    short = encode_texts(["a red circle ."], tokenizer, max_tokens=6)[0]
    assert short[-1] == tokenizer.eos_token_id and len(short) == 6
    with pytest.raises(ValueError, match="max_tokens must be >= 2"):
        encode_texts(["a"], tokenizer, max_tokens=1)


def test_lazy_and_cached_decoding_agree():
    tokenizer = word_tokenizer()
    records = frame().iloc[:2]
    cached, _ = story_dataset(records, tokenizer, 6, 16, cache_images=True)
    lazy, _ = story_dataset(records, tokenizer, 6, 16, cache_images=False)
    assert lazy.pixels is None and cached.pixels is not None
    assert torch.equal(cached.image_tensor(), lazy.image_tensor())
    assert torch.equal(cached[1]["pixels"], lazy[1]["pixels"])


def test_caption_column_and_missing_column():
    tokenizer = word_tokenizer()
    records = frame().assign(caption=["a red circle .", "a blue square .", "the end ."])
    dataset, _ = story_dataset(records, tokenizer, 4, 16, column="caption")
    assert len(dataset) == 3
    with pytest.raises(ValueError, match="lack the column 'summary'"):
        story_dataset(records, tokenizer, 4, 16, column="summary")


def test_truncated_texts_are_counted():
    tokenizer = word_tokenizer()
    dataset, _ = story_dataset(frame().iloc[:2], tokenizer, 4, 6)
    # "a red circle sat there ." is 6 words (cut to 4), the other story is 10 (cut)
    assert dataset.truncated == {"story": 2}
    dataset, _ = story_dataset(frame().iloc[:2], tokenizer, 4, 32)
    assert dataset.truncated == {"story": 0}


def _sequences():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    rows = []
    for group in ("g1", "g2", "g3"):
        frames = range(3) if group != "g3" else (0, 2)  # g3 lacks frame 1
        for index in reversed(list(frames)):  # out of order on purpose
            rows.append(make_record(image=png(colours[index], size=(8, 8)), source="test", corpus="sequence",
                                    caption=" ".join(["a", ["red", "blue", "the"][index], "circle ."]),
                                    group_id=group, frame_index=index))
    return records_frame(rows)


def test_groups_become_items_with_frames_in_order():
    tokenizer = word_tokenizer()
    fields = [TextField("caption", tokenizer, 8, key="frame")]
    with pytest.warns(UserWarning, match="outside a whole group of 3"):
        dataset = RecordDataset(_sequences(), image=4, texts=fields, group_size=3)
    assert len(dataset) == 2 and dataset.dropped == 2  # the incomplete group's two frames
    item = dataset[0]
    assert item["pixels"].shape == (3, 4, 4, 3)
    assert [tokenizer.decode(ids[1:-1]) for ids in item["caption"]] == ["a red circle .", "a blue circle .",
                                                                       "a the circle ."]
    batch = RecordCollator(fields)([dataset[0], dataset[1]])
    assert batch["images"].shape == (2, 3, 3, 4, 4)
    # frame 0 is red, frame 2 blue, in every group
    assert batch["images"][:, 0, 0].mean() == 1.0 and batch["images"][:, 2, 2].mean() == 1.0
    assert batch["frame_input_ids"].shape[:2] == (2, 3)
    assert batch["frame_labels"][:, :, 0].eq(-100).all()
    assert batch["frame_attention_mask"].shape == batch["frame_input_ids"].shape


def test_a_list_of_texts_draws_one_per_read():
    tokenizer = word_tokenizer()
    records = frame().iloc[:2].reset_index(drop=True)
    records["references"] = [["a red circle", "a blue square", "calm"], ["the end"]]
    dataset, _ = story_dataset(records, tokenizer, 8, 16, column="references")
    torch.manual_seed(0)
    seen = {tuple(dataset[0]["references"].tolist()) for _ in range(40)}
    expected = {tuple(ids) for ids in encode_texts(["a red circle", "a blue square", "calm"], tokenizer, 16)}
    assert seen == expected  # every alternative is drawn, nothing else
    assert dataset[1]["references"].tolist() == encode_texts(["the end"], tokenizer, 16)[0]
    assert dataset.lengths()[0] == len(encode_texts(["a red circle"], tokenizer, 16)[0])  # the first counts
    records["references"] = [[], ["the end"]]
    with pytest.warns(UserWarning, match="dropped 1 records"):
        dataset, _ = story_dataset(records, tokenizer, 8, 16, column="references")
    assert len(dataset) == 1
