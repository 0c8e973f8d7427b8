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

import functools
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache, cached_property
from importlib.metadata import version as dist_version
from pathlib import Path
from queue import Queue
from typing import Any

import requests
from sqlalchemy import String, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from archiver import SOFTWARE, __version__, custody, keys, malloc_tuning
from archiver.archive import Archive
from archiver.capture import probes
from archiver.capture.browser import BrowserCapturer
from archiver.capture.citations import extract_citations
from archiver.capture.committer import Batch, GroupCommitter
from archiver.capture.fetch import Fetcher, FetchSettings, Outcome, exchange_records
from archiver.capture.gate import HostGate, HostQueue, WorkerSlots
from archiver.capture.media import MediaCapturer, MediaSettings, media_candidate
from archiver.capture.media_env import check_ffmpeg, sweep_temp
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
from archiver.catalogue.integrity_models import Receipt
from archiver.catalogue.models import Artifact, Capture, MediaItem, Source, WarcFile, incident_sources, table_of
from archiver.catalogue.store import SourceRequest, Store
from archiver.catalogue.warcs import artifact_values, record_closed_warc
from archiver.distributed.liveness import worker_alive
from archiver.errors import ArchiverError
from archiver.integrity import receipts
from archiver.urls import identify, normalise
from archiver.warc.reader import scan_file
from archiver.warc.records import REQUEST, RecordRef, RecordSpec
from archiver.warc.repair import held_by_writer, repair_open_files
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
    rechecks: dict[str, Any] = field(default_factory=dict)  # archiver.recheck.RecheckSummary.as_dict (jobs.run)
    warnings: list[str] = field(default_factory=list)  # said once per run (e.g. Chromium missing)

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
            "rechecks": self.rechecks,
            "warnings": self.warnings,
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
        browser: bool | None = False,
        worker: str | None = None,
        file_tag: str | None = None,
    ) -> None:
        self.archive = archive
        malloc_tuning.tune_for_capture()  # before the capture threads (arenas; freed memory kept for the next record)
        # A distributed worker's identity (archiver.distributed.liveness): recorded on its captures, so that
        # recovery elsewhere leaves them alone while it lives; its WARC file names carry its pid.
        self.worker = worker
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
            pool_per_host=max(10, net.per_host),  # idle connections kept for a host: as many as may be busy
        )
        self.gate = gate or HostGate(net.per_host, net.per_host_delay)
        # The global limit holds for traffic: a capture writing its records or waiting for its transaction
        # gives its slot to one whose requests can go out meanwhile (run() keeps twice as many threads).
        self.slots = WorkerSlots(self.workers)
        self.fetcher = Fetcher(self.fetch_settings, archive.clock, archive.ids)
        self.web = WebCapturer(self.fetcher, self.gate, requisites)
        self.signer = keys.load_signer(archive.settings.key_dir)
        self.progress = progress or (lambda _kind, _data: None)
        # Browser capture (docs/browser.md): None follows the [browser] settings (kinds, platforms), which is what
        # `archiver run` and `capture` pass (archiver.jobs); True renders every source of this job; False (the
        # default for a job built directly) none. Chromium starts only when a source needs it.
        self.browser_override = browser
        self.browser: BrowserCapturer | None = None
        if browser is not False and (browser or archive.settings.browser.enabled):
            self.browser = BrowserCapturer(
                archive.settings.browser, self.fetch_settings, self.gate, archive.clock, archive.ids, warn=self._warn
            )
        self.media_temp = archive.settings.tmp_dir / "media"
        self.media: MediaCapturer | None = None
        # The warcinfo names the tools' versions: Chromium is asked while ffmpeg answers (each a process start,
        # once per process; archiver run has asked both already, archiver.capture.probes).
        if self.browser is not None and self.browser.problem is None:
            probes.ask_ahead(ffmpeg=False, chromium=self.browser.settings.executable)
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
        browser_fields = self.browser.warcinfo() if self.browser is not None else {}
        self.follow_override = follow_citations
        self._lock = threading.Lock()
        self._local = threading.local()  # what the calling capture thread has under way
        self._warc_ids: dict[str, int] = {}
        # Held while a new WARC file's row commits: never self._lock, which every capture thread takes to start
        # its traffic (a capture waiting for the catalogue's write lock must not hold the others' traffic back).
        self._warc_id_lock = threading.Lock()
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
                **browser_fields,
            },
            on_close=self._on_close,
            # A process among several writing into the directory (a distributed worker, or a capture process of
            # archiver.capture.shards) names its files with its pid.
            process=file_tag or (str(os.getpid()) if worker is not None else None),
        )
        self.submitted: set[int] = set()  # the sources run() has started (whatever became of them)
        self._facts: dict[int, _SourceFacts] = {}  # read with the run's queue (hosts_of), taken by capture_source
        self._stop = threading.Event()

    # -- recovery --------------------------------------------------------------------------------------------

    def recover(self) -> RunSummary:
        """Repair ``.open`` WARC files left by a crash; mark captures that never finished as interrupted."""
        sweep_temp(self.media_temp)  # download directories of a killed run
        # On PostgreSQL, workers elsewhere may share the WARC directory (archiver.distributed).
        shared = self.archive.catalogue.dialect == "postgresql"
        results = repair_open_files(self.archive.settings.warc_dir, self.archive.clock, shared=shared)
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
                if (warc_dir / f"{row.name}.open").exists() or not path.exists() or held_by_writer(path):
                    continue  # still being written (or its close recorded) by another process, or gone
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
            # A capture a live distributed worker is still running is not interrupted (its advisory lock says so).
            running = [
                cap
                for cap in s.scalars(select(Capture).where(Capture.outcome == "running")).all()
                if not worker_alive(s, cap.worker)
            ]
            for cap in running:
                cap.outcome = "interrupted"
                cap.ended_at = self.archive.clock.now()
                cap.error = "interrupted: the archiver stopped before this capture was committed; retried"
            self._summary.interrupted = len(running)
        return self._summary

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

    def stop(self) -> None:
        """Start no more captures (thread- and signal-safe); what is running finishes and is committed."""
        self._stop.set()

    def run(
        self,
        source_ids: Iterable[int] | None = None,
        *,
        max_time: float | None = None,
        recover: bool = True,
        owns: Callable[[str], bool] | None = None,
        more: Callable[[], list[int]] | None = None,
    ) -> RunSummary:
        """Capture the sources (default: every pending one) and what they cite.

        ``recover=False`` when the caller already repaired what a crash left (archiver.capture.shards);
        ``owns(host)`` limits the cited sources captured here to hosts this job owns (the rest stay pending);
        ``more()``, called when the sources at hand cannot fill the window of captures in flight (twice the
        workers), gives more sources to capture (another host's, in a run spread over processes), or an empty
        list when there are no more.
        """
        started = time.monotonic()
        deadline = started + max_time if max_time is not None else None
        if recover:
            self.recover()
        queue = list(source_ids) if source_ids is not None else self.pending_sources()
        self.progress("start", len(queue))
        submitted = self.submitted
        # Host-aware dispatch: a source starts only when its host has a free slot (HostGate's per_host), so no
        # worker sleeps on a busy site while another site's sources wait behind it.
        waiting: HostQueue[int] = HostQueue(self.gate.per_host)
        for sid, host in self.hosts_of(queue):
            waiting.add(host, sid)
        # What the workers tell the dispatcher: a capture's traffic is over (its host, which may take another
        # capture, while this one writes and commits), or the capture has ended (its future).
        done: Queue[Future[CaptureSummary | None] | str] = Queue()
        running: set[Future[CaptureSummary | None]] = set()
        try:
            with ThreadPoolExecutor(2 * self.workers, thread_name_prefix="capture") as pool:
                asking = more

                def fill() -> None:
                    """Keep a bounded window in flight, so --max-time can stop what has not started."""
                    nonlocal asking
                    starting: list[tuple[int, str]] = []
                    while (waiting or asking is not None) and len(running) + len(starting) < 2 * self.workers:
                        if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                            self._summary.stopped_early = True
                            waiting.clear()  # still pending in the catalogue: the next run takes them
                            break
                        taken = waiting.take()
                        if taken is None and asking is not None:
                            # The window is not full: take another host's sources rather than let the
                            # workers wait on this dispatcher between captures.
                            given = asking()
                            if not given:
                                asking = None
                            for new_id, new_host in self.hosts_of(given):
                                waiting.add(new_host, new_id)
                            continue
                        if taken is None:
                            break  # every waiting source's host is busy: wait for a capture to end
                        host, sid = taken
                        if sid in submitted:
                            waiting.done(host)
                            continue
                        submitted.add(sid)
                        starting.append((sid, host))
                    for sid, host, begun in self._begin_ahead(starting):
                        over = _OnlyOnce(done.put, host)
                        future = pool.submit(self._capture_guarded, sid, begun, over)
                        running.add(future)
                        future.add_done_callback(functools.partial(_ended, over, done.put))

                fill()
                while running:
                    # Every capture that has ended, then one fill: the captures it starts are begun together.
                    ended = [done.get()]
                    while not done.empty():
                        ended.append(done.get())
                    for item in ended:
                        if isinstance(item, str):
                            waiting.done(item)
                            continue
                        future = item
                        running.discard(future)
                        result = future.result()
                        if result is not None:
                            self._summary.captures.append(result)
                            self.progress("captured", result)
                            new_ids = self._discovered.pop(result.source_id, [])
                            for new_id in new_ids:
                                self.progress("discovered", new_id)
                            for new_id, new_host in self.hosts_of(new_ids):
                                if owns is None or owns(new_host):
                                    waiting.add(new_host, new_id)
                    fill()
        finally:
            self.sink.close()
            self.fetcher.close()
            if self.media is not None:
                self.media.close()
            if self.browser is not None:
                self.browser.close()
        self._summary.seconds = time.monotonic() - started
        return self._summary

    def _begin_ahead(self, starting: list[tuple[int, str]]) -> list[tuple[int, str, int | None]]:
        """The web captures of sources about to be handed to the workers, begun in one unit (each source with
        its host and its capture's row; None where the worker begins its capture itself)."""
        with self._lock:
            facts = {sid: self._facts.get(sid) for sid, _ in starting}
        web = [(sid, f) for sid, f in facts.items() if f is not None and self._web_first(f.url)]
        begun: dict[int, int] = {}
        if web:
            try:
                begun = dict(zip([sid for sid, _ in web], self._begin_many(web, "web", tool_versions()), strict=True))
            except ArchiverError:
                pass  # each worker begins its own capture, and reports what stops it
        return [(sid, host, begun.get(sid)) for sid, host in starting]

    def hosts_of(self, source_ids: list[int]) -> list[tuple[int, str]]:
        """Each source with the host its capture starts on (as HostGate counts hosts), in the order given.

        What :meth:`capture_source` needs to know of each source is kept from the same query, so that a
        capture does not open a session of its own to read it again.
        """
        if not source_ids:
            return []
        known: dict[int, _SourceFacts] = {}
        with self.archive.reading() as s:
            for i in range(0, len(source_ids), 500):
                known.update(_read_facts(s, source_ids[i : i + 500]))
        with self._lock:
            self._facts.update(known)
        return [(sid, HostGate.host_of(known[sid].url if sid in known else "")) for sid in source_ids]

    def _source_facts(self, source_id: int) -> _SourceFacts:
        with self._lock:
            known = self._facts.pop(source_id, None)
        if known is not None:
            return known
        with self.archive.reading() as s:  # no write lock: the group commit holds it
            found = _read_facts(s, [source_id]).get(source_id)
        if found is None:
            raise ArchiverError(f"source {source_id} has no URL to capture")
        return found

    def close(self) -> None:
        """Close the WARC file being written (recorded in the catalogue) and the network clients."""
        try:
            self.sink.close()
        finally:
            self.fetcher.close()
            if self.media is not None:
                self.media.close()
            if self.browser is not None:
                self.browser.close()

    def take_discovered(self, source_id: int) -> list[int]:
        """Sources the source's page cited that were new to the catalogue (once; for a caller running captures
        one by one, such as a distributed worker)."""
        with self._lock:
            return self._discovered.pop(source_id, [])

    def _capture_guarded(
        self, source_id: int, begun: int | None = None, traffic_over: Callable[[], None] | None = None
    ) -> CaptureSummary | None:
        try:
            return self.capture_source(source_id, begun=begun, traffic_over=traffic_over)
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

    def capture_source(
        self,
        source_id: int,
        *,
        run_id: str | None = None,
        begun: int | None = None,
        traffic_over: Callable[[], None] | None = None,
    ) -> CaptureSummary:
        """Web capture of the source's page, then media capture when the page or platform suggests media.

        ``begun``: the web capture's row, committed ``running`` by the run's dispatcher (:meth:`_begin_many`);
        ``traffic_over``: called (in this thread) when the first part's traffic is over, before its records are
        written: the run's dispatcher then counts the source's host as free for another capture.
        """
        facts = self._source_facts(source_id)
        self._local.traffic_over = traffic_over
        try:
            return self._capture_parts(source_id, facts, run_id, begun)
        finally:
            self._end_traffic()

    def _end_traffic(self) -> None:
        """This thread's capture has no traffic under way: its worker slot goes back, and the dispatcher hears
        of it once (a later part's traffic counts against the global limit, and goes through the host gate)."""
        self.slots.give_back()
        over, self._local.traffic_over = getattr(self._local, "traffic_over", None), None
        if over is not None:
            over()

    def _capture_parts(
        self, source_id: int, facts: _SourceFacts, run_id: str | None, begun: int | None
    ) -> CaptureSummary:
        url, follow, depth, kind = facts.url, facts.follow_citations, facts.depth, facts.kind
        platform_item = facts.platform is not None or kind == "video"
        if self.follow_override is not None:
            follow = self.follow_override
        ref = identify(url)
        direct_media = not self._web_first(url)
        results: list[_Part] = []
        page_type, page_html = None, None
        if not direct_media:
            if begun is None:
                capture_id = self._begin(source_id, facts, "web", tool_versions(), run_id)
                self.slots.take()
            else:
                self.slots.take()
                capture_id = self._started(begun)
            page = self.web.capture(url)
            try:
                final = page.main.final
                page_type = media_type(final) or None
                if final is not None and page_type in HTML_TYPES:
                    page_html = decoded_body(final)
                records = self._page_records(page)
                citations = self._citations(page) if follow and depth < MAX_CITATION_DEPTH else []
                results.append(self._finish_web(source_id, capture_id, url, page, records, citations, depth))
            finally:
                page.close()
        if (
            self.browser is not None
            and not direct_media
            and not (results and results[0].outcome == "gone")  # the removal is on record; nothing to render
            and self.browser.wanted(kind, ref.platform, self.browser_override)
        ):
            results.append(self._capture_browser(source_id, _after(facts, results), run_id))
        if self.media is not None and (direct_media or media_candidate(url, page_type, page_html)):
            results.append(self._capture_media(source_id, _after(facts, results), platform_item, run_id))
        return _combine(source_id, url, results)

    def _web_first(self, url: str) -> bool:
        """Whether the source's capture starts with a web capture of its URL. A direct media URL does not: it is
        fetched once, by the media capturer (a web capture would download it twice)."""
        ref = identify(url)
        return not (self.media is not None and ref.platform is None and ref.kind == "video")

    def _begin(
        self, source_id: int, facts: _SourceFacts, method: str, tools: dict[str, str], run_id: str | None = None
    ) -> int:
        """Commit the Capture row as ``running`` before any traffic: a kill leaves a trace the next run sees."""
        (capture_id,) = self._begin_many([(source_id, facts)], method, tools, run_id)
        return capture_id

    def _begin_many(
        self,
        sources: list[tuple[int, _SourceFacts]],
        method: str,
        tools: dict[str, str],
        run_id: str | None = None,
    ) -> list[int]:
        """:meth:`_begin` for several sources in one unit of work: the run's dispatcher begins the web captures
        of the sources it hands to the workers, so that a worker does not wait for a commit before its traffic.

        The unit only inserts (what the receipt states of the source comes from ``facts``), so it adds nothing
        to the time its transaction holds the catalogue's write lock but the rows themselves.
        """
        arch = self.archive
        started_at = arch.clock.now()
        rows: list[dict[str, Any]] = [
            {
                "source_id": source_id,
                "method": method,
                "started_at": started_at,
                "outcome": "running",
                "requested_url": facts.url,
                "collector": arch.settings.collector,
                "egress": self.fetch_settings.egress,
                "tools": tools,
                "run_id": run_id,
                "worker": self.worker,
            }
            for source_id, facts in sources
        ]
        pending = self._committer.submit(lambda b: [b.insert_returning_id(Capture, row) for row in rows])
        ids = [p.get() for p in pending]
        with self._lock:
            for capture_id, (source_id, facts), row in zip(ids, sources, rows, strict=True):
                self._begun[capture_id] = _Begun(
                    source_id,
                    method,
                    started_at,
                    row["collector"],
                    row["egress"],
                    tools,
                    facts.url,
                    facts.status,
                    facts.incidents,
                )
        return ids

    def _started(self, capture_id: int) -> int:
        """A capture begun ahead of its traffic starts now: its start time is the time its traffic starts."""
        with self._lock:
            begun = self._begun.get(capture_id)
            if begun is not None:
                self._begun[capture_id] = replace(begun, started_at=self.archive.clock.now())
        return capture_id

    def _page_records(self, page: PageCapture) -> list[tuple[str, str | None, RecordSpec]]:
        """All records of the page, each with its role and media type (written as one group by _finish)."""
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
        return specs

    def _citations(self, page: PageCapture) -> list[Any]:
        final = page.main.final
        if final is None or page.main.outcome != Outcome.OK or media_type(final) not in HTML_TYPES:
            return []
        return list(extract_citations(decoded_body(final), page.main.final_url, encoding=charset(final)))

    def _warc_id(self, name: str) -> int:
        known = self._warc_ids.get(name)  # a dict read is atomic; a miss is settled under _warc_id_lock
        if known is not None:
            return known
        opened_at = self.archive.clock.now()

        def work(b: Batch) -> int:
            found = b.session.scalar(select(WarcFile.id).where(WarcFile.name == name))
            if found is not None:
                return found
            values = {"name": name, "status": "open", "opened_at": opened_at}
            return b.insert_now(WarcFile, values)

        with self._warc_id_lock:  # one lookup per file: the sink's first group in a new file is written by one thread
            if name not in self._warc_ids:
                self._warc_ids[name] = self._committer.submit(work)
            return self._warc_ids[name]

    def _finish_web(
        self,
        source_id: int,
        capture_id: int,
        url: str,
        page: PageCapture,
        records: list[tuple[str, str | None, RecordSpec]],
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
            records=records,
            details=details,
            citations=citations,
            depth=depth,
        )

    def _capture_browser(self, source_id: int, facts: _SourceFacts, run_id: str | None = None) -> _Part:
        """The page rendered in Chromium: its traffic, screenshot, PDF and DOM (archiver.capture.browser)."""
        assert self.browser is not None
        url = facts.url
        capture_id = self._begin(source_id, facts, "browser", tool_versions(), run_id)
        self.slots.take()
        result = self.browser.capture(url, self.sink.new_record_id)
        try:
            return self._finish(
                source_id,
                capture_id,
                url=url,
                outcome=result.outcome,
                status_on_outcome={"ok": st.CAPTURED},  # a failed render leaves the web capture's verdict
                http_status=result.http_status,
                final_url=result.final_url,
                error=result.error,
                records=result.specs,
                details=result.details,
                tools=result.tools,
            )
        finally:
            result.close()

    def _warn(self, message: str) -> None:
        with self._lock:
            self._summary.warnings.append(message)
        self.progress("warning", message)

    def _capture_media(
        self, source_id: int, facts: _SourceFacts, platform_item: bool, run_id: str | None = None
    ) -> _Part:
        assert self.media is not None
        url = facts.url
        capture_id = self._begin(source_id, facts, "media", tool_versions(), run_id)
        self.slots.take()
        result = self.media.capture(url)
        try:
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
                records=list(result.records),
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
        records: list[tuple[str, str | None, RecordSpec]],
        details: dict[str, Any],
        citations: list[Any] | None = None,
        depth: int = 0,
        tools: dict[str, str] | None = None,
        conversions: list[dict[str, str]] | None = None,
        media_items: list[dict[str, Any]] | None = None,
    ) -> _Part:
        """Write the capture's records with its receipt (one group), then one transaction: artifacts, the
        capture's end, the source's status, custody events, cited sources.

        The transaction is shared with other captures' (:mod:`archiver.capture.committer`); it has committed
        when this returns. Everything is prepared from values in memory first (the capture as :meth:`_begin`
        committed it), so the transaction only writes.
        """
        arch = self.archive
        now = arch.clock.now()
        # The traffic is over: another capture's requests may go out while this one writes and commits.
        self._end_traffic()
        begun = self._begun_capture(capture_id)
        all_tools = {**begun.tools, **tools} if tools else begun.tools
        issued = None
        refs: list[tuple[str, str | None, RecordRef]] = []
        facts = receipts.CaptureFacts(
            capture_id,
            begun.method,
            begun.started_at,
            now,
            outcome,
            http_status,
            final_url,
            begun.collector,
            begun.egress,
            all_tools,
            source_id,
            begun.source_url,
            begun.incidents,
        )
        if records:
            # The records and the receipt that lists them (their offsets are known as the group is written),
            # fsynced together, outside any transaction (a rotation's on_close commits on its own).
            written, issued = receipts.write_with_receipt(self.sink, self.signer, facts, [r for _, _, r in records])
            refs = [(role, mtype, ref) for (role, mtype, _), ref in zip(records, written, strict=True)]
        warc_ids = {ref.warc_file: self._warc_id(ref.warc_file) for _, _, ref in refs}
        artifacts = [
            artifact_values(
                ref, capture_id=capture_id, role=role, warc_file_id=warc_ids[ref.warc_file], media_type=mtype
            )
            for role, mtype, ref in refs
        ]
        if issued is not None:
            warc_ids.setdefault(issued.ref.warc_file, self._warc_id(issued.ref.warc_file))
            names = {v: k for k, v in warc_ids.items()}
            # The receipt must be what verify will rebuild from the rows about to be inserted.
            receipts.check_rows(
                issued, facts, [receipts.ReceiptRecord.from_row(a, names[a["warc_file_id"]]) for a in artifacts]
            )
            artifacts.append(receipts.receipt_artifact_values(issued, warc_file_id=warc_ids[issued.ref.warc_file]))
        ended = {
            "b_id": capture_id,
            "b_started_at": begun.started_at,  # when its traffic started (a capture may be begun ahead of it)
            "b_ended_at": now,
            "b_outcome": outcome,
            "b_final_url": final_url,
            "b_http_status": http_status,
            "b_error": error,
            "b_details": details,
            "b_tools": all_tools,
        }
        event = {"ok": "collected", "gone": "gone"}.get(outcome, "capture.failed")
        event_details = {
            "capture": capture_id,
            "method": begun.method,
            "url": url,
            "final_url": final_url,
            "http_status": http_status,
            "outcome": outcome,
            "error": error,
            "evidence": details.get("evidence"),
            "egress": begun.egress,
            "started_at": _iso(begun.started_at),
            "ended_at": _iso(now),
        }
        stored = {"capture": capture_id, "records": [_record_dict(r) for _, _, r in refs]} if refs else None
        # The source's status: the statement decides on the row as it is (a failed attempt never undoes an
        # earlier capture); the status reported back is decided the same way on the row as _begin read it.
        new_status = status_on_outcome.get(outcome)
        source_changes = {
            "b_id": source_id,
            "b_status": new_status,
            "b_captured_at": now if outcome == "ok" else None,
            "b_gone_at": now if outcome == "gone" else None,
        }
        final_status = begun.source_status
        if new_status is not None and not (new_status == st.FAILED and final_status == st.CAPTURED):
            final_status = new_status
        items = [{"capture_id": capture_id, "source_id": source_id, "captured_at": now, **i} for i in media_items or []]

        # The custody events and the receipt's row are prepared here: the unit below runs in a transaction
        # that other processes' writers wait for, so it only hands over values.
        subject = f"source:{source_id}"
        details_of = [(event, event_details)]
        if stored is not None:
            details_of.append(("stored", stored))
        if issued is not None:
            details_of.append(("signed", receipts.signed_details(issued)))
        details_of += [("converted", {"capture": capture_id, **conv}) for conv in conversions or []]
        events = [
            custody.prepare_event(actor=arch.actor, action=action, subject=subject, incident=None, details=d)
            for action, d in details_of
        ]
        receipt_rows = [receipts.receipt_values(issued, arch.clock)] if issued is not None else []

        def work(b: Batch) -> list[int]:
            b.execute(_END_CAPTURE, ended)
            b.execute(_SOURCE_STATUS, source_changes)
            b.insert(Artifact, artifacts)
            b.insert(Receipt, receipt_rows)
            for e in events:
                b.custody.add(e)
            b.insert(MediaItem, items)
            found: list[int] = []
            if citations:
                with b.foreign() as fs:
                    src = fs.get(Source, source_id)
                    assert src is not None
                    store = Store(fs, arch.clock, arch.actor)
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
                                found.append(new.id)
                    fs.flush()
            return found

        discovered = self._committer.submit(work)
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

    def _on_close(self, closed: Any) -> None:
        self._warc_id(closed.name)

        def work(b: Batch) -> None:
            with b.foreign() as s:
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

        self._committer.submit(work)
        self._summary.closed_warcs.append(closed.name)

    # -- group commit ----------------------------------------------------------------------------------------

    @cached_property
    def _committer(self) -> GroupCommitter:
        """The transactions every capture thread of this job shares (created on first use)."""
        return GroupCommitter(self.archive.session, self.archive.clock, turn=self.archive.catalogue.writer_turn)

    @cached_property
    def _begun(self) -> dict[int, _Begun]:
        """Captures begun and not yet finished: what :meth:`_finish` states of them without reading the row."""
        return {}

    def _begun_capture(self, capture_id: int) -> _Begun:
        with self._lock:
            begun = self._begun.pop(capture_id, None)
        if begun is not None:
            return begun
        with self.archive.session() as s:  # begun elsewhere (another job object): read what _begin kept
            cap = s.get(Capture, capture_id)
            if cap is None:
                raise ArchiverError(f"capture {capture_id} does not exist")
            return _Begun(
                cap.source_id,
                cap.method,
                cap.started_at,
                cap.collector,
                cap.egress,
                dict(cap.tools),
                cap.source.url,
                cap.source.status,
                receipts.incidents_of(s, cap.source_id),
            )


