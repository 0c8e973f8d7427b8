"""The capture run: what ``archiver run`` and ``archiver capture`` do.

Order of durability, so that a kill at any moment leaves the catalogue and the WARC files consistent:

1. a Capture row is committed as ``running`` before any network traffic;
2. the records are written and fsynced (:meth:`WarcSink.write_group`);
3. only then one transaction adds the Artifact rows, ends the Capture and appends the custody events.

A kill between 2 and 3 leaves records no row points at (harmless, reported by verify) and a ``running``
capture, which the next run marks ``interrupted`` and retries. A kill during 2 leaves an ``.open`` WARC file,
which :meth:`CaptureJob.recover` cuts back to its last complete record and closes.
"""

from __future__ import annotations

import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import version as dist_version
from pathlib import Path
from queue import Queue
from typing import Any

import requests
from sqlalchemy import func, select

from archiver import SOFTWARE, __version__, custody, keys
from archiver.archive import Archive
from archiver.capture.citations import extract_citations
from archiver.capture.fetch import Fetcher, FetchSettings, Outcome, exchange_records
from archiver.capture.gate import HostGate
from archiver.capture.media import MediaCapturer, MediaSettings, media_candidate
from archiver.capture.web import (
    HTML_TYPES,
    PageCapture,
    RequisiteLimits,
    WebCapturer,
    charset,
    decoded_body,
    media_type,
)
from archiver.capture.ytdlp_transport import check_ffmpeg, sweep_temp
from archiver.catalogue import store as st
from archiver.catalogue.models import Capture, MediaItem, Source, WarcFile
from archiver.catalogue.store import SourceRequest, Store
from archiver.catalogue.warcs import artifact_from_ref, record_closed_warc
from archiver.errors import ArchiverError
from archiver.integrity import receipts
from archiver.urls import identify, normalise
from archiver.warc.reader import scan_file
from archiver.warc.records import REQUEST, RecordRef, RecordSpec
from archiver.warc.repair import repair_open_files
from archiver.warc.writer import WarcSink

GONE_STATUSES = frozenset({404, 410})
MAX_FAILED_ATTEMPTS = 3
MAX_CITATION_DEPTH = 1


@cache
def _versions() -> tuple[tuple[str, str], ...]:
    return (
        ("archiver", __version__),
        ("python", platform.python_version()),
        ("requests", requests.__version__),
        ("urllib3", dist_version("urllib3")),
    )


def tool_versions() -> dict[str, str]:
    return dict(_versions())


@dataclass(frozen=True)
class CaptureSummary:
    source_id: int
    capture_id: int
    url: str
    outcome: str  # ok | failed | gone
    http_status: int | None
    final_url: str | None
    error: str | None
    records: int
    bytes: int
    discovered: int = 0
    methods: int = 1  # captures made of this source in this run (web, media)


@dataclass
class RunSummary:
    captures: list[CaptureSummary] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    interrupted: int = 0
    closed_warcs: list[str] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    integrity: dict[str, Any] = field(default_factory=dict)  # receipts timestamped, checkpoint (jobs.seal)

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.captures if c.outcome == outcome)

    def as_dict(self) -> dict[str, Any]:
        return {
            "captured": self.count("ok"),
            "failed": self.count("failed"),
            "gone": self.count("gone"),
            "discovered": sum(c.discovered for c in self.captures),
            "records": sum(c.records for c in self.captures),
            "bytes": sum(c.bytes for c in self.captures),
            "repaired_warcs": self.repaired,
            "interrupted_captures": self.interrupted,
            "closed_warcs": self.closed_warcs,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "integrity": self.integrity,
            "captures": [c.__dict__ for c in self.captures],
        }


ProgressCallback = Callable[[str, Any], None]


