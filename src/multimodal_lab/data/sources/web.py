"""A polite web source: crawl allowed hosts, keep (page, image) pairs with their licence.

What "polite" means here, concretely:

* robots.txt is fetched (through the same client and cache) and obeyed for every page
  and image, including each hop of a redirect; its ``Crawl-delay`` raises the per-host
  delay. Per RFC 9309 a robots.txt answering 4xx allows everything, while a 5xx or an
  unreachable robots.txt disallows the whole host.
* Requests to one host are spaced by ``rate_limit_per_host`` seconds (or the host's
  crawl delay, whichever is longer). Retries of 429/5xx are done by urllib3's ``Retry``
  with exponential backoff and honour ``Retry-After`` (capped at ``retry_after_max``).
* Redirects are followed by hand, one hop at a time, so a redirect to another host or
  to a non-http(s) scheme is refused *before* its target is requested.
* A body is kept only if its content type is expected and it is at most ``max_bytes``,
  checked on the ``Content-Length`` header before reading and on the streamed byte
  count while reading (a server that lies or sends no length is cut off).
* Every fetch result (bodies, redirects, refusals, failures) is written to a SQLite
  cache as soon as it is known, so a crash loses nothing already fetched and a rerun
  with the same ``cache_path`` sends no request for a URL it has already settled.

Every URL that does not end as kept material gets a :class:`FetchOutcome` with a reason
from :data:`REASONS`, so the crawl can be audited row by row.
"""
from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple
from urllib import robotparser
from urllib.parse import urldefrag, urljoin, urlsplit

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.data.sources.html_extract import ImageRef, PageContent, extract_page, host_of

logger = logging.getLogger(__name__)

#: Outcome reason code -> meaning. ``status`` is "ok" (kept), "refused" (a policy said
#: no), "failed" (the network or server did not deliver) or "skipped" (not attempted).
REASONS: dict[str, str] = {
    "": "kept (status ok)",
    "robots_disallowed": "robots.txt of the host disallows this URL for our user agent",
    "off_host_redirect": "the URL redirects to a host outside the allowed hosts; target not fetched",
    "off_host_link": "a link or image on a host outside the allowed hosts; not fetched",
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

#: Reasons that may change if asked again later; kept in the cache but refetched on a
#: rerun when ``retry_failed`` is true.
_TRANSIENT_REASONS = frozenset({"timeout", "gave_up"})
_PAGE_TYPES = ("text/html", "application/xhtml+xml")
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHUNK = 64 * 1024


@dataclass
class WebSourceConfig:
    """Parameters of one crawl (``params:web`` in the Kedro wiring)."""

    start_urls: list[str]  # pages the crawl starts from, in order
    allowed_hosts: list[str] | None = None  # host names pages may be fetched from; None = hosts of start_urls
    allowed_image_hosts: list[str] | None = None  # hosts images may come from; None = allowed_hosts
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
        for url in self.start_urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"web source: start_urls entry {url!r} is not an http(s) URL")
        for name in ("max_pages", "max_bytes", "max_images_per_page", "connect_timeout", "read_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"web source: {name}={getattr(self, name)!r} must be > 0")
        for name in ("rate_limit_per_host", "max_retries", "backoff_factor", "max_redirects", "retry_after_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"web source: {name}={getattr(self, name)!r} must be >= 0")
        if not self.allowed_hosts:
            self.allowed_hosts = sorted({host_of(url) for url in self.start_urls})
        self.allowed_hosts = [h.lower() for h in self.allowed_hosts]
        if self.allowed_image_hosts is None:
            self.allowed_image_hosts = list(self.allowed_hosts)
        self.allowed_image_hosts = [h.lower() for h in self.allowed_image_hosts]

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> WebSourceConfig:
        """Build from a params dict; an unknown key fails with its name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"web source: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)


@dataclass(frozen=True)
class FetchOutcome:
    """How one URL ended."""

    url: str  # the URL as found (start URL, link or image src)
    status: str  # "ok", "refused", "failed" or "skipped"
    reason: str  # a key of REASONS ("" when ok)
    kind: str = "page"  # "page", "image" or "robots"
    detail: str = ""  # human-readable specifics (HTTP status, sizes, redirect target)
    http_status: int | None = None  # last HTTP status seen, None when no answer
    final_url: str = ""  # URL after redirects (equals url without redirects)
    referrer: str = ""  # page on which the URL was found ("" for start URLs)
    from_cache: bool = False  # settled from the cache, no request sent


#: Columns of the outcomes frame, in order.
OUTCOME_COLUMNS = [f.name for f in fields(FetchOutcome)]


class ScrapeResult(NamedTuple):
    """What :func:`scrape` returns; unpacks as ``records, outcomes``."""

    records: pd.DataFrame  # record columns, one row per kept (page, image) pair
    outcomes: pd.DataFrame  # OUTCOME_COLUMNS, one row per URL considered


@dataclass
class _Fetched:
    """Result of fetching one URL without following redirects (what the cache stores)."""

    status: str  # "ok", "redirect", "refused", "failed"
    reason: str = ""
    detail: str = ""
    http_status: int | None = None
    content_type: str = ""
    location: str = ""
    body: bytes | None = None
    from_cache: bool = False


class ResponseCache:
    """Fetch results keyed by (kind, URL) in one SQLite file, committed per response.

    Args:
        path: SQLite file; created with its parent folder when missing.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path))
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS fetches (kind TEXT, url TEXT, status TEXT, reason TEXT,"
            " detail TEXT, http_status INTEGER, content_type TEXT, location TEXT, body BLOB,"
            " fetched_at REAL, PRIMARY KEY (kind, url))"
        )
        self._db.commit()

    def get(self, kind: str, url: str) -> _Fetched | None:
        row = self._db.execute(
            "SELECT status, reason, detail, http_status, content_type, location, body"
            " FROM fetches WHERE kind = ? AND url = ?",
            (kind, url),
        ).fetchone()
        if row is None:
            return None
        status, reason, detail, http_status, content_type, location, body = row
        return _Fetched(status, reason, detail, http_status, content_type, location, body, from_cache=True)

    def put(self, kind: str, url: str, result: _Fetched) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO fetches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, url, result.status, result.reason, result.detail, result.http_status,
             result.content_type, result.location, result.body, time.time()),
        )
        self._db.commit()  # per response: a crash loses nothing already fetched

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM fetches").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def make_session(config: WebSourceConfig) -> requests.Session:
    """A requests session whose adapter retries 429/5xx with backoff and Retry-After.

    Read timeouts are not retried (``read=False``): a server that is too slow once is
    likely too slow again, and the crawl should move on.
    """
    retry = Retry(
        total=config.max_retries,
        connect=config.max_retries,
        read=False,
        status=config.max_retries,
        other=0,
        redirect=False,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=_RETRY_STATUSES,
        backoff_factor=config.backoff_factor,
        respect_retry_after_header=True,
        retry_after_max=int(config.retry_after_max),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = config.user_agent
    return session


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _is_timeout(error: BaseException) -> bool:
    """True for timeouts, including a read timeout surfacing as ConnectionError mid-body."""
    if isinstance(error, requests.Timeout):
        return True
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ReadTimeoutError):
            return True
        inner = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        current = inner or (reason if isinstance(reason, BaseException) else None) \
            or current.__cause__ or current.__context__
    return False


