"""One HTTP exchange as data (:class:`Exchange`), its messages re-serialised, and its WARC records.

WARC 1.1 §6.4 and §6.5 store an HTTP exchange as ``application/http`` blocks: the request or status line, the
header fields, an empty line, then the body. Neither requests nor urllib3 keeps the raw header bytes, so the
heads are rebuilt from what they did keep, as close to the wire as they allow: header fields in the order
received (duplicates such as several ``Set-Cookie`` kept apart, RFC 9110 §5.3), values round-tripped through
ISO-8859-1 exactly as ``http.client`` decoded them, and the request headers in the order ``http.client`` sent
them (``Host`` first, RFC 9112 §3.2).

Secrets in *request* headers (cookies, authorisation) are replaced by :data:`REDACTED` before they are stored;
response headers are evidence and are never altered, except that ``Transfer-Encoding: chunked`` is renamed
because the stored body is de-chunked (RFC 9112 §7.1).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from archiver.warc.block import Block
from archiver.warc.records import (
    HTTP_REQUEST_TYPE,
    HTTP_RESPONSE_TYPE,
    REQUEST,
    RESPONSE,
    RecordRef,
    RecordSpec,
)

REDACTED = "[redacted]"
# warcprox and browsertrix store de-chunked bodies under this renamed header so replay tools do not de-chunk.
RENAMED_TRANSFER_ENCODING = "X-Archiver-Transfer-Encoding"

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _latin1(text: str) -> bytes:
    # http.client encodes str header values as ISO-8859-1 when sending and decodes received ones the same
    # way, so this reproduces the wire bytes; anything outside it could not have been sent as is.
    return text.encode("latin-1", errors="replace")


def host_header(url: str) -> str:
    """The ``Host`` value http.client sends for an origin-form request: the port only when not the default."""
    parts = urlsplit(url)
    host = (parts.hostname or "").encode("idna").decode("ascii")
    if ":" in host:
        host = f"[{host}]"  # RFC 3986 §3.2.2 IPv6 literal
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        return f"{host}:{port}"
    return host


def request_target(url: str, *, absolute_form: bool) -> str:
    """RFC 9112 §3.2: origin-form (``/path?query``) or, to a forward proxy for http://, absolute-form."""
    parts = urlsplit(url)
    if absolute_form:
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", parts.query, ""))
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def serialise_request_head(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    *,
    absolute_form: bool = False,
    redact: Collection[str] = (),
) -> tuple[bytes, tuple[str, ...]]:
    """The request line and headers as sent, with secrets redacted; also the names that were redacted."""
    redact_lower = {name.lower() for name in redact}
    items = list(headers)
    host = next((v for k, v in items if k.lower() == "host"), None)
    if host is None:
        host = urlsplit(url).netloc.rpartition("@")[2] if absolute_form else host_header(url)
    lines = [f"{method} {request_target(url, absolute_form=absolute_form)} HTTP/1.1", f"Host: {host}"]
    redacted: list[str] = []
    for name, value in items:
        if name.lower() == "host":
            continue
        if name.lower() in redact_lower:
            redacted.append(name)
            value = REDACTED
        lines.append(f"{name}: {value}")
    return _latin1("\r\n".join(lines) + "\r\n\r\n"), tuple(redacted)


def response_header_items(raw: Any) -> list[tuple[str, str]]:
    """Response header fields in the order received, duplicates kept apart.

    urllib3's ``HTTPHeaderDict`` groups duplicates by name, which loses interleaving; the ``http.client``
    message underneath keeps the received order, so it is preferred when present.
    """
    original = getattr(raw, "_original_response", None)
    msg = getattr(original, "msg", None)
    if msg is not None and hasattr(msg, "items"):
        return [(str(k), str(v)) for k, v in msg.items()]
    return [(str(k), str(v)) for k, v in raw.headers.items()]


