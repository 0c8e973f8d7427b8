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

import copy
import functools
import io
import os
import threading
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any

import yt_dlp
import yt_dlp.version
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.downloader.ism import IsmFD
from yt_dlp.downloader.mhtml import MhtmlFD
from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, RequestError, TransportError, UnsupportedRequest
from yt_dlp.utils import YoutubeDLError

from archiver.capture import httpwire
from archiver.capture.fetch import REDIRECT_STATUSES, Exchange, Fetcher, Outcome
from archiver.capture.media_env import FfmpegTool
from archiver.warc.block import CHUNK

# Downloaders that fetch through ``YoutubeDL.urlopen`` (hence through ArchiverRH). Every other one (ffmpeg,
# rtmpdump, aria2c, websocket fragments) opens connections the archive would never see.
NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD, IsmFD, MhtmlFD)
# What the spooled body can be decoded from; anything else is not asked for (RFC 9110 §12.5.3).
ACCEPT_ENCODING = "gzip, deflate"
MAX_REQUEST_BODY = 8 << 20  # an API call's POST body
# A compressed page or API answer is inflated up to this size; past it yt-dlp gets an error, not the memory.
MAX_DECODED = 256 << 20
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

    Each read asks the block for bytes at this reader's own offset, so two readers of one recorded response
    (a cached replay) never disturb each other. Inflation is bounded per read and in total, so a gzip bomb
    stored as a few KB cannot fill memory when yt-dlp reads a page whole. A body the Fetcher had to cut
    (WARC-Truncated) ends with :class:`IncompleteRead`, so yt-dlp treats it as the broken transfer it was.
    """

    def __init__(self, ex: Exchange) -> None:
        super().__init__()
        assert ex.response is not None
        self._block = ex.response
        self._pos = ex.response.payload_offset
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
            data = self._inflate.unconsumed_tail if self._inflate is not None else b""
            if not data:
                data = next(iter(self._block.chunks(self._pos)), b"")
                self._pos += len(data)
            if data:
                self._pending = self._decode(data)
                continue
            self._pending = self._inflate.flush() if self._inflate is not None else b""
            self._inflate = None
            if not self._pending:
                if self._truncated:
                    raise IncompleteRead(partial=self._read)
                return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._read += n
        if self._read > MAX_DECODED and self._inflate is not None:
            raise TransportError(f"body inflates to more than {MAX_DECODED} bytes; not handed to yt-dlp")
        return n

    def _decode(self, data: bytes) -> bytes:
        if self._inflate is None:
            return data
        try:
            return self._inflate.decompress(data, CHUNK)
        except zlib.error:
            if self._raw_deflate_tried or self._read:
                raise
            # Some servers send raw DEFLATE under "deflate"; browsers accept it, so yt-dlp should too.
            self._raw_deflate_tried = True
            self._inflate = zlib.decompressobj(-15)
            return self._inflate.decompress(data, CHUNK)


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
        body = _request_body(data)
        ranged = any(k.lower() == "range" for k in headers)
        cacheable = method == "GET" and body is None and not ranged
        cached = self.log.cached(url) if cacheable else None
        if cached is not None:
            self.log.serve(cached)
            return self._answer(self.log.exchanges[cached])
        current, hops = url, 0
        while True:
            hop_headers = self._with_cookies(headers, current, jar)
            result = self.fetcher.fetch(current, headers=hop_headers, method=method, body=body)
            indices = [self.log.add(ex) for ex in result.exchanges]
            final = result.final
            if final is None or final.response is None:
                reason = result.error or str(result.outcome)
                if result.outcome == Outcome.INVALID_URL:
                    raise RequestError(reason)
                raise TransportError(reason)
            # RFC 6265 §5.3: the hop's Set-Cookie fields go into yt-dlp's jar (a Request only names the URL here).
            hop = urllib.request.Request(current)  # noqa: S310 - nothing is opened
            jar.extract_cookies(_CookieResponse(final.headers), hop)  # type: ignore[arg-type]
            location = final.header("Location") if final.status in REDIRECT_STATUSES else None
            if location is not None and final.truncated != "time":
                hops += 1
                if hops > self.max_redirects:
                    self.log.serve(indices[-1])
                    raise HTTPError(to_ytdlp_response(final), redirect_loop=True)
                current = httpwire.resolve_location(final.url, location)
                # RFC 9110 §15.4.2-4: 303 (and 301/302 after a POST) continue as GET without the body.
                if (final.status == 303 and method != "HEAD") or (final.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
                continue
            self.log.serve(indices[-1])
            if cacheable and method == "GET" and final.truncated is None and final.status == 200:
                self.log.remember(url, indices[-1])
                self.log.remember(final.url, indices[-1])  # yt-dlp re-extracts a redirect's target
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
        probe = urllib.request.Request(url)  # noqa: S310 - only asks the jar which cookies match
        jar.add_cookie_header(probe)
        cookies = [c for c in (headers.get("Cookie"), probe.get_header("Cookie")) if c]
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        return out


def _request_body(data: object) -> bytes | None:
    """yt-dlp gives a body as bytes, a file or an iterable of bytes; the Fetcher stores it in the request
    record, so it is read whole (API bodies are small; a larger one is refused rather than truncated)."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, io.IOBase) and hasattr(data, "read"):
        body = data.read(MAX_REQUEST_BODY + 1)
    elif isinstance(data, Iterable):
        body = b"".join(data)
    else:
        raise UnsupportedRequest(f"request body of type {type(data).__name__}")
    if not isinstance(body, bytes) or len(body) > MAX_REQUEST_BODY:
        raise UnsupportedRequest(f"request body larger than {MAX_REQUEST_BODY} bytes")
    return body


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
        asked = {c.split(";")[0].strip().lower() for c in (coding or "").split(",")}
        if coding is None or not asked <= {"gzip", "deflate", "identity"}:
            headers["Accept-Encoding"] = ACCEPT_ENCODING

    def _send(self, request: Any) -> Any:
        headers = self._get_headers(request)
        return self._transport.send(request.method, request.url, headers, request.data, self._get_cookiejar(request))


