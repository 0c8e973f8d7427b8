"""Pages on 127.0.0.1 whose content appears only after JavaScript runs, and pages that misbehave.

* ``/feed.html``: a report page. Its text comes from ``fetch('/api/post.json')`` (answered late); an image
  below the fold loads only when scrolled into view (IntersectionObserver); an infinite feed appends
  ``/api/feed?page=N`` items as the reader nears the bottom; a cookie banner's "Accept all" button sets a
  consent cookie and loads ``/api/after-consent``.
* ``/arabic.html``: an Arabic page whose banner button says "موافق".
* ``/start``: 302 to ``/feed.html`` (a redirect the browser follows).
* ``/gzip.html``: served with ``Content-Encoding: gzip``.
* ``/video.html``: an autoplaying ``<video>`` whose source never ends.
* ``/never.html``: an image that is never answered, so the load event never fires.
* ``/hang-js.html``: a script's request that is never answered (the HTML alone looks complete).
* ``/windows.html``: opens many windows.
* ``/crash.html``: allocates memory until the renderer's JavaScript heap bound kills it.

``hits`` counts requests per path and ``cookies`` keeps the Cookie header each path last received.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f6c3b50000000049454e44ae426082"
)
LATE_TEXT = "LATE-JSON-CONTENT hospital statement"
CONSENT_TEXT = "CONSENTED-CONTENT after the banner"
FEED_PAGES = 4

FEED = """<!doctype html><html><head><meta charset="utf-8"><title>Report</title>
<style>body{font-family:sans-serif;margin:0} .item{height:700px;border-bottom:1px solid #ccc}
#banner{position:fixed;bottom:0;left:0;right:0;background:#ffd;padding:20px}</style></head>
<body><h1>Incident report</h1><div id="late">loading…</div>
<div style="height:1500px">text before the lazy image</div>
<img id="lazy" data-src="/img/lazy.png" width="100" height="100" alt="lazy">
<div id="feed"></div><div id="sentinel" style="height:10px"></div><div id="consent"></div>
<div id="banner">We use cookies. <button id="accept" type="button">Accept all</button>
<button type="button">Settings</button></div>
<script>
setTimeout(() => fetch('/api/post.json').then(r => r.json()).then(d => {
  document.getElementById('late').textContent = d.text; }), 300);
new IntersectionObserver((es, o) => es.forEach(e => { if (e.isIntersecting) {
  e.target.src = e.target.dataset.src; o.unobserve(e.target); } })).observe(document.getElementById('lazy'));
let page = 0, busy = false;
new IntersectionObserver(es => es.forEach(e => { if (e.isIntersecting && !busy && page < FEED_PAGES_JS) {
  busy = true; page += 1;
  fetch('/api/feed?page=' + page).then(r => r.json()).then(d => { const div = document.createElement('div');
    div.className = 'item'; div.textContent = d.item; document.getElementById('feed').appendChild(div);
    busy = false; }); } })).observe(document.getElementById('sentinel'));
document.getElementById('accept').addEventListener('click', () => {
  document.cookie = 'consent=yes; path=/'; document.getElementById('banner').remove();
  fetch('/api/after-consent').then(r => r.text()).then(t => {
    document.getElementById('consent').textContent = t; }); });
</script></body></html>""".replace("FEED_PAGES_JS", str(FEED_PAGES))

ARABIC = """<!doctype html><html lang="ar" dir="rtl"><head><meta charset="utf-8"><title>تقرير</title></head>
<body><h1>استهداف مستشفى</h1><p id="c">قبل الموافقة</p>
<div id="banner">نستخدم ملفات تعريف الارتباط <button id="ok">موافق</button></div>
<script>document.getElementById('ok').onclick = () => { document.getElementById('banner').remove();
  fetch('/api/after-consent').then(r => r.text()).then(t => { document.getElementById('c').textContent = t; }); };
</script></body></html>"""

PAGES: dict[str, tuple[str, bytes]] = {
    "/feed.html": ("text/html; charset=utf-8", FEED.encode()),
    "/arabic.html": ("text/html; charset=utf-8", ARABIC.encode()),
    "/img/lazy.png": ("image/png", PNG),
    "/gzip.html": ("text/html; charset=utf-8", b"<html><body><h1>GZIPPED-PAGE</h1></body></html>"),
    "/video.html": (
        "text/html; charset=utf-8",
        b"<html><body><p>VIDEO-PAGE</p><video autoplay muted src='/stream.mp4'></video></body></html>",
    ),
    "/never.html": ("text/html; charset=utf-8", b"<html><body><p>NEVER</p><img src='/hang.png'></body></html>"),
    "/hang-js.html": (
        "text/html; charset=utf-8",
        b"<html><body><p>WAITING</p><script>fetch('/hang.png')</script></body></html>",
    ),
    "/windows.html": (
        "text/html; charset=utf-8",
        b"<html><body><p>MAIN-WINDOW-CONTENT</p><script>for (let i = 0; i < 40; i++) "
        b"window.open('/feed.html?w=' + i);</script></body></html>",
    ),
    "/crash.html": (
        "text/html; charset=utf-8",
        b"<html><body><p>CRASH</p><script>const a = []; "
        b"while (true) a.push(new Array(1e6).fill(Math.random()));</script></body></html>",
    ),
}


class JsSite:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.cookies: dict[str, str | None] = {}
        self._stop = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                site.hits[path] = site.hits.get(path, 0) + 1
                site.cookies[path] = self.headers.get("Cookie")
                if path == "/start":
                    return self._send(302, "text/plain", b"", (("Location", "/feed.html"),))
                if path == "/api/post.json":
                    time.sleep(0.2)
                    return self._send(200, "application/json", json.dumps({"text": LATE_TEXT}).encode())
                if path == "/api/feed":
                    item = {"item": f"FEED-ITEM-{query.partition('=')[2]}"}
                    return self._send(200, "application/json", json.dumps(item).encode())
                if path == "/api/after-consent":
                    return self._send(200, "text/plain; charset=utf-8", CONSENT_TEXT.encode())
                if path == "/hang.png":
                    site._stop.wait(60)  # never answered while the test runs
                    return None
                if path == "/stream.mp4":
                    return self._stream()
                if path not in PAGES:
                    return self._send(404, "text/plain", b"not found")
                ctype, body = PAGES[path]
                if path == "/gzip.html":
                    return self._send(200, ctype, gzip.compress(body), (("Content-Encoding", "gzip"),))
                return self._send(200, ctype, body)

            def _send(self, status: int, ctype: str, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                try:
                    while not site._stop.is_set():
                        self.wfile.write(b"\0" * 65536)
                        time.sleep(0.05)
                except OSError:
                    return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def js_site() -> Iterator[JsSite]:
    s = JsSite()
    yield s
    s.close()
