"""Capture one web page: the page itself, every redirect hop, and its requisites, as HTTP exchanges.

The exchanges are not written here: the caller writes them as one record group so that a page and its
requisites land contiguously in one WARC file with one fsync.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from archiver.capture.fetch import Exchange, Fetcher, FetchResult, Outcome
from archiver.capture.gate import HostGate
from archiver.capture.requisites import css_requisites, html_requisites

HTML_TYPES = ("text/html", "application/xhtml+xml")
CSS_TYPE = "text/css"
DECODE_LIMIT = 16 << 20  # bytes of decoded body read for parsing (a gzip bomb stops here)


@dataclass(frozen=True)
class RequisiteLimits:
    max_count: int = 150  # per page; a requisite body is capped like any body (network.max_body)
    css_depth: int = 2  # stylesheets imported by stylesheets


@dataclass
class PageCapture:
    main: FetchResult
    requisites: list[FetchResult] = field(default_factory=list)

    @property
    def exchanges(self) -> list[Exchange]:
        out = list(self.main.exchanges)
        for r in self.requisites:
            out.extend(r.exchanges)
        return out

    def close(self) -> None:
        self.main.close()
        for r in self.requisites:
            r.close()


def media_type(ex: Exchange | None) -> str:
    if ex is None:
        return ""
    return (ex.header("content-type") or "").split(";")[0].strip().lower()


def charset(ex: Exchange | None) -> str | None:
    if ex is None:
        return None
    for part in (ex.header("content-type") or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"').strip()
    return None


def decoded_body(ex: Exchange, limit: int = DECODE_LIMIT) -> bytes:
    """The response body with Content-Encoding undone, for parsing only (what is stored stays encoded).

    Decompression stops at ``limit`` bytes, so a gzip bomb costs at most that much memory.
    """
    if ex.response is None:
        return b""
    encoding = (ex.header("content-encoding") or "").strip().lower()
    chunks, size = [], 0
    for chunk in ex.response.payload_chunks():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    raw = b"".join(chunks)
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, auto-detected
        try:
            d = zlib.decompressobj(wbits)
            return d.decompress(raw, limit)
        except zlib.error:
            try:
                return zlib.decompressobj(-15).decompress(raw, limit)  # raw deflate, as some servers send
            except zlib.error:
                return b""
    if encoding in ("", "identity"):
        return raw[:limit]
    return b""  # br, zstd: not requested (Accept-Encoding), not parsed


class WebCapturer:
    def __init__(self, fetcher: Fetcher, gate: HostGate, limits: RequisiteLimits | None = None) -> None:
        self.fetcher = fetcher
        self.gate = gate
        self.limits = limits or RequisiteLimits()

    def fetch(self, url: str) -> FetchResult:
        with self.gate.slot(url):
            return self.fetcher.fetch(url)

    def capture(self, url: str, *, requisites: bool = True) -> PageCapture:
        page = PageCapture(self.fetch(url))
        final = page.main.final
        if not requisites or page.main.outcome not in (Outcome.OK, Outcome.TRUNCATED) or final is None:
            return page
        if media_type(final) not in HTML_TYPES:
            return page
        queue = [(u, 0) for u in html_requisites(decoded_body(final), page.main.final_url)]
        seen = {page.main.url, page.main.final_url}
        while queue and len(page.requisites) < self.limits.max_count:
            req_url, depth = queue.pop(0)
            if req_url in seen:
                continue
            seen.add(req_url)
            result = self.fetch(req_url)
            page.requisites.append(result)
            last = result.final
            if last is not None and media_type(last) == CSS_TYPE and depth < self.limits.css_depth:
                queue.extend((u, depth + 1) for u in css_requisites(decoded_body(last), result.final_url))
        return page
