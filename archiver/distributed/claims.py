"""Claims: the catalogue rows that make at-least-once delivery capture each source exactly once per run.

Every change of a claim is a conditional update under a row lock (``SELECT ... FOR UPDATE``), and a worker only
updates a claim while it holds the claim's advisory lock (:mod:`.liveness`), so of two deliveries of one task
exactly one captures; the other finds the claim ``done`` and does nothing, or finds it held by a live worker and
tries again later. A delivery that finds the claim ``working`` under a dead owner takes it over: the dead
owner's unfinished capture becomes ``interrupted`` and, unless that owner had already committed the capture
(a kill between the capture's commit and the claim's), the source is captured again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from archiver.capture.job import CaptureSummary
from archiver.catalogue import store as st
from archiver.catalogue.models import Artifact, Capture, Source
from archiver.clock import Clock
from archiver.distributed.liveness import claim_owner_alive
from archiver.distributed.models import DONE, ERROR, EXPIRED, OPEN_STATES, QUEUED, WORKING, DistributedRun, RunClaim

UNFINISHED = ("running", "interrupted")
INTERRUPTED_ERROR = "interrupted: the worker running this capture died; its claim was taken over"


def new_run(
    session: Session, clock: Clock, *, run_id: str, actor: str, queue: str, source_ids: list[int]
) -> list[tuple[int, int]]:
    """Record the run and one ``queued`` claim per source; returns (claim id, source id) pairs."""
    session.add(DistributedRun(id=run_id, created_at=clock.now(), actor=actor, queue=queue, sources=len(source_ids)))
    session.flush()
    return add_claims(session, clock, run_id, source_ids)


def add_claims(session: Session, clock: Clock, run_id: str, source_ids: list[int]) -> list[tuple[int, int]]:
    """Claims for sources not yet in the run (cited sources found during it); existing ones are left alone."""
    have = set(session.scalars(select(RunClaim.source_id).where(RunClaim.run_id == run_id)))
    busy = open_source_ids(session)
    now = clock.now()
    rows = []
    for sid in dict.fromkeys(source_ids):
        if sid in have or sid in busy:
            continue
        row = RunClaim(run_id=run_id, source_id=sid, state=QUEUED, attempts=0, queued_at=now)
        session.add(row)
        rows.append(row)
    session.flush()
    return [(r.id, r.source_id) for r in rows]


def open_source_ids(session: Session) -> set[int]:
    """Sources some run has enqueued and not finished: a new run leaves them to it."""
    return set(session.scalars(select(RunClaim.source_id).where(RunClaim.state.in_(OPEN_STATES))))


def expire_stale(session: Session, clock: Clock, expiry_seconds: float) -> int:
    """Expire claims nobody finished in time: queued ones whose message was lost (a broker restarted without
    persistence), working ones whose owner is dead and whose message never came back. Their sources become
    pending for the next run. A claim a live worker holds is never expired."""
    cutoff = clock.now() - timedelta(seconds=expiry_seconds)
    rows = session.scalars(
        select(RunClaim)
        .where(RunClaim.state.in_(OPEN_STATES), func.coalesce(RunClaim.claimed_at, RunClaim.queued_at) < cutoff)
        .with_for_update(skip_locked=True)
    ).all()
    n = 0
    for row in rows:
        if row.state == WORKING and claim_owner_alive(session, row.id):
            continue
        row.state, row.finished_at = EXPIRED, clock.now()
        row.error = (
            f"expired: not finished within {expiry_seconds:g} s of being {'claimed' if row.claimed_at else 'queued'}"
        )
        n += 1
    return n


@dataclass(frozen=True)
class Begin:
    """What a delivery found when it tried to start its claim."""

    go: bool  # capture now
    run_id: str = ""
    source_id: int = 0
    reason: str = ""  # why not (already done, expired, missing)
    took_over_from: str | None = None
    interrupted: int = 0  # the dead owner's captures marked interrupted
    adopted: CaptureSummary | None = None  # the dead owner had committed the capture: nothing to do again


def begin(session: Session, clock: Clock, claim_id: int, worker: str) -> Begin:
    """Start the claim for ``worker``, which must hold the claim's advisory lock."""
    row = session.get(RunClaim, claim_id, with_for_update=True)
    if row is None:
        return Begin(False, reason="no such claim")
    if row.state not in OPEN_STATES:
        return Begin(False, row.run_id, row.source_id, reason=f"claim already {row.state}")
    previous = row.worker if row.state == WORKING else None
    row.state, row.worker, row.attempts, row.claimed_at = WORKING, worker, row.attempts + 1, clock.now()
    interrupted = 0
    if previous is not None:
        # We hold the claim's lock, so the previous owner is dead: its capture of this source will never finish.
        result = session.execute(
            update(Capture)
            .where(Capture.run_id == row.run_id, Capture.source_id == row.source_id, Capture.outcome == "running")
            .values(outcome="interrupted", ended_at=clock.now(), error=INTERRUPTED_ERROR)
        )
        interrupted = int(getattr(result, "rowcount", 0) or 0)
    adopted = committed_summary(session, row.run_id, row.source_id) if previous is not None else None
    return Begin(True, row.run_id, row.source_id, took_over_from=previous, interrupted=interrupted, adopted=adopted)


