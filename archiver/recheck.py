"""Re-checks: look at captured sources again on a schedule; record still online, capture again, or mark gone.

One re-check of one source (rules in :mod:`archiver.recheck_judge`):

1. probe: fetch the page alone and/or ask yt-dlp for the media's metadata (:mod:`archiver.recheck_probe`); nothing
   is stored;
2. still online: a ``source_checks`` row and a ``still-online`` custody event, no WARC bytes;
3. changed, or a gone source that came back: the capture job captures it again as a new Capture (records,
   receipt, ``collected``/``stored`` events), then a ``recaptured`` event links the earlier and new captures;
4. gone (HTTP 404/410, a platform's removal message): the capture job captures the removal response into the WARC
   as evidence and marks the source gone (its ``gone`` event carries the status or the platform's words);
5. error (timeout, 5xx, refused): a row with the error, no event; retried at the next slot.

The next check is scheduled from the source's last capture (:mod:`archiver.recheck_schedule`); gone sources follow
the slower ``gone`` schedule from when they went.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver import custody
from archiver.archive import Archive
from archiver.capture.fetch import Fetcher, FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob, ProgressCallback
from archiver.capture.web import WebCapturer
from archiver.catalogue import store as st
from archiver.catalogue.models import Capture, Source, SourceCheck
from archiver.clock import utc_iso
from archiver.errors import ArchiverError
from archiver.recheck_judge import (
    CHANGED,
    ERROR,
    GONE,
    STILL_ONLINE,
    Baseline,
    Part,
    judge_media,
    judge_web,
    load_baseline,
    verdict,
)
from archiver.recheck_probe import MediaProber, probe_web
from archiver.recheck_schedule import RecheckSettings

MIN_RECAPTURE_SECONDS = 1.0  # less time than this left: recaptures wait for the next run (the sources stay due)


# -- the schedule in the catalogue ---------------------------------------------------------------------------


class ScheduleFacts(Protocol):
    """What a source's schedule is computed from: a :class:`Source`, or a row of these columns."""

    @property
    def status(self) -> str: ...
    @property
    def gone_at(self) -> datetime | None: ...
    @property
    def last_checked_at(self) -> datetime | None: ...
    @property
    def last_captured_at(self) -> datetime | None: ...


def next_check(src: ScheduleFacts, settings: RecheckSettings, after: datetime) -> datetime | None:
    """The source's next slot after ``after``: from its last capture, or from when it went for a gone source."""
    if src.status == st.GONE:
        anchor = src.gone_at or src.last_checked_at or after
        return settings.gone.next_after(anchor, max(after, anchor))
    if src.status == st.CAPTURED and src.last_captured_at is not None:
        return settings.schedule.next_after(src.last_captured_at, max(after, src.last_captured_at))
    return None


# -- results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    source_id: int
    url: str
    result: str  # still-online | changed | gone | error
    was_gone: bool  # the source was gone before: "changed" means it returned, "gone" that it still is
    reasons: tuple[str, ...]
    http_status: int | None
    captures: tuple[int, ...]  # made by this check (recapture or removal evidence)
    check_ids: tuple[int, ...]
    next_check_at: str | None
    error: str | None = None


@dataclass
class RecheckSummary:
    checks: list[CheckResult] = field(default_factory=list)
    due: int = 0
    scheduled: int = 0
    skipped: int = 0  # due, but not checked this time (--max-time); still due
    failing: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def count(self, result: str, *, was_gone: bool | None = None) -> int:
        return sum(1 for c in self.checks if c.result == result and (was_gone is None or c.was_gone == was_gone))

    def as_dict(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "checked": len(self.checks),
            "still_online": self.count(STILL_ONLINE),
            "changed": self.count(CHANGED, was_gone=False),
            "gone": self.count(GONE, was_gone=False),
            "still_gone": self.count(GONE, was_gone=True),
            "returned": self.count(CHANGED, was_gone=True),
            "errors": self.count(ERROR),
            "skipped": self.skipped,
            "newly_scheduled": self.scheduled,
            "failing": self.failing,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "checks": [c.__dict__ for c in self.checks],
        }


@dataclass(frozen=True)
class _Probed:
    base: Baseline
    parts: list[Part]
    checked_at: datetime
    result: str


# -- the re-check ----------------------------------------------------------------------------------------------


