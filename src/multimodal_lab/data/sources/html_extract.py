"""Turn one HTML page into what the web source keeps: images, text, author and licence.

Everything here is pure: a page's HTML and its URL go in, a :class:`PageContent` comes
out; no network. The crawler (:mod:`multimodal_lab.data.sources.web`) decides which
pages and images to fetch.

Licence and author are reported *raw*, exactly as the page states them (a URL or a
string), together with where they were found. Normalising to SPDX and rejecting
unknown licences is the licence filter's job; this module never guesses, so a page
that states nothing gives ``None``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from bs4 import BeautifulSoup, Tag

from multimodal_lab.data.text import normalize_text

#: Elements whose text is page furniture or code, not prose.
_NON_CONTENT_TAGS = (
    "script", "style", "noscript", "template", "svg", "nav", "header", "footer",
    "aside", "form", "button", "iframe", "select",
)
#: Meta names (lower-cased) that carry a licence or rights statement, best first.
_LICENSE_META_NAMES = ("license", "dcterms.license", "dc.rights", "dcterms.rights", "rights")
#: A Creative Commons deed or public-domain tool URL.
_CC_URL = re.compile(r"^https?://(www\.)?creativecommons\.org/(licenses|publicdomain)/", re.I)
_BYLINE_CLASS = re.compile(r"(^|[-_ ])(byline|author)([-_ ]|$)", re.I)
_BY_PREFIX = re.compile(r"^\s*(by|from)\s*[:\-]?\s+", re.I)


@dataclass(frozen=True)
class ImageRef:
    """One image referenced by a page."""

    url: str  # absolute URL, fragment removed
    alt: str | None = None  # alt text, cleaned; None when absent or empty
    caption: str | None = None  # text of the enclosing <figure>'s <figcaption>
    license: str | None = None  # licence stated inside the image's own <figure>, raw
    origin: str = "img"  # "img" for <img src>, "og:image" for the meta tag


@dataclass
class PageContent:
    """What one page offers to the record builder."""

    url: str  # the page URL the relative links were resolved against
    title: str | None  # <title> or og:title
    text: str  # main text: HTML stripped, furniture removed, NFC, whitespace collapsed
    author: str | None  # raw author / attribution, None when the page names nobody
    author_source: str | None  # where the author was found, e.g. "meta:author"
    license: str | None  # raw licence string or URL, None when absent
    license_source: str | None  # where the licence was found, e.g. "rel-license"
    images: list[ImageRef] = field(default_factory=list)  # in document order, unique URLs
    links: list[str] = field(default_factory=list)  # absolute <a href> targets, unique


def clean_text(text: str | None) -> str:
    """The project's one text normalisation (``data.text.normalize_text``); no text gives ``""``."""
    return normalize_text(text) or ""


def _or_none(text: str | None) -> str | None:
    cleaned = clean_text(text)
    return cleaned or None


def _rel_values(tag: Tag) -> list[str]:
    rel = tag.get("rel") or []
    if isinstance(rel, str):
        rel = rel.split()
    return [value.lower() for value in rel]


def _absolute(base_url: str, href: str | None) -> str | None:
    """Resolve ``href`` against the base and drop the fragment; None for empty hrefs."""
    if href is None:
        return None
    href = href.strip()
    if not href:
        return None
    try:
        return urldefrag(urljoin(base_url, href))[0]
    except ValueError:  # malformed, e.g. an unclosed IPv6 bracket: not a usable link
        return None


def base_url_of(soup: BeautifulSoup, page_url: str) -> str:
    """The URL relative links resolve against: ``<base href>`` when present."""
    base = soup.find("base", href=True)
    if isinstance(base, Tag):
        return urljoin(page_url, str(base["href"]).strip())
    return page_url


