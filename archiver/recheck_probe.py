"""Look at a captured source again without archiving it: a page fetch, or yt-dlp's metadata without the video.

A probe stores nothing. What it fetched is compared with what the archive holds; only when the source changed or
went away is it captured again (by the capture job, into the WARC, with a receipt), so an unchanged source costs
one fetch and one catalogue row, never WARC bytes.

Two digests describe a page:

* the **payload SHA-256**: the body exactly as transferred (Content-Encoding kept, chunking removed), the same
  digest the page's ``response`` record carries (``WARC-Payload-Digest``). Equal digests mean the same bytes.
* the **text SHA-256**: the page's main text (trafilatura's extraction; the whole body's text when it finds none),
  Unicode NFC, white space collapsed. Dynamic pages differ in their bytes on every fetch (a CSRF token, a
  timestamp, rotating advertisements); the main text differs only when the content does.

A source is "changed" only when both differ. Non-HTML payloads (PDF, images) have no text digest: for them a
different payload is a change.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
import zlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lxml.html
from lxml import etree

from archiver.capture.fetch import Exchange, Fetcher, FetchSettings, Outcome
from archiver.capture.media import REMOVED, PlatformIdentity, classify_failure, plan_for
from archiver.capture.media_env import Workdir, check_ffmpeg, load_cookies
from archiver.capture.web import DECODE_LIMIT, HTML_TYPES, WebCapturer, charset, decoded_body, media_type
from archiver.clock import Clock, IdGenerator
from archiver.warc.block import block_from_bytes

GONE_STATUSES = frozenset({404, 410})  # RFC 9110 §15.5.5, §15.5.11; the capture job uses the same two
MAX_STORED_READ = 64 << 20  # compressed bytes of a stored page record read back for its text digest
PROBE_MAX_BODY = 32 << 20  # a media probe reads pages and API answers, never a whole video
_WS = re.compile(r"\s+")


# -- text --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageText:
    sha256: str | None  # None: not HTML, or too large to decode whole
    method: str | None  # trafilatura | body


def page_text(body: bytes, encoding: str | None, mtype: str) -> PageText:
    """The normalised main text of an HTML body and its SHA-256 (the comparison rule in the module doc)."""
    if mtype not in HTML_TYPES or not body or len(body) >= DECODE_LIMIT:
        return PageText(None, None)
    import trafilatura  # imported by the first page that needs it: 0.06 s at start otherwise

    html = body.decode(_codec(encoding), "replace")
    text = trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False) or ""
    method = "trafilatura"
    if not text.strip():
        method = "body"
        try:
            root = lxml.html.document_fromstring(html)
        except (etree.ParserError, ValueError):
            return PageText(None, None)
        for el in root.xpath("//script | //style | //noscript | //template | //head"):
            el.drop_tree()
        text = root.text_content()
    normal = _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return PageText(hashlib.sha256(normal.encode("utf-8")).hexdigest(), method)


def _codec(name: str | None) -> str:
    if name:
        try:
            return codecs.lookup(name).name
        except LookupError:
            pass
    return "utf-8"


def exchange_text(ex: Exchange | None) -> PageText:
    if ex is None or ex.response is None:
        return PageText(None, None)
    return page_text(decoded_body(ex), charset(ex), media_type(ex))


# -- the page the archive holds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPage:
    text: PageText
    payload_sha256: str | None  # recomputed from the stored bytes just read
    problem: str | None = None


def stored_page(path: Path, offset: int, length: int, expected_sha256: str | None) -> StoredPage:
    """Read one stored ``response`` record back and compute its text digest.

    The payload's SHA-256 is recomputed from the bytes read and must equal the catalogue's: a text digest is
    never derived from bytes that are not what the archive says it holds.
    """
    if length > MAX_STORED_READ:
        return StoredPage(PageText(None, None), None, f"stored record larger than {MAX_STORED_READ} bytes")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            member = f.read(length)
        data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(member, MAX_STORED_READ * 4)
    except (OSError, zlib.error) as exc:
        return StoredPage(PageText(None, None), None, f"cannot read the stored page record: {exc}")
    warc_head, _, rest = data.partition(b"\r\n\r\n")
    fields = _fields(warc_head)
    try:
        block = rest[: int(fields.get("content-length", "-1"))]
    except ValueError:
        return StoredPage(PageText(None, None), None, "stored page record has no valid Content-Length")
    http_head, sep, payload = block.partition(b"\r\n\r\n")
    if not sep:
        return StoredPage(PageText(None, None), None, "stored page record holds no HTTP response")
    digest = hashlib.sha256(payload).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        return StoredPage(PageText(None, None), digest, "stored payload does not match the catalogue's digest")
    headers = tuple(_fields(http_head, keep_case=True).items())
    status_line = http_head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    block_ = block_from_bytes(payload, head=http_head + b"\r\n\r\n")
    stamp = datetime(1970, 1, 1, tzinfo=UTC)  # a read-back, not an exchange: its times are never recorded
    ex = Exchange("GET", "", block_from_bytes(b""), block_, status, None, headers, None, None, stamp, stamp)
    try:
        return StoredPage(exchange_text(ex), digest)
    finally:
        ex.close()


def _fields(head: bytes, *, keep_case: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out.setdefault(name.strip() if keep_case else name.strip().lower(), value.strip())
    return out


# -- web -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebProbe:
    outcome: str  # ok | gone | error
    http_status: int | None
    final_url: str | None
    payload_sha256: str | None
    text: PageText
    error: str | None
    fetch_outcome: str


def probe_web(web: WebCapturer, url: str) -> WebProbe:
    """Fetch the page alone (no requisites) through the capture's Fetcher and host gate; never raises."""
    with web.fetch(url) as result:
        final = result.final
        digest = None
        if final is not None and final.response is not None and final.response.payload_digest is not None:
            digest = final.response.payload_digest.hex
        if result.outcome == Outcome.OK:
            outcome, text = "ok", exchange_text(final)
        elif result.outcome == Outcome.HTTP_ERROR and result.status in GONE_STATUSES:
            outcome, text = "gone", PageText(None, None)
        else:
            # Timeouts, 5xx, refused connections, cut bodies: trouble on the way, not evidence of removal.
            outcome, text = "error", PageText(None, None)
        error = result.error or (f"HTTP {result.status}" if outcome != "ok" and result.status else None)
        return WebProbe(outcome, result.status, result.final_url, digest, text, error, str(result.outcome))


