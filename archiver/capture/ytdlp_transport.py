"""yt-dlp's network seam: every request yt-dlp makes is sent by the archiver's Fetcher and kept for the WARC.

yt-dlp sends all HTTP through a ``RequestDirector`` of ``RequestHandler`` objects (``yt_dlp.networking``).
:class:`ArchivingYoutubeDL` gives its director exactly one handler, :class:`ArchiverRH`, so there is no path
to the network that bypasses the record: no urllib, requests, curl_cffi or websockets handler is installed,
and a request :class:`FetcherTransport` cannot record (a POST, a websocket) fails instead of leaving unseen.
The handler performs each request with :meth:`Fetcher.fetch` (same proxy, redaction, timeouts, retries and
digests as web capture), keeps every :class:`Exchange`, and hands yt-dlp a response that streams from the
spooled body, undoing the ``Content-Encoding`` that the Fetcher stores as sent.

Redirects are followed here, one Fetcher call per hop (the media Fetcher runs with ``max_redirects=0``), so
that yt-dlp's cookie jar is consulted for every hop's own URL (RFC 6265 §5.4) and credentials for one site
never ride a redirect to another. An identical GET repeated within one capture (the generic extractor reads
a direct video's response, then the downloader asks for it again) is answered from the recorded complete
response, as a private HTTP cache would (RFC 9111 §4), so a video is fetched and stored once, not twice.

ffmpeg must never open a URL itself: :meth:`ArchivingYoutubeDL.dl` refuses downloaders that are external
programs, and ffmpeg's input protocols are restricted to local files (``-protocol_whitelist``) in case
yt-dlp's HLS downloader delegates to it.
"""

from __future__ import annotations

import functools
import io
import threading
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.cookiejar import CookieJar
from typing import Any

import yt_dlp
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.downloader.ism import IsmFD
from yt_dlp.downloader.mhtml import MhtmlFD
from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, RequestError, TransportError, UnsupportedRequest

from archiver.capture import httpwire
from archiver.capture.fetch import REDIRECT_STATUSES, Exchange, Fetcher, Outcome
from archiver.warc.block import CHUNK

# Downloaders that fetch through ``YoutubeDL.urlopen`` (hence through ArchiverRH). Every other one (ffmpeg,
# rtmpdump, aria2c, websocket fragments) opens connections the archive would never see.
NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD, IsmFD, MhtmlFD)
# What the spooled body can be decoded from; anything else is not asked for (RFC 9110 §12.5.3).
ACCEPT_ENCODING = "gzip, deflate"
# ffmpeg input options: local files only (segments yt-dlp already downloaded), never a network protocol.
FFMPEG_INPUT_ARGS = ["-protocol_whitelist", "file,pipe,crypto,data"]

Phase = str  # "extract" (finding the media), "download" (a format's streams), "subtitle"


@dataclass(frozen=True)
class Served:
    """One response yt-dlp read: which exchange answered it, and in which phase of the run."""

    index: int  # into ExchangeLog.exchanges
    phase: Phase
    format_id: str | None
    entry_id: str | None


@dataclass
class ExchangeLog:
    """Every exchange one capture made, in order, and what yt-dlp used each one for. Thread-safe."""

    exchanges: list[Exchange] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    ffmpeg_commands: list[tuple[str | None, str]] = field(default_factory=list)  # (entry id, command line)
    phase: Phase = "extract"
    format_id: str | None = None
    entry_id: str | None = None
    _cache: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ex: Exchange) -> int:
        with self._lock:
            self.exchanges.append(ex)
            return len(self.exchanges) - 1

    def serve(self, index: int) -> None:
        with self._lock:
            self.served.append(Served(index, self.phase, self.format_id, self.entry_id))

    def remember(self, url: str, index: int) -> None:
        with self._lock:
            self._cache[url] = index

    def cached(self, url: str) -> int | None:
        with self._lock:
            return self._cache.get(url)

    def close(self) -> None:
        for ex in self.exchanges:
            ex.close()


