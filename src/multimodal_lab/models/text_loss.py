"""Next-token cross-entropy shared by every text decoder, with optional per-word weights.

A caption or story spends most of its tokens on words any language model predicts from the
words before them ("a", "picture", "of", "in the"); the few that only the image can give
(colours, shapes, sizes) are a small share of the mean loss. ``emphasis_words`` weigh those
words' tokens more, so the gradient that teaches grounding is not drowned by grammar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase


def word_token_ids(tokenizer: PreTrainedTokenizerBase, word: str) -> set[int]:
    """Ids of a word's tokens, alone and after a space (byte-level BPE spells those apart)."""
    ids: set[int] = set()
    for form in (word, " " + word):
        ids.update(tokenizer(form, add_special_tokens=False)["input_ids"])
    ids.discard(tokenizer.unk_token_id)
    return ids


def check_emphasis(words: list[str], weight: float) -> None:
    """Fail early on a weight that would silence or invert the emphasised tokens."""
    if weight <= 0:
        raise ValueError(f"emphasis_weight must be positive, got {weight}")
    if any(not isinstance(w, str) or not w.strip() for w in words):
        raise ValueError(f"emphasis_words must be non-empty strings, got {words!r}")


def emphasis_weights(tokenizer: PreTrainedTokenizerBase, words: list[str], weight: float) -> torch.Tensor | None:
    """Per-vocabulary-entry loss weights (V,): ``weight`` on the words' tokens, 1 elsewhere;
    None when nothing is emphasised (no words, or weight 1), so the loss stays the plain mean."""
    check_emphasis(words, weight)
    if not words or weight == 1.0:
        return None
    weights = torch.ones(len(tokenizer))
    for word in words:
        for token in word_token_ids(tokenizer, word):
            weights[token] = weight
    return weights


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]``, and the labelled count.

    Args:
        logits: (B, T, V) decoder output over the whole input (prefix positions included).
        labels: (B, T) target ids aligned with the input, -100 where no loss is wanted.
        weights: optional (V,) per-token weights (:func:`emphasis_weights`); the weighted sum
            is divided by the number of labelled tokens, so weight 1 everywhere is the plain mean.
    """
    targets = labels[:, 1:].flatten()
    flat = logits[:, :-1].flatten(0, 1).float()
    valid = targets != -100
    num_targets = int(valid.sum())
    if weights is None:
        return F.cross_entropy(flat, targets, ignore_index=-100), num_targets
    per_token = F.cross_entropy(flat, targets, ignore_index=-100, reduction="none")
    token_weights = weights[targets.clamp(min=0)] * valid
    return (per_token * token_weights).sum() / valid.sum().clamp(min=1), num_targets
