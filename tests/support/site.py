"""A small static site on 127.0.0.1 for capture tests: paths map to (content type, body); everything else is 404.

A path may answer after a delay (``add(..., delay=s)``), slept in the handler's own thread: a capture that is
still waiting on it can be interrupted or killed by a test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Site:
    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.hits: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                site.hits[path] = site.hits.get(path, 0) + 1
                if site.delays.get(path):
                    time.sleep(site.delays[path])
                if path not in site.pages:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = site.pages[path]
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

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()