class SpooledBody(io.RawIOBase):
    """The payload of a recorded response, read from its spool with ``Content-Encoding`` undone.

    A body the Fetcher had to cut (WARC-Truncated) ends with :class:`IncompleteRead`, so yt-dlp treats it as
    the broken transfer it was instead of a short file.
    """

    def __init__(self, ex: Exchange) -> None:
        super().__init__()
        assert ex.response is not None
        self._chunks: Iterator[bytes] = ex.response.payload_chunks()
        self._truncated = ex.truncated
        self._pending = b""
        self._read = 0
        coding = (ex.header("Content-Encoding") or "").strip().lower()
        # 47: a gzip or zlib header, auto-detected; "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2).
        wbits = {"gzip": 47, "x-gzip": 47, "deflate": 15}.get(coding)
        self._inflate = zlib.decompressobj(wbits) if wbits is not None else None
        self._raw_deflate_tried = coding != "deflate"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._pending = self._inflate.flush() if self._inflate is not None else b""
                self._inflate = None
                if not self._pending:
                    if self._truncated:
                        raise IncompleteRead(partial=self._read)
                    return 0
                break
            self._pending = self._decode(chunk)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._read += n
        return n

    def _decode(self, chunk: bytes) -> bytes:
        if self._inflate is None:
            return chunk
        try:
            return self._inflate.decompress(chunk)
        except zlib.error:
            if self._raw_deflate_tried or self._read:
                raise
            # Some servers send raw DEFLATE under "deflate"; browsers accept it, so yt-dlp should too.
            self._raw_deflate_tried = True
            self._inflate = zlib.decompressobj(-15)
            return self._inflate.decompress(chunk)


class _HeaderPairs:
    """Header fields in received order, duplicates kept (yt-dlp's Response accepts anything with items())."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return self._pairs


def to_ytdlp_response(ex: Exchange) -> Any:
    decoded = (ex.header("Content-Encoding") or "").strip().lower() in ("gzip", "x-gzip", "deflate")
    # The body handed over is de-chunked and, when decoded, no longer the length or coding the head states.
    dropped = {"transfer-encoding"} | ({"content-encoding", "content-length"} if decoded else set())
    pairs = [(k, v) for k, v in ex.headers if k.lower() not in dropped]
    body = io.BufferedReader(SpooledBody(ex), CHUNK)
    return Response(body, ex.url, _HeaderPairs(pairs), status=ex.status or 0, reason=ex.reason)


class _CookieResponse:
    """What ``CookieJar.extract_cookies`` reads from a response: its header fields via ``info()``."""

    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self._msg = Message()
        for name, value in headers:
            self._msg[name] = value

    def info(self) -> Message:
        return self._msg


class FetcherTransport:
    """Sends yt-dlp's requests with a Fetcher (configured with ``max_redirects=0``) and logs every exchange."""

    def __init__(self, fetcher: Fetcher, log: ExchangeLog, max_redirects: int) -> None:
        self.fetcher = fetcher
        self.log = log
        self.max_redirects = max_redirects

    def send(self, method: str, url: str, headers: dict[str, str], data: object, jar: CookieJar) -> Any:
        if method != "GET" or data is not None:
            # The Fetcher sends GET only; a request we cannot record must not be sent another way.
            raise UnsupportedRequest(f"the archiver records GET requests only, not {method} {url}")
        ranged = any(k.lower() == "range" for k in headers)
        cached = None if ranged else self.log.cached(url)
        if cached is not None:
            self.log.serve(cached)
            return self._answer(self.log.exchanges[cached])
        current, hops = url, 0
        while True:
            hop_headers = self._with_cookies(headers, current, jar)
            result = self.fetcher.fetch(current, headers=hop_headers)
            indices = [self.log.add(ex) for ex in result.exchanges]
            final = result.final
            if final is None or final.response is None:
                reason = result.error or str(result.outcome)
                if result.outcome == Outcome.INVALID_URL:
                    raise RequestError(reason)
                raise TransportError(reason)
            jar.extract_cookies(_CookieResponse(final.headers), urllib.request.Request(current))  # type: ignore[arg-type]
            location = final.header("Location") if final.status in REDIRECT_STATUSES else None
            if location is not None and final.truncated != "time":
                hops += 1
                if hops > self.max_redirects:
                    self.log.serve(indices[-1])
                    raise HTTPError(to_ytdlp_response(final), redirect_loop=True)
                current = httpwire.resolve_location(final.url, location)
                continue
            self.log.serve(indices[-1])
            if not ranged and final.truncated is None and final.status == 200:
                self.log.remember(url, indices[-1])
            return self._answer(final)

    @staticmethod
    def _answer(ex: Exchange) -> Any:
        response = to_ytdlp_response(ex)
        if not 200 <= (ex.status or 0) < 300:
            raise HTTPError(response)
        return response

    @staticmethod
    def _with_cookies(headers: dict[str, str], url: str, jar: CookieJar) -> dict[str, str]:
        out = {k: v for k, v in headers.items() if k.lower() != "cookie"}
        probe = urllib.request.Request(url)
        jar.add_cookie_header(probe)
        cookies = [c for c in (headers.get("Cookie"), probe.get_header("Cookie")) if c]
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        return out