def json_ld_objects(soup: BeautifulSoup) -> Iterator[dict[str, Any]]:
    """Yield every JSON-LD object of the page, flattening lists and ``@graph``.

    Malformed JSON-LD blocks are skipped: a broken block says nothing, it does not
    make the page unreadable.
    """
    for script in soup.find_all("script", type=re.compile(r"application/ld\+json", re.I)):
        try:
            data = json.loads(script.string or script.get_text() or "")
        except (json.JSONDecodeError, TypeError):
            continue
        stack: list[Any] = [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                yield item
                if isinstance(item.get("@graph"), list):
                    stack.extend(item["@graph"])


def _json_ld_value(value: Any, keys: tuple[str, ...]) -> str | None:
    """A string from a JSON-LD value that may be a string, an object or a list of them."""
    if isinstance(value, str):
        return _or_none(value)
    if isinstance(value, dict):
        for key in keys:
            found = _json_ld_value(value.get(key), keys)
            if found:
                return found
        return None
    if isinstance(value, list):
        parts = [part for part in (_json_ld_value(v, keys) for v in value) if part]
        return ", ".join(dict.fromkeys(parts)) or None
    return None


def _meta_content(soup: BeautifulSoup, names: tuple[str, ...]) -> tuple[str, str] | None:
    """First ``<meta name|property=... content=...>`` among ``names`` (case-insensitive)."""
    found: dict[str, str] = {}
    for meta in soup.find_all("meta"):
        key = (meta.get("name") or meta.get("property") or "").strip().lower()
        content = _or_none(meta.get("content"))
        if key in names and content and key not in found:
            found[key] = content
    for name in names:
        if name in found:
            return name, found[name]
    return None


def extract_license(soup: BeautifulSoup, base_url: str) -> tuple[str | None, str | None]:
    """The page's licence, raw, and where it was found.

    Order (the first hit wins): a ``rel="license"`` link (its absolute href, or its text
    when it has no href), JSON-LD ``license``, a licence meta tag (``license``,
    ``dcterms.license``, ``dc.rights``, ...), then any link to a Creative Commons deed.

    Returns:
        ``(licence, source)``, or ``(None, None)`` when the page states no licence.
    """
    for tag in soup.find_all(["a", "link", "area"]):
        if "license" in _rel_values(tag):
            href = _absolute(base_url, tag.get("href"))
            value = href or _or_none(tag.get_text())
            if value:
                return value, "rel-license"
    for obj in json_ld_objects(soup):
        value = _json_ld_value(obj.get("license"), ("@id", "url", "name"))
        if value:
            return value, "json-ld"
    meta = _meta_content(soup, _LICENSE_META_NAMES)
    if meta:
        return meta[1], f"meta:{meta[0]}"
    for tag in soup.find_all("a", href=True):
        href = _absolute(base_url, tag["href"])
        if href and _CC_URL.match(href):
            return href, "cc-link"
    return None, None


def extract_author(soup: BeautifulSoup) -> tuple[str | None, str | None]:
    """The page's author or attribution, raw, and where it was found.

    Order: ``<meta name="author">``, JSON-LD ``author`` / ``creator``, a ``rel="author"``
    link's text, then an element whose class names a byline (``byline``, ``author``).
    A leading "By" is dropped from bylines.

    Returns:
        ``(author, source)``, or ``(None, None)`` when the page names nobody.
    """
    meta = _meta_content(soup, ("author", "dc.creator", "dcterms.creator"))
    if meta:
        return meta[1], f"meta:{meta[0]}"
    for obj in json_ld_objects(soup):
        for key in ("author", "creator"):
            value = _json_ld_value(obj.get(key), ("name", "@id", "url"))
            if value:
                return value, "json-ld"
    for tag in soup.find_all("a"):
        if "author" in _rel_values(tag):
            value = _or_none(tag.get_text())
            if value:
                return value, "rel-author"
    for tag in soup.find_all(class_=_BYLINE_CLASS):
        value = _or_none(tag.get_text(" "))
        if value:
            value = _BY_PREFIX.sub("", value)
            return value, "byline"
    return None, None


def extract_text(soup: BeautifulSoup) -> str:
    """Main prose of the page: ``<article>`` or ``<main>`` when present, else ``<body>``.

    Scripts, styles, navigation, headers, footers, asides, forms and bylines (they are
    attribution, reported by :func:`extract_author`) are removed; the soup passed in is
    not modified.
    """
    copy = BeautifulSoup(str(soup), "html.parser")
    for tag in copy.find_all(_NON_CONTENT_TAGS):
        tag.decompose()
    for tag in copy.find_all(class_=_BYLINE_CLASS):
        if not tag.decomposed:
            tag.decompose()
    root = copy.find("article") or copy.find("main") or copy.body or copy
    return clean_text(root.get_text(" "))


def extract_title(soup: BeautifulSoup) -> str | None:
    """``<title>``, else ``og:title``."""
    if soup.title and soup.title.string:
        title = _or_none(soup.title.string)
        if title:
            return title
    meta = _meta_content(soup, ("og:title",))
    return meta[1] if meta else None


def _figure_of(tag: Tag) -> Tag | None:
    parent = tag.find_parent("figure")
    return parent if isinstance(parent, Tag) else None


def extract_images(soup: BeautifulSoup, base_url: str, max_images: int | None = None) -> list[ImageRef]:
    """Images of the page in document order: ``<img src>`` then ``og:image``.

    URLs are resolved against the base URL; ``data:`` URIs are skipped (they are not
    fetchable material with provenance); each URL appears once.
    """
    refs: dict[str, ImageRef] = {}
    for img in soup.find_all("img"):
        url = _absolute(base_url, img.get("src"))
        if not url or url.startswith("data:") or url in refs:
            continue
        figure = _figure_of(img)
        caption = licence = None
        if figure is not None:
            figcaption = figure.find("figcaption")
            caption = _or_none(figcaption.get_text(" ")) if figcaption else None
            for link in figure.find_all(["a", "link"]):
                if "license" in _rel_values(link):
                    licence = _absolute(base_url, link.get("href")) or _or_none(link.get_text())
                    break
        refs[url] = ImageRef(url=url, alt=_or_none(img.get("alt")), caption=caption, license=licence)
    for meta in soup.find_all("meta"):
        key = (meta.get("property") or meta.get("name") or "").strip().lower()
        if key in ("og:image", "og:image:url", "og:image:secure_url"):
            url = _absolute(base_url, meta.get("content"))
            if url and not url.startswith("data:") and url not in refs:
                refs[url] = ImageRef(url=url, origin="og:image")
    images = list(refs.values())
    return images if max_images is None else images[:max_images]


def extract_links(soup: BeautifulSoup, base_url: str) -> list[str]:
    """Absolute targets of ``<a href>`` in document order, fragments removed, unique.

    Non-http(s) targets (``mailto:``, ``javascript:``) are kept so the crawler can
    report them as refused with a reason.
    """
    links: dict[str, None] = {}
    for tag in soup.find_all("a", href=True):
        url = _absolute(base_url, tag["href"])
        if url and "nofollow" not in _rel_values(tag):
            links.setdefault(url, None)
    return list(links)


def extract_page(html: str | bytes, page_url: str, *, max_images: int | None = None) -> PageContent:
    """Parse one page into images, text, author and licence.

    Args:
        html: the page body (bytes are decoded by BeautifulSoup's encoding detection,
            which honours a ``<meta charset>``).
        page_url: the URL the page was fetched from (after redirects).
        max_images: keep at most this many images (document order); None keeps all.

    Returns:
        The page's :class:`PageContent`.
    """
    soup = BeautifulSoup(html, "html.parser")
    base_url = base_url_of(soup, page_url)
    licence, licence_source = extract_license(soup, base_url)
    author, author_source = extract_author(soup)
    return PageContent(
        url=page_url,
        title=extract_title(soup),
        text=extract_text(soup),
        author=author,
        author_source=author_source,
        license=licence,
        license_source=licence_source,
        images=extract_images(soup, base_url, max_images),
        links=extract_links(soup, base_url),
    )


def host_of(url: str) -> str:
    """Lower-cased host name of a URL (no port); ``""`` when it has none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
