"""The fetcher against a hostile server on 127.0.0.1: every route ends as data, never as an exception."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from archiver.capture import httpwire
from archiver.capture.fetch import (
    DEFAULT_USER_AGENT,
    Exchange,
    Fetcher,
    FetchResult,
    FetchSettings,
    Outcome,
    exchange_records,
)
from archiver.clock import FixedClock, SequentialIds, SystemClock
from archiver.errors import ConfigError
from archiver.warc.block import Block
from archiver.warc.reader import iter_records
from archiver.warc.records import HTTP_REQUEST_TYPE, HTTP_RESPONSE_TYPE, REQUEST, RESPONSE
from archiver.warc.writer import WarcSink
from tests.support.hostile import (
    ARABIC_HTML,
    CP1256_HTML,
    PDF_BYTES,
    REQUISITES,
    ForwardProxy,
    HostileServer,
    Socks5Proxy,
    big_sha256,
    hostile_server,
)

__all__ = ["hostile_server"]  # a fixture, used by name

FAST: dict[str, Any] = {
    "connect_timeout": 2.0,
    "read_timeout": 2.0,
    "total_timeout": 5.0,
    "retries": 2,
    "backoff_base": 0.01,
    "backoff_max": 2.0,
}


def make_fetcher(**overrides: Any) -> Fetcher:
    return Fetcher(FetchSettings(**{**FAST, **overrides}), SystemClock(), SequentialIds())


@pytest.fixture
def fetch() -> Iterator[Any]:
    """``fetch(url, **settings)``: fetch with small timeouts; every result is closed afterwards."""
    results: list[FetchResult] = []
    fetchers: list[Fetcher] = []

    def run(url: str, *, headers: dict[str, str] | None = None, **overrides: Any) -> FetchResult:
        fetcher = make_fetcher(**overrides)
        fetchers.append(fetcher)
        result = fetcher.fetch(url, headers=headers)
        results.append(result)
        return result

    yield run
    for r in results:
        r.close()
    for f in fetchers:
        f.close()


def payload(block: Block | None) -> bytes:
    assert block is not None
    return b"".join(block.payload_chunks())


def head(block: Block | None) -> str:
    assert block is not None
    return block.read_head().decode("latin-1")


def assert_digests(block: Block | None, sent: bytes) -> None:
    """The block's digests are SHA-256 of its stored bytes, and its payload is exactly ``sent``."""
    assert block is not None
    assert block.payload_digest is not None
    assert block.payload_digest.hex == hashlib.sha256(sent).hexdigest()
    assert block.block_digest.hex == hashlib.sha256(b"".join(block.chunks())).hexdigest()
    assert block.payload_length == len(sent)


def only(result: FetchResult) -> Exchange:
    assert len(result.exchanges) == 1, [(e.url, e.status, e.error) for e in result.exchanges]
    return result.exchanges[0]


# -- complete responses --------------------------------------------------------------------------------------


def test_ok_page_and_its_requisites(hostile_server: HostileServer, fetch: Any) -> None:
    page = fetch(hostile_server.url("/page"))
    assert page.outcome is Outcome.OK and page.status == 200 and page.error is None
    ex = only(page)
    assert_digests(ex.response, hostile_server.last("/page").body)
    assert ex.peer_ip == "127.0.0.1" and ex.proxy is None and page.egress == "direct"
    assert ex.started_at <= ex.ended_at
    assert head(ex.response).startswith("HTTP/1.1 200 OK\r\n")
    for path, (ctype, body) in REQUISITES.items():
        # Relative references resolve against the page URL, as a browser would.
        r = fetch(httpwire.resolve_location(page.final_url, path.lstrip("/") if "css" in path else path))
        assert r.outcome is Outcome.OK
        assert_digests(only(r).response, body)
        assert only(r).header("Content-Type") == ctype