class YtdlpLogger:
    """Collects yt-dlp's messages (it prints nothing itself) and the ffmpeg command lines it runs.

    Debug lines are kept up to a bound (a long HLS download logs a line per fragment); warnings and errors
    are always kept, since the outcome and its evidence are read from them.
    """

    MAX_DEBUG = 2000

    def __init__(self, log: ExchangeLog) -> None:
        self.debug_lines: list[str] = []
        self.notes: list[str] = []  # info, warnings and errors
        self.errors: list[str] = []
        self._log = log

    def debug(self, message: str) -> None:
        prefix = "[debug] ffmpeg command line: "
        command = message[len(prefix) :] if message.startswith(prefix) else ""
        # yt-dlp logs ffprobe runs under the same label; only ffmpeg runs change bytes.
        if command and not Path(command.split(" ", 1)[0].strip("'\"")).name.startswith("ffprobe"):
            self._log.ffmpeg_commands.append((self._log.entry_id, command))
        if message.startswith("[debug] "):
            if len(self.debug_lines) < self.MAX_DEBUG:
                self.debug_lines.append(message)
        else:
            self.notes.append(message)  # yt-dlp routes to_screen() through debug() too

    def info(self, message: str) -> None:
        self.notes.append(message)

    def warning(self, message: str, *, once: bool = False) -> None:
        self.notes.append(f"WARNING: {message}")

    def error(self, message: str, *, is_error: bool = True) -> None:
        self.errors.append(message)
        self.notes.append(message)


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


# -- one run ---------------------------------------------------------------------------------------------------


