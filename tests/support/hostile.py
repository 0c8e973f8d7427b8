"""A hostile HTTP server on 127.0.0.1, plus tiny forwarding and SOCKS5 proxies, for fetcher tests.

Every route misbehaves in one way a real site does (resets, lies about its length, never ends, inflates to
gigabytes). The server records what it actually put on the wire for each body (:class:`Served`) so tests can
compare stored digests with ``hashlib.sha256`` of the bytes sent. Endless and slow handlers poll a stop event
so that fixture teardown is prompt. Only loopback addresses are ever contacted: the proxies refuse any
target outside 127.0.0.0/8.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import ipaddress
import json
import select
import socket
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

KEEP_BODY = 1 << 20  # bodies up to this size are kept whole in Served.body

PAGE_HTML = b"""<!doctype html>
<html><head><title>Page</title>
<link rel="stylesheet" href="css/style.css">
<script src="js/app.js"></script></head>
<body><h1>Incident report</h1><img src="img/photo.png" alt="photo"><img src="/img/map.png"></body></html>
"""
REQUISITES: dict[str, tuple[str, bytes]] = {
    "/css/style.css": ("text/css", b"body { color: #222; }\n"),
    "/js/app.js": ("application/javascript", b"console.log('hi');\n"),
    "/img/photo.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    "/img/map.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4),
}
ARABIC_TEXT = "مستشفى في حماة تعرض للقصف"
ARABIC_HTML = f'<!doctype html><html lang="ar" dir="rtl"><body><p>{ARABIC_TEXT}</p></body></html>'.encode()
CP1256_HTML = f"<html><body><p>{ARABIC_TEXT}</p></body></html>".encode("cp1256")
PDF_BYTES = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Count 0/Kids[]>>endobj\n" + bytes(range(256)) + b"\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
BIG_PATTERN = bytes((i * 7 + i // 256) % 256 for i in range(1 << 16))


def big_body(size: int) -> Iterator[bytes]:
    """The deterministic body of ``/big?size=N``, in chunks."""
    left = size
    while left > 0:
        chunk = BIG_PATTERN[: min(left, len(BIG_PATTERN))]
        left -= len(chunk)
        yield chunk


def big_sha256(size: int) -> str:
    h = hashlib.sha256()
    for chunk in big_body(size):
        h.update(chunk)
    return h.hexdigest()


_bomb_lock = threading.Lock()
_bomb: bytes | None = None
BOMB_INNER_MIB = 2048


def gzip_bomb() -> bytes:
    """A body with ``Content-Encoding: gzip, gzip`` of a few KB that inflates to 2 GiB of zeros.

    One gzip layer cannot exceed a ratio of about 1032:1 (RFC 1951 matches are at most 258 bytes), so the
    inner layer is a gzip stream of identical full-flush blocks (about 2 MB) and the outer layer compresses
    that repetition down to a few KB.
    """
    global _bomb
    with _bomb_lock:
        if _bomb is None:
            mib = bytes(1 << 20)
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            first = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
            block = comp.compress(mib) + comp.flush(zlib.Z_FULL_FLUSH)
            crc = 0
            for _ in range(BOMB_INNER_MIB):
                crc = zlib.crc32(mib, crc)
            header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # RFC 1952 §2.3, no mtime
            trailer = struct.pack("<II", crc, (BOMB_INNER_MIB << 20) & 0xFFFFFFFF)
            inner = header + first + block * (BOMB_INNER_MIB - 1) + comp.flush() + trailer
            _bomb = gzip.compress(inner, mtime=0)
        return _bomb


@dataclass
class Served:
    """What one handler put on the wire as a body: its SHA-256, length and (if small) the bytes."""

    path: str
    status: int = 0
    sha256: str = hashlib.sha256(b"").hexdigest()
    length: int = 0
    body: bytes = b""
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    client_port: int = 0  # the client's end of the TCP connection: one port, one connection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests stay quiet

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle and delayed ACK add 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self._query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self._served = Served(self.path, request_headers=list(self.headers.items()), client_port=self.client_address[1])
        self._hash = hashlib.sha256()
        try:
            route = ROUTES.get(parts.path)
            if route is not None:
                route(self)
            elif parts.path in REQUISITES:
                ctype, body = REQUISITES[parts.path]
                self.simple(200, body, ctype)
            else:
                self.simple(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away: that is its right
        finally:
            self._served.sha256 = self._hash.hexdigest()
            self.server.record(self._served)

    # -- helpers ---------------------------------------------------------------------------------------------

    def q(self, name: str, default: str = "") -> str:
        return self._query.get(name, default)

    def head(self, status: int, headers: Iterable[tuple[str, str]], reason: str | None = None) -> None:
        self._served.status = status
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def body(self, data: bytes) -> None:
        self.wfile.write(data)
        self._hash.update(data)
        self._served.length += len(data)
        if len(self._served.body) < KEEP_BODY:
            self._served.body += data[: KEEP_BODY - len(self._served.body)]

    def simple(self, status: int, data: bytes, ctype: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self.head(status, [("Content-Type", ctype), ("Content-Length", str(len(data))), *extra])
        self.body(data)

    def redirect(self, status: int, location: str) -> None:
        self.simple(status, b"moved", "text/plain", [("Location", location)])

    def stopping(self, wait: float) -> bool:
        return self.server.stop.wait(wait)

    def reset(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        fd = self.connection.detach()  # close the descriptor now, not when rfile/wfile are released
        socket.close(fd)


# -- routes --------------------------------------------------------------------------------------------------


def _ok(h: _Handler) -> None:
    h.simple(200, b"<!doctype html><html><body><p>ok</p></body></html>", "text/html; charset=utf-8")


def _page(h: _Handler) -> None:
    h.simple(200, PAGE_HTML, "text/html; charset=utf-8")


def _status(h: _Handler) -> None:
    code = int(h.q("code", "200"))
    h.simple(code, f"status {code}".encode(), "text/plain")


def _flaky(h: _Handler) -> None:
    if h.server.count(f"flaky:{h.q('key')}") == 1:
        h.simple(500, b"try again", "text/plain")
    else:
        _ok(h)


def _retry_after(h: _Handler) -> None:
    if h.server.count(f"retry-after:{h.q('key')}") == 1:
        h.simple(429, b"slow down", "text/plain", [("Retry-After", h.q("after", "1"))])
    else:
        _ok(h)


def _reset(h: _Handler) -> None:
    h.head(200, [("Content-Type", "application/octet-stream"), ("Content-Length", "100000")])
    h.body(b"R" * 5000)
    h.wfile.flush()
    h.stopping(0.15)  # let the client read the partial body before the reset arrives
    h.reset()


def _endless(h: _Handler) -> None:
    h.close_connection = True
    h.head(200, [("Content-Type", "application/octet-stream"), ("Connection", "close")])
    chunk = b"E" * 16384
    while not h.stopping(0.005):
        h.body(chunk)


def _slow(h: _Handler) -> None:
    headers = [("Content-Type", "text/plain"), ("Content-Length", "60")]
    if h.q("close"):
        h.close_connection = True
        headers.append(("Connection", "close"))
    h.head(200, headers)
    for _ in range(60):
        h.body(b"s")
        if h.stopping(1.0):
            return


def _loop(h: _Handler) -> None:
    h.redirect(302, "/loop-b")


def _loop_b(h: _Handler) -> None:
    h.redirect(301, h.server.url("/loop"))


REDIRECT_STATUSES = (301, 302, 307, 308)


def _redirect(h: _Handler) -> None:
    n = int(h.q("n", "1"))
    if n <= 0:
        _ok(h)
        return
    status = REDIRECT_STATUSES[n % len(REDIRECT_STATUSES)]
    # Alternate relative and absolute Location values (RFC 9110 §10.2.2 allows both).
    target = f"redirect?n={n - 1}" if n % 2 else h.server.url(f"/redirect?n={n - 1}")
    if n == 1:
        target = "/ok"
    h.redirect(status, target)


def _redirect_to(h: _Handler) -> None:
    h.redirect(int(h.q("code", "302")), h.q("url"))


def _cookie_redirect(h: _Handler) -> None:
    cookie = ("Set-Cookie", "sid=from-server; Path=/")
    h.simple(302, b"", "text/plain", [cookie, ("Location", "/echo-headers")])


def _wrong_length(h: _Handler) -> None:
    h.close_connection = True
    h.head(200, [("Content-Type", "text/plain"), ("Content-Length", "10000"), ("Connection", "close")])
    h.body(b"W" * 3000)


def _short_length(h: _Handler) -> None:
    h.close_connection = True
    h.head(200, [("Content-Type", "text/plain"), ("Content-Length", "10"), ("Connection", "close")])
    h.body(b"0123456789" + b"EXTRA-BYTES-NOT-IN-BODY")


def _gzip_bomb(h: _Handler) -> None:
    data = gzip_bomb()
    h.simple(200, data, "text/html", [("Content-Encoding", "gzip, gzip")])


def _arabic(h: _Handler) -> None:
    h.simple(200, ARABIC_HTML, "text/html; charset=utf-8")


def _cp1256(h: _Handler) -> None:
    h.simple(200, CP1256_HTML, "text/html")


def _pdf(h: _Handler) -> None:
    h.simple(200, PDF_BYTES, "application/pdf")


def _chunked(h: _Handler) -> None:
    h.head(200, [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
    for part in (b"first chunk\n", b"second, longer chunk\n" * 10, b"last\n"):
        h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        h._hash.update(part)
        h._served.length += len(part)
        h._served.body += part
    h.wfile.write(b"0\r\n\r\n")


def _echo_headers(h: _Handler) -> None:
    data = json.dumps(list(h.headers.items())).encode()
    h.simple(200, data, "application/json")


def _set_cookies(h: _Handler) -> None:
    h.simple(
        200,
        b"cookies",
        "text/plain",
        [("Set-Cookie", "a=1; Path=/"), ("X-Between", "yes"), ("Set-Cookie", "b=2; Path=/")],
    )


def _big(h: _Handler) -> None:
    size = int(h.q("size", "1000"))
    h.head(200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    for chunk in big_body(size):
        h.wfile.write(chunk)
        h._hash.update(chunk)
        h._served.length += len(chunk)
        if h.server.stop.is_set():
            return


ROUTES = {
    "/ok": _ok,
    "/page": _page,
    "/404": lambda h: h.simple(404, b"not found", "text/plain"),
    "/410": lambda h: h.simple(410, b"gone", "text/plain"),
    "/status": _status,
    "/flaky": _flaky,
    "/retry-after": _retry_after,
    "/reset": _reset,
    "/endless": _endless,
    "/slow": _slow,
    "/loop": _loop,
    "/loop-b": _loop_b,
    "/redirect": _redirect,
    "/redirect-to": _redirect_to,
    "/cookie-redirect": _cookie_redirect,
    "/wrong-length": _wrong_length,
    "/short-length": _short_length,
    "/gzip-bomb": _gzip_bomb,
    "/arabic": _arabic,
    "/cp1256": _cp1256,
    "/pdf": _pdf,
    "/chunked": _chunked,
    "/echo-headers": _echo_headers,
    "/set-cookies": _set_cookies,
    "/big": _big,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.stop = threading.Event()
        self.served: list[Served] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.recorded = threading.Condition(self._lock)

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def count(self, key: str) -> int:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def record(self, served: Served) -> None:
        with self.recorded:
            self.served.append(served)
            self.recorded.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-response is routine here


class HostileServer:
    """The running server: ``url(path)``, and what it served (``served(path)``, ``last(path)``)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server(host)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return self._server.url(path)

    def served(self, path: str) -> list[Served]:
        with self._server._lock:
            return [s for s in self._server.served if s.path == path]

    def last(self, path: str, timeout: float = 3.0, *, after: int = 0) -> Served:
        """The latest answer to ``path``; waits, since a handler records its answer after its last write.

        ``after``: how many answers to ``path`` were recorded before the request in question (the server is shared
        by a module's tests, so an earlier test's answer must not be taken for this one's).
        """
        with self._server.recorded:
            self._server.recorded.wait_for(
                lambda: sum(1 for s in self._server.served if s.path == path) > after, timeout=timeout
            )
            found = [s for s in self._server.served if s.path == path]
        if len(found) <= after:
            raise LookupError(f"the server never answered {path}")
        return found[-1]

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[HostileServer]:
    server = HostileServer().start()
    try:
        yield server
    finally:
        server.stop()