class CaptureJob:
    def __init__(
        self,
        archive: Archive,
        *,
        workers: int | None = None,
        fetch_settings: FetchSettings | None = None,
        requisites: RequisiteLimits | None = None,
        gate: HostGate | None = None,
        progress: ProgressCallback | None = None,
        follow_citations: bool | None = None,
        media: bool = True,
        media_settings: MediaSettings | None = None,
    ) -> None:
        self.archive = archive
        net = archive.settings.network
        self.workers = workers or net.workers
        self.fetch_settings = fetch_settings or FetchSettings(
            connect_timeout=net.connect_timeout,
            read_timeout=net.read_timeout,
            total_timeout=net.total_timeout,
            max_body=net.max_body,
            max_redirects=net.max_redirects,
            retries=net.retries,
            proxy=net.proxy,
            headers_by_domain=archive.settings.credentials,
        )
        self.gate = gate or HostGate(net.per_host, net.per_host_delay)
        self.fetcher = Fetcher(self.fetch_settings, archive.clock, archive.ids)
        self.web = WebCapturer(self.fetcher, self.gate, requisites)
        self.signer = keys.load_signer(archive.settings.key_dir)
        self.media_temp = archive.settings.tmp_dir / "media"
        self.media: MediaCapturer | None = None
        if media:
            # Without ffmpeg, HLS downloads silently produce broken files: refuse to start instead.
            check_ffmpeg()
            self.media = MediaCapturer(
                self.fetch_settings,
                media_settings
                or MediaSettings(
                    max_filesize=archive.settings.media_max_filesize, cookies_file=archive.settings.cookies_file
                ),
                temp_parent=self.media_temp,
                clock=archive.clock,
                ids=archive.ids,
            )
        self.progress = progress or (lambda _kind, _data: None)
        self.follow_override = follow_citations
        self._lock = threading.Lock()
        self._warc_ids: dict[str, int] = {}
        self._summary = RunSummary()
        self._discovered: dict[int, list[int]] = {}  # source id -> sources its page cited, to capture next
        self.sink = WarcSink(
            archive.settings.warc_dir,
            prefix=archive.settings.warc_prefix,
            clock=archive.clock,
            ids=archive.ids,
            max_size=archive.settings.warc_max_size,
            warcinfo={
                "software": SOFTWARE,
                "collector": archive.settings.collector,
                "egress": self.fetch_settings.egress,
                "capture-settings": ", ".join(f"{k}={v}" for k, v in sorted(archive.settings.public_dict().items())),
            },
            on_close=self._on_close,
        )

    # -- recovery --------------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Repair ``.open`` WARC files left by a crash; mark captures that never finished as interrupted."""
        sweep_temp(self.media_temp)  # download directories of a killed run
        results = repair_open_files(self.archive.settings.warc_dir, self.archive.clock)
        with self.archive.session() as s:
            for r in results:
                # A file with no complete record is kept as ``.damaged`` (never deleted) and never served as a WARC.
                status = "damaged" if r.damaged else "repaired"
                row = s.scalar(select(WarcFile).where(WarcFile.name == r.name))
                if row is None:
                    row = WarcFile(name=r.name, status=status, opened_at=None)
                    s.add(row)
                row.status, row.sha256, row.size, row.records = status, r.sha256, r.size, r.kept_records
                row.closed_at = r.repaired_at
                custody.append(
                    s,
                    self.archive.clock,
                    actor=self.archive.actor,
                    action="warc.repaired",
                    subject=f"warc:{r.name}",
                    details={
                        "sha256": r.sha256,
                        "size": r.size,
                        "records_kept": r.kept_records,
                        "bytes_cut": r.cut_bytes,
                        "cut_bytes_kept_in": Path(r.cut_path).name if r.cut_path else None,
                        "damaged": r.damaged,
                    },
                )
                self._summary.repaired.append(r.name)
            # A kill between a file's close (fsync, read-only, rename) and the catalogue's record of it leaves a
            # row "open" whose file is already closed on disk: record it now, from the bytes on disk.
            warc_dir = self.archive.settings.warc_dir
            for row in s.scalars(select(WarcFile).where(WarcFile.status == "open")).all():
                path = warc_dir / row.name
                if (warc_dir / f"{row.name}.open").exists() or not path.exists():
                    continue  # still being written by another process, or gone: verify reports it
                check = scan_file(path)
                record_closed_warc(
                    s,
                    self.archive.clock,
                    actor=self.archive.actor,
                    name=row.name,
                    sha256=check.sha256,
                    size=check.size,
                    records=check.records,
                    opened_at=row.opened_at,
                    closed_at=self.archive.clock.now(),
                    recorded_by="recovery after an interrupted close",
                )
            running = s.scalars(select(Capture).where(Capture.outcome == "running")).all()
            for cap in running:
                cap.outcome = "interrupted"
                cap.ended_at = self.archive.clock.now()
                cap.error = "interrupted: the archiver stopped before this capture was committed; retried"
            self._summary.interrupted = len(running)

    # -- selection -------------------------------------------------------------------------------------------

    def pending_sources(self) -> list[int]:
        failed_counts = (
            select(Capture.source_id, func.count().label("n"))
            .where(Capture.outcome == "failed")
            .group_by(Capture.source_id)
            .subquery()
        )
        with self.archive.session() as s:
            rows = s.execute(
                select(Source.id, Source.status, failed_counts.c.n)
                .outerjoin(failed_counts, failed_counts.c.source_id == Source.id)
                .where(Source.url.is_not(None), Source.status.in_([st.PENDING, st.FAILED]))
                .order_by(Source.depth, Source.id)
            ).all()
        return [sid for sid, status, n in rows if status == st.PENDING or (n or 0) < MAX_FAILED_ATTEMPTS]

    # -- the run ---------------------------------------------------------------------------------------------

    def run(self, source_ids: Iterable[int] | None = None, *, max_time: float | None = None) -> RunSummary:
        started = time.monotonic()
        deadline = started + max_time if max_time else None
        self.recover()
        queue = list(source_ids) if source_ids is not None else self.pending_sources()
        self.progress("start", len(queue))
        submitted: set[int] = set()
        waiting: deque[int] = deque(queue)
        done: Queue[Future[CaptureSummary | None]] = Queue()
        in_flight = 0
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="capture") as pool:

                def fill() -> None:
                    """Keep a bounded window in flight, so --max-time can stop what has not started."""
                    nonlocal in_flight
                    while waiting and in_flight < 2 * self.workers:
                        if deadline is not None and time.monotonic() > deadline:
                            self._summary.stopped_early = True
                            waiting.clear()  # still pending in the catalogue: the next run takes them
                            return
                        sid = waiting.popleft()
                        if sid in submitted:
                            continue
                        submitted.add(sid)
                        pool.submit(self._capture_guarded, sid).add_done_callback(done.put)
                        in_flight += 1

                fill()
                while in_flight:
                    result = done.get().result()
                    in_flight -= 1
                    if result is not None:
                        self._summary.captures.append(result)
                        self.progress("captured", result)
                        for new_id in self._discovered.pop(result.source_id, []):
                            self.progress("discovered", new_id)
                            waiting.append(new_id)
                    fill()
        finally:
            self.sink.close()
            self.fetcher.close()
            if self.media is not None:
                self.media.close()
        self._summary.seconds = time.monotonic() - started
        return self._summary

    def _capture_guarded(self, source_id: int) -> CaptureSummary | None:
        try:
            return self.capture_source(source_id)
        except ArchiverError as exc:
            self.progress("error", f"source {source_id}: {exc.message}")
            return None

    def capture_url(self, url: str, incident_id: str | None = None, *, follow_citations: bool = False) -> RunSummary:
        """``archiver capture URL``: add the URL as a source (of the incident, if given), capture it now."""
        req = SourceRequest(url=normalise(url), follow_citations=follow_citations)
        with self.archive.store() as store:
            if incident_id is not None:
                src, _ = store.add_source(incident_id, req)
            else:
                src, _ = store.ensure_source(req)
            sid = src.id
        return self.run([sid])

    def capture_source(self, source_id: int) -> CaptureSummary:
        """Web capture of the source's page, then media capture when the page or platform suggests media."""
        with self.archive.session() as s:
            src = s.get(Source, source_id)
            if src is None or src.url is None:
                raise ArchiverError(f"source {source_id} has no URL to capture")
            url, follow, depth = src.url, src.follow_citations, src.depth
            platform_item = src.platform is not None or src.kind == "video"
        if self.follow_override is not None:
            follow = self.follow_override
        ref = identify(url)
        # A direct media URL is fetched once, by the media capturer: a web capture would download it twice.
        direct_media = self.media is not None and ref.platform is None and ref.kind == "video"
        results: list[_Part] = []
        page_type, page_html = None, None
        if not direct_media:
            capture_id = self._begin(source_id, "web", url, tool_versions())
            page = self.web.capture(url)
            try:
                final = page.main.final
                page_type = media_type(final) or None
                if final is not None and page_type in HTML_TYPES:
                    page_html = decoded_body(final)
                refs = self._write_page(page)
                citations = self._citations(page) if follow and depth < MAX_CITATION_DEPTH else []
                results.append(self._finish_web(source_id, capture_id, url, page, refs, citations, depth))
            finally:
                page.close()
        if self.media is not None and (direct_media or media_candidate(url, page_type, page_html)):
            results.append(self._capture_media(source_id, url, platform_item))
        return _combine(source_id, url, results)

    def _begin(self, source_id: int, method: str, url: str, tools: dict[str, str]) -> int:
        """Commit the Capture row as ``running`` before any traffic: a kill leaves a trace the next run sees."""
        arch = self.archive
        with arch.session() as s:
            cap = Capture(
                source_id=source_id,
                method=method,
                started_at=arch.clock.now(),
                outcome="running",
                requested_url=url,
                collector=arch.settings.collector,
                egress=self.fetch_settings.egress,
                tools=tools,
            )
            s.add(cap)
            s.flush()
            return cap.id

    def _write_page(self, page: PageCapture) -> list[tuple[str, str | None, RecordRef]]:
        """All records of the page in one group (contiguous, one fsync), each with its role and media type."""
        specs: list[tuple[str, str | None, RecordSpec]] = []
        main_ids = {id(ex) for ex in page.main.exchanges}
        final = page.main.final
        for ex in page.exchanges:
            role = ("page" if ex is final else "redirect") if id(ex) in main_ids else "requisite"
            for spec in exchange_records(ex, self.sink.new_record_id):
                if spec.type == REQUEST:
                    specs.append(("request", None, spec))
                else:
                    specs.append((role, media_type(ex) or None, spec))
        return self._write(specs)

    def _write(self, specs: list[tuple[str, str | None, RecordSpec]]) -> list[tuple[str, str | None, RecordRef]]:
        refs = self.sink.write_group([spec for _, _, spec in specs])
        return [(role, mtype, ref) for (role, mtype, _), ref in zip(specs, refs, strict=True)]

    def _citations(self, page: PageCapture) -> list[Any]:
        final = page.main.final
        if final is None or page.main.outcome != Outcome.OK or media_type(final) not in HTML_TYPES:
            return []
        return list(extract_citations(decoded_body(final), page.main.final_url, encoding=charset(final)))

    def _warc_id(self, name: str) -> int:
        with self._lock:
            if name in self._warc_ids:
                return self._warc_ids[name]
            with self.archive.session() as s:
                row = s.scalar(select(WarcFile).where(WarcFile.name == name))
                if row is None:
                    row = WarcFile(name=name, status="open", opened_at=self.archive.clock.now())
                    s.add(row)
                    s.flush()
                self._warc_ids[name] = row.id
            return self._warc_ids[name]

    def _finish_web(
        self,
        source_id: int,
        capture_id: int,
        url: str,
        page: PageCapture,
        refs: list[tuple[str, str | None, RecordRef]],
        citations: list[Any],
        depth: int,
    ) -> _Part:
        main = page.main
        if main.outcome == Outcome.OK:
            outcome = "ok"
        elif main.outcome == Outcome.HTTP_ERROR and main.status in GONE_STATUSES:
            outcome = "gone"
        else:
            outcome = "failed"
        details = {
            "fetch_outcome": str(main.outcome),
            "requisites": len(page.requisites),
            "truncated": [ex.url for ex in page.exchanges if ex.truncated],
        }
        return self._finish(
            source_id,
            capture_id,
            url=url,
            outcome=outcome,
            status_on_outcome={"ok": st.CAPTURED, "gone": st.GONE, "failed": st.FAILED},
            http_status=main.status,
            final_url=main.final_url,
            error=main.error,
            refs=refs,
            details=details,
            citations=citations,
            depth=depth,
        )

    def _capture_media(self, source_id: int, url: str, platform_item: bool) -> _Part:
        assert self.media is not None
        capture_id = self._begin(source_id, "media", url, tool_versions())
        result = self.media.capture(url)
        try:
            refs = self._write(list(result.records)) if result.records else []
            # The platform's removal of a post or video is the source being gone; an article whose embedded
            # video was removed is still online (its web capture decides).
            outcome = {"ok": "ok", "removed": "gone" if platform_item else "failed"}.get(result.outcome, "failed")
            if result.outcome == "no-media":
                outcome = "no-media"
            identity = result.identity
            details: dict[str, Any] = {
                "media_outcome": result.outcome,
                "evidence": result.evidence,
                "attempts": result.attempts,
                "identity": _identity_dict(identity),
                "items": [
                    {"format": i.format_id, "sha256": i.sha256, "size": i.size, "record": i.media_record_id}
                    for i in result.items
                ],
            }
            statuses = {"ok": st.CAPTURED, "gone": st.GONE}
            return self._finish(
                source_id,
                capture_id,
                url=url,
                outcome=outcome,
                status_on_outcome=statuses,
                http_status=None,
                final_url=identity.webpage_url if identity and identity.webpage_url else url,
                error=result.error,
                refs=refs,
                details=details,
                tools=result.tools,
                conversions=result.conversions,
                media_items=[_media_item(i) for i in result.items],
            )
        finally:
            result.close()

    def _finish(
        self,
        source_id: int,
        capture_id: int,
        *,
        url: str,
        outcome: str,
        status_on_outcome: dict[str, str],
        http_status: int | None,
        final_url: str | None,
        error: str | None,
        refs: list[tuple[str, str | None, RecordRef]],
        details: dict[str, Any],
        citations: list[Any] | None = None,
        depth: int = 0,
        tools: dict[str, str] | None = None,
        conversions: list[dict[str, str]] | None = None,
        media_items: list[dict[str, Any]] | None = None,
    ) -> _Part:
        """One transaction: artifacts, the capture's end, the source's status, custody events, cited sources."""
        arch = self.archive
        warc_ids = {ref.warc_file: self._warc_id(ref.warc_file) for _, _, ref in refs}
        now = arch.clock.now()
        discovered: list[int] = []
        issued = None
        if refs:
            # The receipt lists the records just written (their offsets are known now); it is written and fsynced
            # outside any transaction (a rotation's on_close opens its own session), then recorded with the rows.
            with arch.session() as s:
                facts = receipts.load_facts(
                    s,
                    capture_id,
                    ended_at=now,
                    outcome=outcome,
                    http_status=http_status,
                    final_url=final_url,
                    extra_tools=tools,
                )
            issued = receipts.write_receipt(self.sink, self.signer, facts, [ref for _, _, ref in refs])
            warc_ids.setdefault(issued.ref.warc_file, self._warc_id(issued.ref.warc_file))
        with arch.session() as s:
            cap = s.get(Capture, capture_id)
            src = s.get(Source, source_id)
            assert cap is not None and src is not None
            for role, mtype, ref in refs:
                s.add(
                    artifact_from_ref(
                        ref, capture_id=capture_id, role=role, warc_file_id=warc_ids[ref.warc_file], media_type=mtype
                    )
                )
            cap.ended_at, cap.outcome, cap.final_url, cap.http_status, cap.error = (
                now,
                outcome,
                final_url,
                http_status,
                error,
            )
            cap.details = details
            if tools:
                cap.tools = {**cap.tools, **tools}
            new_status = status_on_outcome.get(outcome)
            if new_status is not None and not (new_status == st.FAILED and src.status == st.CAPTURED):
                src.status = new_status
            if outcome == "ok":
                src.last_captured_at = now
            if outcome == "gone" and src.gone_at is None:
                src.gone_at = now
            event = {"ok": "collected", "gone": "gone"}.get(outcome, "capture.failed")
            self._event(
                s,
                event,
                source_id,
                capture=capture_id,
                method=cap.method,
                url=url,
                final_url=final_url,
                http_status=http_status,
                outcome=outcome,
                error=error,
                evidence=details.get("evidence"),
                egress=cap.egress,
                started_at=_iso(cap.started_at),
                ended_at=_iso(now),
            )
            if refs:
                self._event(s, "stored", source_id, capture=capture_id, records=[_record_dict(r) for _, _, r in refs])
            if issued is not None:
                receipts.record_receipt(
                    s, arch.clock, issued, warc_file_id=warc_ids[issued.ref.warc_file], actor=arch.actor
                )
            for item in media_items or []:
                s.add(MediaItem(capture_id=capture_id, source_id=source_id, captured_at=now, **item))
            for conv in conversions or []:
                self._event(s, "converted", source_id, capture=capture_id, **conv)
            if citations:
                store = Store(s, arch.clock, arch.actor)
                for c in citations:
                    for incident in src.incidents:
                        new, added = store.add_source(
                            incident.id,
                            SourceRequest(
                                url=c.url,
                                cited_by_id=source_id,
                                cited_as=c.anchor_text or None,
                                note=c.context or None,
                                discovered_from_id=source_id,
                                depth=depth + 1,
                            ),
                        )
                        if added:
                            discovered.append(new.id)
            final_status = src.status
        with self._lock:
            self._discovered.setdefault(source_id, []).extend(discovered)
        return _Part(
            capture_id,
            outcome,
            final_status,
            http_status,
            final_url,
            error,
            len(refs),
            sum(r.length for _, _, r in refs),
            discovered,
        )

    def _event(self, s: Any, action: str, source_id: int, **details: Any) -> None:
        custody.append(
            s,
            self.archive.clock,
            actor=self.archive.actor,
            action=action,
            subject=f"source:{source_id}",
            details=details,
        )

    def _on_close(self, closed: Any) -> None:
        self._warc_id(closed.name)
        with self.archive.session() as s:
            record_closed_warc(
                s,
                self.archive.clock,
                actor=self.archive.actor,
                name=closed.name,
                sha256=closed.sha256,
                size=closed.size,
                records=closed.records,
                opened_at=closed.opened_at,
                closed_at=closed.closed_at,
            )
        self._summary.closed_warcs.append(closed.name)


