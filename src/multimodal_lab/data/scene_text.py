"""Text of the scene world: captions, stories and per-frame sentences from templates.

Everything here follows one rule that the grounding evaluation relies on: an object is
always written as ``[size] <colour> <shape>`` ("a small red star"), and no other word of
any template is a colour or shape name. So parsing "colour word followed within two words
by a shape word" out of a text gives exactly the objects of its image. Backgrounds are
written with words outside both lists ("over the waves", "in the mist").

Functions take plain object dicts (``{"shape", "colour", "size", "x", "y", ...}`` with
``x``/``y`` as fractions of the image side) and a background's words, and draw their
choices from the numpy ``Generator`` they are given, so a record's text is fixed by its
own seed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BackgroundWords:
    """The words a background lends to text (none of them a colour or shape name)."""

    mood: str  # the mood the background carries, e.g. "calm"
    mood_words: tuple[str, ...]  # adjectives of that mood used in stories
    place: str  # noun phrase for the place, e.g. "the meadow"
    settings: tuple[str, ...]  # prepositional phrases, e.g. "over the waves"


# Story openings: {setting} a prepositional phrase, {place} a noun phrase, {mood} an
# adjective and {a_mood} the adjective with its article. Every opening is its own sentence
# pattern, so the opening index identifies the story template family. Each one carries
# a mood word, which ties every story to its background.
OPENINGS: tuple[str, ...] = (
    "Everything felt {mood} {setting}.",
    "Once, {setting}, the air was {mood}.",
    "It was {a_mood} moment {setting}.",
    "{a_mood} hush lay over {place}.",
    "This is {a_mood} tale from {place}.",
    "Long ago, {setting}, things were {mood}.",
    "The world {setting} seemed {mood}.",
    "In {place}, every hour was {mood}.",
    "Come and see how {mood} {place} can be.",
    "There was {a_mood} feeling {setting}.",
    "Far away, {setting}, {a_mood} story began.",
    "{setting}, the mood was {mood}.",
    "One day {place} felt {mood} and new.",
    "Here is {a_mood} thing that happened {setting}.",
    "Slowly, {place} became {mood}.",
    "It all started {setting}, {mood} as could be.",
    "Few places feel as {mood} as {place}.",
    "The story begins {setting}, where all is {mood}.",
    "Let me tell you about {a_mood} scene {setting}.",
    "Picture {place}, {mood} and wide.",
    "Listen closely, for {place} is {mood} today.",
    "{a_mood} breeze moved {setting}.",
    "Morning or evening, {place} stays {mood}.",
    "Nobody expected much from {place}, but it felt {mood}.",
)

# Object sentences: {obj} "a small red star", {pos} "near the top", {mood} as above.
OBJECT_SENTENCES: tuple[str, ...] = (
    "{obj} appeared {pos}.",
    "{pos}, there was {obj}.",
    "{obj} waited {pos}.",
    "{obj} rested {pos}, feeling {mood}.",
    "Soon {obj} came into view {pos}.",
    "Then {obj} floated {pos}.",
    "{obj} stood {pos} and looked around.",
    "{obj} was hiding {pos}.",
    "Next came {obj}, {pos}.",
    "{pos} sat {obj}.",
    "A little later, {obj} drifted {pos}.",
    "{obj} stayed {pos}, quiet and {mood}.",
    "Someone had left {obj} {pos}.",
    "{obj} liked to be {pos}.",
)

# Relation sentences between two objects: {the_a}, {the_b}, {rel} ("to the left of").
RELATION_SENTENCES: tuple[str, ...] = (
    "{the_a} was {rel} {the_b}.",
    "{the_a} stayed {rel} {the_b}, {mood} as ever.",
    "{the_a} sat just {rel} {the_b} and watched in silence.",
    "{the_a} kept its place {rel} {the_b}.",
)

# Extra sentence for one-object stories, so they are not all three sentences long.
LONE_SENTENCES: tuple[str, ...] = (
    "It was all alone, and it did not mind.",
    "Nothing else was there to keep it company.",
    "The whole place seemed {mood} around it.",
    "It had been there for a very long time.",
)

# Closings: may name one object again as {the_obj}.
CLOSINGS: tuple[str, ...] = (
    "In the end, everything stayed {mood}.",
    "And so the day ended, {mood} and still.",
    "{the_obj} would remember this {mood} moment.",
    "It was {a_mood} sight indeed.",
    "Nothing else happened, and that was fine.",
    "After a while, all was {mood} once more.",
    "That is how {place} stayed {mood}.",
    "{the_obj} did not move again that day.",
    "Later, the light faded {setting}.",
    "The end came softly {setting}.",
    "Everyone agreed it had been {mood}.",
    "And there they stay, even now.",
    "Time passed, and {place} kept its secret.",
    "Such a {mood} scene is rare.",
    "{the_obj} was the last thing to fall asleep.",
    "No one came, and the moment stayed {mood}.",
    "Then everything became still.",
    "{place} has never been so {mood}.",
    "Soon it was time to rest.",
    "Nothing could spoil that {mood} hour.",
)

# Captions: one sentence naming every object ({objs} "a small red star and a large blue ring").
CAPTIONS: tuple[str, ...] = (
    "{objs} {setting}.",
    "A picture of {objs} {setting}.",
    "{objs} in {place}.",
    "{setting}, {objs}.",
    "{there_is} {objs} {setting}.",
    "This scene shows {objs} {setting}.",
    "{objs} can be seen {setting}.",
    "{a_mood} view of {objs} {setting}.",
    "A drawing of {objs} in {place}.",
    "We see {objs} {setting}.",
)

# Engraving captions name size and shape only: colour is not visible in monochrome.
ENGRAVING_CAPTIONS: tuple[str, ...] = (
    "An engraving of {objs} {setting}.",
    "A line engraving showing {objs} {setting}.",
    "An old print of {objs} {setting}.",
    "Engraved lines show {objs} {setting}.",
    "A hatched drawing of {objs} in {place}.",
    "An etching with {objs} {setting}.",
)

# Sequences: the first frame introduces, every later frame repeats its change sentence,
# which is what makes the last frame predictable from the ones before it.
SEQUENCE_INTROS: tuple[str, ...] = (
    "{objs} {are} {setting}.",
    "{setting}, {objs} {are} waiting.",
    "Look at {objs} {setting}.",
    "At first, {objs} {are} {setting}.",
)
MOVE_VERBS: tuple[str, ...] = ("moves", "slides", "drifts", "glides")
DIRECTION_PHRASES: dict[str, str] = {
    "right": "to the right",
    "left": "to the left",
    "up": "up",
    "down": "down",
}
STILL_PHRASES: tuple[str, ...] = ("stays still", "does not move", "waits in its place")
GROW_PHRASES: tuple[str, ...] = ("grows bigger", "gets a little larger", "grows")
SHRINK_PHRASES: tuple[str, ...] = ("shrinks", "gets a little smaller", "grows smaller")


def capitalise(sentence: str) -> str:
    """Upper-case the first character only (str.capitalize would lower the rest)."""
    return sentence[:1].upper() + sentence[1:]


def with_article(phrase: str, article: str = "a") -> str:
    """Prefix "a"/"an" (by the first letter) or "the"."""
    if article == "the":
        return f"the {phrase}"
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def object_phrase(obj: Mapping[str, Any], article: str = "a", *, size: bool = True,
                  colour: bool = True) -> str:
    """The one allowed way to name an object: ``[article] [size] [colour] <shape>``."""
    words = [obj["size"]] if size else []
    if colour:
        words.append(obj["colour"])
    words.append(obj["shape"])
    return with_article(" ".join(words), article)


def join_list(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


#: Where the position words start: a centre left of LOW is "left", right of HIGH "right"
#: (the same for top and bottom).
POSITION_LOW, POSITION_HIGH = 0.36, 0.64


def _band(value: float, low_word: str, high_word: str) -> str:
    return low_word if value < POSITION_LOW else high_word if value > POSITION_HIGH else ""


def position_phrase(x: float, y: float) -> str:
    """Where a centre (fractions of the image side, y down) lies, in words."""
    col = _band(x, "left", "right")
    row = _band(y, "top", "bottom")
    if row and col:
        return f"near the {row} {col}"
    if row:
        return f"near the {row}"
    if col:
        return f"on the {col}"
    return "in the middle"


def position_regions(grid: int) -> dict[str, list[bool]]:
    """Each position phrase -> the cells of a ``grid`` x ``grid`` image grid (row by row) it names.

    A cell belongs to a phrase when its centre would be described by it, so a text that
    says "a red star near the top left" points at the cells the star's centre can be in.
    """
    centres = [(i + 0.5) / grid for i in range(grid)]
    regions: dict[str, list[bool]] = {}
    for row, y in enumerate(centres):
        for col, x in enumerate(centres):
            regions.setdefault(position_phrase(x, y), [False] * (grid * grid))[row * grid + col] = True
    return regions


def relation_phrase(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """Where object ``a`` lies relative to object ``b`` (dominant axis)."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _fill(template: str, **slots: str) -> str:
    return capitalise(template.format(**slots))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _scene_slots(words: BackgroundWords, rng: np.random.Generator) -> dict[str, str]:
    mood = _pick(rng, words.mood_words)
    return {
        "mood": mood,
        "a_mood": with_article(mood),
        "place": words.place,
        "setting": _pick(rng, words.settings),
    }


