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
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from archiver import SOFTWARE, __version__, custody
from archiver.archive import Archive
from archiver.capture.citations import extract_citations
from archiver.capture.fetch import Fetcher, FetchSettings, Outcome, exchange_records
from archiver.capture.gate import HostGate
from archiver.capture.web import (
    HTML_TYPES,
    PageCapture,
    RequisiteLimits,
    WebCapturer,
    charset,
    decoded_body,
    media_type,
)
from archiver.catalogue import store as st
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile
from archiver.catalogue.store import SourceRequest, Store
from archiver.errors import ArchiverError
from archiver.urls import normalise
from archiver.warc.records import REQUEST, RecordRef, RecordSpec
from archiver.warc.repair import repair_open_files
from archiver.warc.writer import WarcSink

GONE_STATUSES = frozenset({404, 410})
MAX_FAILED_ATTEMPTS = 3
MAX_CITATION_DEPTH = 1


def tool_versions() -> dict[str, str]:
    return {
        "archiver": __version__,
        "python": platform.python_version(),
        "requests": requests.__version__,
        "urllib3": dist_version("urllib3"),
    }


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


@dataclass
class RunSummary:
    captures: list[CaptureSummary] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    interrupted: int = 0
    closed_warcs: list[str] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

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
        )
        self.gate = gate or HostGate(net.per_host, net.per_host_delay)
        self.fetcher = Fetcher(self.fetch_settings, archive.clock, archive.ids)
        self.web = WebCapturer(self.fetcher, self.gate, requisites)
        self.progress = progress or (lambda _kind, _data: None)
        self.follow_override = follow_citations
        self._lock = threading.Lock()
        self._warc_ids: dict[str, int] = {}
        self._summary = RunSummary()
        self._discovered: dict[int, list[int]] = {}  # capture id -> sources its page cited, to capture next
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
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="capture") as pool:
                futures: set[Future[CaptureSummary | None]] = set()

                def submit(sid: int) -> None:
                    if sid in submitted:
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        self._summary.stopped_early = True
                        return
                    submitted.add(sid)
                    futures.add(pool.submit(self._capture_guarded, sid))

                for sid in queue:
                    submit(sid)
                while futures:
                    done = next(iter(_wait_any(futures)))
                    futures.discard(done)
                    result = done.result()
                    if result is None:
                        continue
                    self._summary.captures.append(result)
                    self.progress("captured", result)
                    for new_id in self._discovered.pop(result.capture_id, []):
                        self.progress("discovered", new_id)
                        submit(new_id)
        finally:
            self.sink.close()
            self.fetcher.close()
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
        arch = self.archive
        with arch.session() as s:
            src = s.get(Source, source_id)
            if src is None or src.url is None:
                raise ArchiverError(f"source {source_id} has no URL to capture")
            url, follow, depth = src.url, src.follow_citations, src.depth
            cap = Capture(
                source_id=source_id,
                method="web",
                started_at=arch.clock.now(),
                outcome="running",
                requested_url=url,
                collector=arch.settings.collector,
                egress=self.fetch_settings.egress,
                tools=tool_versions(),
            )
            s.add(cap)
            s.flush()
            capture_id = cap.id
        if self.follow_override is not None:
            follow = self.follow_override
        page = self.web.capture(url)
        try:
            refs = self._write(page)
            citations = self._citations(page) if follow and depth < MAX_CITATION_DEPTH else []
            return self._commit(source_id, capture_id, url, page, refs, citations, depth)
        finally:
            page.close()

    def _write(self, page: PageCapture) -> list[tuple[str, str | None, RecordRef]]:
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

    def _commit(
        self,
        source_id: int,
        capture_id: int,
        url: str,
        page: PageCapture,
        refs: list[tuple[str, str | None, RecordRef]],
        citations: list[Any],
        depth: int,
    ) -> CaptureSummary:
        arch = self.archive
        main = page.main
        status = main.status
        if main.outcome == Outcome.OK:
            outcome = "ok"
        elif main.outcome == Outcome.HTTP_ERROR and status in GONE_STATUSES:
            outcome = "gone"
        else:
            outcome = "failed"
        warc_ids = {ref.warc_file: self._warc_id(ref.warc_file) for _, _, ref in refs}
        now = arch.clock.now()
        discovered: list[int] = []
        with arch.session() as s:
            cap = s.get(Capture, capture_id)
            src = s.get(Source, source_id)
            assert cap is not None and src is not None
            for role, mtype, ref in refs:
                s.add(
                    Artifact(
                        capture_id=capture_id,
                        role=role,
                        record_type=ref.record_type,
                        record_id=ref.record_id,
                        target_uri=ref.target_uri,
                        media_type=mtype,
                        size=ref.payload_length,
                        payload_sha256=ref.payload_digest.hex if ref.payload_digest else None,
                        block_sha256=ref.block_digest.hex,
                        warc_file_id=warc_ids[ref.warc_file],
                        offset=ref.offset,
                        length=ref.length,
                        record_date=ref.date,
                    )
                )
            cap.ended_at = now
            cap.outcome = outcome
            cap.final_url = main.final_url
            cap.http_status = status
            cap.error = main.error
            cap.details = {
                "fetch_outcome": str(main.outcome),
                "requisites": len(page.requisites),
                "truncated": [ex.url for ex in page.exchanges if ex.truncated],
            }
            src.status = {"ok": st.CAPTURED, "gone": st.GONE, "failed": st.FAILED}[outcome]
            if outcome == "ok":
                src.last_captured_at = now
            if outcome == "gone" and src.gone_at is None:
                src.gone_at = now
            event = {"ok": "collected", "gone": "gone", "failed": "capture.failed"}[outcome]
            custody.append(
                s,
                arch.clock,
                actor=arch.actor,
                action=event,
                subject=f"source:{source_id}",
                details={
                    "capture": capture_id,
                    "url": url,
                    "final_url": main.final_url,
                    "http_status": status,
                    "outcome": str(main.outcome),
                    "error": main.error,
                    "egress": main.egress,
                    "started_at": _iso(cap.started_at),
                    "ended_at": _iso(now),
                },
            )
            if refs:
                custody.append(
                    s,
                    arch.clock,
                    actor=arch.actor,
                    action="stored",
                    subject=f"source:{source_id}",
                    details={
                        "capture": capture_id,
                        "records": [
                            {
                                "id": ref.record_id,
                                "type": ref.record_type,
                                "target": ref.target_uri,
                                "warc": ref.warc_file,
                                "offset": ref.offset,
                                "length": ref.length,
                                "block_sha256": ref.block_digest.hex,
                                "payload_sha256": ref.payload_digest.hex if ref.payload_digest else None,
                            }
                            for _, _, ref in refs
                        ],
                    },
                )
            if citations:
                store = Store(s, arch.clock, arch.actor)
                incident_ids = [i.id for i in src.incidents]
                for c in citations:
                    for incident_id in incident_ids:
                        new, added = store.add_source(
                            incident_id,
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
        with self._lock:
            self._discovered[capture_id] = discovered
        return CaptureSummary(
            source_id=source_id,
            capture_id=capture_id,
            url=url,
            outcome=outcome,
            http_status=status,
            final_url=main.final_url,
            error=main.error,
            records=len(refs),
            bytes=sum(ref.length for _, _, ref in refs),
            discovered=len(discovered),
        )

    def _on_close(self, closed: Any) -> None:
        warc_id = self._warc_id(closed.name)
        with self.archive.session() as s:
            row = s.get(WarcFile, warc_id)
            assert row is not None
            row.sha256, row.size, row.records = closed.sha256, closed.size, closed.records
            row.opened_at, row.closed_at, row.status = closed.opened_at, closed.closed_at, "closed"
            custody.append(
                s,
                self.archive.clock,
                actor=self.archive.actor,
                action="warc.closed",
                subject=f"warc:{closed.name}",
                details={"sha256": closed.sha256, "size": closed.size, "records": closed.records},
            )
        self._summary.closed_warcs.append(closed.name)


def _iso(dt: Any) -> str | None:
    from archiver.clock import utc_iso

    return utc_iso(dt) if dt is not None else None


def _wait_any(futures: set[Future[Any]]) -> set[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(futures, return_when=FIRST_COMPLETED)
    return done
