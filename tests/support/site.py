"""A small static site on 127.0.0.1 for capture tests: paths map to (content type, body); everything else is 404.

A path may answer after a delay (``add(..., delay=s)``), slept in the handler's own thread: a capture that is
still waiting on it can be interrupted or killed by a test. The site notes when each request came
(``arrivals``), how many it was answering at most at once (``most_at_once``), and calls ``on_request(path)``, if
set, before it answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Site:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        self.arrivals: dict[str, list[float]] = {}  # path -> time.monotonic() of each request
        self.on_request: Callable[[str], None] | None = None
        self.most_at_once = 0
        self._answering = 0
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with site._lock:
                    site.hits[path] = site.hits.get(path, 0) + 1
                    site.arrivals.setdefault(path, []).append(time.monotonic())
                    site._answering += 1
                    site.most_at_once = max(site.most_at_once, site._answering)
                try:
                    self._answer(path)
                finally:
                    with site._lock:
                        site._answering -= 1

            def _answer(self, path: str) -> None:
                if site.on_request is not None:
                    site.on_request(path)
                delay = site.delay(path)
                if delay:
                    time.sleep(delay)
                content = site.content(path)
                if content is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = content
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: bytes | str, ctype: str = "text/html; charset=utf-8", *, delay: float = 0) -> str:
        self.pages[path] = (ctype, body.encode("utf-8") if isinstance(body, str) else body)
        self.delays[path] = delay
        return self.url(path)

    def content(self, path: str) -> tuple[str, bytes] | None:
        """What ``path`` answers (content type, body), or None for a 404; a subclass may make pages up."""
        return self.pages.get(path)

    def delay(self, path: str) -> float:
        """Seconds ``path`` waits before it answers."""
        return self.delays.get(path, 0.0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()
