from __future__ import annotations

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from multimodal_lab.data.vocab import VocabConfig, train_tokenizer

TEXTS = [
    "A red star sits on the hill.",
    "The blue star, small and bright, sits by a tree!",
    "It doesn't move. The red star sits still.",
    "A tree grows on the hill.",
] * 2 + ["A zebra appears once."]


def ids_of(tokenizer, text):
    return tokenizer(text)["input_ids"]


def test_word_level_tokens_specials_and_punctuation():
    tok = train_tokenizer(TEXTS, VocabConfig(kind="word", min_frequency=2))
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.convert_ids_to_tokens(ids_of(tok, "The star.")) == ["the", "star", "."]
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # "zebra" appears once: below min_frequency 2, so unknown
    assert tok.convert_ids_to_tokens(ids_of(tok, "zebra")) == ["<unk>"]
    assert tok.convert_ids_to_tokens(ids_of(tok, "doesn't")) == ["doesn't"]


def test_word_level_decode_is_readable():
    tok = train_tokenizer(TEXTS, VocabConfig(kind="word", min_frequency=1))
    text = "The blue star, small and bright, sits by a tree! It doesn't move."
    assert tok.decode(ids_of(tok, text)) == text.lower()


def test_word_level_max_size_caps_vocabulary():
    full = train_tokenizer(TEXTS, VocabConfig(kind="word", min_frequency=1))
    capped = train_tokenizer(TEXTS, VocabConfig(kind="word", min_frequency=1, max_size=10))
    assert len(full) > 10
    assert len(capped) == 10
    # the most frequent words survive the cap
    assert "<unk>" not in capped.convert_ids_to_tokens(ids_of(capped, "the star"))


def test_bpe_round_trips_any_text_and_keeps_case():
    tok = train_tokenizer(TEXTS, VocabConfig(kind="bpe", min_frequency=1, vocab_size=300))
    assert len(tok) <= 300
    text = "The Zebra ü 🙂 sits."
    assert tok.decode(ids_of(tok, text)) == text
    assert tok.unk_token_id not in ids_of(tok, text)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_padding_uses_pad_id():
    tok = train_tokenizer(TEXTS, VocabConfig(kind="word", min_frequency=1))
    batch = tok(["a red star", "a"], padding=True)
    assert batch["input_ids"][1][1:] == [0, 0]
    assert batch["attention_mask"] == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_save_and_load_round_trip(tmp_path, kind):
    tok = train_tokenizer(TEXTS, VocabConfig(kind=kind, min_frequency=1, vocab_size=300))
    tok.save_pretrained(tmp_path)
    for loaded in (PreTrainedTokenizerFast.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        text = "The red star sits on the hill."
        assert ids_of(loaded, text) == ids_of(tok, text)
        assert loaded.decode(ids_of(loaded, text)) == tok.decode(ids_of(tok, text))
        assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2, 3)
        assert len(loaded) == len(tok)


def test_blank_texts_are_skipped_and_none_left_fails():
    tok = train_tokenizer([None, "  ", "star star"], VocabConfig(kind="word", min_frequency=1))
    assert len(tok) == 5
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([None, ""], VocabConfig())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "char"}, "kind 'char'"),
        ({"min_frequency": 0}, "min_frequency"),
        ({"max_size": 4}, "max_size 4"),
        ({"kind": "bpe", "vocab_size": 200}, "vocab_size 200"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VocabConfig(**kwargs)