def make_caption(objects: Sequence[Mapping[str, Any]], words: BackgroundWords,
                 rng: np.random.Generator, *, engraving: bool = False) -> tuple[str, int]:
    """One sentence naming every object; engravings omit colour.

    Returns:
        The caption and the index of the template used.
    """
    templates = ENGRAVING_CAPTIONS if engraving else CAPTIONS
    index = int(rng.integers(len(templates)))
    slots = _scene_slots(words, rng)
    phrases = [object_phrase(o, colour=not engraving) for o in objects]
    slots["objs"] = join_list(phrases)
    slots["there_is"] = "there is" if len(objects) == 1 else "there are"
    return _fill(templates[index], **slots), index


def reference_captions(objects: Sequence[Mapping[str, Any]], words: BackgroundWords, rng: np.random.Generator,
                       *, exclude: int, count: int, avoid: Sequence[str] = ()) -> list[str]:
    """``count`` more captions of the same objects, each from a different template than the others and ``exclude``.

    Real caption sets give several references per image (COCO gives five); captioning
    metrics such as CIDEr compare a caption with all of them. Object order and wording of
    the objects stay the scene's, the sentence frame and setting change. Two templates can
    spell the same sentence ("{objs} in {place}." and "{objs} {setting}." with the setting
    "in the desert"): a text equal to an earlier one or to one in ``avoid`` gets its slots
    drawn again (up to 4 times), then the next template is tried.
    """
    others = [i for i in range(len(CAPTIONS)) if i != exclude]
    if not 0 <= count <= len(others):
        raise ValueError(f"count must be 0..{len(others)} (distinct caption templates), got {count}")
    phrases = join_list([object_phrase(o) for o in objects])
    there_is = "there is" if len(objects) == 1 else "there are"
    out: list[str] = []
    seen = {text.lower() for text in avoid}
    spare: list[str] = []  # repeats, used only when the templates run out
    for index in rng.permutation(others):
        if len(out) == count:
            break
        for _ in range(4):
            text = _fill(CAPTIONS[int(index)], objs=phrases, there_is=there_is, **_scene_slots(words, rng))
            if text.lower() not in seen:
                break
        if text.lower() in seen:
            spare.append(text)
            continue
        seen.add(text.lower())
        out.append(text)
    return out + spare[:count - len(out)]


