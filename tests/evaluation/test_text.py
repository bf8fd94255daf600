import math

import pytest
import torch

from multimodal_lab.evaluation.text import (
    distinct_n,
    ngrams,
    perplexity,
    repeated_ngram_rate,
    sequence_nll,
    words,
)


def test_words_lowercases_and_drops_punctuation():
    assert words("The red Cube. It wasn't blue!") == ["the", "red", "cube", "it", "wasn't", "blue"]
    assert words(None) == []


def test_ngrams_and_bad_order():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    with pytest.raises(ValueError, match="n=0"):
        ngrams(["a"], 0)


def test_distinct_1_and_2_hand_computed():
    texts = ["the cat sat", "the dog sat"]
    # unigrams: 6 in all, {the, cat, sat, dog} unique
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: the-cat, cat-sat, the-dog, dog-sat, all distinct
    assert distinct_n(texts, 2) == pytest.approx(1.0)
    # a-b, b-a, a-b + a-b: 4 bigrams, 2 unique
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(0.5)


def test_distinct_n_pools_over_texts_so_identical_stories_score_low():
    same = ["a red cube sits here"] * 4
    varied = ["a red cube sits here", "one blue ball rolls away", "green cones", "tiny star"]
    assert distinct_n(same, 1) == pytest.approx(5 / 20)
    assert distinct_n(varied, 1) > distinct_n(same, 1)


def test_distinct_n_does_not_cross_text_boundaries():
    # concatenated, "a b b a" would add the bigram b-b
    assert distinct_n(["a b", "b a"], 2) == pytest.approx(1.0)
    assert math.isnan(distinct_n(["a", "b"], 2))
    assert math.isnan(distinct_n([], 1))


def test_repeated_ngram_rate_hand_computed():
    # 5 trigrams, the second "the red cube" repeats
    assert repeated_ngram_rate(["the red cube and the red cube"]) == pytest.approx(0.2)
    # "a a a a": trigrams a-a-a twice, one repeat out of two
    assert repeated_ngram_rate(["a a a a"]) == pytest.approx(0.5)
    # average over texts; a text too short for a trigram is skipped
    assert repeated_ngram_rate(["the red cube and the red cube", "a a a a", "hi"]) == pytest.approx(0.35)
    assert repeated_ngram_rate(["one two three four"]) == 0.0
    assert math.isnan(repeated_ngram_rate(["hi", ""]))
    # repeats across texts do not count
    assert repeated_ngram_rate(["x y z", "x y z"]) == 0.0


def test_repeated_ngram_rate_order_2():
    assert repeated_ngram_rate(["a b a b"], n=2) == pytest.approx(1 / 3)


def _hand_logits():
    # position 0 predicts label 1 with p = 2/4; position 1 predicts label 2 with p = 1/5
    logits = torch.tensor(
        [[[0.0, math.log(2.0), 0.0], [math.log(3.0), 0.0, 0.0], [5.0, 5.0, 5.0]]]
    )
    labels = torch.tensor([[-100, 1, 2]])
    return logits, labels


def test_sequence_nll_and_perplexity_hand_example():
    logits, labels = _hand_logits()
    nll, count = sequence_nll(logits, labels)
    assert count.tolist() == [2]
    assert nll.item() == pytest.approx(math.log(2.0) + math.log(5.0))
    # exp(mean NLL) = exp(ln(10) / 2)
    assert perplexity(nll, count) == pytest.approx(math.sqrt(10.0))


def test_perplexity_ignores_padding_and_prefix_positions():
    logits, labels = _hand_logits()
    padded_logits = torch.cat([logits, torch.randn(1, 2, 3)], dim=1)
    padded_labels = torch.cat([labels, torch.full((1, 2), -100)], dim=1)
    nll, count = sequence_nll(padded_logits, padded_labels)
    assert count.item() == 2
    assert perplexity(nll, count) == pytest.approx(math.sqrt(10.0))


def test_perplexity_pools_tokens_not_sequences():
    # sequence A: 1 token with NLL 1; sequence B: 3 tokens with total NLL 9
    assert perplexity([1.0, 9.0], [1, 3]) == pytest.approx(math.exp(10.0 / 4))
    assert perplexity(0.0, 5) == pytest.approx(1.0)
    assert math.isnan(perplexity([0.0], [0]))


def test_sequence_nll_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="disagree"):
        sequence_nll(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