@dataclass(frozen=True)
class _Part:
    """What one capture (web or media) of a source did."""

    capture_id: int
    outcome: str
    source_status: str
    http_status: int | None
    final_url: str | None
    error: str | None
    records: int
    bytes: int
    discovered: list[int]


def _combine(source_id: int, url: str, parts: list[_Part]) -> CaptureSummary:
    """One line per source: its status after all of this run's captures of it."""
    last = parts[-1]
    outcome = {st.CAPTURED: "ok", st.GONE: "gone"}.get(last.source_status, "failed")
    web = parts[0]
    errors = [p.error for p in parts if p.error and p.outcome not in ("ok", "no-media")]
    return CaptureSummary(
        source_id=source_id,
        capture_id=web.capture_id,
        url=url,
        outcome=outcome,
        http_status=web.http_status,
        final_url=web.final_url,
        error="; ".join(errors) or None,
        records=sum(p.records for p in parts),
        bytes=sum(p.bytes for p in parts),
        discovered=sum(len(p.discovered) for p in parts),
        methods=len(parts),
    )


def _record_dict(ref: RecordRef) -> dict[str, Any]:
    return {
        "id": ref.record_id,
        "type": ref.record_type,
        "target": ref.target_uri,
        "warc": ref.warc_file,
        "offset": ref.offset,
        "length": ref.length,
        "block_sha256": ref.block_digest.hex,
        "payload_sha256": ref.payload_digest.hex if ref.payload_digest else None,
    }


def _media_item(item: Any) -> dict[str, Any]:
    """The catalogue row of one downloaded item (a media capture's items without identity are skipped upstream)."""
    ident = item.identity
    fields = {
        k: getattr(ident, k, None)
        for k in ("title", "description", "channel", "channel_id", "uploader", "uploader_id", "upload_time",
                  "upload_date", "view_count", "like_count", "webpage_url")
    }  # fmt: skip
    return {
        "platform": getattr(ident, "platform", None) or "unknown",
        "extractor": getattr(ident, "extractor", None) or "unknown",
        "item_id": getattr(ident, "item_id", None) or "unknown",
        "duration": None if getattr(ident, "duration", None) is None else str(ident.duration),
        "format_id": item.format_id,
        "sha256": item.sha256,
        "size": item.size,
        "media_record_id": item.media_record_id,
        **fields,
    }


def _identity_dict(identity: Any) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {k: (v if isinstance(v, str | int | bool) or v is None else str(v)) for k, v in identity.__dict__.items()}


def _iso(dt: Any) -> str | None:
    from archiver.clock import utc_iso

    return utc_iso(dt) if dt is not None else None
