"""Polite fetching for the web source: one URL at a time, every answer judged and cached.

What "polite" means here, concretely:

* robots.txt is fetched (through the same client and cache) and obeyed for every page
  and image, including each hop of a redirect; its ``Crawl-delay`` raises the per-host
  delay. Per RFC 9309 a robots.txt answering 4xx allows everything, while a 5xx or an
  unreachable robots.txt disallows the whole host.
* Requests to one host are spaced by ``rate_limit_per_host`` seconds (or the host's
  crawl delay, whichever is longer). Retries of 429/5xx are done by urllib3's ``Retry``
  with exponential backoff and honour ``Retry-After`` (capped at ``retry_after_max``).
* Redirects are followed by hand, one hop at a time, so a redirect to a host or port
  outside the allowed ones, or to a non-http(s) scheme, is refused *before* its target
  is requested. robots.txt redirects are held to the same rule; one that leaves the
  allowed hosts and ports is not followed and counts as an unreachable robots.txt.
* Unless ``allow_private_addresses`` is set, no request goes to a host that is or
  resolves to a loopback, private, link-local or otherwise non-public address; the
  check runs before every hop and again when a connection is opened
  (:mod:`multimodal_lab.data.sources.web_guard` explains why both).
* A body is kept only if its content type is expected and it is at most ``max_bytes``,
  checked on the ``Content-Length`` header before reading and on the streamed byte
  count while reading (a server that lies or sends no length is cut off).
* Every fetch result (bodies, redirects, refusals, failures) is written to a SQLite
  cache as soon as it is known, so a crash loses nothing already fetched and a rerun
  with the same ``cache_path`` sends no request for a URL it has already settled.

:class:`Fetcher` does the fetching for one crawl; which URLs to ask for, and what to make
of the answers, is decided by the crawler in :mod:`multimodal_lab.data.sources.web`.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING
from urllib import robotparser
from urllib.parse import urldefrag, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from multimodal_lab.data.sources.html_extract import host_of
from multimodal_lab.data.sources.web_guard import (
    AddressRefused,
    AllowedOrigins,
    GuardedAdapter,
    host_address_refusal,
    url_port,
)

if TYPE_CHECKING:  # the config lives with the crawler, which imports this module
    from multimodal_lab.data.sources.web import WebSourceConfig

logger = logging.getLogger(__name__)

#: Reasons that may change if asked again later; kept in the cache but refetched on a
#: rerun when ``retry_failed`` is true.
_TRANSIENT_REASONS = frozenset({"timeout", "gave_up"})
#: Reasons that depend on this run's settings, not on the URL: never written to the cache,
#: so a rerun under other settings decides afresh.
_POLICY_REASONS = frozenset({"private_address"})
_PAGE_TYPES = ("text/html", "application/xhtml+xml")
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchOutcome:
    """How one URL ended."""

    url: str  # the URL as found (start URL, link or image src)
    status: str  # "ok", "refused", "failed" or "skipped"
    reason: str  # a key of multimodal_lab.data.sources.web.REASONS ("" when ok)
    kind: str = "page"  # "page", "image" or "robots"
    detail: str = ""  # human-readable specifics (HTTP status, sizes, redirect target)
    http_status: int | None = None  # last HTTP status seen, None when no answer
    final_url: str = ""  # URL after redirects (equals url without redirects)
    referrer: str = ""  # page on which the URL was found ("" for start URLs)
    from_cache: bool = False  # settled from the cache, no request sent


#: Columns of the outcomes frame, in order.
OUTCOME_COLUMNS = [f.name for f in fields(FetchOutcome)]


@dataclass
class Fetched:
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

    def get(self, kind: str, url: str) -> Fetched | None:
        row = self._db.execute(
            "SELECT status, reason, detail, http_status, content_type, location, body"
            " FROM fetches WHERE kind = ? AND url = ?",
            (kind, url),
        ).fetchone()
        if row is None:
            return None
        status, reason, detail, http_status, content_type, location, body = row
        return Fetched(status, reason, detail, http_status, content_type, location, body, from_cache=True)

    def put(self, kind: str, url: str, result: Fetched) -> None:
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

    Unless ``config.allow_private_addresses`` is set, the adapter is a
    :class:`~multimodal_lab.data.sources.web_guard.GuardedAdapter` (connections to public
    addresses only) and the session ignores the environment (``trust_env``): proxy
    variables would route requests past the address check, and ``.netrc`` credentials
    must never be sent to crawled hosts.
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
    if config.allow_private_addresses:
        adapter = HTTPAdapter(max_retries=retry)
    else:
        adapter = GuardedAdapter(max_retries=retry)
        session.trust_env = False
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = config.user_agent
    return session


def media_type_of(content_type: str) -> str:
    """The media type of a Content-Type header value, lower-cased and without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def charset_of(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header value, or None when it has none."""
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


def _image_problem(body: bytes) -> str:
    """Why an image body cannot be used ("" when it can): the project's pixel limit is
    checked from the header before anything is decoded (the byte limit was checked while
    streaming)."""
    from multimodal_lab.data.images import ImageRejected, open_image

    try:
        open_image(body, max_bytes=len(body), verify=True)
    except ImageRejected as error:
        return f"Pillow cannot decode it: {error}"
    return ""


class Fetcher:
    """The fetching side of one crawl: the session, the cache, per-host clocks and robots parsers."""

    def __init__(self, config: WebSourceConfig) -> None:
        self.config = config
        self.session = make_session(config)
        self.cache = ResponseCache(config.cache_path) if config.cache_path else None
        self.memo: dict[tuple[str, str], Fetched] = {}  # within one run, even without cache
        self.last_request: dict[str, float] = {}  # host -> monotonic time of the last request
        self.origins = {"page": AllowedOrigins(config.allowed_hosts or []),
                        "image": AllowedOrigins(config.allowed_image_hosts or [])}
        self.address_refusals: dict[str, str | None] = {}  # host -> why its addresses are refused
        # keyed by (kind, origin): a robots.txt redirect is judged by that kind's allowed hosts
        self.robots: dict[tuple[str, str], robotparser.RobotFileParser | None] = {}  # None = all allowed
        self.robots_unreachable: dict[tuple[str, str], str] = {}  # why that robots.txt could not be read
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

    def _request(self, url: str, kind: str) -> Fetched:
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
        except AddressRefused as error:  # the connection-time check; nothing was sent
            return Fetched("refused", "private_address", str(error))
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as error:
            return Fetched("refused", "bad_scheme", f"not a fetchable http(s) URL: {error}")
        except requests.exceptions.RequestException as error:
            if _is_timeout(error):
                return Fetched("failed", "timeout", f"no answer within {cfg.connect_timeout}s connect /"
                                                     f" {cfg.read_timeout}s read")
            return Fetched("failed", "gave_up", f"after {cfg.max_retries} retries: {type(error).__name__}")

    def _judge(self, url: str, kind: str, response: requests.Response) -> Fetched:
        cfg = self.config
        status = response.status_code
        content_type = response.headers.get("Content-Type", "")
        if 300 <= status < 400 and status != 304:
            location = response.headers.get("Location")
            if not location:
                return Fetched("failed", "http_error", f"HTTP {status} without Location", status)
            target = urldefrag(urljoin(url, location.strip()))[0]
            return Fetched("redirect", "", f"HTTP {status} -> {target}", status, content_type, target)
        if status in _RETRY_STATUSES:
            return Fetched("failed", "gave_up", f"HTTP {status} after {cfg.max_retries} retries", status)
        if not 200 <= status < 300:
            return Fetched("refused", "http_error", f"HTTP {status}", status)
        media_type = media_type_of(content_type)
        if not self._accepts(kind, media_type):
            return Fetched("refused", "wrong_content_type", f"Content-Type {media_type or 'missing'!r}"
                                                               f" for a {kind}", status, content_type)
        declared = response.headers.get("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > cfg.max_bytes:
            return Fetched("refused", "oversized", f"Content-Length {declared} > max_bytes {cfg.max_bytes}",
                            status, content_type)
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body.extend(chunk)
            if len(body) > cfg.max_bytes:
                return Fetched("refused", "oversized", f"streamed more than max_bytes {cfg.max_bytes}",
                                status, content_type)
        if kind == "image" and cfg.verify_images:
            problem = _image_problem(bytes(body))
            if problem:
                return Fetched("refused", "undecodable_image", problem, status, content_type)
        return Fetched("ok", "", f"{len(body)} bytes", status, content_type, body=bytes(body))

    def fetch_one(self, url: str, kind: str) -> Fetched:
        """One URL, no redirects followed: from memo, cache, or the network (then cached)."""
        key = (kind, url)
        if key in self.memo:
            return self.memo[key]
        cached = self.cache.get(kind, url) if self.cache is not None else None
        if cached is not None and not (self.config.retry_failed and cached.reason in _TRANSIENT_REASONS):
            self.memo[key] = cached
            return cached
        result = self._request(url, kind)
        if self.cache is not None and result.reason not in _POLICY_REASONS:
            self.cache.put(kind, url, result)
        self.memo[key] = result
        return result

    # --- where a hop may go -----------------------------------------------------------
    def address_refusal(self, url: str) -> str | None:
        """Why the host of ``url`` may not be contacted (its addresses), or None when it may.

        Always None with ``allow_private_addresses``. The verdict is kept per host for
        the crawl; that is safe because the session's adapter resolves and checks again
        when it opens a connection, so a DNS answer that changes later is still caught.
        """
        if self.config.allow_private_addresses:
            return None
        host = host_of(url)
        if host not in self.address_refusals:
            try:
                port = url_port(url)
            except ValueError:
                port = 0  # the address check does not need it; the origin check reports it
            self.address_refusals[host] = host_address_refusal(host, port)
        return self.address_refusals[host]

    def hop_refusal(self, url: str, kind: str) -> tuple[str, str] | None:
        """Why nothing may be sent to ``url`` on behalf of a ``kind`` URL, or None.

        Checked in order: the scheme, the allowed hosts and ports of ``kind`` ("page"
        URLs and their robots.txt use ``allowed_hosts``, "image" ones
        ``allowed_image_hosts``), then the host's addresses.

        Returns:
            None, or ``(code, detail)`` with code "bad_scheme", "off_host", "off_port"
            or "private_address".
        """
        if urlsplit(url).scheme not in ("http", "https"):
            return "bad_scheme", f"{url} is not an http(s) URL"
        refusal = self.origins[kind].refusal(url)
        if refusal is not None:
            which, detail = refusal
            return f"off_{which}", detail
        address = self.address_refusal(url)
        if address is not None:
            return "private_address", address
        return None

    # --- robots -----------------------------------------------------------------
    def _robots_for(self, url: str, kind: str) -> robotparser.RobotFileParser | None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        key = (kind, origin)
        if key in self.robots:
            return self.robots[key]
        robots_url = origin + "/robots.txt"
        current = robots_url
        # Every robots.txt hop is checked like a page hop. A redirect that leaves the
        # allowed hosts and ports (or goes to a private address) is not followed; the
        # robots.txt then counts as unreachable, so the host is not crawled at all, the
        # cautious reading of RFC 9309 that already applies to a 5xx robots.txt.
        for _hop in range(self.config.max_redirects + 1):
            refusal = self.hop_refusal(current, kind)
            if refusal is not None:
                result = Fetched("refused", refusal[0], f"robots.txt redirect to {current} not followed:"
                                                        f" {refusal[1]}")
                break
            result = self.fetch_one(current, "robots")
            if result.status != "redirect":
                break
            current = result.location
        else:
            result = Fetched("failed", "too_many_redirects",
                             f"robots.txt redirected more than max_redirects={self.config.max_redirects} times")
        parser: robotparser.RobotFileParser | None = robotparser.RobotFileParser(robots_url)
        if result.status == "ok":
            text = (result.body or b"").decode("utf-8", errors="replace")
            parser.parse(text.splitlines())
        elif result.http_status is not None and 400 <= result.http_status < 500 and result.http_status != 429:
            parser = None  # RFC 9309: robots.txt unavailable (4xx) -> no restriction
        else:
            parser.disallow_all = True  # RFC 9309: unreachable (5xx, network) -> assume complete disallow
            self.robots_unreachable[key] = result.detail or result.reason
            logger.warning("robots.txt of %s unreachable (%s); not crawling that host", origin, result.detail)
        if parser is not None:
            delay = parser.crawl_delay(self.config.user_agent)
            if delay:
                host = parts.hostname or ""
                self.host_delay[host] = max(float(delay), self.config.rate_limit_per_host)
        self.robots[key] = parser
        return parser

    def allowed_by_robots(self, url: str, kind: str = "page") -> bool:
        """Whether robots.txt of ``url``'s origin lets our user agent fetch it."""
        parser = self._robots_for(url, kind)
        return parser is None or parser.can_fetch(self.config.user_agent, url)

    # --- one URL with redirects ----------------------------------------------------
    def fetch(self, url: str, kind: str, referrer: str, visited: set[str]) -> tuple[FetchOutcome, Fetched]:
        """Fetch ``url``, following redirects hop by hop; nothing is sent to a refused hop.

        Every hop, the first included, must pass :meth:`hop_refusal` (scheme, allowed
        host and port, public address) and robots.txt before it is requested.

        Args:
            url: the URL to fetch.
            kind: "page" or "image".
            referrer: the page the URL was found on ("" for a start URL).
            visited: page URLs already queued or fetched; a page redirecting to one of
                them ends as "already_visited".

        Returns:
            The URL's outcome and the last fetch result (the body when ok).
        """
        current = url
        from_cache = True

        def outcome(status: str, reason: str, detail: str, result: Fetched | None = None) -> FetchOutcome:
            return FetchOutcome(
                url=url, status=status, reason=reason, kind=kind, detail=detail,
                http_status=result.http_status if result else None, final_url=current,
                referrer=referrer, from_cache=bool(from_cache and result is not None),
            )

        refusal = self.hop_refusal(url, kind)
        if refusal is not None:
            code, detail = refusal
            if code in ("off_host", "off_port"):  # normally filtered by the crawler already
                return outcome("skipped", f"{code}_link", detail), Fetched("refused", f"{code}_link", detail)
            return outcome("refused", code, detail), Fetched("refused", code, detail)
        for _hop in range(self.config.max_redirects + 1):
            if not self.allowed_by_robots(current, kind):
                parts = urlsplit(current)
                why = self.robots_unreachable.get((kind, f"{parts.scheme}://{parts.netloc}"))
                detail = (f"robots.txt unreachable ({why}); host treated as disallowed" if why
                          else f"robots.txt disallows {current}")
                return outcome("refused", "robots_disallowed", detail), Fetched("refused")
            result = self.fetch_one(current, kind)
            from_cache = from_cache and result.from_cache
            if result.status != "redirect":
                return outcome(result.status, result.reason, result.detail, result), result
            target = result.location
            refusal = self.hop_refusal(target, kind)
            if refusal is not None:
                code, detail = refusal
                reason = f"{code}_redirect" if code in ("off_host", "off_port") else code
                return outcome("refused", reason, f"redirect to {target}: {detail}", result), result
            if kind == "page" and target != url and target in visited:
                return outcome("skipped", "already_visited", f"redirect to visited {target}", result), result
            current = target
        return outcome("failed", "too_many_redirects", f"more than {self.config.max_redirects} redirects"), \
            Fetched("failed")