@pytest.mark.parametrize(
    ("path", "sent", "ctype"),
    [
        ("/arabic", ARABIC_HTML, "text/html; charset=utf-8"),
        ("/cp1256", CP1256_HTML, "text/html"),
        ("/pdf", PDF_BYTES, "application/pdf"),
    ],
    ids=["utf-8", "cp1256", "pdf"],
)
def test_bodies_are_stored_byte_for_byte(
    hostile_server: HostileServer, fetch: Any, path: str, sent: bytes, ctype: str
) -> None:
    r = fetch(hostile_server.url(path))
    assert r.outcome is Outcome.OK
    ex = only(r)
    assert payload(ex.response) == sent
    assert_digests(ex.response, hostile_server.last(path).body)
    assert ex.header("Content-Type") == ctype


def test_chunked_body_is_dechunked_and_the_header_renamed(hostile_server: HostileServer, fetch: Any) -> None:
    ex = only(fetch(hostile_server.url("/chunked")))
    assert_digests(ex.response, hostile_server.last("/chunked").body)
    stored = head(ex.response)
    assert "X-Archiver-Transfer-Encoding: chunked\r\n" in stored
    assert "\r\nTransfer-Encoding:" not in stored
    assert ex.header("Transfer-Encoding") == "chunked"  # the Exchange keeps what was received


