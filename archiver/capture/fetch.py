"""The web fetcher: one URL in, every HTTP exchange it took out, each ready to become WARC records.

Redirects are followed by hand so that every hop is its own request/response pair (design: "Every HTTP
exchange, including each redirect hop ... is a request/response pair"), and so are retries: a failed attempt
stays in :attr:`FetchResult.exchanges` next to the one that succeeded. Bodies stream from the socket into a
:class:`~archiver.warc.block.BlockBuilder` exactly as transferred, minus the chunked framing: Content-Encoding
is never undone, so a gzip bomb is stored as the few KB it is. A body cut short by ``max_body``, the total
timeout or the server hanging up is kept and marked with its WARC 1.1 §5.13 ``WARC-Truncated`` reason.

:meth:`Fetcher.fetch` never raises for network or HTTP trouble: the result says what happened
(:class:`Outcome`). It knows nothing about the catalogue.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar as _untyped_extract_cookies

import archiver
from archiver.capture import httpwire
from archiver.capture.httpwire import Exchange, exchange_records
from archiver.clock import Clock, IdGenerator
from archiver.errors import ConfigError
from archiver.warc.block import CHUNK, Block, BlockBuilder
from archiver.warc.records import RecordRef, RecordSpec

__all__ = ["Exchange", "FetchResult", "FetchSettings", "Fetcher", "Outcome", "exchange_records"]

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})  # RFC 9110 §15.4
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 §9.2.2: safe to retry
DEFAULT_USER_AGENT = f"evidence-archiver/{archiver.__version__} (+https://github.com/evidence-archiver)"
DEFAULT_HEADERS = (
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    # Only codings every replay tool can undo; we store the encoded bytes either way.
    ("Accept-Encoding", "gzip, deflate"),
    ("Connection", "keep-alive"),
)


class Outcome(StrEnum):
    """How a fetch ended. The last exchange (if any) shows the details."""

    OK = "ok"  # a complete final response with a status below 400
    HTTP_ERROR = "http-error"  # the final response is 4xx/5xx (after retries)
    REDIRECT_LOOP = "redirect-loop"  # a redirect led back to a request already made in the same state
    TOO_MANY_REDIRECTS = "too-many-redirects"  # more than max_redirects hops
    TIMEOUT = "timeout"  # no response in time, or the total timeout cut the body (WARC-Truncated: time)
    CONNECTION_ERROR = "connection-error"  # no response: refused, reset, DNS, TLS, proxy failure
    TRUNCATED = "truncated"  # the body was cut (length or disconnect); the partial body is stored
    INVALID_URL = "invalid-url"  # the URL, or a redirect's Location, cannot be fetched over HTTP(S)


@dataclass(frozen=True)
class FetchSettings:
    """How the fetcher behaves. Timeouts are in seconds, ``max_body`` in bytes (stored, not decoded)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0  # bounds the whole fetch: every hop, retry and backoff
    max_body: int = 512 * 1024 * 1024
    max_redirects: int = 10
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    user_agent: str = DEFAULT_USER_AGENT
    proxy: str | None = None  # http://, https://, socks5:// or socks5h://, used for ALL traffic
    redact_headers: tuple[str, ...] = ("authorization", "cookie", "proxy-authorization", "x-api-key")
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # Credentials (Cookie, Authorization) sent only to one domain and its subdomains, checked on every hop.
    headers_by_domain: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    verify_tls: bool = True
    # Idle keep-alive connections kept per host, shared by the fetcher's threads (a capture run's per_host
    # bounds how many are in use at once); hosts whose connections are kept, least recently used dropped first.
    pool_per_host: int = 10
    pool_hosts: int = 64  # at most pool_hosts x pool_per_host idle sockets: well under a 1,024 file limit

    def __post_init__(self) -> None:
        if self.proxy is not None:
            parts = urlsplit(self.proxy)
            if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
                raise ConfigError(
                    f"unsupported proxy URL: {httpwire.strip_userinfo(self.proxy)}",
                    hint="use http://, https://, socks5:// or socks5h://host:port",
                )
        if self.max_body < 0 or self.max_redirects < 0 or self.retries < 0:
            raise ConfigError("max_body, max_redirects and retries must not be negative")
        if self.pool_per_host < 1 or self.pool_hosts < 1:
            raise ConfigError("pool_per_host and pool_hosts must be at least 1")

    @property
    def egress(self) -> str:
        """The egress identity recorded with every capture: ``direct`` or the proxy without credentials."""
        return "direct" if self.proxy is None else f"proxy {httpwire.strip_userinfo(self.proxy)}"