@dataclass
class YtdlpRun:
    """What one yt-dlp run left: its info dict (None on error), the error line, and files in ``workdir``."""

    workdir: Path
    info: dict[str, Any] | None
    error: str | None
    skipped: str | None  # a format yt-dlp chose not to download (larger than max_filesize)
    first_served: int = 0  # where this run starts in ExchangeLog.served (earlier attempts came before)
    first_command: int = 0  # and in ExchangeLog.ffmpeg_commands

    def entries(self) -> list[dict[str, Any]]:
        if self.info is None:
            return []
        if "entries" in self.info:
            return [e for e in self.info["entries"] or [] if isinstance(e, dict)]
        return [self.info]

    def existing(self, filepath: object) -> Path | None:
        """``filepath`` if it is a file inside this run's directory (never trust a path from metadata)."""
        if not isinstance(filepath, str):
            return None
        path = Path(filepath).resolve()
        return path if path.is_file() and path.is_relative_to(self.workdir.resolve()) else None

    def files(self) -> list[Path]:
        found = (self.existing(d.get("filepath")) for e in self.entries() for d in e.get("requested_downloads") or [])
        return [p for p in found if p is not None]

    def relative(self, text: str) -> str:
        """A command line without our temporary directory in it (a local path is no evidence)."""
        return text.replace(str(self.workdir.resolve()) + os.sep, "").replace(str(self.workdir) + os.sep, "")


# Fixed for every run: quiet (messages go to YtdlpLogger), verbose (so ffmpeg command lines are logged), no cache
# in $HOME, native downloaders, one fragment at a time (exchanges stay in order), and no silent holes in HLS.
BASE_PARAMS: dict[str, Any] = {
    "quiet": True,
    "verbose": True,
    "noprogress": True,
    "color": {"stdout": "no_color", "stderr": "no_color"},
    "cachedir": False,
    "proxy": "",  # the Fetcher's proxy applies; this keeps environment proxies out of yt-dlp
    "noplaylist": True,
    "hls_prefer_native": True,
    "concurrent_fragment_downloads": 1,
    "skip_unavailable_fragments": False,
    "retries": 2,
    "fragment_retries": 2,
    "extractor_retries": 1,
    "buffersize": CHUNK,
    "restrictfilenames": True,
    "updatetime": False,
    "check_formats": False,
    "outtmpl": {"default": "%(id).80B.%(ext)s"},
}


def run_ytdlp(
    url: str,
    workdir: Path,
    log: ExchangeLog,
    fetcher: Fetcher,
    *,
    max_redirects: int,
    ffmpeg: FfmpegTool,
    cookies: list[Cookie],
    params: dict[str, Any],
) -> YtdlpRun:
    """Run yt-dlp once on ``url`` with downloads into ``workdir``; never raises for what yt-dlp does."""
    workdir.mkdir(parents=True, exist_ok=True)
    first_served, first_command = len(log.served), len(log.ffmpeg_commands)
    logger = YtdlpLogger(log)
    transport = FetcherTransport(fetcher, log, max_redirects)
    options = {
        **BASE_PARAMS,
        **params,
        "logger": logger,
        "paths": {"home": str(workdir), "temp": str(workdir)},
        "ffmpeg_location": str(Path(ffmpeg.path).parent),
    }
    info: dict[str, Any] | None = None
    error: str | None = None
    with ArchivingYoutubeDL(options, transport) as ydl:
        for cookie in cookies:
            ydl.cookiejar.set_cookie(copy.copy(cookie))
        try:
            result = ydl.extract_info(url, download=True)
            info = result if isinstance(result, dict) else None
        except YoutubeDLError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - an extractor bug must end as a failed capture, not a crash
            error = f"yt-dlp raised {type(exc).__name__}: {exc}"
    if error is None and logger.errors:
        error = logger.errors[0]
    error = httpwire.one_line(error.splitlines()[0]) if error else None
    delegated = next((line for line in logger.notes if "will be delegated to" in line), None)
    if error is not None and delegated is not None:
        # The whitelist in FFMPEG_INPUT_ARGS stopped ffmpeg from fetching; say why instead of "exit code 1".
        error = httpwire.one_line(
            f"{error}: yt-dlp handed the stream to ffmpeg's own downloader, whose traffic the archive cannot "
            f"record, so it was refused ({delegated.removeprefix('WARNING: ')})"
        )
    skipped = next((httpwire.one_line(line) for line in logger.notes if "larger than max-filesize" in line), None)
    return YtdlpRun(workdir, info, error, skipped, first_served, first_command)