def finish(session: Session, clock: Clock, claim_id: int, worker: str, summary: CaptureSummary) -> bool:
    """Mark the claim done with the capture's summary; False when another worker took it over meanwhile."""
    row = session.get(RunClaim, claim_id, with_for_update=True)
    if row is None or row.state != WORKING or row.worker != worker:
        return False
    row.state, row.finished_at = DONE, clock.now()
    row.capture_id, row.outcome, row.error, row.summary = (
        summary.capture_id,
        summary.outcome,
        summary.error,
        dict(summary.__dict__),
    )
    return True


def fail(session: Session, clock: Clock, claim_id: int, worker: str, error: str) -> bool:
    """The task could not run the capture: the claim ends in ``error``; the source stays pending for a later run."""
    row = session.get(RunClaim, claim_id, with_for_update=True)
    if row is None or row.state != WORKING or row.worker != worker:
        return False
    row.state, row.finished_at, row.error = ERROR, clock.now(), error[:2000]
    return True


def committed_summary(session: Session, run_id: str, source_id: int) -> CaptureSummary | None:
    """The summary of the run's finished captures of the source, if a dead owner committed them already."""
    caps = session.scalars(
        select(Capture)
        .where(Capture.run_id == run_id, Capture.source_id == source_id, Capture.outcome.not_in(UNFINISHED))
        .order_by(Capture.id)
    ).all()
    if not caps:
        return None
    src = session.get(Source, source_id)
    assert src is not None
    ids = [c.id for c in caps]
    records, size = session.execute(
        select(func.count(Artifact.id), func.coalesce(func.sum(Artifact.length), 0)).where(Artifact.capture_id.in_(ids))
    ).one()
    web = caps[0]
    return CaptureSummary(
        source_id=source_id,
        capture_id=web.id,
        url=src.url or "",
        outcome={st.CAPTURED: "ok", st.GONE: "gone"}.get(src.status, "failed"),
        http_status=web.http_status,
        final_url=web.final_url,
        error="; ".join(c.error for c in caps if c.error and c.outcome not in ("ok", "no-media")) or None,
        records=int(records),
        bytes=int(size),
        methods=len(caps),
    )


@dataclass
class RunProgress:
    run_id: str
    states: dict[str, int] = field(default_factory=dict)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def open(self) -> int:
        return sum(self.states.get(s, 0) for s in OPEN_STATES)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "claims": self.total, "open": self.open, "states": self.states}


def progress(session: Session, run_id: str) -> RunProgress:
    report = RunProgress(run_id)
    for state, n in session.execute(
        select(RunClaim.state, func.count()).where(RunClaim.run_id == run_id).group_by(RunClaim.state)
    ):
        report.states[state] = int(n)
    for row in session.scalars(
        select(RunClaim)
        .where(RunClaim.run_id == run_id, RunClaim.state.in_((DONE, ERROR, EXPIRED)))
        .order_by(RunClaim.id)
    ):
        if row.state == DONE and row.summary is not None:
            report.summaries.append(row.summary)
        else:
            report.errors.append({"source_id": row.source_id, "state": row.state, "error": row.error})
    return report


def dead_owner_claims(session: Session, run_id: str) -> list[tuple[int, int, str]]:
    """Working claims of the run whose owner died: (claim id, source id, dead owner)."""
    out = []
    for row in session.scalars(select(RunClaim).where(RunClaim.run_id == run_id, RunClaim.state == WORKING)):
        if row.worker is not None and not claim_owner_alive(session, row.id):
            out.append((row.id, row.source_id, row.worker))
    return out


def claim_of(session: Session, run_id: str, source_id: int) -> int | None:
    return session.scalar(select(RunClaim.id).where(RunClaim.run_id == run_id, RunClaim.source_id == source_id))


def run_exists(session: Session, run_id: str) -> bool:
    return session.get(DistributedRun, run_id) is not None