@dataclass(frozen=True, eq=False)
class FetchResult:
    """Everything one fetch did. Close it (or use ``with``) to free the spooled blocks."""

    url: str
    final_url: str
    exchanges: list[Exchange]
    status: int | None
    outcome: Outcome
    error: str | None
    egress: str

    @property
    def final(self) -> Exchange | None:
        return self.exchanges[-1] if self.exchanges else None

    def close(self) -> None:
        for ex in self.exchanges:
            ex.close()

    def __enter__(self) -> FetchResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Attempt:
    exchange: Exchange | None
    failure: Outcome | None  # set when no response arrived
    retryable: bool
    error: str | None = None


SinkWriter = Callable[[list[RecordSpec]], list[RecordRef]]
_extract_cookies: Callable[[Any, Any, Any], None] = _untyped_extract_cookies  # untyped in the stubs


class _PooledAdapter(HTTPAdapter):
    """The transport adapter of one fetcher in one process, mounted on every thread's session.

    A session holds a cookie jar, so each thread has its own; connections hold nothing of a capture, so the
    threads share them: urllib3's pools are thread-safe, and a keep-alive connection to a host serves whichever
    thread fetches from it next. (With a pool per thread, a run over many hosts opened about one connection per
    page.) The fetcher reads the urllib3 response itself and keeps cookies only for a fetch's own hops, so
    :meth:`build_response` leaves out what a ``requests.Response`` would otherwise parse for nothing: its header
    dict, encoding and cookie jar.
    """

    def __init__(self, hosts: int, per_host: int) -> None:
        super().__init__(pool_connections=hosts, pool_maxsize=per_host)
        self._proxy_lock = threading.Lock()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        with self._proxy_lock:  # created on first use; two threads must not make two managers for one proxy
            return super().proxy_manager_for(proxy, **proxy_kwargs)

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        except ValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from exc
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        if proxies:
            return str(super().request_url(request, proxies))
        url = request.path_url
        return f"/{url.lstrip('/')}" if url.startswith("//") else url

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url or ""
        response.request = req
        response.connection = self
        return response


