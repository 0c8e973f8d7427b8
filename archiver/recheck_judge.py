"""What a re-check compares with, and the verdict: still online, changed, gone, or no answer (error).

The baseline is what the archive holds of the source: the page of its newest successful web capture (the
``page`` artifact's payload SHA-256, and its main-text digest read back from the WARC when needed), and the
platform identity of the items of its newest successful media capture. Rules, per part:

========= ======================================= =================================== ========================
part      still online                            changed (captured again)            gone
========= ======================================= =================================== ========================
web       same payload digest, or same main text  payload and main text differ        HTTP 404 or 410
media     same items: platform id, title,         different items, or media where     the platform says the
          duration (whole seconds)                the last capture had none           item was removed (a
                                                                                      platform item or video)
========= ======================================= =================================== ========================

Anything else (timeouts, 5xx, refused connections, an extractor that fails) is an ``error``: not evidence of
anything, retried at the next slot. For the source: gone if any part is gone, else changed if any part changed,
else error if any part failed, else still online. A source already gone has "returned" when every part is
online again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalogue import store as st
from archiver.catalogue.models import Artifact, Capture, MediaItem, Source, SourceCheck, WarcFile
from archiver.errors import UrlError
from archiver.recheck_probe import MediaProbe, PageText, WebProbe, identity_key, stored_page
from archiver.urls import identify

STILL_ONLINE, CHANGED, GONE, ERROR = "still-online", "changed", "gone", "error"


@dataclass(frozen=True)
class Baseline:
    source_id: int
    url: str
    status: str
    platform_item: bool
    direct_media: bool
    web_capture_id: int | None
    page_sha256: str | None
    page_record: tuple[Path, int, int] | None  # WARC path, offset, length of the page's response record
    known_text_sha256: str | None  # of the same capture's page, from an earlier check (saves a read-back)
    media_capture_id: int | None
    media_identities: tuple[dict[str, str | None], ...]

    @property
    def probe_web(self) -> bool:
        # A direct media URL is fetched by the media capturer only (as the capture job does): a page probe
        # would download the video.
        return not self.direct_media

    @property
    def probe_media(self) -> bool:
        return self.direct_media or self.platform_item or self.media_capture_id is not None


def load_baseline(s: Session, source_id: int, warc_dir: Path) -> Baseline | None:
    src = s.get(Source, source_id)
    if src is None or src.url is None:
        return None
    try:
        ref = identify(src.url)
        direct = ref.platform is None and ref.kind == "video"
    except UrlError:
        direct = False

    def newest(method: str) -> Capture | None:
        return s.scalars(
            select(Capture)
            .where(Capture.source_id == source_id, Capture.method == method, Capture.outcome == "ok")
            .order_by(Capture.id.desc())
            .limit(1)
        ).first()

    web, media = newest("web"), newest("media")
    page_sha, record, known = None, None, None
    if web is not None:
        row = s.execute(
            select(Artifact.payload_sha256, WarcFile.name, Artifact.offset, Artifact.length)
            .join(WarcFile, WarcFile.id == Artifact.warc_file_id)
            .where(Artifact.capture_id == web.id, Artifact.role == "page")
            .order_by(Artifact.id)
            .limit(1)
        ).first()
        if row is not None:
            page_sha, record = row[0], (warc_dir / row[1], int(row[2]), int(row[3]))
        known = s.scalar(
            select(SourceCheck.previous_text_sha256)
            .where(SourceCheck.previous_capture_id == web.id, SourceCheck.previous_text_sha256.is_not(None))
            .order_by(SourceCheck.id.desc())
            .limit(1)
        )
    identities: tuple[dict[str, str | None], ...] = ()
    if media is not None:
        items = s.scalars(select(MediaItem).where(MediaItem.capture_id == media.id).order_by(MediaItem.id)).all()
        identities = _sorted(
            identity_key({"platform": i.platform, "item_id": i.item_id, "title": i.title, "duration": i.duration})
            for i in items
        )
    return Baseline(
        source_id=source_id,
        url=src.url,
        status=src.status,
        platform_item=src.platform is not None or src.kind == "video",
        direct_media=direct,
        web_capture_id=web.id if web is not None else None,
        page_sha256=page_sha,
        page_record=record,
        known_text_sha256=known,
        media_capture_id=media.id if media is not None else None,
        media_identities=identities,
    )


def _sorted(items: Any) -> tuple[dict[str, str | None], ...]:
    return tuple(sorted(items, key=lambda i: (i["platform"] or "", i["item_id"] or "")))


@dataclass(frozen=True)
class Part:
    """One method's verdict, with what the ``source_checks`` row records."""

    method: str  # web | media
    result: str  # still-online | changed | gone | error
    reason: str
    http_status: int | None = None
    url: str | None = None
    payload_sha256: str | None = None
    previous_sha256: str | None = None
    text_sha256: str | None = None
    previous_text_sha256: str | None = None
    previous_capture_id: int | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def judge_web(base: Baseline, probe: WebProbe) -> Part:
    common: dict[str, Any] = {
        "method": "web",
        "http_status": probe.http_status,
        "url": probe.final_url,
        "payload_sha256": probe.payload_sha256,
        "previous_sha256": base.page_sha256,
        "text_sha256": probe.text.sha256,
        "previous_capture_id": base.web_capture_id,
        "details": {"fetch_outcome": probe.fetch_outcome, "text_method": probe.text.method},
    }
    if probe.outcome == "gone":
        return Part(result=GONE, reason=f"HTTP {probe.http_status}", error=probe.error, **common)
    if probe.outcome != "ok":
        return Part(result=ERROR, reason=probe.error or probe.fetch_outcome, error=probe.error, **common)
    if base.page_sha256 is None:
        return Part(result=STILL_ONLINE, reason="online; no earlier page to compare with", **common)
    if probe.payload_sha256 == base.page_sha256:
        return Part(result=STILL_ONLINE, reason="same payload", **common)
    previous = _previous_text(base)
    common["previous_text_sha256"] = previous.sha256
    if previous.sha256 is not None and previous.sha256 == probe.text.sha256:
        return Part(result=STILL_ONLINE, reason="payload differs, main text the same", **common)
    if previous.sha256 is None and probe.text.sha256 is not None and base.page_record is not None:
        common["details"]["previous_text"] = "the stored page could not be read back; payloads compared"
    return Part(result=CHANGED, reason="payload and main text differ", **common)


