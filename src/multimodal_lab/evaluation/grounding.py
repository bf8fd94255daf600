"""Grounding: does a generated text name the objects that are really in the image?

Scene texts write every object as ``[size] <colour> <shape>`` and use colour and shape
words nowhere else, so (colour, shape) pairs read off a text can be compared with the
scene's true objects. Scores are micro-averaged: true positives, predictions and truths
are summed over all texts before dividing, so scenes with more objects weigh more.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")

Pair = tuple[str, str]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _Vocabulary:
    """Phrases of one vocabulary, indexed by the word a match must start with.

    Longest phrases come first in every candidate list, so "light blue" wins over "blue".
    A multi-word phrase can only start at its first word; a one-word phrase at the word
    itself or, where plurals count, at its plural forms.
    """

    def __init__(self, vocabulary: tuple[str, ...]) -> None:
        phrases = [(_words(item), item.lower()) for item in vocabulary]
        phrases = sorted((p for p in phrases if p[0]), key=lambda p: -len(p[0]))
        self.singular: dict[str, list[tuple[list[str], str]]] = {}
        self.plural: dict[str, list[tuple[list[str], str]]] = {}
        for tokens, name in phrases:
            first = tokens[0]
            starts = [first] if len(tokens) > 1 else [first, first + "s", first + "es"]
            self.singular.setdefault(first, []).append((tokens, name))
            for word in dict.fromkeys(starts):
                self.plural.setdefault(word, []).append((tokens, name))

    def match(self, words: list[str], start: int, plural: bool) -> tuple[str, int] | None:
        """The phrase starting at ``words[start]`` and the index after it, or None."""
        for tokens, name in (self.plural if plural else self.singular).get(words[start], ()):
            end = start + len(tokens)
            if end > len(words):
                continue
            head, last = words[start:end - 1], words[end - 1]
            if head != tokens[:-1]:
                continue
            if last == tokens[-1] or (plural and last in (tokens[-1] + "s", tokens[-1] + "es")):
                return name, end
        return None


@functools.lru_cache(maxsize=64)
def _vocabulary(vocabulary: tuple[str, ...]) -> _Vocabulary:
    return _Vocabulary(vocabulary)


def extract_pairs(text: str, colours: Sequence[str], shapes: Sequence[str], max_gap: int = 2) -> list[Pair]:
    """Read (colour, shape) pairs off a text.

    A colour word followed by a shape word with at most ``max_gap`` other words in
    between forms a pair; another colour in between ends the search (``red and blue
    square`` pairs only blue). Matching is case- and punctuation-insensitive, accepts
    multi-word colours/shapes and plural shapes (``circles``).

    Args:
        text: any text.
        colours: the colour vocabulary (e.g. the scene world's COLOURS).
        shapes: the shape vocabulary (e.g. the scene world's SHAPES).
        max_gap: words allowed between colour and shape.

    Returns:
        Pairs in reading order, lower-case, as the vocabulary spells them.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    words = _words(text)
    colour_phrases, shape_phrases = _vocabulary(tuple(colours)), _vocabulary(tuple(shapes))
    pairs: list[Pair] = []
    index = 0
    while index < len(words):
        colour = colour_phrases.match(words, index, plural=False)
        if colour is None:
            index += 1
            continue
        name, cursor = colour
        gap = 0
        while cursor < len(words) and gap <= max_gap:
            shape = shape_phrases.match(words, cursor, plural=True)
            if shape is not None:
                pairs.append((name, shape[0]))
                break
            if colour_phrases.match(words, cursor, plural=False) is not None:
                break
            cursor += 1
            gap += 1
        index = colour[1]
    return pairs


def _prf(predicted: Sequence[set], truth: Sequence[set]) -> tuple[float, float, float]:
    hits = sum(len(p & t) for p, t in zip(predicted, truth))
    n_pred = sum(len(p) for p in predicted)
    n_true = sum(len(t) for t in truth)
    precision = hits / n_pred if n_pred else float(n_true == 0)
    recall = hits / n_true if n_true else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def grounding_scores(predicted: Sequence[set[Pair]], truth: Sequence[set[Pair]]) -> dict[str, float]:
    """Micro-averaged precision/recall/F1 of predicted pairs against the true ones.

    Args:
        predicted: per text, the set of (colour, shape) pairs read off it.
        truth: per text, the set of (colour, shape) pairs of its image.

    Returns:
        ``precision``, ``recall``, ``f1`` on pairs, plus ``colour_precision``,
        ``colour_recall``, ``colour_f1`` and the same for ``shape`` on the colour/shape
        parts alone (to see which half fails). With nothing predicted and nothing true,
        the scores are 1.0; with one side empty, 0.0.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"predicted has {len(predicted)} entries but truth has {len(truth)}; pass one set per text")
    predicted = [set(p) for p in predicted]
    truth = [set(t) for t in truth]
    scores: dict[str, float] = {}
    scores["precision"], scores["recall"], scores["f1"] = _prf(predicted, truth)
    for part, position in (("colour", 0), ("shape", 1)):
        pred_part = [{pair[position] for pair in p} for p in predicted]
        true_part = [{pair[position] for pair in t} for t in truth]
        p, r, f = _prf(pred_part, true_part)
        scores[f"{part}_precision"], scores[f"{part}_recall"], scores[f"{part}_f1"] = p, r, f
    return scores


def score_texts(texts: Sequence[str], truth: Sequence[set[Pair]], colours: Sequence[str],
                shapes: Sequence[str], max_gap: int = 2) -> dict[str, float]:
    """Extract pairs from each text and score them against the truth (see grounding_scores)."""
    predicted = [set(extract_pairs(text, colours, shapes, max_gap)) for text in texts]
    return grounding_scores(predicted, truth)


def motion_kinds_named(text: str) -> set[str]:
    """The motion kinds a sequence sentence names: ``move``, ``still``, ``grow``, ``shrink``,
    ``colour_cycle`` (read off the scene world's phrases for them)."""
    from multimodal_lab.data.scene_text import (
        GROW_PHRASES,
        MOVE_VERBS,
        SHRINK_PHRASES,
        STILL_PHRASES,
    )

    lowered = " ".join(_words(text))
    kinds = set()
    for kind, phrases in (("shrink", SHRINK_PHRASES), ("grow", GROW_PHRASES), ("still", STILL_PHRASES),
                          ("colour_cycle", ("changes and becomes",)), ("move", MOVE_VERBS)):
        for phrase in phrases:
            pattern = " ".join(_words(phrase))
            if f" {pattern} " in f" {lowered} ":
                kinds.add(kind)
                lowered = lowered.replace(pattern, " ")  # "grows smaller" is not also "grows"
    return kinds


def continuation_units(text: str, colours: Sequence[str], shapes: Sequence[str]) -> set[tuple[str, ...]]:
    """What a 5th sentence claims: its (colour, shape) pairs and its motion kinds, as one set."""
    pairs = {("pair", colour, shape) for colour, shape in extract_pairs(text, colours, shapes)}
    return pairs | {("motion", kind) for kind in motion_kinds_named(text)}


def continuation_truth(objects: Sequence[dict], kinds: Sequence[str]) -> set[tuple[str, ...]]:
    """The true units of a 5th frame: its objects' (colour, shape) pairs and its objects' motion kinds."""
    return {("pair", o["colour"], o["shape"]) for o in objects} | {("motion", k) for k in kinds if k}


def continuation_f1(texts: Sequence[str], truths: Sequence[set[tuple[str, ...]]], colours: Sequence[str],
                    shapes: Sequence[str]) -> float:
    """Micro F1 of the units the sentences name against the true units (see :func:`continuation_units`)."""
    predicted = [continuation_units(text, colours, shapes) for text in texts]
    return _prf(predicted, [set(t) for t in truths])[2]