class Fetcher:
    """Thread-safe: each thread gets its own ``requests.Session`` (its cookie jar), and the threads of a process
    share the keep-alive connections (:class:`_PooledAdapter`).

    ``sink_writer`` (for example ``WarcSink.write_group``), when given, receives each exchange's records as
    soon as the exchange ends; the resulting refs are on :attr:`Exchange.records`.
    """

    def __init__(
        self,
        settings: FetchSettings,
        clock: Clock,
        ids: IdGenerator,
        sink_writer: SinkWriter | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._ids = ids
        self._sink_writer = sink_writer
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._adapter: tuple[int, _PooledAdapter] | None = None  # (pid, adapter): a forked child opens its own
        proxy = settings.proxy
        self._proxies = {"http": proxy, "https": proxy} if proxy else {}
        self._proxy_label = httpwire.strip_userinfo(proxy) if proxy else None
        self._forward_proxy = proxy is not None and proxy.lower().startswith(("http:", "https:"))

    def _session(self) -> requests.Session:
        pid = os.getpid()
        mine: tuple[int, requests.Session] | None = getattr(self._local, "session", None)
        if mine is not None and mine[0] == pid:
            return mine[1]
        session = requests.Session()
        session.trust_env = False  # no proxy, .netrc or CA bundle picked up from the environment
        session.headers.clear()
        with self._lock:
            if self._adapter is None or self._adapter[0] != pid:
                # A forked child never uses its parent's pooled sockets (two processes on one connection), nor
                # closes the parent's sessions.
                self._adapter = (pid, _PooledAdapter(self.settings.pool_hosts, self.settings.pool_per_host))
                self._sessions = []
            adapter = self._adapter[1]
            self._sessions.append(session)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._local.session = (pid, session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def new_record_id(self) -> str:
        return f"<urn:uuid:{self._ids.uuid()}>"

    # -- one URL ---------------------------------------------------------------------------------------------

    def fetch(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        body: bytes | None = None,
    ) -> FetchResult:
        """Fetch ``url`` with ``method`` (and ``body``, stored in the request record's payload).

        A 303, or a 301/302 answering a POST, turns the next hop into a GET without body (RFC 9110 §15.4.2-4);
        307 and 308 repeat the method and body. Only idempotent methods are retried (RFC 9110 §9.2.2).
        """
        session = self._session()
        session.cookies.clear()  # cookies live for one fetch (its redirect chain), never across sources
        deadline = time.monotonic() + self.settings.total_timeout
        exchanges: list[Exchange] = []
        seen: set[tuple[str, tuple[tuple[str, str, str, str | None], ...]]] = set()
        current = url
        hops = 0

        def done(outcome: Outcome, error: str | None) -> FetchResult:
            last = exchanges[-1] if exchanges else None
            return FetchResult(
                url=url,
                final_url=last.url if last else current,
                exchanges=exchanges,
                status=last.status if last else None,
                outcome=outcome,
                error=error,
                egress=self.settings.egress,
            )

        while True:
            problem = httpwire.url_problem(current)
            if problem is not None:
                return done(Outcome.INVALID_URL, problem)
            # A loop is the same request in the same cookie state: A -> B -> A that sets a cookie on the way
            # (consent and cookie-check pages) legitimately succeeds on the second visit.
            state = (current.partition("#")[0], _cookie_state(session))
            if state in seen:
                return done(Outcome.REDIRECT_LOOP, f"redirect loop back to {current}")
            seen.add(state)
            attempt = self._with_retries(session, current, headers, deadline, exchanges, method, body)
            ex = attempt.exchange
            if ex is None or ex.response is None:
                return done(attempt.failure or Outcome.CONNECTION_ERROR, attempt.error)
            location = ex.header("Location") if ex.status in REDIRECT_STATUSES else None
            if location is None or ex.truncated == "time":
                return done(*_final_outcome(ex))
            if hops >= self.settings.max_redirects:
                return done(Outcome.TOO_MANY_REDIRECTS, f"more than {self.settings.max_redirects} redirects")
            hops += 1
            # The recorded URL has no credentials; a relative Location keeps those the fetch was given.
            base = current if "@" in urlsplit(current).netloc else ex.url
            current = httpwire.resolve_location(base, location)
            if (ex.status == 303 and method != "HEAD") or (ex.status in (301, 302) and method == "POST"):
                method, body = "GET", None

    def _with_retries(
        self,
        session: requests.Session,
        url: str,
        headers: Mapping[str, str] | None,
        deadline: float,
        exchanges: list[Exchange],
        method: str = "GET",
        body: bytes | None = None,
    ) -> _Attempt:
        tries = 0
        while True:
            attempt = self._attempt(session, url, headers, deadline, method, body)
            if attempt.exchange is not None:
                exchanges.append(attempt.exchange)
            if not attempt.retryable or tries >= self.settings.retries or method not in IDEMPOTENT_METHODS:
                return attempt
            delay = min(self.settings.backoff_max, self.settings.backoff_base * 2**tries)
            if attempt.exchange is not None:
                # RFC 9110 §10.2.3: the server says when to come back; we still cap the wait.
                asked = httpwire.parse_retry_after(attempt.exchange.header("Retry-After"), self._clock.now())
                if asked is not None:
                    delay = min(asked, self.settings.backoff_max)
            if time.monotonic() + delay >= deadline:
                return attempt
            self._sleep(delay)
            tries += 1

    def _request_headers(self, url: str, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged: dict[str, str] = {"User-Agent": self.settings.user_agent, **dict(DEFAULT_HEADERS)}
        layers: list[Mapping[str, str]] = [self.settings.extra_headers]
        host = urlsplit(url).hostname or ""
        layers += [h for d, h in self.settings.headers_by_domain.items() if httpwire.domain_matches(host, d)]
        layers.append(headers or {})
        for layer in layers:
            for name, value in layer.items():
                for existing in [k for k in merged if k.lower() == name.lower()]:
                    del merged[existing]
                merged[name] = value
        return merged

    def _attempt(
        self,
        session: requests.Session,
        url: str,
        headers: Mapping[str, str] | None,
        deadline: float,
        method: str = "GET",
        body: bytes | None = None,
    ) -> _Attempt:
        settings = self.settings
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _Attempt(None, Outcome.TIMEOUT, retryable=False, error="total timeout reached")
        started = self._clock.now()
        try:
            prep = _prepare(method, url, self._request_headers(url, headers), body, session.cookies)
        except (requests.RequestException, ValueError) as exc:
            return _Attempt(None, Outcome.INVALID_URL, False, httpwire.one_line(f"cannot request {url}: {exc}"))
        # Credentials in the URL went into the Authorization header (redacted in the record); the recorded URL,
        # like the request line on the wire, carries none.
        target = httpwire.strip_userinfo(prep.url or url)
        # RFC 9112 §3.2.2: plain http:// through an HTTP proxy is sent in absolute-form; SOCKS and CONNECT
        # tunnels carry the origin-form request unchanged.
        absolute = self._forward_proxy and target.lower().startswith("http:")
        head, redacted = httpwire.serialise_request_head(
            method, target, prep.headers.items(), absolute_form=absolute, redact=settings.redact_headers
        )
        # A request without a body has no payload, hence no payload digest (WARC 1.1 §5.9).
        request_builder = BlockBuilder(has_payload=body is not None)
        request_builder.write_head(head)
        if body is not None:
            request_builder.write_payload(body)
        request_block = request_builder.finish()

        def no_response(outcome: Outcome, exc: BaseException, retryable: bool) -> _Attempt:
            error = _describe(exc)
            ex = Exchange(
                method=method, url=target, request=request_block, response=None, status=None, reason=None,
                headers=(), peer_ip=None, proxy=self._proxy_label, started_at=started,
                ended_at=self._clock.now(), redacted=redacted, error=error,
            )  # fmt: skip
            return _Attempt(self._written(ex), outcome, retryable, error)

        timeout = (min(settings.connect_timeout, remaining), min(settings.read_timeout, remaining))
        try:
            # The adapter, not Session.send: even with allow_redirects=False the session reads (and decodes)
            # every 3xx body to prepare Response.next, which would lose the redirect's body from the record.
            adapter = session.get_adapter(target)
            resp = adapter.send(prep, stream=True, timeout=timeout, verify=settings.verify_tls, proxies=self._proxies)
            if "set-cookie" in resp.raw.headers or "set-cookie2" in resp.raw.headers:
                _extract_cookies(session.cookies, prep, resp.raw)  # RFC 6265 §5.3, for the next hop
        except requests.Timeout as exc:
            return no_response(Outcome.TIMEOUT, exc, retryable=True)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            return no_response(Outcome.INVALID_URL, exc, retryable=False)
        except requests.exceptions.SSLError as exc:
            return no_response(Outcome.CONNECTION_ERROR, exc, retryable=False)  # retrying will not fix it
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return no_response(Outcome.CONNECTION_ERROR, exc, retryable=True)
        return self._read_response(resp, target, request_block, redacted, started, deadline, method)

    def _read_response(
        self,
        resp: requests.Response,
        target: str,
        request_block: Block,
        redacted: tuple[str, ...],
        started: datetime,
        deadline: float,
        method: str = "GET",
    ) -> _Attempt:
        raw = resp.raw
        peer = httpwire.peer_ip(raw)  # before the connection can go back to the pool
        headers = tuple(httpwire.response_header_items(raw))
        reason = str(raw.reason or "")
        builder = BlockBuilder()
        builder.write_head(httpwire.serialise_response_head(int(raw.version), resp.status_code, reason, headers))
        truncated, at_deadline, error = self._read_body(raw, builder, deadline)
        if truncated is None:
            raw.release_conn()  # complete: the connection may be reused
        resp.close()  # otherwise this drops the connection, unread bytes and all
        ex = Exchange(
            method=method, url=target, request=request_block, response=builder.finish(),
            status=resp.status_code, reason=reason, headers=headers, peer_ip=peer, proxy=self._proxy_label,
            started_at=started, ended_at=self._clock.now(), truncated=truncated, redacted=redacted,
            error=error,
        )  # fmt: skip
        status = resp.status_code
        retryable = (
            status == 429
            or (500 <= status <= 599 and status != 501)  # 501: the server will never support it
            or truncated == "disconnect"
            or (truncated == "time" and not at_deadline)
        )
        return _Attempt(self._written(ex), None, retryable)

    def _read_body(self, raw: Any, builder: BlockBuilder, deadline: float) -> tuple[str | None, bool, str | None]:
        """Copy the body into ``builder``. Returns (WARC-Truncated reason, cut by the deadline, error)."""
        settings = self.settings
        sock = httpwire.response_socket(raw)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "time", True, "total timeout reached while reading the body"
            at_deadline = remaining < settings.read_timeout
            if sock is not None and at_deadline:
                # The socket timeout bounds each recv(); lowering it makes the total timeout bound a body
                # that trickles in a byte at a time, which no per-read timeout would catch.
                sock.settimeout(remaining)
            room = settings.max_body - builder.payload_length
            try:
                # read1: return what has arrived instead of waiting for a full chunk, so slow bodies are
                # stored up to the moment they are cut. decode_content=False: store the bytes as sent.
                data = raw.read1(min(CHUNK, room) if room > 0 else 1, decode_content=False)
            except urllib3.exceptions.ReadTimeoutError as exc:
                return "time", at_deadline, f"body read timed out: {_describe(exc)}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return "disconnect", False, f"connection broken mid-body: {_describe(exc)}"
            if not data:
                return None, False, None
            if room <= 0:
                return "length", False, f"body larger than max_body ({settings.max_body} bytes)"
            builder.write_payload(data)

    def _written(self, ex: Exchange) -> Exchange:
        if self._sink_writer is None:
            return ex
        refs = self._sink_writer(exchange_records(ex, self.new_record_id))
        return replace(ex, records=tuple(refs))


def _prepare(
    method: str, url: str, headers: Mapping[str, str], body: bytes | None, cookies: requests.cookies.RequestsCookieJar
) -> requests.PreparedRequest:
    """``PreparedRequest.prepare`` step by step, minus what a fetch never uses: no params, files, hooks or
    session merging (Session.prepare_request would merge the session's empty headers and copy its jar). The
    jar's cookies for this URL are sent; an empty jar (a fetch's first hop, most hops) is not consulted, and
    credentials in the URL (``user:pass@``) become Basic auth as requests makes them."""
    prep = requests.PreparedRequest()
    prep.prepare_method(method)
    prep.prepare_url(url, None)
    prep.prepare_headers(headers)
    if len(cookies):
        prep.prepare_cookies(cookies)
    prep.prepare_body(body, None, None)
    if "@" in (prep.url or ""):
        prep.prepare_auth(None, url)
    return prep


def _describe(exc: BaseException) -> str:
    # urllib3 puts (message, cause) in args; its str() is a tuple repr that reads badly in a catalogue.
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return httpwire.one_line(f"{type(exc).__name__}: {text}")


def _cookie_state(session: requests.Session) -> tuple[tuple[str, str, str, str | None], ...]:
    return tuple(sorted((c.domain, c.path, c.name, c.value) for c in session.cookies))


def _final_outcome(ex: Exchange) -> tuple[Outcome, str | None]:
    status = ex.status or 0
    if ex.truncated == "time":
        return Outcome.TIMEOUT, ex.error
    if status >= 400:
        return Outcome.HTTP_ERROR, f"HTTP {status} {ex.reason or ''}".rstrip()
    if ex.truncated is not None:
        return Outcome.TRUNCATED, ex.error
    return Outcome.OK, None
