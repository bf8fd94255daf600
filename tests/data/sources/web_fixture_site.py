"""A real HTTP server on 127.0.0.1 serving the fixture site, counting every request.

Used by the web source tests through the fixtures in this folder's conftest.py.
"""
from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

SITE = Path(__file__).parent / "fixture_site"
#: Bodies above this size are "oversized" for the tests' crawl config.
TEST_MAX_BYTES = 50_000
SLOW_SECONDS = 1.5
_TYPES = {".html": "text/html; charset=utf-8", ".txt": "text/plain", ".png": "image/png"}


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {
    "/img/red.png": png((220, 30, 30)),
    "/img/green.png": png((30, 200, 30)),
    "/img/blue.png": png((30, 30, 220)),
    "/img/yellow.png": png((230, 220, 20)),
}


class FixtureServer:
    """Holds the server, its base URL and what it was asked."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.times: list[tuple[str, float]] = []
        self.user_agents: set[str] = set()
        self.robots_status: int | None = None  # answer /robots.txt with this status instead of the file
        self.redirects: dict[str, str] = {}  # path -> Location: answered with a 302 (robots.txt too)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = urlsplit(self.path).path
                with server.lock:
                    server.counts[path] += 1
                    server.times.append((path, time.monotonic()))
                    server.user_agents.add(self.headers.get("User-Agent", ""))
                    count = server.counts[path]
                try:
                    server.route(self, path, count)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler hung up on purpose (oversized, timeout)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def url(self, path: str) -> str:
        return self.base + path

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", content_type: str = "text/html",
             headers: dict[str, str] | None = None, length: bool = True) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def route(self, handler: BaseHTTPRequestHandler, path: str, count: int) -> None:
        send = self.send
        if path in self.redirects:
            return send(handler, 302, headers={"Location": self.redirects[path]})
        if path == "/robots.txt" and self.robots_status is not None:
            return send(handler, self.robots_status, b"", "text/plain")
        if path in IMAGES:
            return send(handler, 200, IMAGES[path], "image/png")
        if path == "/img/broken.png":
            return send(handler, 200, b"this is not a png at all", "image/png")
        if path == "/img/huge.png":
            return send(handler, 200, b"\x89PNG" + b"\x00" * (TEST_MAX_BYTES * 4), "image/png")
        if path == "/img/huge-stream.png":  # no Content-Length: only the byte count can stop it
            return send(handler, 200, b"\x89PNG" + b"\x00" * (TEST_MAX_BYTES * 4), "image/png", length=False)
        if path == "/img/page-not-image.png":
            return send(handler, 200, b"<html><body>an error page</body></html>", "text/html")
        if path == "/redirect-away":
            return send(handler, 302, headers={"Location": f"http://localhost:{self.port}/offhost-target.html"})
        if path == "/redirect-ftp":
            return send(handler, 302, headers={"Location": "ftp://127.0.0.1/file.html"})
        if path == "/redirect-ok":
            return send(handler, 301, headers={"Location": "/moved-target.html"})
        if path == "/slow.html":
            time.sleep(SLOW_SECONDS)
            return send(handler, 200, b"<html><body>too late</body></html>")
        if path == "/slow-body.html":  # headers at once, body too late: the timeout hits mid-read
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", "40")
            handler.end_headers()
            handler.wfile.flush()
            time.sleep(SLOW_SECONDS)
            handler.wfile.write(b"<html><body>too late</body></html>".ljust(40))
            return None
        if path == "/flaky429.html" and count == 1:
            return send(handler, 429, b"slow down", "text/plain", headers={"Retry-After": "1"})
        if path == "/flaky500.html" and count == 1:
            return send(handler, 500, b"oops", "text/plain")
        if path in ("/flaky429.html", "/flaky500.html"):
            path = "/flaky.html"
        if path == "/always503.html":
            return send(handler, 503, b"down", "text/plain")
        file = (SITE / path.lstrip("/")).resolve()
        if SITE.resolve() in file.parents and file.is_file():
            return send(handler, 200, file.read_bytes(), _TYPES.get(file.suffix, "application/octet-stream"))
        return send(handler, 404, b"not found", "text/plain")


@contextmanager
def serving():
    """Run a fixture server in a background thread for the duration of the block."""
    server = FixtureServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
