"""Tokenizers trained on the project's own texts (the train split only).

Two kinds, both returned as a ``transformers.PreTrainedTokenizerFast`` with
``<pad> <bos> <eos> <unk>`` set, so model code can use them and GPT-2's tokenizer
interchangeably (``tokenizer(texts)``, ``tokenizer.decode(ids)``,
``save_pretrained``/``from_pretrained``):

* ``word``: one token per lower-cased word or punctuation mark ("star." ->
  "star", "."; "doesn't" stays one word); words below ``min_frequency`` or beyond ``max_size`` map to
  ``<unk>``. Decoding joins words with spaces and removes the space before
  punctuation.
* ``bpe``: byte-level BPE as in GPT-2: any text round-trips, no ``<unk>`` needed.

Like GPT-2's tokenizer, neither adds ``<bos>``/``<eos>`` on its own; model code adds
them where its training format wants them.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in this order
KINDS = ("word", "bpe")


@dataclass(frozen=True)
class VocabConfig:
    """What tokenizer to train."""

    kind: str = "word"  # 'word' (word-level) or 'bpe' (byte-level BPE)
    min_frequency: int = 2  # tokens (word) or merges (bpe) seen fewer times are dropped
    max_size: int | None = None  # word: cap on vocabulary size incl. special tokens; None = no cap
    vocab_size: int = 8000  # bpe: target vocabulary size incl. special tokens and 256 bytes
    lowercase: bool | None = None  # None = True for word, False for bpe (GPT-2 keeps case)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"vocab kind {self.kind!r} is not one of {KINDS}")
        if self.min_frequency < 1:
            raise ValueError(f"vocab min_frequency must be >= 1, got {self.min_frequency}")
        if self.max_size is not None and self.max_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab max_size {self.max_size} leaves no room beside the "
                f"{len(SPECIAL_TOKENS)} special tokens; use at least {len(SPECIAL_TOKENS) + 1}"
            )
        byte_floor = 256 + len(SPECIAL_TOKENS)
        if self.kind == "bpe" and self.vocab_size <= byte_floor:
            raise ValueError(
                f"bpe vocab_size {self.vocab_size} must exceed {byte_floor} (256 byte tokens + "
                f"special tokens) to learn any merge"
            )

    @property
    def lower(self) -> bool:
        """Whether texts are lower-cased before tokenising."""
        return self.kind == "word" if self.lowercase is None else self.lowercase


def _normalizer(config: VocabConfig) -> normalizers.Normalizer:
    steps = [normalizers.NFKC()]
    if config.lower:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def _word_level(texts: list[str], config: VocabConfig) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = _normalizer(config)
    # Tokens are the pattern's matches: a word (keeping an inner apostrophe, so
    # "doesn't" stays one readable word) or a single punctuation mark.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex(r"\w+(?:['’]\w+)*|[^\w\s]"), behavior="removed", invert=True
    )
    # The WordPiece decoder joins tokens with spaces and, with cleanup, drops the
    # space before punctuation; words never carry its "##" prefix, so nothing else changes.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordLevelTrainer(
        vocab_size=config.max_size if config.max_size is not None else 1 << 30,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _byte_level_bpe(texts: list[str], config: VocabConfig) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = _normalizer(config)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_tokenizer(texts: Iterable[str | None], config: VocabConfig,
                    allow_empty: bool = False) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` (pass the train split only).

    Args:
        texts: training texts; None and blank entries are skipped.
        config: which kind and how large.
        allow_empty: with no text, give a tokenizer of the special tokens alone (for a
            corpus this run has no material for) instead of failing.

    Returns:
        A fast tokenizer with ``pad_token``, ``bos_token``, ``eos_token`` and
        ``unk_token`` set (ids 0-3).

    Raises:
        ValueError: no non-blank text was given (and ``allow_empty`` is off).
    """
    corpus = [t for t in texts if isinstance(t, str) and t.strip()]
    if not corpus and not allow_empty:
        raise ValueError("no texts to train the tokenizer on; pass the train split's captions/stories")
    backend = _word_level(corpus, config) if config.kind == "word" else _byte_level_bpe(corpus, config)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        # The backend decoder already handles spacing around punctuation.
        clean_up_tokenization_spaces=False,
    )
