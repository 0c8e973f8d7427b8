"""``archiver run --executor celery``: select, claim and enqueue under the run lock, then (by default) wait.

The same steps as a local run, with the captures done by workers: recover what a crash left (never what a live
worker holds), select the pending sources that no unfinished run has claimed, record a run and one claim per
source, enqueue one task per claim. Waiting, it reports progress as claims finish, sends a new task for a claim
whose worker died (the claim decides who captures, so a duplicate costs nothing), and at the end repairs the WARC
file a killed worker left open. The summary is the local executor's, plus the run id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from archiver.archive import Archive
from archiver.capture.job import CaptureJob, CaptureSummary, ProgressCallback, RunSummary
from archiver.clock import Clock, IdGenerator
from archiver.distributed import claims
from archiver.distributed.app import check_broker, make_app, publish
from archiver.distributed.models import DistributedRun
from archiver.distributed.process import require_postgresql
from archiver.errors import ConfigError, NotFoundError
from archiver.jobs import RunOptions, _log_summary, run_lock, run_log, seal

POLL_SECONDS = 0.5


@dataclass
class DistributedSummary(RunSummary):
    run_id: str = ""
    enqueued: int = 0
    waited: bool = True
    claims: dict[str, Any] = field(default_factory=dict)  # claim states at the end, errors
    resent: int = 0  # tasks sent again for claims whose worker died

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "executor": "celery",
            "run_id": self.run_id,
            "enqueued": self.enqueued,
            "waited": self.waited,
            "claims": self.claims,
            "resent_after_worker_death": self.resent,
        }


def new_run_id(clock: Clock, ids: IdGenerator) -> str:
    return clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + ids.uuid().hex[:8]


def run_distributed(
    archive: Archive, options: RunOptions, progress: ProgressCallback | None = None
) -> DistributedSummary:
    """Enqueue every pending source for the workers; wait for them unless ``options.wait`` is false."""
    notify = progress or (lambda _kind, _data: None)
    if options.follow_citations is not None:
        raise ConfigError(
            "--follow-citations/--no-follow-citations apply to the local executor",
            hint="with --executor celery each source's own follow_citations setting applies",
        )
    archive.ensure_ready()
    require_postgresql(archive)
    app = make_app(archive.settings)
    started = time.monotonic()
    with run_lock(archive.settings.root), run_log(archive.settings.root) as log:
        check_broker(app)
        job = CaptureJob(archive, media=False)  # recovery and selection only: this process captures nothing
        first = job.recover()
        summary = DistributedSummary(repaired=list(first.repaired), interrupted=first.interrupted, waited=options.wait)
        with archive.session() as s:
            expired = claims.expire_stale(s, archive.clock, archive.settings.celery.claim_expiry)
        with archive.session() as s:
            busy = claims.open_source_ids(s)
        pending = [sid for sid in job.pending_sources() if sid not in busy]
        summary.run_id = new_run_id(archive.clock, archive.ids)
        with archive.session() as s:
            pairs = claims.new_run(
                s,
                archive.clock,
                run_id=summary.run_id,
                actor=archive.actor,
                queue=archive.settings.celery.queue,
                source_ids=pending,
            )
        summary.enqueued = publish(app, summary.run_id, pairs)
        log.info(
            "run %s: enqueued %s sources on %s (%s left to unfinished runs, %s stale claims expired)",
            summary.run_id,
            summary.enqueued,
            archive.settings.celery.queue,
            len(busy),
            expired,
        )
        if options.wait:
            _wait(archive, app, summary, options.max_time, started, notify)
            last = CaptureJob(archive, media=False).recover()  # the WARC file a killed worker left open
            summary.repaired += last.repaired
            summary.interrupted += last.interrupted
        with archive.session() as s:
            report = claims.progress(s, summary.run_id)
            if report.open == 0:
                run = s.get(DistributedRun, summary.run_id)
                if run is not None:
                    run.finished_at = archive.clock.now()
        summary.claims = {"states": report.states, "errors": report.errors}
        summary.seconds = time.monotonic() - started
        _log_summary(log, summary)
        summary.integrity = seal(archive, log)
        return summary


def _wait(
    archive: Archive,
    app: Any,
    summary: DistributedSummary,
    max_time: float | None,
    started: float,
    notify: ProgressCallback,
) -> None:
    run_id = summary.run_id
    total = summary.enqueued
    notify("start", total)
    seen_done: set[int] = set()
    seen_errors: set[int] = set()
    resent: set[tuple[int, str]] = set()
    while True:
        with archive.session() as s:
            report = claims.progress(s, run_id)
            dead = claims.dead_owner_claims(s, run_id)
        for _ in range(report.total - total):
            notify("discovered", None)
        total = max(total, report.total)
        for item in report.summaries:
            if item["source_id"] not in seen_done:
                seen_done.add(item["source_id"])
                notify("captured", CaptureSummary(**item))
        for err in report.errors:
            if err["source_id"] not in seen_errors:
                seen_errors.add(err["source_id"])
                notify("error", f"source {err['source_id']}: {err['state']}: {err['error']}")
        fresh = [(cid, sid) for cid, sid, owner in dead if (cid, owner) not in resent]
        if fresh:
            publish(app, run_id, fresh)
            resent.update((cid, owner) for cid, _sid, owner in dead)
            summary.resent += len(fresh)
        if report.open == 0:
            break
        if max_time is not None and time.monotonic() - started > max_time:
            summary.stopped_early = True  # the workers go on; 'archiver run-status RUN_ID' follows them
            break
        time.sleep(POLL_SECONDS)
    summary.captures = [CaptureSummary(**item) for item in report.summaries]


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    created_at: str
    finished_at: str | None
    progress: dict[str, Any]
    captures: list[dict[str, Any]]
    errors: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_status(archive: Archive, run_id: str) -> RunStatus:
    """Where a distributed run stands: claims per state, the captures made, what went wrong."""
    from archiver.clock import utc_iso

    with archive.session() as s:
        run = s.get(DistributedRun, run_id)
        if run is None:
            raise NotFoundError(f"no distributed run {run_id!r}", hint="'archiver run --executor celery' prints it")
        report = claims.progress(s, run_id)
        return RunStatus(
            run_id=run_id,
            created_at=utc_iso(run.created_at),
            finished_at=utc_iso(run.finished_at) if run.finished_at else None,
            progress=report.as_dict(),
            captures=report.summaries,
            errors=report.errors,
        )


def describe(summary: RunSummary) -> str:
    """The line ``archiver run --executor celery`` adds to the local executor's summary."""
    if not isinstance(summary, DistributedSummary):
        return ""
    line = f"run {summary.run_id}: {summary.enqueued} source(s) enqueued"
    if not summary.waited:
        return line + f"; follow it with 'archiver run-status {summary.run_id}'"
    states = summary.claims.get("states", {})
    line += "; claims " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) if states else ""
    if summary.resent:
        line += f"; {summary.resent} task(s) sent again after a worker died"
    return line