# -- proxies -------------------------------------------------------------------------------------------------


def _loopback_only(host: str) -> None:
    addr = socket.gethostbyname(host)
    if not ipaddress.ip_address(addr).is_loopback:
        raise PermissionError(f"test proxies only reach 127.0.0.0/8, not {host}")


def _proxy_bind_host() -> str:
    """127.0.0.2 when it can be bound, so a recorded peer address shows the proxy, not the origin."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return "127.0.0.1"


HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "transfer-encoding",
}


class _ProxyHandler(BaseHTTPRequestHandler):
    """A CONNECT-less forward proxy for ``http://`` (RFC 9112 §3.2.2 absolute-form requests)."""

    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "absolute http:// URL expected")
            return
        _loopback_only(target.hostname)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            conn.request("GET", path or "/", headers=headers)
            upstream = conn.getresponse()
            data = upstream.read()
            self.send_response(upstream.status, upstream.reason)
            for name, value in upstream.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Via", "1.1 test-proxy")
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _ProxyHandler)
        self.seen: list[tuple[str, str | None]] = []


class ForwardProxy:
    """A running forward proxy: ``url`` to configure, ``seen`` (request target, Proxy-Authorization)."""

    def __init__(self) -> None:
        self._server = _ProxyServer(_proxy_bind_host())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return list(self._server.seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Socks5Proxy:
    """A minimal SOCKS5 proxy (RFC 1928, no authentication, CONNECT only) that relays to loopback targets.

    ``seen`` lists the requested (host, port): with ``socks5h://`` the host is the name the client did not
    resolve itself.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server((_proxy_bind_host(), 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self.seen: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._listener.getsockname()[0])

    def url(self, scheme: str = "socks5h") -> str:
        return f"{scheme}://{self.host}:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            try:
                upstream = self._handshake(client)
            except (OSError, ValueError, PermissionError):
                return
            with upstream:
                self._relay(client, upstream)

    def _handshake(self, client: socket.socket) -> socket.socket:
        def recv(n: int) -> bytes:
            data = b""
            while len(data) < n:
                part = client.recv(n - len(data))
                if not part:
                    raise ValueError("client hung up during the SOCKS handshake")
                data += part
            return data

        _ver, nmethods = recv(2)
        recv(nmethods)
        client.sendall(b"\x05\x00")  # RFC 1928 §3: no authentication required
        _ver, cmd, _rsv, atyp = recv(4)
        if atyp == 1:
            host = socket.inet_ntoa(recv(4))
        elif atyp == 3:
            host = recv(recv(1)[0]).decode("idna")
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, recv(16))
        else:
            raise ValueError("bad address type")
        (port,) = struct.unpack("!H", recv(2))
        self.seen.append((host, port))
        if cmd != 1:
            client.sendall(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            raise ValueError("only CONNECT is supported")
        _loopback_only(host)
        upstream = socket.create_connection((host, port), timeout=10)
        bound = upstream.getsockname()
        client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound[0]) + struct.pack("!H", bound[1]))
        return upstream

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                peers[s].sendall(data)
