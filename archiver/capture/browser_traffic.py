"""Every request the browser makes, fetched by the archiver's own :class:`~archiver.capture.fetch.Fetcher`.

The DevTools protocol's Fetch domain pauses each request of the page before it leaves Chromium
(``Fetch.requestPaused``, request stage). The request is fetched through the same HTTP layer as web capture
(proxy, credentials, redaction, digests, timeouts, ``max_body``), behind the same politeness gate, and the
browser is answered from the recorded response (``Fetch.fulfillRequest``): what the browser rendered is
exactly what the WARC holds. Redirects are not followed by the fetcher: the 3xx goes back to the browser,
which follows it, and the Fetch domain pauses the next hop too, so every hop is its own recorded exchange.

Playwright's ``page.route`` is not used because its handler is not called for the hops of a redirect it
fulfilled: Chromium would fetch those itself, unrecorded. As a second line, Chromium is launched with a proxy
that refuses everything (see :mod:`archiver.capture.browser`), so a request that escaped interception (a popup's,
a WebSocket) fails instead of leaving from the collector's address unrecorded.

Bodies are stored as transferred (Content-Encoding kept); the browser gets them decoded, since Chromium does not
undo a Content-Encoding on a fulfilled response.
"""

from __future__ import annotations

import asyncio
import base64
import time
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from archiver.capture.fetch import Exchange, Fetcher, FetchResult
from archiver.capture.gate import HostGate

# Request headers the fetcher sets itself (RFC 9112 §7.6.1 hop-by-hop, framing) or that would ask for codings
# we could not undo for the browser (the fetcher asks for gzip and deflate only).
_DROP_REQUEST = frozenset(
    {"host", "connection", "keep-alive", "proxy-connection", "te", "upgrade", "content-length", "accept-encoding"}
)
# Response headers that describe the stored bytes, not the decoded body the browser gets.
_DROP_RESPONSE = frozenset(
    {"content-encoding", "content-length", "transfer-encoding", "x-archiver-transfer-encoding", "connection"}
)
# Requests that cannot change what is rendered and would only report the collector's visit to third parties.
_BLOCKED_TYPES = frozenset({"Ping", "CSPViolationReport"})
DECODE_LIMIT = 256 << 20  # bytes of decoded body handed to the browser (a gzip bomb stops here)
MAX_LISTED = 50  # blocked or failed URLs listed in a capture's details


@dataclass(frozen=True, eq=False)
class Fetched:
    """One browser request and what the fetcher did with it."""

    request_id: str
    resource_type: str
    frame_id: str | None
    result: FetchResult

    @property
    def exchanges(self) -> list[Exchange]:
        return self.result.exchanges


class Interceptor:
    """Answers one page's paused requests; collects the fetches (the caller closes them)."""

    def __init__(
        self,
        cdp: Any,
        fetcher: Fetcher,
        media_fetcher: Fetcher | None,
        gate: HostGate,
        executor: Executor,
    ) -> None:
        self._cdp = cdp
        self._fetcher = fetcher
        self._media_fetcher = media_fetcher  # None: audio and video requests are blocked
        self._gate = gate
        self._executor = executor
        self.fetched: list[Fetched] = []
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.last_activity = time.monotonic()
        self.closed = False

    def on_paused(self, event: dict[str, Any]) -> None:
        """``Fetch.requestPaused`` (DevTools protocol): answer it in a task of its own."""
        task = asyncio.ensure_future(self._handle(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, event: dict[str, Any]) -> None:
        request = event["request"]
        url: str = request["url"]
        rid: str = event["requestId"]
        rtype: str = event.get("resourceType", "Other")
        media = rtype == "Media"
        if self.closed or rtype in _BLOCKED_TYPES or (media and self._media_fetcher is None):
            self._note(self.blocked, f"{rtype} {url}")
            await self._send("Fetch.failRequest", {"requestId": rid, "errorReason": "BlockedByClient"})
            return
        self.in_flight += 1
        self.last_activity = time.monotonic()
        try:
            # The paused request's headers are the browser's, Cookie included; the fetcher adds its own
            # framing, codings and per-domain credentials.
            headers = {k: v for k, v in request.get("headers", {}).items() if k.lower() not in _DROP_REQUEST}
            body = _post_body(request)
            method = str(request.get("method", "GET"))
            fetcher = self._media_fetcher if media and self._media_fetcher is not None else self._fetcher
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, _fetch, self._gate, fetcher, url, headers, method, body)
            self.fetched.append(Fetched(rid, rtype, event.get("frameId"), result))
            await self._answer(rid, result)
        finally:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    async def _answer(self, rid: str, result: FetchResult) -> None:
        ex = result.final
        if ex is None or ex.response is None or ex.status is None:
            self._note(self.failed, f"{result.outcome} {result.url}")
            reason = "TimedOut" if result.outcome == "timeout" else "Failed"
            await self._send("Fetch.failRequest", {"requestId": rid, "errorReason": reason})
            return
        headers = [{"name": k, "value": v} for k, v in ex.headers if k.lower() not in _DROP_RESPONSE]
        body = browser_body(ex)
        params: dict[str, Any] = {
            "requestId": rid,
            "responseCode": ex.status,
            "responseHeaders": headers,
            "body": base64.b64encode(body).decode("ascii"),
        }
        if ex.reason:
            params["responsePhrase"] = ex.reason
        await self._send("Fetch.fulfillRequest", params)

    async def _send(self, method: str, params: dict[str, Any]) -> None:
        try:
            await self._cdp.send(method, params)
        except Exception:  # noqa: BLE001 - the page (or its renderer) went away meanwhile: nothing to answer
            return

    def _note(self, where: list[str], what: str) -> None:
        if len(where) < MAX_LISTED:
            where.append(what)

    def summary(self) -> dict[str, Any]:
        return {"blocked": list(self.blocked), "failed_requests": list(self.failed)}

    def idle_for(self) -> float:
        """Seconds since the last request started or ended, 0 while one is in flight."""
        return 0.0 if self.in_flight else time.monotonic() - self.last_activity

    async def drain(self, timeout: float) -> None:
        """Stop answering new requests; wait (bounded) for those being fetched, so each is recorded whole."""
        self.closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


async def wait_idle(interceptor: Interceptor, *, quiet: float, timeout: float) -> bool:
    """Wait until no request has been in flight for ``quiet`` seconds, at most ``timeout``; True if it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interceptor.idle_for() >= quiet:
            return True
        await asyncio.sleep(0.05)
    return interceptor.idle_for() >= quiet


def _fetch(
    gate: HostGate, fetcher: Fetcher, url: str, headers: dict[str, str], method: str, body: bytes | None
) -> FetchResult:
    with gate.slot(url):  # the same politeness as web capture
        return fetcher.fetch(url, headers=headers, method=method, body=body)


def _post_body(request: dict[str, Any]) -> bytes | None:
    entries = request.get("postDataEntries")
    if entries:
        return b"".join(base64.b64decode(e.get("bytes", "")) for e in entries)
    data = request.get("postData")
    return data.encode("utf-8") if isinstance(data, str) else None


def browser_body(ex: Exchange, limit: int = DECODE_LIMIT) -> bytes:
    """The stored payload with gzip/deflate undone, for the browser (the stored bytes stay as sent)."""
    if ex.response is None:
        return b""
    raw = b"".join(ex.response.payload_chunks())
    encoding = (ex.header("content-encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        for wbits in (47,) if encoding != "deflate" else (15, -15):  # 47: gzip or zlib header
            try:
                return zlib.decompressobj(wbits).decompress(raw, limit)
            except zlib.error:
                continue
        return b""
    return raw
