"""A browser capture as WARC records, each with its artifact role and media type.

* every exchange the browser's requests made: request/response pairs (:func:`exchange_records`), roles ``page``
  (the document rendered), ``redirect`` (hops before it) and ``requisite``;
* the screenshot, PDF and rendered DOM: ``resource`` records (WARC 1.1 §6.3) with ``urn:screenshot:``,
  ``urn:pdf:`` and ``urn:dom:`` + page URL as target. A sidecar whose target were the page URL itself would be
  replayed by pywb instead of the page. WARC 1.1 §5.11 reserves ``WARC-Refers-To`` for revisit, conversion and
  metadata records, so these resources name the page's response with ``WARC-Concurrent-To`` (§5.7: records of one
  capture event);
* what the browser was and did (version, exact command line, behaviours, blocked requests): a ``metadata`` record
  (§6.6) ``urn:browser-capture:`` + page URL, ``WARC-Refers-To`` the page's response.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from archiver.capture.browser_traffic import Fetched
from archiver.capture.fetch import exchange_records
from archiver.capture.web import media_type
from archiver.warc.block import block_from_bytes
from archiver.warc.records import METADATA, REQUEST, RESOURCE, RESPONSE, RecordSpec

RoledSpec = tuple[str, str | None, RecordSpec]


@dataclass
class Rendered:
    """What rendering one page produced (bytes of the local files; the fetches keep their spools)."""

    requested_url: str
    page_url: str | None = None
    main_frame: str | None = None
    http_status: int | None = None
    fetched: list[Fetched] = field(default_factory=list)
    screenshot: bytes | None = None
    pdf: bytes | None = None
    dom: str | None = None
    captured_at: datetime | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for f in self.fetched:
            f.result.close()


def traffic_specs(rendered: Rendered, new_id: Callable[[], str]) -> tuple[list[RoledSpec], str | None]:
    """Request/response records of every fetch, in the order they were made; also the page response's id."""
    specs: list[RoledSpec] = []
    page_id = None
    page_url = (rendered.page_url or rendered.requested_url).partition("#")[0]
    ordered = sorted(rendered.fetched, key=lambda f: f.exchanges[0].started_at if f.exchanges else datetime.max)
    for f in ordered:
        main_doc = f.resource_type == "Document" and f.frame_id == rendered.main_frame
        for ex in f.exchanges:
            role = "requisite"
            if main_doc and ex.response is not None:
                if ex.url == page_url and (ex.status or 0) not in range(300, 400):
                    role = "page"
                elif ex.status is not None and 300 <= ex.status < 400:
                    role = "redirect"
            for spec in exchange_records(ex, new_id):
                if spec.type == REQUEST:
                    specs.append(("request", None, spec))
                else:
                    if role == "page" and spec.type == RESPONSE:
                        page_id = spec.record_id
                    specs.append((role, media_type(ex) or None, spec))
    return specs, page_id


def local_specs(rendered: Rendered, page_id: str | None, new_id: Callable[[], str], banner: int) -> list[RoledSpec]:
    """The screenshot, PDF and DOM as resource records, and the capture's metadata record."""
    url = rendered.page_url or rendered.requested_url
    concurrent = (("WARC-Concurrent-To", page_id),) if page_id else ()
    when = rendered.captured_at
    specs: list[RoledSpec] = []
    files: list[tuple[str, str, bytes | None, tuple[tuple[str, str], ...]]] = [
        ("screenshot", "image/png", rendered.screenshot, (("X-Archiver-Banner-Height", str(banner)),)),
        ("pdf", "application/pdf", rendered.pdf, ()),
        ("dom", "text/html; charset=utf-8", rendered.dom.encode("utf-8") if rendered.dom is not None else None, ()),
    ]
    for role, ctype, data, extra in files:
        if data is None:
            continue
        spec = RecordSpec(
            RESOURCE, block_from_bytes(data), ctype, f"urn:{role}:{url}", new_id(), when, concurrent + extra
        )
        specs.append((role, ctype.split(";")[0], spec))
    doc = json.dumps(rendered.details, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    refers = (("WARC-Refers-To", page_id),) if page_id else ()
    meta = RecordSpec(
        METADATA, block_from_bytes(doc), "application/json", f"urn:browser-capture:{url}", new_id(), when, refers
    )
    specs.append(("metadata", "application/json", meta))
    return specs