# -- media ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaProbe:
    outcome: str  # ok | removed | failed | no-media
    identities: tuple[dict[str, str | None], ...]  # per item: platform, item_id, title, duration
    evidence: str | None
    attempts: tuple[dict[str, str], ...]


def identity_key(identity: PlatformIdentity | dict[str, Any]) -> dict[str, str | None]:
    """What a metadata probe can compare without downloading: the platform's id, title and duration."""
    get = identity.get if isinstance(identity, dict) else lambda k: getattr(identity, k, None)
    duration = get("duration")
    return {
        "platform": _str(get("platform")),
        "item_id": _str(get("item_id")),
        "title": _str(get("title")),
        # Whole seconds: one extractor reports 12.0, another 12.04 for the same file.
        "duration": None if duration in (None, "") else str(round(float(str(duration)))),
    }


def _str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


class MediaProber:
    """yt-dlp through the archiver's Fetcher with ``skip_download``: identity or removal, no video bytes.

    The same URL forms and fallbacks as media capture (:func:`plan_for`), and the same reading of platform
    messages (:func:`classify_failure`), so a probe says "removed" exactly when a capture would.
    """

    def __init__(
        self,
        fetch_settings: FetchSettings,
        *,
        cookies_file: Path | None,
        temp_parent: Path,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self.ffmpeg = check_ffmpeg()
        self.temp_parent = temp_parent
        self._max_redirects = fetch_settings.max_redirects
        self._cookies = load_cookies(cookies_file)
        probe = replace(fetch_settings, max_redirects=0, max_body=min(fetch_settings.max_body, PROBE_MAX_BODY))
        self.fetcher = Fetcher(probe, clock, ids)

    def close(self) -> None:
        self.fetcher.close()

    def probe(self, url: str) -> MediaProbe:
        from archiver.capture.ytdlp_transport import ExchangeLog, run_ytdlp

        plan = plan_for(url)
        log = ExchangeLog()
        tried: list[dict[str, str]] = []
        outcome, evidence = "failed", "nothing was tried"
        identities: tuple[dict[str, str | None], ...] = ()
        workdir = Workdir(self.temp_parent)
        try:
            for n, attempt in enumerate(plan.attempts):
                first = len(log.served)
                params = {
                    "skip_download": True,
                    "writesubtitles": False,
                    "writethumbnail": False,
                    "extractor_args": attempt.ytdlp_extractor_args(),
                }
                run = run_ytdlp(
                    attempt.url,
                    workdir.path / f"probe-{n}",
                    log,
                    self.fetcher,
                    max_redirects=self._max_redirects,
                    ffmpeg=self.ffmpeg,
                    cookies=self._cookies,
                    params=params,
                )
                entries = run.entries()
                if entries and run.error is None:
                    outcome, evidence = "ok", "metadata"
                    identities = tuple(identity_key(PlatformIdentity.from_info(e)) for e in entries)
                else:
                    post = log.exchanges[log.served[first].index] if len(log.served) > first else None
                    message = run.error or "yt-dlp found no media"
                    outcome, evidence = classify_failure(
                        message, post.status if post else None, post.url if post else None
                    )
                tried.append({"url": attempt.url, "why": attempt.why, "outcome": outcome, "evidence": evidence})
                if outcome in ("ok", REMOVED):
                    break
        finally:
            log.close()
            workdir.remove()
        return MediaProbe(outcome, identities, None if outcome == "ok" else evidence, tuple(tried))
