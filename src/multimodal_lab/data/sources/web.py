"""A polite web source: crawl allowed hosts, keep (page, image) pairs with their licence.

The work is split in three modules:

* :mod:`multimodal_lab.data.sources.web_fetch` fetches: robots.txt, per-host rate limits,
  retries, hand-followed redirects, content-type and size checks, and the SQLite response
  cache (its docstring spells out what "polite" means, rule by rule);
* :mod:`multimodal_lab.data.sources.web_guard` says where requests may go: allowed hosts
  *and ports*, and public addresses only (unless ``allow_private_addresses``);
* this module crawls: a breadth-first frontier over the allowed hosts, link and image
  following within ``max_pages`` / ``max_depth``, and record building.

Every URL that does not end as kept material gets a :class:`FetchOutcome` with a reason
from :data:`REASONS`, so the crawl can be audited row by row.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urldefrag, urlsplit

import pandas as pd
from tqdm.auto import tqdm

from multimodal_lab.config import from_params
from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.sources.html_extract import (
    ImageRef,
    PageContent,
    extract_page,
)
from multimodal_lab.data.sources.web_fetch import (  # noqa: F401 - ResponseCache, make_session re-exported
    OUTCOME_COLUMNS,
    Fetched,
    Fetcher,
    FetchOutcome,
    ResponseCache,
    charset_of,
    make_session,
)
from multimodal_lab.data.sources.web_guard import entry_for_url, format_entry, parse_entry

logger = logging.getLogger(__name__)

#: Outcome reason code -> meaning. ``status`` is "ok" (kept), "refused" (a policy said
#: no), "failed" (the network or server did not deliver) or "skipped" (not attempted).
REASONS: dict[str, str] = {
    "": "kept (status ok)",
    "robots_disallowed": "robots.txt of the host disallows this URL for our user agent",
    "off_host_redirect": "the URL redirects to a host outside the allowed hosts; target not fetched",
    "off_host_link": "a link or image on a host outside the allowed hosts; not fetched",
    "off_port_redirect": "the URL redirects to an allowed host but on a port not allowed for it; target not fetched",
    "off_port_link": "a start URL, link or image on an allowed host but a port not allowed for it; not fetched",
    "private_address": "the host is or resolves to a loopback, private, link-local, reserved, multicast or"
                       " unspecified address (any of its addresses); nothing sent to it. Set"
                       " allow_private_addresses to crawl such hosts",
    "bad_scheme": "not an http(s) URL (mailto:, javascript:, ftp:, ...), or a redirect to one",
    "wrong_content_type": "the response's Content-Type is not one expected for this kind of URL",
    "oversized": "body larger than max_bytes (by Content-Length, or by the streamed byte count)",
    "undecodable_image": "image body that Pillow cannot decode",
    "http_error": "a 4xx answer other than 429 (not retried)",
    "timeout": "connect or read timeout; not retried",
    "gave_up": "still 429/5xx or unreachable after max_retries retries",
    "too_many_redirects": "more than max_redirects hops",
    "already_visited": "the URL (or its redirect target) was fetched earlier in this crawl",
    "max_pages": "the crawl reached max_pages before this URL",
    "max_depth": "the URL is deeper than max_depth links from a start URL",
}


def _host_entries(name: str, entries: str | list[str]) -> list[str]:
    """Allowed-hosts entries in canonical form, unique, in the order given."""
    if isinstance(entries, str):
        entries = [entries]
    try:
        canonical = [format_entry(*parse_entry(entry)) for entry in entries]
    except ValueError as error:
        raise ValueError(f"web source: {name}: {error}") from None
    return list(dict.fromkeys(canonical))


@dataclass
class WebSourceConfig:
    """Parameters of one crawl (``params:sources.web`` in the Kedro wiring)."""

    start_urls: list[str]  # pages the crawl starts from, in order
    # where pages may be fetched from: "host" (the scheme's default port, 80/443, only) or
    # "host:port" ("[v6]:port" for IPv6); None or [] = the hosts and ports of start_urls
    allowed_hosts: list[str] | None = None
    allowed_image_hosts: list[str] | None = None  # same form, for images; None = allowed_hosts
    # fetch from hosts that are or resolve to loopback, private, link-local, reserved,
    # multicast or unspecified addresses; off so that links, redirects or DNS answers
    # cannot steer the crawler at internal services. Turn on only for a server you run.
    allow_private_addresses: bool = False
    max_pages: int = 50  # stop after this many pages were kept
    max_depth: int | None = None  # follow links at most this many hops from a start URL; None = no limit
    max_bytes: int = 10_000_000  # largest body kept (page or image), in bytes
    max_images_per_page: int = 10  # images taken from one page, in document order
    rate_limit_per_host: float = 1.0  # seconds between two requests to one host
    # sent with every request and matched against robots.txt groups
    user_agent: str = "multimodal_lab-crawler/0.1 (research crawler; obeys robots.txt)"
    connect_timeout: float = 5.0  # seconds to establish a connection
    read_timeout: float = 20.0  # seconds to wait for each chunk of the answer
    max_retries: int = 3  # retries of 429/5xx and failed connections (timeouts are not retried)
    backoff_factor: float = 0.5  # urllib3 backoff: sleeps factor * 2**(retry-1) seconds between retries
    retry_after_max: float = 120.0  # cap on a server's Retry-After, in seconds
    max_redirects: int = 5  # redirect hops followed for one URL
    cache_path: str | None = None  # SQLite file caching every fetch result; None = no persistent cache
    retry_failed: bool = False  # on a rerun, ask again for URLs that timed out or gave up last time
    image_content_types: list[str] = field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/gif", "image/webp"]
    )  # image Content-Types kept
    verify_images: bool = True  # refuse image bodies Pillow cannot decode
    caption_max_words: int = 40  # page text of at most this many words serves as caption, longer as story
    min_caption_words: int = 3  # a figcaption / alt text needs this many words to be the caption
    max_story_chars: int = 5000  # story text is cut (at a word boundary) to this length
    corpus: str = "web"  # corpus name written into every record
    progress: bool = True  # show a tqdm progress bar over kept pages

    def __post_init__(self) -> None:
        if isinstance(self.start_urls, str):
            self.start_urls = [self.start_urls]
        if not self.start_urls:
            raise ValueError("web source: start_urls is empty; give at least one http(s) page URL")
        start_entries = []
        for url in self.start_urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"web source: start_urls entry {url!r} is not an http(s) URL")
            try:
                start_entries.append(entry_for_url(url))
            except ValueError as error:
                raise ValueError(f"web source: start_urls entry {url!r}: {error}; give URLs like"
                                 f" 'https://example.org/page'") from None
        for name in ("max_pages", "max_bytes", "max_images_per_page", "connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"web source: {name}={getattr(self, name)!r} must be > 0")
        for name in ("rate_limit_per_host", "max_retries", "backoff_factor", "max_redirects", "retry_after_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"web source: {name}={getattr(self, name)!r} must be >= 0")
        self.allowed_hosts = _host_entries("allowed_hosts", self.allowed_hosts or sorted(set(start_entries)))
        if self.allowed_image_hosts is None:
            self.allowed_image_hosts = list(self.allowed_hosts)
        self.allowed_image_hosts = _host_entries("allowed_image_hosts", self.allowed_image_hosts)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> WebSourceConfig:
        """Build from a ``params:`` dict; an unknown key fails naming it (nested ones too)."""
        return from_params(cls, params, where="WebSourceConfig")


class ScrapeResult(NamedTuple):
    """What :func:`scrape` returns; unpacks as ``records, outcomes``."""

    records: pd.DataFrame  # record columns, one row per kept (page, image) pair
    outcomes: pd.DataFrame  # OUTCOME_COLUMNS, one row per URL considered


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head.rsplit(" ", 1)[0] if " " in head else head


def texts_for(page: PageContent, image: ImageRef, config: WebSourceConfig) -> tuple[str | None, str | None]:
    """Caption and story of one (page, image) pair.

    Rule: the caption is the image's ``<figcaption>``, else its alt text, when that has
    at least ``min_caption_words`` words; failing that, the page text serves as the
    caption when it has at most ``caption_max_words`` words. The page text is the story
    when it is longer than ``caption_max_words`` words (cut to ``max_story_chars``).
    Whatever is missing is None (BLIP-2 fills missing captions later).

    Returns:
        ``(caption, story)``.
    """
    words = page.text.split()
    short_page = 0 < len(words) <= config.caption_max_words
    caption = None
    for candidate in (image.caption, image.alt):
        if candidate and len(candidate.split()) >= config.min_caption_words:
            caption = candidate
            break
    if caption is None and short_page:
        caption = page.text
    story = _cut(page.text, config.max_story_chars) if len(words) > config.caption_max_words else None
    return caption, story


def _record(page: PageContent, image: ImageRef, fetched: Fetched, outcome: FetchOutcome,
            config: WebSourceConfig) -> dict[str, Any]:
    caption, story = texts_for(page, image, config)
    licence, licence_source = (image.license, "figure") if image.license else (page.license, page.license_source)
    return make_record(
        image=fetched.body or b"",
        source="web",
        corpus=config.corpus,
        caption=caption,
        story=story,
        license=licence,
        attribution=page.author or "",
        url=outcome.final_url,
        metadata={
            "page_url": page.url,
            "page_title": page.title,
            "image_alt": image.alt,
            "image_origin": image.origin,
            "license_source": licence_source,
            "author_source": page.author_source,
            "content_type": fetched.content_type,
        },
    )


def outcomes_frame(outcomes: list[FetchOutcome]) -> pd.DataFrame:
    """Outcomes as a DataFrame with :data:`OUTCOME_COLUMNS`."""
    frame = pd.DataFrame([asdict(o) for o in outcomes], columns=OUTCOME_COLUMNS)
    frame["http_status"] = frame["http_status"].astype("Int64")
    frame["from_cache"] = frame["from_cache"].astype(bool)
    return frame


def scrape(config: WebSourceConfig) -> ScrapeResult:
    """Crawl from ``config.start_urls`` breadth-first and keep (page, image) records.

    Pages are fetched only on ``allowed_hosts``, images only on ``allowed_image_hosts``
    (host and port, checked on every hop: redirects and robots.txt included) and, unless
    ``allow_private_addresses`` is set, only from hosts on public addresses. Links are
    followed up to ``max_pages`` kept pages and ``max_depth`` hops. Each image
    URL is fetched once per crawl even when several pages show it; each (page, image)
    pair becomes one record (source "web") whose licence is the raw string the page
    (or the image's own ``<figure>``) states, or None. See :func:`texts_for` for the
    caption/story rule.

    Args:
        config: the crawl parameters.

    Returns:
        ``ScrapeResult(records, outcomes)``: the record frame and one outcome row per
        URL considered (pages, images, links not followed), each refusal with its reason.
    """
    fetcher = Fetcher(config)
    outcomes: list[FetchOutcome] = []
    records: list[dict[str, Any]] = []
    queue: deque[tuple[str, int, str]] = deque()
    visited: set[str] = set()  # page URLs queued or fetched, after normalisation
    reported: set[str] = set()  # URLs that already have a skipped outcome
    image_results: dict[str, tuple[FetchOutcome, Fetched]] = {}

    def skip(url: str, reason: str, detail: str, referrer: str, kind: str = "page") -> None:
        if url not in reported:
            reported.add(url)
            outcomes.append(FetchOutcome(url, "skipped" if reason in ("already_visited", "max_pages", "max_depth",
                                                                      "off_host_link", "off_port_link")
                                         else "refused", reason, kind, detail, None, url, referrer))

    def off_origin(url: str, referrer: str, kind: str = "page") -> bool:
        """Skip ``url`` (and say so) when its host or port is not allowed for ``kind``."""
        refusal = fetcher.origins[kind].refusal(url)
        if refusal is None:
            return False
        which, detail = refusal
        skip(url, f"off_{which}_link", detail, referrer, kind)
        return True

    for url in config.start_urls:
        url = urldefrag(url)[0]
        if url in visited:
            continue
        visited.add(url)
        queue.append((url, 0, ""))

    kept_pages = 0
    progress = tqdm(total=config.max_pages, unit="page", desc="web scrape", disable=not config.progress)
    try:
        while queue:
            url, depth, referrer = queue.popleft()
            if kept_pages >= config.max_pages:
                skip(url, "max_pages", f"max_pages={config.max_pages} reached", referrer)
                continue
            if off_origin(url, referrer):
                continue
            outcome, fetched = fetcher.fetch(url, "page", referrer, visited)
            outcomes.append(outcome)
            visited.add(outcome.final_url)
            if outcome.status != "ok":
                continue
            kept_pages += 1
            progress.update(1)
            html: str | bytes = fetched.body or b""
            charset = charset_of(fetched.content_type)
            if charset:
                try:
                    html = html.decode(charset, errors="replace")  # type: ignore[union-attr]
                except LookupError:
                    pass  # unknown charset name: let BeautifulSoup detect the encoding
            page = extract_page(html, outcome.final_url, max_images=config.max_images_per_page)

            for image in page.images:
                if urlsplit(image.url).scheme not in ("http", "https"):
                    skip(image.url, "bad_scheme", "image URL is not http(s)", page.url, "image")
                    continue
                if off_origin(image.url, page.url, "image"):
                    continue
                if image.url not in image_results:
                    image_results[image.url] = fetcher.fetch(image.url, "image", page.url, set())
                    outcomes.append(image_results[image.url][0])
                image_outcome, image_fetched = image_results[image.url]
                if image_outcome.status == "ok":
                    records.append(_record(page, image, image_fetched, image_outcome, config))

            for link in page.links:
                if urlsplit(link).scheme not in ("http", "https"):
                    skip(link, "bad_scheme", "link is not http(s)", page.url)
                elif off_origin(link, page.url):
                    continue  # reported by off_origin
                elif link in visited:
                    skip(link, "already_visited", "linked again (loop or repeated link)", page.url)
                elif config.max_depth is not None and depth + 1 > config.max_depth:
                    skip(link, "max_depth", f"deeper than max_depth={config.max_depth}", page.url)
                else:
                    visited.add(link)
                    queue.append((link, depth + 1, page.url))
    finally:
        progress.close()
        fetcher.close()

    frame = outcomes_frame(outcomes)
    logger.info(
        "web scrape: %d records from %d pages; %d requests sent, %d outcomes (%s)",
        len(records), kept_pages, fetcher.requests_sent, len(frame),
        json.dumps(frame["reason"].replace("", "ok").value_counts().to_dict(), sort_keys=True),
    )
    return ScrapeResult(records_frame(records), frame)