class Rechecker:
    """Probes in a thread pool through one host gate; captures again through one CaptureJob."""

    def __init__(
        self,
        archive: Archive,
        *,
        workers: int | None = None,
        fetch_settings: FetchSettings | None = None,
        gate: HostGate | None = None,
        media: bool = True,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.archive = archive
        self.settings = archive.settings.recheck
        net = archive.settings.network
        self.workers = workers or net.workers
        # The capture job's fetch settings and host gate serve the probes too (one politeness budget per host).
        # A job without media is cheap; the one that captures again, and the media prober (both look for
        # ffmpeg), are made when first needed.
        base = CaptureJob(archive, workers=self.workers, fetch_settings=fetch_settings, gate=gate, media=False)
        self.fetch_settings, self.gate, self.with_media = base.fetch_settings, base.gate, media
        self._jobs = [base]
        self.web = WebCapturer(Fetcher(self.fetch_settings, archive.clock, archive.ids), self.gate)
        self._media: MediaProber | None = None
        self._lock = threading.Lock()
        self.progress = progress or (lambda _kind, _data: None)
        self.run_id = f"recheck-{archive.ids.uuid()}"

    @property
    def media(self) -> MediaProber | None:
        if not self.with_media:
            return None
        with self._lock:
            if self._media is None:
                self._media = MediaProber(
                    self.fetch_settings,
                    cookies_file=self.archive.settings.cookies_file,
                    temp_parent=self.archive.settings.tmp_dir / "media",
                    clock=self.archive.clock,
                    ids=self.archive.ids,
                )
            return self._media

    def _capture_job(self) -> CaptureJob:
        if not self.with_media:
            return self._jobs[0]
        job = CaptureJob(archive=self.archive, workers=self.workers, fetch_settings=self.fetch_settings, gate=self.gate)
        self._jobs.append(job)
        return job

    def run(self, source_ids: Iterable[int], *, max_time: float | None = None) -> RecheckSummary:
        started = time.monotonic()
        deadline = started + max_time if max_time else None
        ids = list(dict.fromkeys(source_ids))
        summary = RecheckSummary(due=len(ids))
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="recheck") as pool:
                probed = list(pool.map(lambda sid: self._probe(sid, deadline), ids))
            done = [p for p in probed if p is not None]
            summary.skipped = len(ids) - len(done)
            for p in done:
                if p.result in (STILL_ONLINE, ERROR) or (p.result == GONE and p.base.status == st.GONE):
                    summary.checks.append(self._record(p, captures=()))
                    self.progress("rechecked", summary.checks[-1])
            # Changed (or back after being gone), and newly gone: the capture job records the new content or the
            # removal response. Still gone: nothing new to record.
            again = [p for p in done if p.result == CHANGED or (p.result == GONE and p.base.status != st.GONE)]
            self._recapture(again, deadline, summary)
        finally:
            self._close()
        summary.stopped_early = summary.skipped > 0
        summary.failing = self.failing()
        summary.seconds = time.monotonic() - started
        return summary

    def _probe(self, source_id: int, deadline: float | None) -> _Probed | None:
        if deadline is not None and time.monotonic() > deadline:
            return None  # still due: the next run takes it
        with self.archive.reading() as s:
            base = load_baseline(s, source_id, self.archive.settings.warc_dir)
        if base is None:
            return None  # lost its URL since it was selected
        checked_at = self.archive.clock.now()
        parts: list[Part] = []
        try:
            if base.probe_web:
                parts.append(judge_web(base, probe_web(self.web, base.url)))
            # A page that answered 404/410 has said what there is to say; its media is not asked for.
            if base.probe_media and self.media is not None and not any(p.result == GONE for p in parts):
                parts.append(judge_media(base, self.media.probe(base.url)))
        except ArchiverError as exc:  # our own trouble (disk, temporary directory): this check has no answer
            method = "media" if parts or not base.probe_web else "web"
            parts.append(Part(method=method, result=ERROR, reason=exc.message, error=exc.message, url=base.url))
        return _Probed(base, parts, checked_at, verdict(base, parts))

    def _recapture(self, probed: list[_Probed], deadline: float | None, summary: RecheckSummary) -> None:
        if not probed:
            return
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < MIN_RECAPTURE_SECONDS:
            summary.skipped += len(probed)
            return
        with self.archive.session() as s:
            before = {
                p.base.source_id: s.scalar(
                    select(func.coalesce(func.max(Capture.id), 0)).where(Capture.source_id == p.base.source_id)
                )
                or 0
                for p in probed
            }
        job = self._capture_job()
        captured = {c.source_id for c in job.run([p.base.source_id for p in probed], max_time=left).captures}
        for p in probed:
            if p.base.source_id not in captured:
                summary.skipped += 1  # not captured again before --max-time: no row, still due
                continue
            with self.archive.reading() as s:
                new = tuple(
                    s.scalars(
                        select(Capture.id)
                        .where(Capture.source_id == p.base.source_id, Capture.id > before[p.base.source_id])
                        .order_by(Capture.id)
                    )
                )
            summary.checks.append(self._record(p, captures=new))
            self.progress("rechecked", summary.checks[-1])

    def _record(self, p: _Probed, *, captures: tuple[int, ...]) -> CheckResult:
        """One transaction: the check rows, the source's schedule and error count, and the custody event."""
        arch, base = self.archive, p.base
        with arch.session() as s:
            src = s.get(Source, base.source_id)
            assert src is not None
            caps = {c.method: c for c in s.scalars(select(Capture).where(Capture.id.in_(captures)))} if captures else {}
            result = p.result
            if captures:
                ok = any(c.outcome == "ok" for c in caps.values())
                # What the capture found decides: a page that answered 404 to the probe and 200 to the capture
                # (or the reverse) is recorded as the capture saw it.
                result = GONE if src.status == st.GONE else CHANGED if ok else ERROR
            rows = []
            for part in p.parts:
                cap = caps.get(part.method)
                row = SourceCheck(
                    source_id=base.source_id,
                    run_id=self.run_id,
                    checked_at=p.checked_at,
                    method=part.method,
                    result=part.result,
                    http_status=part.http_status,
                    url=part.url,
                    payload_sha256=part.payload_sha256,
                    previous_sha256=part.previous_sha256,
                    text_sha256=part.text_sha256,
                    previous_text_sha256=part.previous_text_sha256,
                    previous_capture_id=part.previous_capture_id,
                    capture_id=cap.id if cap is not None else None,
                    error=part.error,
                    details={**part.details, "reason": part.reason},
                )
                s.add(row)
                rows.append(row)
            s.flush()
            now = arch.clock.now()
            was_gone = base.status == st.GONE
            if result == CHANGED and was_gone and src.status == st.CAPTURED:
                src.gone_at = None  # it came back; a later removal is a new one (history: checks, custody)
            src.last_checked_at = now
            src.check_errors = (src.check_errors or 0) + 1 if result == ERROR else 0
            src.next_check_at = next_check(src, self.settings, now)
            details: dict[str, Any] = {
                "checks": [r.id for r in rows],
                "methods": [part.method for part in p.parts],
                "reasons": [f"{part.method}: {part.reason}" for part in p.parts],
                "checked_at": utc_iso(p.checked_at),
                "next_check_at": utc_iso(src.next_check_at) if src.next_check_at else None,
            }
            if result == STILL_ONLINE:
                details["previous_captures"] = [x for x in (base.web_capture_id, base.media_capture_id) if x]
                details["payload_sha256"] = next((part.payload_sha256 for part in p.parts if part.payload_sha256), None)
                self._event(s, "still-online", base.source_id, details)
            elif result == CHANGED:
                previous = [x for x in (base.web_capture_id, base.media_capture_id) if x]
                details.update(previous_captures=previous, captures=list(captures), returned=was_gone)
                self._event(s, "recaptured", base.source_id, details)
            # gone: the capture job's own "gone" event carries the evidence and the capture holding it.
            return CheckResult(
                source_id=base.source_id,
                url=base.url,
                result=result,
                was_gone=was_gone,
                reasons=tuple(f"{part.method}: {part.reason}" for part in p.parts),
                http_status=next((part.http_status for part in p.parts if part.http_status is not None), None),
                captures=captures,
                check_ids=tuple(r.id for r in rows),
                next_check_at=utc_iso(src.next_check_at) if src.next_check_at else None,
                error="; ".join(part.error for part in p.parts if part.error and part.result == ERROR) or None,
            )

    def _event(self, s: Session, action: str, source_id: int, details: dict[str, Any]) -> None:
        custody.append(
            s,
            self.archive.clock,
            actor=self.archive.actor,
            action=action,
            subject=f"source:{source_id}",
            details=details,
        )

    def failing(self) -> list[dict[str, Any]]:
        """Sources whose last ``report_errors_after`` re-checks all failed."""
        with self.archive.reading() as s:
            rows = s.execute(
                select(Source.id, Source.url, Source.check_errors, Source.last_checked_at)
                .where(Source.check_errors >= self.settings.report_errors_after)
                .order_by(Source.id)
            ).all()
        return [
            {"source_id": r[0], "url": r[1], "errors_in_a_row": r[2], "last_checked_at": r[3] and utc_iso(r[3])}
            for r in rows
        ]

    def _close(self) -> None:
        self.web.fetcher.close()
        if self._media is not None:
            self._media.close()
        for job in self._jobs:  # job.run() closes its sink and fetchers; a job that never ran is closed here
            job.sink.close()
            job.fetcher.close()
            if job.media is not None:
                job.media.close()