_FACT_COLUMNS = (
    Source.id,
    Source.url,
    Source.status,
    Source.follow_citations,
    Source.depth,
    Source.platform,
    Source.kind,
)


@dataclass(frozen=True)
class _SourceFacts:
    """What a capture needs to know of its source before it starts, and what its receipt states of it."""

    url: str
    status: str
    follow_citations: bool
    depth: int
    platform: str | None
    kind: str
    incidents: tuple[str, ...]

    @classmethod
    def of(cls, row: Any, incidents: Iterable[str]) -> _SourceFacts:
        return cls(
            row.url, row.status, row.follow_citations, row.depth, row.platform, row.kind, tuple(sorted(set(incidents)))
        )


def _ended(traffic_over: Callable[[], None], report: Callable[[Any], None], future: Future[Any]) -> None:
    """A capture's future is done (in its worker's thread): its host is free at the latest now, then its end."""
    traffic_over()
    report(future)


class _OnlyOnce:
    """``call(arg)`` the first time this is called, nothing after (one thread at a time)."""

    def __init__(self, call: Callable[[Any], None], arg: Any) -> None:
        self._call: Callable[[Any], None] | None = call
        self._arg = arg

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call(self._arg)


def _read_facts(s: Session, source_ids: Sequence[int]) -> dict[int, _SourceFacts]:
    """The facts of the sources that have a URL (one query for the sources, one for their incidents)."""
    rows = s.execute(select(*_FACT_COLUMNS).where(Source.id.in_(source_ids), Source.url.is_not(None))).all()
    incidents: dict[int, list[str]] = {}
    links = select(incident_sources.c.source_id, incident_sources.c.incident_id).where(
        incident_sources.c.source_id.in_([r.id for r in rows])
    )
    for sid, incident_id in s.execute(links):
        incidents.setdefault(sid, []).append(incident_id)
    return {r.id: _SourceFacts.of(r, incidents.get(r.id, ())) for r in rows}