class _Crawler:
    """One crawl: the session, the cache, per-host clocks and robots parsers."""

    def __init__(self, config: WebSourceConfig) -> None:
        self.config = config
        self.session = make_session(config)
        self.cache = ResponseCache(config.cache_path) if config.cache_path else None
        self.memo: dict[tuple[str, str], _Fetched] = {}  # within one run, even without cache
        self.last_request: dict[str, float] = {}  # host -> monotonic time of the last request
        self.robots: dict[str, robotparser.RobotFileParser | None] = {}  # origin -> parser (None = all allowed)
        self.robots_unreachable: dict[str, str] = {}  # origin -> why its robots.txt could not be read
        self.host_delay: dict[str, float] = {}  # host -> seconds between requests
        self.requests_sent = 0

    def close(self) -> None:
        self.session.close()
        if self.cache is not None:
            self.cache.close()

    # --- one request -------------------------------------------------------------
    def _wait_turn(self, host: str) -> None:
        delay = self.host_delay.get(host, self.config.rate_limit_per_host)
        last = self.last_request.get(host)
        if last is not None and delay > 0:
            remaining = last + delay - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        self.last_request[host] = time.monotonic()

    def _accepts(self, kind: str, media_type: str) -> bool:
        if kind == "page":
            return media_type in _PAGE_TYPES
        if kind == "image":
            return media_type in {t.lower() for t in self.config.image_content_types}
        return True  # robots.txt: servers label it loosely; the parser ignores junk lines

    def _request(self, url: str, kind: str) -> _Fetched:
        """Send one GET (urllib3 retries included) and judge the answer; no redirects."""
        cfg = self.config
        self._wait_turn(host_of(url))
        self.requests_sent += 1
        try:
            with self.session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(cfg.connect_timeout, cfg.read_timeout),
            ) as response:
                return self._judge(url, kind, response)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as error:
            return _Fetched("refused", "bad_scheme", f"not a fetchable http(s) URL: {error}")
        except requests.exceptions.RequestException as error:
            if _is_timeout(error):
                return _Fetched("failed", "timeout", f"no answer within {cfg.connect_timeout}s connect /"
                                                     f" {cfg.read_timeout}s read")
            return _Fetched("failed", "gave_up", f"after {cfg.max_retries} retries: {type(error).__name__}")

    def _judge(self, url: str, kind: str, response: requests.Response) -> _Fetched:
        cfg = self.config
        status = response.status_code
        content_type = response.headers.get("Content-Type", "")
        if 300 <= status < 400 and status != 304:
            location = response.headers.get("Location")
            if not location:
                return _Fetched("failed", "http_error", f"HTTP {status} without Location", status)
            target = urldefrag(urljoin(url, location.strip()))[0]
            return _Fetched("redirect", "", f"HTTP {status} -> {target}", status, content_type, target)
        if status in _RETRY_STATUSES:
            return _Fetched("failed", "gave_up", f"HTTP {status} after {cfg.max_retries} retries", status)
        if not 200 <= status < 300:
            return _Fetched("refused", "http_error", f"HTTP {status}", status)
        media_type = _media_type(content_type)
        if not self._accepts(kind, media_type):
            return _Fetched("refused", "wrong_content_type", f"Content-Type {media_type or 'missing'!r}"
                                                               f" for a {kind}", status, content_type)
        declared = response.headers.get("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > cfg.max_bytes:
            return _Fetched("refused", "oversized", f"Content-Length {declared} > max_bytes {cfg.max_bytes}",
                            status, content_type)
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body.extend(chunk)
            if len(body) > cfg.max_bytes:
                return _Fetched("refused", "oversized", f"streamed more than max_bytes {cfg.max_bytes}",
                                status, content_type)
        if kind == "image" and cfg.verify_images:
            problem = _image_problem(bytes(body))
            if problem:
                return _Fetched("refused", "undecodable_image", problem, status, content_type)
        return _Fetched("ok", "", f"{len(body)} bytes", status, content_type, body=bytes(body))

    def fetch_one(self, url: str, kind: str) -> _Fetched:
        """One URL, no redirects followed: from memo, cache, or the network (then cached)."""
        key = (kind, url)
        if key in self.memo:
            return self.memo[key]
        cached = self.cache.get(kind, url) if self.cache is not None else None
        if cached is not None and not (self.config.retry_failed and cached.reason in _TRANSIENT_REASONS):
            self.memo[key] = cached
            return cached
        result = self._request(url, kind)
        if self.cache is not None:
            self.cache.put(kind, url, result)
        self.memo[key] = result
        return result

    # --- robots -----------------------------------------------------------------
    def _robots_for(self, url: str) -> robotparser.RobotFileParser | None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self.robots:
            return self.robots[origin]
        robots_url = origin + "/robots.txt"
        result = self.fetch_one(robots_url, "robots")
        hops = 0
        while result.status == "redirect" and hops < self.config.max_redirects:
            hops += 1
            result = self.fetch_one(result.location, "robots")
        parser: robotparser.RobotFileParser | None = robotparser.RobotFileParser(robots_url)
        if result.status == "ok":
            text = (result.body or b"").decode("utf-8", errors="replace")
            parser.parse(text.splitlines())
        elif result.http_status is not None and 400 <= result.http_status < 500 and result.http_status != 429:
            parser = None  # RFC 9309: robots.txt unavailable (4xx) -> no restriction
        else:
            parser.disallow_all = True  # RFC 9309: unreachable (5xx, network) -> assume complete disallow
            self.robots_unreachable[origin] = result.detail or result.reason
            logger.warning("robots.txt of %s unreachable (%s); not crawling that host", origin, result.detail)
        if parser is not None:
            delay = parser.crawl_delay(self.config.user_agent)
            if delay:
                host = parts.hostname or ""
                self.host_delay[host] = max(float(delay), self.config.rate_limit_per_host)
        self.robots[origin] = parser
        return parser

    def allowed_by_robots(self, url: str) -> bool:
        parser = self._robots_for(url)
        return parser is None or parser.can_fetch(self.config.user_agent, url)

    # --- one URL with redirects ----------------------------------------------------
    def fetch(self, url: str, kind: str, referrer: str, visited: set[str]) -> tuple[FetchOutcome, _Fetched]:
        """Follow redirects hop by hop, refusing off-host and non-http(s) targets unfetched."""
        hosts = self.config.allowed_hosts if kind == "page" else self.config.allowed_image_hosts
        current = url
        from_cache = True

        def outcome(status: str, reason: str, detail: str, result: _Fetched | None = None) -> FetchOutcome:
            return FetchOutcome(
                url=url, status=status, reason=reason, kind=kind, detail=detail,
                http_status=result.http_status if result else None, final_url=current,
                referrer=referrer, from_cache=bool(from_cache and result is not None),
            )

        for _hop in range(self.config.max_redirects + 1):
            if not self.allowed_by_robots(current):
                parts = urlsplit(current)
                why = self.robots_unreachable.get(f"{parts.scheme}://{parts.netloc}")
                detail = (f"robots.txt unreachable ({why}); host treated as disallowed" if why
                          else f"robots.txt disallows {current}")
                return outcome("refused", "robots_disallowed", detail), _Fetched("refused")
            result = self.fetch_one(current, kind)
            from_cache = from_cache and result.from_cache
            if result.status != "redirect":
                return outcome(result.status, result.reason, result.detail, result), result
            target = result.location
            if urlsplit(target).scheme not in ("http", "https"):
                return outcome("refused", "bad_scheme", f"redirect to {target}", result), result
            if host_of(target) not in hosts:
                return outcome("refused", "off_host_redirect", f"redirect to {target}", result), result
            if kind == "page" and target != url and target in visited:
                return outcome("skipped", "already_visited", f"redirect to visited {target}", result), result
            current = target
        return outcome("failed", "too_many_redirects", f"more than {self.config.max_redirects} redirects"), \
            _Fetched("failed")


def _image_problem(body: bytes) -> str:
    """Why Pillow cannot decode an image body ("" when it can)."""
    from PIL import Image  # local: only the web and HF sources need Pillow at import time

    try:
        with Image.open(io.BytesIO(body)) as image:
            image.verify()
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad data
        return f"Pillow cannot decode it: {type(error).__name__}: {error}"
    return ""


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


def _record(page: PageContent, image: ImageRef, fetched: _Fetched, outcome: FetchOutcome,
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

    Pages are fetched only on ``allowed_hosts``, images only on ``allowed_image_hosts``;
    links are followed up to ``max_pages`` kept pages and ``max_depth`` hops. Each image
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
    crawler = _Crawler(config)
    outcomes: list[FetchOutcome] = []
    records: list[dict[str, Any]] = []
    queue: deque[tuple[str, int, str]] = deque()
    visited: set[str] = set()  # page URLs queued or fetched, after normalisation
    reported: set[str] = set()  # URLs that already have a skipped outcome
    image_results: dict[str, tuple[FetchOutcome, _Fetched]] = {}

    def skip(url: str, reason: str, detail: str, referrer: str, kind: str = "page") -> None:
        if url not in reported:
            reported.add(url)
            outcomes.append(FetchOutcome(url, "skipped" if reason in ("already_visited", "max_pages", "max_depth",
                                                                      "off_host_link") else "refused",
                                         reason, kind, detail, None, url, referrer))

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
            if host_of(url) not in config.allowed_hosts:
                skip(url, "off_host_link", f"host {host_of(url)!r} not in allowed_hosts", referrer)
                continue
            outcome, fetched = crawler.fetch(url, "page", referrer, visited)
            outcomes.append(outcome)
            visited.add(outcome.final_url)
            if outcome.status != "ok":
                continue
            kept_pages += 1
            progress.update(1)
            html: str | bytes = fetched.body or b""
            charset = _charset(fetched.content_type)
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
                if host_of(image.url) not in config.allowed_image_hosts:
                    skip(image.url, "off_host_link", f"image host {host_of(image.url)!r} not allowed", page.url,
                         "image")
                    continue
                if image.url not in image_results:
                    image_results[image.url] = crawler.fetch(image.url, "image", page.url, set())
                    outcomes.append(image_results[image.url][0])
                image_outcome, image_fetched = image_results[image.url]
                if image_outcome.status == "ok":
                    records.append(_record(page, image, image_fetched, image_outcome, config))

            for link in page.links:
                if urlsplit(link).scheme not in ("http", "https"):
                    skip(link, "bad_scheme", "link is not http(s)", page.url)
                elif host_of(link) not in config.allowed_hosts:
                    skip(link, "off_host_link", f"host {host_of(link)!r} not in allowed_hosts", page.url)
                elif link in visited:
                    skip(link, "already_visited", "linked again (loop or repeated link)", page.url)
                elif config.max_depth is not None and depth + 1 > config.max_depth:
                    skip(link, "max_depth", f"deeper than max_depth={config.max_depth}", page.url)
                else:
                    visited.add(link)
                    queue.append((link, depth + 1, page.url))
    finally:
        progress.close()
        crawler.close()

    frame = outcomes_frame(outcomes)
    logger.info(
        "web scrape: %d records from %d pages; %d requests sent, %d outcomes (%s)",
        len(records), kept_pages, crawler.requests_sent, len(frame),
        json.dumps(frame["reason"].replace("", "ok").value_counts().to_dict(), sort_keys=True),
    )
    return ScrapeResult(records_frame(records), frame)
