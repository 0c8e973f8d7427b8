"""What one worker process holds for its whole life, and how it runs one claim.

A worker process (a Celery prefork child, or the worker itself with ``--pool solo``/``threads``) opens the
archive once, takes its identity and liveness lock (:mod:`.liveness`), and keeps one :class:`CaptureJob`, so its
WARC records go into files of its own (the pid is in their names) and its HTTP connections are reused. The WARC
file is closed after ``[celery] idle_close`` seconds without a task and when the process shuts down.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from archiver.archive import Archive
from archiver.capture.job import CaptureJob, CaptureSummary
from archiver.config import Settings
from archiver.distributed import claims
from archiver.distributed.liveness import Liveness, WorkerIdentity
from archiver.errors import ArchiverError, ConfigError

log = logging.getLogger("archiver.worker")


def require_postgresql(archive: Archive) -> None:
    """Refuse SQLite on the scale path: its locking is not safe over the network file systems workers share."""
    if archive.catalogue.dialect != "postgresql":
        raise ConfigError(
            f"the celery executor needs a PostgreSQL catalogue, not {archive.catalogue.dialect}",
            hint="set [catalogue] url or ARCHIVER_DB_URL to postgresql://...; SQLite over shared storage is unsafe",
        )


@dataclass(frozen=True)
class ClaimResult:
    """What a delivery of a claim's task did: captured, adopted (a dead owner had committed it), duplicate
    (the claim was no longer open), busy (a live worker holds it), lost (taken over meanwhile), error."""

    status: str
    claim_id: int
    run_id: str = ""
    source_id: int = 0
    summary: CaptureSummary | None = None
    discovered: tuple[int, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "claim_id": self.claim_id,
            "run_id": self.run_id,
            "source_id": self.source_id,
            "outcome": None if self.summary is None else self.summary.outcome,
            "discovered": list(self.discovered),
            "note": self.note,
            **self.extra,
        }


class WorkerProcess:
    def __init__(self, settings: Settings, *, media: bool = True, archive: Archive | None = None) -> None:
        self.archive = archive or Archive(settings)
        self.archive.ensure_ready()
        require_postgresql(self.archive)
        self.identity = WorkerIdentity.current(self.archive.ids)
        self.liveness = Liveness(self.archive.catalogue.engine, self.identity)
        try:
            self.job = CaptureJob(self.archive, worker=self.identity.name, media=media)
        except BaseException:
            self.liveness.close()
            raise
        self.idle_close = settings.celery.idle_close
        self._lock = threading.Lock()
        self._active = 0
        self._timer: threading.Timer | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self.identity.name

    def execute(self, claim_id: int) -> ClaimResult:
        """Run one delivery of the claim's task (see :mod:`.claims` for what makes it idempotent)."""
        self._started()
        try:
            if not self.liveness.try_claim(claim_id):
                return ClaimResult("busy", claim_id, note="another live worker is capturing this source")
            try:
                return self._execute_locked(claim_id)
            finally:
                self.liveness.release_claim(claim_id)
        finally:
            self._ended()

    def _execute_locked(self, claim_id: int) -> ClaimResult:
        arch = self.archive
        with arch.session() as s:
            start = claims.begin(s, arch.clock, claim_id, self.name)
        if not start.go:
            return ClaimResult("duplicate", claim_id, start.run_id, start.source_id, note=start.reason)
        extra = {"took_over_from": start.took_over_from, "interrupted": start.interrupted}
        if start.took_over_from is not None:
            log.warning("claim %s: took over from dead worker %s", claim_id, start.took_over_from)
        status, summary = "adopted", start.adopted
        if summary is None:
            status = "captured"
            try:
                summary = self.job.capture_source(start.source_id, run_id=start.run_id)
            except ArchiverError as exc:
                return self._fail(claim_id, start, exc.message, extra)
            except Exception as exc:  # noqa: BLE001 - a bug in one capture must not take the worker down
                log.error("claim %s: internal error\n%s", claim_id, traceback.format_exc())
                return self._fail(claim_id, start, f"internal error: {type(exc).__name__}: {exc}", extra)
        with arch.session() as s:
            kept = claims.finish(s, arch.clock, claim_id, self.name, summary)
        discovered = tuple(self.job.take_discovered(start.source_id))
        if not kept:
            status = "lost"
            log.error("claim %s: another worker took it over while this one captured (database connection lost?)",
                      claim_id)  # fmt: skip
        return ClaimResult(status, claim_id, start.run_id, start.source_id, summary, discovered, extra=extra)

    def _fail(self, claim_id: int, start: claims.Begin, message: str, extra: dict[str, Any]) -> ClaimResult:
        with self.archive.session() as s:
            claims.fail(s, self.archive.clock, claim_id, self.name, message)
        return ClaimResult("error", claim_id, start.run_id, start.source_id, note=message, extra=extra)

    # -- idle close and shutdown ---------------------------------------------------------------------------------

    def _started(self) -> None:
        with self._lock:
            self._active += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _ended(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and not self._closed:
                self._timer = threading.Timer(self.idle_close, self._close_if_idle)
                self._timer.daemon = True
                self._timer.start()

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._active == 0 and not self._closed:
                try:
                    self.job.sink.close()  # recorded in the catalogue by the job's on_close
                except ArchiverError as exc:
                    log.error("closing the WARC file after idling: %s", exc.message)

    def close(self) -> None:
        """Close the WARC file cleanly (fsynced, renamed, recorded), then the connections and the liveness lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        try:
            self.job.close()
        finally:
            self.liveness.close()
            self.archive.close()