@dataclass(frozen=True)
class _Begun:
    """A capture as :meth:`CaptureJob._begin` committed it."""

    source_id: int
    method: str
    started_at: datetime
    collector: str
    egress: str | None
    tools: dict[str, str]
    source_url: str | None
    source_status: str
    incidents: tuple[str, ...]


# The catalogue statements of a capture's end, built once: each runs once per batch of captures.
_CAPTURES = table_of(Capture)
_ENDED = ("started_at", "ended_at", "outcome", "final_url", "http_status", "error", "details", "tools")
_END_CAPTURE = (
    update(_CAPTURES)
    .where(_CAPTURES.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=_CAPTURES.c[name].type) for name in _ENDED})
)
_SOURCES = table_of(Source)
_SOURCE_STATUS = (
    update(_SOURCES)
    .where(_SOURCES.c.id == bindparam("b_id"))
    .values(
        status=case(
            (bindparam("b_status", type_=String).is_(None), _SOURCES.c.status),
            (
                (bindparam("b_status", type_=String) == st.FAILED) & (_SOURCES.c.status == st.CAPTURED),
                _SOURCES.c.status,
            ),
            else_=bindparam("b_status", type_=String),
        ),
        last_captured_at=func.coalesce(
            bindparam("b_captured_at", type_=_SOURCES.c.last_captured_at.type), _SOURCES.c.last_captured_at
        ),
        gone_at=func.coalesce(_SOURCES.c.gone_at, bindparam("b_gone_at", type_=_SOURCES.c.gone_at.type)),
    )
)


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


def _after(facts: _SourceFacts, parts: list[_Part]) -> _SourceFacts:
    """The source's facts after this run's earlier captures of it (their outcomes moved its status)."""
    return replace(facts, status=parts[-1].source_status) if parts else facts


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
