"""Text metrics for generated stories: diversity, repetition and perplexity.

Diversity and repetition catch the two classic failure modes of a small story
generator: the same story for every image (low distinct-n across texts) and loops
inside one story (a high repeated-n-gram rate). Perplexity is computed from summed
token negative log-likelihoods so that batches of different lengths combine exactly:
the mean is over real story tokens only, never over padding or the image prefix.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

# Words (with an inner apostrophe, "wasn't") in lower case; punctuation is dropped so
# that "cube." and "cube" are the same token for diversity counts.
_WORD = re.compile(r"\w+(?:'\w+)*")


def words(text: str | None) -> list[str]:
    """Lower-cased word tokens of a text (punctuation dropped; None gives [])."""
    if not text:
        return []
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list, in order (empty when it is shorter than n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got n={n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str | None], n: int) -> float:
    """Distinct-n: unique n-grams divided by all n-grams, pooled over every text.

    n-grams never cross text boundaries. Pooling across texts is what makes a model that
    writes the same story for every image score low.

    Args:
        texts: generated texts (None or empty texts contribute nothing).
        n: n-gram order (1 for distinct-1, 2 for distinct-2).

    Returns:
        A value in (0, 1], or NaN when the texts hold no n-gram at all.
    """
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        grams = ngrams(words(text), n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else math.nan


def repeated_ngram_rate(texts: Iterable[str | None], n: int = 3) -> float:
    """Mean, over texts, of the share of a text's n-grams that repeat an earlier one of it.

    "the red cube and the red cube" has 5 trigrams of which 1 ("the red cube", second
    time) repeats, so its rate is 0.2. Texts with fewer than n words are skipped rather
    than counted as 0, which would reward empty output.

    Args:
        texts: generated texts.
        n: n-gram order (3 by default).

    Returns:
        A value in [0, 1), or NaN when no text holds an n-gram.
    """
    rates: list[float] = []
    for text in texts:
        grams = ngrams(words(text), n)
        if not grams:
            continue
        seen: set[tuple[str, ...]] = set()
        repeats = 0
        for gram in grams:
            if gram in seen:
                repeats += 1
            seen.add(gram)
        rates.append(repeats / len(grams))
    return sum(rates) / len(rates) if rates else math.nan


def sequence_nll(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and the number of scored tokens, per sequence.

    The usual causal shift is applied: logits at position t score the label at t+1.
    Positions whose label is ``ignore_index`` (prefix, padding) are not scored.

    Args:
        logits: (B, T, V) language-model logits.
        labels: (B, T) target ids, ``ignore_index`` where nothing is scored.
        ignore_index: label value that marks an unscored position.

    Returns:
        (nll_sum, token_count), both (B,): float64 sums of NLL in nats and int64 counts.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)"
        )
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != ignore_index
    token_nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1).clamp_min(0),
        reduction="none",
    ).view_as(shift_labels)  # (B, T-1)
    token_nll = torch.where(mask, token_nll, torch.zeros_like(token_nll))
    return token_nll.double().sum(dim=1), mask.long().sum(dim=1)


def perplexity(nll_sum: float | Sequence[float] | torch.Tensor,
               token_count: int | Sequence[int] | torch.Tensor) -> float:
    """Perplexity exp(sum NLL / number of tokens), over all tokens of all sequences.

    Summing first and dividing once weights every token equally, so a long story counts
    more than a short one (the standard corpus perplexity, not a mean of per-story values).

    Args:
        nll_sum: total NLL in nats, or one total per sequence / batch.
        token_count: number of scored tokens, matching ``nll_sum``.

    Returns:
        The perplexity, or NaN when no token was scored.
    """
    total_nll = float(torch.as_tensor(nll_sum, dtype=torch.float64).sum())
    total_tokens = int(torch.as_tensor(token_count, dtype=torch.int64).sum())
    if total_tokens <= 0:
        return math.nan
    return math.exp(total_nll / total_tokens)