def _previous_text(base: Baseline) -> PageText:
    if base.known_text_sha256 is not None:
        return PageText(base.known_text_sha256, "earlier check")
    if base.page_record is None:
        return PageText(None, None)
    path, offset, length = base.page_record
    return stored_page(path, offset, length, base.page_sha256).text


def judge_media(base: Baseline, probe: MediaProbe) -> Part:
    common: dict[str, Any] = {
        "method": "media",
        "url": base.url,
        "previous_capture_id": base.media_capture_id,
        "details": {
            "media_outcome": probe.outcome,
            "identities": list(probe.identities),
            "previous_identities": list(base.media_identities),
            "attempts": list(probe.attempts),
        },
    }
    if probe.outcome == "removed":
        if base.platform_item or base.direct_media:
            return Part(result=GONE, reason=probe.evidence or "removed", error=probe.evidence, **common)
        # An article whose embedded video was removed is still online; capturing it again records the removal.
        return Part(result=CHANGED, reason=f"embedded media removed: {probe.evidence}", **common)
    if probe.outcome != "ok":
        return Part(result=ERROR, reason=probe.evidence or probe.outcome, error=probe.evidence, **common)
    if base.media_capture_id is None:
        return Part(result=CHANGED, reason="media available that the archive does not hold", **common)
    if _sorted(probe.identities) == base.media_identities:
        return Part(result=STILL_ONLINE, reason="same items (id, title, duration)", **common)
    return Part(result=CHANGED, reason="different items (id, title or duration)", **common)


def verdict(base: Baseline, parts: list[Part]) -> str:
    """The source's verdict from its parts (module doc). For a gone source: gone unless every part is online."""
    results = {p.result for p in parts}
    if base.status == st.GONE:
        if parts and results <= {STILL_ONLINE, CHANGED}:
            return CHANGED  # returned: captured again
        return ERROR if results == {ERROR} else GONE
    if GONE in results:
        return GONE
    if CHANGED in results:
        return CHANGED
    if ERROR in results or not parts:
        return ERROR
    return STILL_ONLINE