def make_story(objects: Sequence[Mapping[str, Any]], words: BackgroundWords,
               rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    """A 3-5 sentence story: opening, one sentence per object (random order), closing.

    One-object stories get an extra lone sentence half of the time and two-object stories
    a spatial relation sentence half of the time, so lengths vary within 3..5.

    Returns:
        The story and ``{"opening", "closing", "object_sentences", "order", "template"}``
        describing the template choices.
    """
    slots = _scene_slots(words, rng)
    order = [int(k) for k in rng.permutation(len(objects))]
    opening = int(rng.integers(len(OPENINGS)))
    closing = int(rng.integers(len(CLOSINGS)))
    patterns = [int(k) for k in rng.choice(len(OBJECT_SENTENCES), size=len(objects),
                                            replace=False)]
    sentences = [_fill(OPENINGS[opening], **slots)]
    for k, pattern in zip(order, patterns):
        obj = objects[k]
        sentences.append(_fill(OBJECT_SENTENCES[pattern], obj=object_phrase(obj),
                               pos=position_phrase(obj["x"], obj["y"]), mood=slots["mood"]))
    extra = rng.random() < 0.5
    if extra and len(objects) == 1:
        sentences.append(_fill(_pick(rng, LONE_SENTENCES), mood=slots["mood"]))
    elif extra and len(objects) == 2:
        a, b = objects[order[0]], objects[order[1]]
        sentences.append(_fill(_pick(rng, RELATION_SENTENCES), mood=slots["mood"],
                               the_a=object_phrase(a, "the"), the_b=object_phrase(b, "the"),
                               rel=relation_phrase(a, b)))
    last = objects[order[-1]]
    sentences.append(_fill(CLOSINGS[closing], the_obj=object_phrase(last, "the"), **slots))
    info = {
        "opening": opening,
        "closing": closing,
        "object_sentences": patterns,
        "order": order,
        "template": f"o{opening:02d}-c{closing:02d}",
    }
    return " ".join(sentences), info


def _change_clause(obj: Mapping[str, Any], rule: Mapping[str, Any], style: Mapping[str, int]) -> str:
    """The clause for one object's change between two frames (object as drawn now)."""
    kind = rule["kind"]
    if kind == "move":
        verb = MOVE_VERBS[style["verb"]]
        return f"{object_phrase(obj, 'the')} {verb} {DIRECTION_PHRASES[rule['direction']]}"
    if kind == "still":
        return f"{object_phrase(obj, 'the')} {STILL_PHRASES[style['still']]}"
    if kind == "grow":
        # The size word changes while it grows, so name the object without it.
        return f"{object_phrase(obj, 'the', size=False)} {GROW_PHRASES[style['grow']]}"
    if kind == "shrink":
        return f"{object_phrase(obj, 'the', size=False)} {SHRINK_PHRASES[style['grow']]}"
    if kind == "colour_cycle":
        # The old colour is not named: the sentence must name only what this frame shows.
        old = object_phrase(obj, "the", colour=False)
        return f"{old} changes and becomes {object_phrase(obj)}"
    raise ValueError(f"unknown motion kind {kind!r}")


def sequence_style(rng: np.random.Generator) -> dict[str, int]:
    """Wording choices fixed for a whole sequence (so every later frame reads alike)."""
    return {
        "intro": int(rng.integers(len(SEQUENCE_INTROS))),
        "verb": int(rng.integers(len(MOVE_VERBS))),
        "still": int(rng.integers(len(STILL_PHRASES))),
        "grow": int(rng.integers(len(GROW_PHRASES))),
        "again": int(rng.integers(2)),
    }


def frame_sentence(frame: int, objects: Sequence[Mapping[str, Any]],
                   rules: Sequence[Mapping[str, Any]], words: BackgroundWords,
                   setting: str, style: Mapping[str, int]) -> str:
    """The sentence of one sequence frame: an introduction at frame 0, the change after.

    Args:
        frame: frame index (0 introduces the objects).
        objects: the objects as drawn in this frame.
        rules: one motion rule per object (``{"kind": ...}``), aligned with ``objects``.
        words: the background's words.
        setting: the setting phrase fixed for the sequence.
        style: wording choices from :func:`sequence_style`.
    """
    if frame == 0:
        phrases = [f"{object_phrase(o)} {position_phrase(o['x'], o['y'])}" for o in objects]
        return _fill(SEQUENCE_INTROS[style["intro"]], objs=join_list(phrases),
                     are="is" if len(objects) == 1 else "are", setting=setting,
                     place=words.place)
    clauses = [_change_clause(o, r, style) for o, r in zip(objects, rules)]
    sentence = ", and ".join(clauses)
    if frame >= 2 and style["again"]:
        sentence = "once more, " + sentence
    return capitalise(sentence) + "."
