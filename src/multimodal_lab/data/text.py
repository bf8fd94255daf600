"""One text normalisation for every source: what a caption or story looks like once it is ours.

Captions arrive as HTML fragments from web pages, with entities and stray control
characters from sidecar files, in decomposed Unicode from some datasets. Every source
builds its records through ``records.make_record``, which calls :func:`normalize_text`,
and ingest applies it again to whatever frame it is given (it is idempotent), so the
same text always reaches the models in the same form:

* HTML tags are removed (block tags and ``<br>`` become a space; ``script`` and
  ``style`` contents are dropped) and entities are decoded (``&amp;`` -> ``&``);
* Unicode is NFC-composed;
* control characters are removed (tabs and line breaks become spaces first), as are
  invisible format characters except the zero-width joiners that some scripts and
  emoji need;
* runs of whitespace collapse to one space, and the ends are trimmed;
* a text left empty becomes ``None`` (no text), never ``""`` or ``"   "``.
"""
from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser
from typing import Any

# Tags whose start or end separates words (the text on either side is not one word).
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript"})
_KEEP_FORMAT = frozenset({"\u200c", "\u200d"})  # zero-width non-joiner / joiner carry meaning
# Something that looks like a tag or an entity; plain text without one skips the parser.
_MARKUP = re.compile(r"<[A-Za-z!/?]|&(#\d+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);?")
_SPACES = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_markup(text: str) -> str:
    """Text of an HTML fragment: tags removed (block tags as spaces), entities decoded."""
    if not _MARKUP.search(text):
        return text
    if "<" not in text:
        return html.unescape(text)
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def _visible(char: str) -> str:
    category = unicodedata.category(char)
    if category == "Cc":
        return " " if char in "\t\n\r\x0b\x0c" else ""
    if category == "Cf" and char not in _KEEP_FORMAT:
        return ""
    return char


def normalize_text(value: Any) -> str | None:
    """Normalise one caption or story (see the module docstring); None for no text.

    Args:
        value: a string, None, or a missing value (NaN); other types are made strings.

    Returns:
        The clean text, or None when nothing readable is left.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = value if isinstance(value, str) else str(value)
    text = strip_markup(text)
    text = unicodedata.normalize("NFC", text)
    if not text.isprintable():
        text = "".join(_visible(char) for char in text)
    text = _SPACES.sub(" ", text).strip()
    return text or None