class ArchiverRH(RequestHandler):  # type: ignore[misc]  # yt-dlp ships no type information
    """yt-dlp's only request handler in a capture: hands each request to :class:`FetcherTransport`."""

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = None  # the Fetcher's own proxy settings apply; yt-dlp's are ignored
    _SUPPORTED_FEATURES = None

    def __init__(self, *, transport: FetcherTransport, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = transport

    def _check_extensions(self, extensions: dict[str, Any]) -> None:
        super()._check_extensions(extensions)
        # Timeouts are the Fetcher's; "impersonate" and others stay and make the request unsupported.
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _prepare_headers(self, request: Any, headers: Any) -> None:
        coding = headers.get("Accept-Encoding")
        if coding is None or not {c.split(";")[0].strip() for c in coding.split(",")} <= {"gzip", "deflate", "identity"}:
            headers["Accept-Encoding"] = ACCEPT_ENCODING

    def _send(self, request: Any) -> Any:
        headers = self._get_headers(request)
        return self._transport.send(request.method, request.url, headers, request.data, self._get_cookiejar(request))


class YtdlpLogger:
    """Collects yt-dlp's messages (it prints nothing itself) and the ffmpeg command lines it runs."""

    MAX_LINES = 2000

    def __init__(self, log: ExchangeLog) -> None:
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._log = log

    def _keep(self, message: str) -> None:
        if len(self.lines) < self.MAX_LINES:
            self.lines.append(message)

    def debug(self, message: str) -> None:
        prefix = "[debug] ffmpeg command line: "
        if message.startswith(prefix):
            self._log.ffmpeg_commands.append((self._log.entry_id, message[len(prefix) :]))
        self._keep(message)

    def info(self, message: str) -> None:
        self._keep(message)

    def warning(self, message: str, *, once: bool = False) -> None:
        self._keep(f"WARNING: {message}")

    def error(self, message: str, *, is_error: bool = True) -> None:
        self.errors.append(message)
        self._keep(message)


class ArchivingYoutubeDL(yt_dlp.YoutubeDL):  # type: ignore[misc]  # yt-dlp ships no type information
    """A YoutubeDL whose only network path is :class:`ArchiverRH`, tagging exchanges by download phase."""

    def __init__(self, params: dict[str, Any], transport: FetcherTransport) -> None:
        self._transport = transport
        params = {**params, "external_downloader": {"default": "native"}}
        params["external_downloader_args"] = {"ffmpeg_i": FFMPEG_INPUT_ARGS}
        super().__init__(params)

    @functools.cached_property
    def _request_director(self) -> Any:
        handler = functools.partial(ArchiverRH, transport=self._transport)
        return self.build_request_director([handler])

    def dl(self, name: str, info: dict[str, Any], subtitle: bool = False, test: bool = False) -> Any:
        downloader = get_suitable_downloader(info, self.params, to_stdout=(name == "-"))
        if downloader not in NATIVE_DOWNLOADERS:
            label = getattr(downloader, "FD_NAME", None) or getattr(downloader, "__name__", str(downloader))
            self.report_error(
                f"format {info.get('format_id')} needs the {label} downloader, which opens its own connections "
                "that the archive cannot record; not downloaded"
            )
            return False
        log = self._transport.log
        saved = (log.phase, log.format_id)
        log.phase = "subtitle" if subtitle else "download"
        log.format_id = str(info.get("format_id") or "") or None
        try:
            return super().dl(name, info, subtitle, test)
        finally:
            log.phase, log.format_id = saved

    def process_info(self, info_dict: dict[str, Any]) -> Any:
        # One entry (video) from thumbnails through download to post-processing: tag what it causes.
        log = self._transport.log
        saved = log.entry_id
        log.entry_id = str(info_dict.get("id") or "") or None
        try:
            return super().process_info(info_dict)
        finally:
            log.entry_id = saved