def test_short_content_length_stores_the_declared_body(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/short-length"))
    assert r.outcome is Outcome.OK
    # RFC 9112 §6.3: the message body is Content-Length bytes; what follows is not part of it.
    assert_digests(only(r).response, hostile_server.last("/short-length").body[:10])


def test_gzip_bomb_is_stored_compressed(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/gzip-bomb"))
    assert r.outcome is Outcome.OK
    ex = only(r)
    assert ex.response is not None and ex.response.payload_length < 100_000
    served = hostile_server.last("/gzip-bomb")
    assert ex.response.payload_digest is not None and ex.response.payload_digest.hex == served.sha256
    assert ex.header("Content-Encoding") == "gzip, gzip"


def test_response_headers_keep_order_and_duplicates(hostile_server: HostileServer, fetch: Any) -> None:
    ex = only(fetch(hostile_server.url("/set-cookies")))
    stored = head(ex.response)
    a, between, b = (stored.index(s) for s in ("Set-Cookie: a=1", "X-Between: yes", "Set-Cookie: b=2"))
    assert a < between < b  # response Set-Cookie values are evidence: kept, in order, unredacted
    assert [v for k, v in ex.headers if k == "Set-Cookie"] == ["a=1; Path=/", "b=2; Path=/"]


# -- errors and retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/404", 404), ("/410", 410)])
def test_client_errors_are_not_retried(hostile_server: HostileServer, fetch: Any, path: str, status: int) -> None:
    r = fetch(hostile_server.url(path))
    assert (r.outcome, r.status) == (Outcome.HTTP_ERROR, status)
    assert r.error is not None and str(status) in r.error
    assert_digests(only(r).response, hostile_server.last(path).body)


def test_flaky_server_recovers_and_the_failure_is_kept(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/flaky?key=recover"))
    assert r.outcome is Outcome.OK
    assert [e.status for e in r.exchanges] == [500, 200]
    assert payload(r.exchanges[0].response) == b"try again"


def test_retry_after_is_honoured(hostile_server: HostileServer, fetch: Any) -> None:
    start = time.monotonic()
    r = fetch(hostile_server.url("/retry-after?key=honour"))
    elapsed = time.monotonic() - start
    assert r.outcome is Outcome.OK and [e.status for e in r.exchanges] == [429, 200]
    assert 0.9 <= elapsed < 3  # Retry-After: 1, not the 0.01 s backoff


def test_retry_after_is_capped_by_backoff_max(hostile_server: HostileServer, fetch: Any) -> None:
    start = time.monotonic()
    r = fetch(hostile_server.url("/retry-after?key=capped&after=3600"), backoff_max=0.1)
    assert r.outcome is Outcome.OK and time.monotonic() - start < 1.5


def test_server_errors_exhaust_retries(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/status?code=503"), retries=3)
    assert r.outcome is Outcome.HTTP_ERROR and r.status == 503
    assert [e.status for e in r.exchanges] == [503] * 4


def test_total_timeout_bounds_retries_and_backoff(hostile_server: HostileServer, fetch: Any) -> None:
    start = time.monotonic()
    r = fetch(hostile_server.url("/status?code=502"), retries=50, backoff_base=0.2, total_timeout=1.0)
    assert r.outcome is Outcome.HTTP_ERROR and time.monotonic() - start < 2


def test_connection_refused(fetch: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch(f"http://127.0.0.1:{port}/", retries=1)
    assert r.outcome is Outcome.CONNECTION_ERROR and r.status is None
    assert len(r.exchanges) == 2 and all(e.response is None and e.error for e in r.exchanges)
    specs = exchange_records(r.exchanges[0], iter(["<urn:x:1>", "<urn:x:2>"]).__next__)
    assert [s.type for s in specs] == [REQUEST]
    assert dict(specs[0].headers)["X-Archiver-Error"].startswith("ConnectionError")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "http:///nohost", "http://127.0.0.1:99999/", "not a url"])
def test_invalid_urls_are_data(fetch: Any, url: str) -> None:
    r = fetch(url)
    assert r.outcome is Outcome.INVALID_URL and r.exchanges == [] and r.error


# -- truncation ----------------------------------------------------------------------------------------------


def test_reset_mid_body_keeps_the_partial_body(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/reset"), retries=1)
    assert r.outcome is Outcome.TRUNCATED and r.status == 200
    assert len(r.exchanges) == 2  # the retry met the same reset; both attempts are kept
    sent = hostile_server.last("/reset").body
    for ex in r.exchanges:
        assert ex.truncated == "disconnect"
        stored = payload(ex.response)
        assert 0 < len(stored) <= len(sent) and stored == sent[: len(stored)]
        assert "Content-Length: 100000\r\n" in head(ex.response)


def test_wrong_content_length_is_a_recorded_disconnect(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/wrong-length"), retries=0)
    assert r.outcome is Outcome.TRUNCATED
    ex = only(r)
    assert ex.truncated == "disconnect" and ex.error and "IncompleteRead" in ex.error
    assert_digests(ex.response, hostile_server.last("/wrong-length").body)


def test_endless_body_is_cut_by_the_total_timeout(hostile_server: HostileServer, fetch: Any) -> None:
    start = time.monotonic()
    r = fetch(hostile_server.url("/endless"), total_timeout=0.5)
    assert time.monotonic() - start < 2
    assert r.outcome is Outcome.TIMEOUT and r.status == 200
    ex = only(r)
    stored = payload(ex.response)
    assert ex.truncated == "time" and len(stored) > 0 and stored == b"E" * len(stored)


def test_endless_body_is_cut_by_max_body(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/endless"), max_body=100_000)
    assert r.outcome is Outcome.TRUNCATED
    ex = only(r)
    assert ex.truncated == "length" and payload(ex.response) == b"E" * 100_000


def test_body_of_exactly_max_body_is_complete(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/big?size=70000"), max_body=70_000)
    assert r.outcome is Outcome.OK and only(r).truncated is None
    assert only(r).response is not None and only(r).response.payload_length == 70_000  # type: ignore[union-attr]


@pytest.mark.parametrize("path", ["/slow", "/slow?close=1"], ids=["keep-alive", "connection-close"])
def test_one_byte_per_second_is_cut_by_the_total_timeout(hostile_server: HostileServer, fetch: Any, path: str) -> None:
    start = time.monotonic()
    r = fetch(hostile_server.url(path), total_timeout=0.7, read_timeout=30.0)
    assert time.monotonic() - start < 2
    assert r.outcome is Outcome.TIMEOUT
    ex = only(r)
    stored = payload(ex.response)
    assert ex.truncated == "time" and 1 <= len(stored) <= 2 and stored == b"s" * len(stored)


# -- redirects -----------------------------------------------------------------------------------------------


def test_redirect_chain_is_one_exchange_per_hop(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/redirect?n=4"))
    assert r.outcome is Outcome.OK and r.status == 200
    assert [e.status for e in r.exchanges] == [301, 308, 307, 302, 200]
    assert [e.url for e in r.exchanges] == [
        hostile_server.url(p) for p in ("/redirect?n=4", "/redirect?n=3", "/redirect?n=2", "/redirect?n=1", "/ok")
    ]
    assert r.final_url == hostile_server.url("/ok")
    for ex in r.exchanges[:-1]:
        assert "Location: " in head(ex.response)
        assert_digests(ex.response, b"moved")  # a redirect's own body is stored too


def test_too_many_redirects(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/redirect?n=4"), max_redirects=2)
    assert r.outcome is Outcome.TOO_MANY_REDIRECTS and len(r.exchanges) == 3


def test_redirect_loop(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/loop"))
    assert r.outcome is Outcome.REDIRECT_LOOP
    assert [e.url for e in r.exchanges] == [hostile_server.url("/loop"), hostile_server.url("/loop-b")]


def test_redirect_to_a_non_http_url(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/redirect-to?url=ftp://127.0.0.1/x"))
    assert r.outcome is Outcome.INVALID_URL and len(r.exchanges) == 1 and "ftp://" in (r.error or "")


# -- what was sent, and what is stored of it -----------------------------------------------------------------


def stored_request_headers(ex: Exchange) -> list[tuple[str, str]]:
    lines = head(ex.request).split("\r\n")[1:]
    return [(k, v) for k, _, v in (line.partition(": ") for line in lines if line)]


def test_secrets_are_sent_but_stored_redacted(hostile_server: HostileServer, fetch: Any) -> None:
    secrets = {"Cookie": "session=s3cr3t", "Authorization": "Bearer t0ken"}
    r = fetch(hostile_server.url("/echo-headers"), headers=secrets)
    ex = only(r)
    received = [tuple(pair) for pair in json.loads(payload(ex.response))]
    assert ("Cookie", "session=s3cr3t") in received and ("Authorization", "Bearer t0ken") in received
    stored = head(ex.request)
    assert "s3cr3t" not in stored and "t0ken" not in stored
    assert "Cookie: [redacted]\r\n" in stored and "Authorization: [redacted]\r\n" in stored
    assert sorted(ex.redacted) == ["Authorization", "Cookie"]
    # Apart from the redacted values, the stored request is what the server received, in order.
    redacted = [(k, "[redacted]" if k in secrets else v) for k, v in received]
    assert stored_request_headers(ex) == redacted
    assert stored.startswith("GET /echo-headers HTTP/1.1\r\nHost: 127.0.0.1:")
    assert ("User-Agent", DEFAULT_USER_AGENT) in received
    spec = next(s for s in exchange_records(ex, iter(["<urn:x:1>", "<urn:x:2>"]).__next__) if s.type == REQUEST)
    assert dict(spec.headers)["X-Archiver-Redacted"] == ", ".join(ex.redacted)


def test_cookies_set_during_a_redirect_are_sent_on_and_redacted(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/cookie-redirect"))
    assert r.outcome is Outcome.OK and len(r.exchanges) == 2
    received = dict(tuple(pair) for pair in json.loads(payload(r.exchanges[1].response)))
    assert received["Cookie"] == "sid=from-server"
    assert "from-server" not in head(r.exchanges[1].request) and r.exchanges[1].redacted == ("Cookie",)
    # Cookies live for one fetch only: a new fetch on the same thread starts without them.
    fetcher = make_fetcher()
    fetcher.fetch(hostile_server.url("/cookie-redirect")).close()
    with fetcher.fetch(hostile_server.url("/echo-headers")) as again:
        final = again.final
        assert final is not None and "Cookie" not in dict(tuple(p) for p in json.loads(payload(final.response)))
    fetcher.close()


def test_credentials_in_the_url_are_sent_as_basic_auth_and_stored_redacted(
    hostile_server: HostileServer, fetch: Any
) -> None:
    url = hostile_server.url("/echo-headers").replace("http://", "http://archivist:pa%20ss@", 1)
    ex = only(fetch(url))
    received = dict(tuple(pair) for pair in json.loads(payload(ex.response)))
    assert received["Authorization"] == "Basic " + base64.b64encode(b"archivist:pa ss").decode("ascii")
    stored = head(ex.request)
    assert "Authorization: [redacted]\r\n" in stored and ex.redacted == ("Authorization",)
    assert "pa%20ss" not in ex.url and "pa%20ss" not in stored
    # A relative redirect keeps the credentials the fetch was given; no recorded URL holds them.
    url = hostile_server.url("/redirect-to?url=/echo-headers").replace("http://", "http://archivist:pa%20ss@", 1)
    r = fetch(url)
    assert r.outcome is Outcome.OK and len(r.exchanges) == 2
    received = dict(tuple(pair) for pair in json.loads(payload(r.exchanges[1].response)))
    assert received["Authorization"].startswith("Basic ")
    assert all("@" not in e.url and e.redacted == ("Authorization",) for e in r.exchanges)


def test_domain_headers_go_only_to_their_domain(hostile_server: HostileServer, fetch: Any) -> None:
    port = hostile_server.port
    target = f"http://127.0.0.1:{port}/echo-headers"
    echoed_before = len(hostile_server.served("/echo-headers"))
    r = fetch(
        f"http://localhost:{port}/redirect-to?url={target}",
        headers_by_domain={"localhost": {"Cookie": "sid=local-only"}},
        extra_headers={"Accept-Language": "ar, en;q=0.5"},
    )
    assert r.outcome is Outcome.OK and len(r.exchanges) == 2
    first = dict(hostile_server.last(f"/redirect-to?url={target}").request_headers)
    second = dict(hostile_server.last("/echo-headers", after=echoed_before).request_headers)
    assert first["Cookie"] == "sid=local-only" and "Cookie" not in second
    assert first["Accept-Language"] == second["Accept-Language"] == "ar, en;q=0.5"


def test_per_request_headers_override_defaults(hostile_server: HostileServer, fetch: Any) -> None:
    r = fetch(hostile_server.url("/echo-headers"), headers={"user-agent": "Mozilla/5.0 test"})
    received = json.loads(payload(only(r).response))
    assert [v for k, v in received if k.lower() == "user-agent"] == ["Mozilla/5.0 test"]


# -- proxies -------------------------------------------------------------------------------------------------


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    yield proxy
    proxy.stop()


@pytest.fixture
def socks_proxy() -> Iterator[Socks5Proxy]:
    proxy = Socks5Proxy()
    yield proxy
    proxy.stop()


def test_http_proxy_carries_all_traffic(hostile_server: HostileServer, forward_proxy: ForwardProxy) -> None:
    host_port = forward_proxy.url.removeprefix("http://")
    fetcher = make_fetcher(proxy=f"http://user:pa55word@{host_port}")
    with fetcher.fetch(hostile_server.url("/redirect?n=1")) as r:
        assert r.outcome is Outcome.OK and len(r.exchanges) == 2
        assert [url for url, _ in forward_proxy.seen] == [e.url for e in r.exchanges]
        assert forward_proxy.seen[0][1] is not None  # the proxy got its credentials ...
        assert r.egress == f"proxy {forward_proxy.url}" and "pa55word" not in r.egress  # ... the record not
        for ex in r.exchanges:
            assert ex.peer_ip == forward_proxy.host and ex.proxy == forward_proxy.url
            # RFC 9112 §3.2.2: absolute-form to a forward proxy, recorded as sent.
            assert head(ex.request).startswith(f"GET {ex.url} HTTP/1.1\r\n")
            assert "pa55word" not in head(ex.request)
        specs = exchange_records(r.exchanges[1], iter(["<urn:x:1>", "<urn:x:2>"]).__next__)
        response = dict(specs[0].headers)
        assert response["WARC-IP-Address"] == forward_proxy.host
        assert response["X-Archiver-Proxy"] == forward_proxy.url
    fetcher.close()


def test_socks5h_proxy_resolves_names_remotely(hostile_server: HostileServer, socks_proxy: Socks5Proxy) -> None:
    fetcher = make_fetcher(proxy=socks_proxy.url("socks5h"))
    with fetcher.fetch(f"http://localhost:{hostile_server.port}/ok") as r:
        assert r.outcome is Outcome.OK
        assert socks_proxy.seen == [("localhost", hostile_server.port)]  # we never resolved it ourselves
        ex = only(r)
        assert ex.peer_ip == socks_proxy.host and r.egress == f"proxy {socks_proxy.url('socks5h')}"
        assert head(ex.request).startswith("GET /ok HTTP/1.1\r\n")  # a tunnel carries origin-form
    fetcher.close()


def test_bad_proxy_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FetchSettings(proxy="ftp://127.0.0.1:21")


def test_unreachable_proxy_is_a_connection_error(fetch: Any, hostile_server: HostileServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch(hostile_server.url("/ok"), proxy=f"http://127.0.0.1:{port}", retries=0)
    assert r.outcome is Outcome.CONNECTION_ERROR and "ProxyError" in (r.error or "")


# -- records -------------------------------------------------------------------------------------------------


def test_exchange_records(hostile_server: HostileServer) -> None:
    fetcher = Fetcher(FetchSettings(**{**FAST, "max_body": 1000}), FixedClock(), SequentialIds())
    with fetcher.fetch(hostile_server.url("/endless")) as r:
        ex = only(r)
        response, request = exchange_records(ex, fetcher.new_record_id)
        assert (response.type, response.content_type) == (RESPONSE, HTTP_RESPONSE_TYPE)
        assert (request.type, request.content_type) == (REQUEST, HTTP_REQUEST_TYPE)
        assert response.block is ex.response and request.block is ex.request
        assert response.target_uri == request.target_uri == ex.url
        assert response.date == request.date == ex.started_at
        assert response.record_id and request.record_id and response.record_id != request.record_id
        rh, qh = dict(response.headers), dict(request.headers)
        assert rh["WARC-Concurrent-To"] == request.record_id and qh["WARC-Concurrent-To"] == response.record_id
        assert rh["WARC-IP-Address"] == "127.0.0.1" and rh["WARC-Truncated"] == "length"
        assert "X-Archiver-Redacted" not in qh
    fetcher.close()


def test_records_written_through_the_warc_sink(hostile_server: HostileServer, tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    sink = WarcSink(tmp_path, prefix="fetch", clock=clock, ids=SequentialIds(), host="test")
    fetcher = Fetcher(FetchSettings(**FAST), clock, SequentialIds(), sink.write_group)
    with fetcher.fetch(hostile_server.url("/redirect?n=1"), headers={"Cookie": "k=v"}) as r:
        assert r.outcome is Outcome.OK
        refs = [ref for ex in r.exchanges for ref in ex.records]
        assert [ref.record_type for ref in refs] == [RESPONSE, REQUEST, RESPONSE, REQUEST]
    closed = sink.close()
    fetcher.close()
    assert closed is not None
    stored = [rec for rec in iter_records(closed.path) if rec.record_type != "warcinfo"]
    assert all(rec.ok for rec in stored), [rec.problems for rec in stored]
    assert [rec.record_id for rec in stored] == [ref.record_id for ref in refs]
    final_response = stored[2]
    assert final_response.payload_sha256 == hostile_server.last("/ok").sha256
    assert final_response.header("WARC-IP-Address") == "127.0.0.1"
    assert stored[3].header("X-Archiver-Redacted") == "Cookie"
    assert stored[3].header("WARC-Concurrent-To") == stored[2].record_id


# -- concurrency and memory ----------------------------------------------------------------------------------


def test_one_fetcher_many_threads(hostile_server: HostileServer) -> None:
    fetcher = make_fetcher()
    urls = [hostile_server.url(f"/flaky?key=thread-{i}") for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fetcher.fetch, urls))
    assert [r.outcome for r in results] == [Outcome.OK] * 8
    assert all([e.status for e in r.exchanges] == [500, 200] for r in results)
    for r in results:
        r.close()
    fetcher.close()


@pytest.mark.slow
def test_big_body_streams_in_constant_memory(hostile_server: HostileServer) -> None:
    size = 200_000_000
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    fetcher = make_fetcher(total_timeout=60.0, read_timeout=10.0)
    try:
        with fetcher.fetch(hostile_server.url(f"/big?size={size}")) as r:
            assert r.outcome is Outcome.OK
            ex = only(r)
            assert ex.response is not None and ex.response.payload_length == size
            assert ex.response.payload_digest is not None
            assert ex.response.payload_digest.hex == big_sha256(size)
    finally:
        stop.set()
        watcher.join()
        fetcher.close()
    assert peak[0] - before < 50 * 1024 * 1024


# -- wire helpers --------------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert httpwire.parse_retry_after("7", now) == 7.0
    assert httpwire.parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert httpwire.parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert httpwire.parse_retry_after("soon", now) is None
    assert httpwire.parse_retry_after(None, now) is None


def test_domain_matches() -> None:
    assert httpwire.domain_matches("example.org", "example.org")
    assert httpwire.domain_matches("m.Example.org", ".example.org")
    assert not httpwire.domain_matches("badexample.org", "example.org")
    assert not httpwire.domain_matches("example.org.evil.net", "example.org")


def test_host_header_and_request_target() -> None:
    assert httpwire.host_header("http://a.example:80/x") == "a.example"
    assert httpwire.host_header("https://a.example:8443/x") == "a.example:8443"
    assert httpwire.host_header("http://[::1]:8080/") == "[::1]:8080"
    assert httpwire.request_target("http://u:p@a.example/p?q=1#f", absolute_form=False) == "/p?q=1"
    assert httpwire.request_target("http://u:p@a.example/p?q=1#f", absolute_form=True) == "http://a.example/p?q=1"


# -- connections ----------------------------------------------------------------------------------------------


def _connections(server: HostileServer, path: str, after: int, count: int) -> list[int]:
    """The client ports of the ``count`` answers to ``path`` after the first ``after``: a handler records its
    answer after its last write, so the client may have its response before the record exists."""
    server.last(path, after=after + count - 1)
    return [s.client_port for s in server.served(path)[after:]]


def test_the_fetchers_threads_share_keep_alive_connections(hostile_server: HostileServer) -> None:
    fetcher = make_fetcher()
    url, before = hostile_server.url("/ok"), len(hostile_server.served("/ok"))
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(1) as other:
        for i in range(6):  # the two threads take turns; each has its own session (cookie jar)
            result = (one if i % 2 else other).submit(fetcher.fetch, url).result()
            assert result.outcome is Outcome.OK
            result.close()
    fetcher.close()
    ports = _connections(hostile_server, "/ok", before, 6)
    assert len(ports) == 6 and len(set(ports)) == 1  # one connection, reused by both threads


def test_a_forked_child_opens_its_own_connection(hostile_server: HostileServer) -> None:
    fetcher = make_fetcher()
    url, before = hostile_server.url("/ok"), len(hostile_server.served("/ok"))
    fetcher.fetch(url).close()  # this process now keeps a connection in its pool
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            with fetcher.fetch(url) as result:
                code = 0 if result.outcome is Outcome.OK else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fetcher.fetch(url).close()  # the parent's connection was neither used nor closed by the child
    fetcher.close()
    parent_first, in_child, parent_again = _connections(hostile_server, "/ok", before, 3)
    assert in_child != parent_first == parent_again
