"""The shared next-token loss: plain cross-entropy, and word emphasis that weighs exactly the named words."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multimodal_lab.data.vocab import VocabConfig, train_tokenizer
from multimodal_lab.models.text_loss import (
    emphasis_weights,
    next_token_loss,
    word_token_ids,
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["a small red star in the sky.", "a large blue ring on the grass."] * 4,
                           VocabConfig(kind="word"))


def test_unweighted_loss_is_shifted_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100
    loss, count = next_token_loss(logits, labels)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert count == 6 and torch.allclose(loss, expected)
    ones, _ = next_token_loss(logits, labels, torch.ones(7))
    assert torch.allclose(ones, expected)  # weight 1 everywhere is the plain mean


def test_emphasis_weighs_only_the_named_words(tokenizer):
    assert emphasis_weights(tokenizer, [], 3.0) is None and emphasis_weights(tokenizer, ["red"], 1.0) is None
    weights = emphasis_weights(tokenizer, ["red", "blue"], 3.0)
    emphasised = word_token_ids(tokenizer, "red") | word_token_ids(tokenizer, "blue")
    assert emphasised and all(weights[t] == 3.0 for t in emphasised)
    assert int((weights == 3.0).sum()) == len(emphasised) and int((weights == 1.0).sum()) == len(tokenizer) - len(emphasised)
    red = next(iter(word_token_ids(tokenizer, "red")))
    logits = torch.zeros(1, 3, len(tokenizer))
    labels = torch.tensor([[0, red, 0]])
    plain, _ = next_token_loss(logits, labels)
    weighted, _ = next_token_loss(logits, labels, weights)
    # two targets of equal loss, one emphasised: (3 + 1) / 2 times the plain mean
    assert torch.allclose(weighted, plain * 2.0)


def test_bad_emphasis_fails_early(tokenizer):
    with pytest.raises(ValueError, match="emphasis_weight must be positive"):
        emphasis_weights(tokenizer, ["red"], 0.0)
    with pytest.raises(ValueError, match="non-empty strings"):
        emphasis_weights(tokenizer, [""], 2.0)