def serialise_response_head(version: int, status: int, reason: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line and headers; ``Transfer-Encoding: chunked`` renamed since the stored body is de-chunked."""
    proto = {9: "HTTP/0.9", 10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(version, "HTTP/1.1")
    lines = [f"{proto} {status} {reason}".rstrip(" ") if reason else f"{proto} {status}"]
    for name, value in headers:
        # http.client de-chunks exactly when the value is "chunked" (RFC 9112 §6.1); other codings stay
        # in the stored bytes, so their header stays too.
        if name.lower() == "transfer-encoding" and value.strip().lower() == "chunked":
            name = RENAMED_TRANSFER_ENCODING
        lines.append(f"{name}: {value}")
    return _latin1("\r\n".join(lines) + "\r\n\r\n")


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of a header field, case-insensitively."""
    lower = name.lower()
    return next((v for k, v in headers if k.lower() == lower), None)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date. ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 §5.6.7: HTTP-dates are GMT
    return max(0.0, (when - now).total_seconds())


def response_socket(raw: Any) -> socket.socket | None:
    """The socket carrying a urllib3 response, or None if it cannot be found."""
    conn = getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    # http.client drops HTTPConnection.sock as soon as a response says "Connection: close"; the response's
    # buffered reader still holds the socket (BufferedReader -> SocketIO -> socket).
    reader = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def peer_ip(raw: Any) -> str | None:
    """The address at the other end of the TCP connection that carried this response.

    Read before the connection goes back to the pool. ``socket.socket.getpeername`` is called unbound because
    PySocks overrides ``getpeername`` to return the *target* it asked the proxy for; we want the real peer.
    """
    sock = response_socket(raw)
    if sock is None:
        return None
    try:
        addr = socket.socket.getpeername(sock)
    except OSError:
        return None
    return str(addr[0]) if isinstance(addr, tuple) else None


def strip_userinfo(url: str) -> str:
    """A URL without ``user:password@``, for recording it (a proxy, a request's target) without credentials;
    a URL that has none is returned as it is."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def domain_matches(host: str, domain: str) -> bool:
    """``host`` is ``domain`` or one of its subdomains (RFC 6265 §5.1.3 domain-match, names only)."""
    host = host.lower().rstrip(".")
    domain = domain.lower().strip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def one_line(text: str) -> str:
    """Collapse white space so a message can be a WARC header value (WARC 1.1 §4: no bare CR or LF)."""
    return " ".join(text.split())


def url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return f"malformed URL {url!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL: {url!r}"
    if not parts.hostname:
        return f"URL without a host: {url!r}"
    return None


def resolve_location(base: str, location: str) -> str:
    # http.client decodes header bytes as ISO-8859-1; servers mostly send UTF-8 (as requests also assumes).
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    return urljoin(base, location.strip())  # RFC 9110 §10.2.2: relative references resolve against the URL


@dataclass(frozen=True, eq=False)
class Exchange:
    """One request and its response (``response`` is None when none arrived).

    ``peer_ip`` is the TCP peer: the origin server, or the proxy when ``proxy`` is set (the origin's address
    is then unknown to us). ``truncated`` is a WARC 1.1 §5.13 reason: ``length``, ``time`` or ``disconnect``.
    ``records`` holds where the exchange was written when the fetcher was given a sink.
    """

    method: str
    url: str
    request: Block
    response: Block | None
    status: int | None
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    peer_ip: str | None
    proxy: str | None
    started_at: datetime
    ended_at: datetime
    truncated: str | None = None
    redacted: tuple[str, ...] = ()
    error: str | None = None
    records: tuple[RecordRef, ...] = ()

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def close(self) -> None:
        self.request.close()
        if self.response is not None:
            self.response.close()


def exchange_records(ex: Exchange, sink_new_id: Callable[[], str]) -> list[RecordSpec]:
    """The WARC records for one exchange: response then request (the order wget and warcprox use).

    Each points at the other with ``WARC-Concurrent-To`` (WARC 1.1 §5.7) and both carry the WARC-Date of the
    start of the exchange (§5.4: one capture event, one date). An exchange without a response
    gives the request record alone, with ``X-Archiver-Error`` saying why nothing came back.
    """
    request_id = sink_new_id()
    request_headers: list[tuple[str, str]] = []
    records: list[RecordSpec] = []
    if ex.response is not None:
        response_id = sink_new_id()
        request_headers.append(("WARC-Concurrent-To", response_id))
        response_headers = [("WARC-Concurrent-To", request_id)]
        if ex.peer_ip:
            # WARC 1.1 §5.10. Through a proxy this is the proxy's address; the origin's is unknown to us.
            response_headers.append(("WARC-IP-Address", ex.peer_ip))
        if ex.truncated:
            response_headers.append(("WARC-Truncated", ex.truncated))  # WARC 1.1 §5.13
        if ex.proxy:
            response_headers.append(("X-Archiver-Proxy", ex.proxy))
        records.append(
            RecordSpec(
                RESPONSE,
                ex.response,
                HTTP_RESPONSE_TYPE,
                ex.url,
                response_id,
                ex.started_at,
                tuple(response_headers),
            )
        )
    elif ex.error:
        request_headers.append(("X-Archiver-Error", one_line(ex.error)))
    if ex.redacted:
        # The stored request differs from the one sent: say which header values were replaced.
        request_headers.append(("X-Archiver-Redacted", ", ".join(ex.redacted)))
    if ex.proxy:
        request_headers.append(("X-Archiver-Proxy", ex.proxy))
    records.append(
        RecordSpec(REQUEST, ex.request, HTTP_REQUEST_TYPE, ex.url, request_id, ex.started_at, tuple(request_headers))
    )
    return records
