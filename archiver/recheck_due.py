"""Which sources are due for a re-check, and the two ways in: ``archiver run`` and ``archiver recheck``.

Both take the run lock (one archiver run at a time, :mod:`archiver.jobs`), write the same log, and end by
timestamping the receipts of what was captured again (:func:`archiver.jobs.seal`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from archiver.archive import Archive
from archiver.capture.job import ProgressCallback
from archiver.catalogue import store as st
from archiver.catalogue.models import Incident, Source, incident_sources, table_of
from archiver.errors import ArchiverError, NotFoundError
from archiver.recheck import Rechecker, RecheckSummary, next_check
from archiver.recheck_schedule import RecheckSettings


class NotCapturedError(ArchiverError):
    """A source named for a re-check has nothing to compare with: it was never captured."""

    exit_code = 2


def schedule_new(s: Session, settings: RecheckSettings, *, everything: bool = False) -> int:
    """Give captured and gone sources their first slot (or, with ``everything``, recompute every slot, e.g. after
    the schedule in settings.toml changed). A missed first slot is due at once. Returns how many were set.

    Columns, not ORM objects: a run that captured thousands of sources schedules them all here, and loading and
    flushing each as an object cost more than the run's own ending."""
    query = select(
        Source.id, Source.status, Source.gone_at, Source.last_checked_at, Source.last_captured_at, Source.next_check_at
    ).where(Source.status.in_([st.CAPTURED, st.GONE]), Source.url.is_not(None))
    if not everything:
        # Captured (or gone) since the last check: not scheduled yet. Ended schedules are not rescanned.
        query = query.where(
            Source.next_check_at.is_(None),
            or_(
                Source.last_checked_at.is_(None),
                Source.last_checked_at < func.coalesce(Source.last_captured_at, Source.gone_at),
                Source.last_checked_at < Source.gone_at,
            ),
        )
    changes = []
    for row in s.execute(query):
        base = row.last_checked_at or row.gone_at or row.last_captured_at
        nxt = next_check(row, settings, base) if base is not None else None
        if nxt != row.next_check_at:
            changes.append({"sid": row.id, "nxt": nxt})
    if changes:
        table = table_of(Source)  # Core: one executemany (the ORM would take the list for a bulk by primary key)
        s.execute(update(table).where(table.c.id == bindparam("sid")).values(next_check_at=bindparam("nxt")), changes)
        s.expire_all()  # a Source this session holds reads its new slot
    return len(changes)


def due_sources(s: Session, now: datetime, limit: int, incident_id: str | None = None) -> list[int]:
    query = (
        select(Source.id)
        .where(
            Source.status.in_([st.CAPTURED, st.GONE]),
            Source.url.is_not(None),
            Source.next_check_at.is_not(None),
            Source.next_check_at <= now,
        )
        .order_by(Source.next_check_at, Source.id)
        .limit(limit)
    )
    if incident_id is not None:
        query = query.join(incident_sources, incident_sources.c.source_id == Source.id).where(
            incident_sources.c.incident_id == incident_id
        )
    return list(s.scalars(query))


def sources_to_check(s: Session, *, incident_id: str | None, source_ids: Iterable[int]) -> list[int]:
    """Sources named for a re-check now, whatever their schedule: each must exist and have been captured (or be
    gone). An incident names all of its captured and gone sources."""
    out: list[int] = []
    for sid in source_ids:
        src = s.get(Source, sid)
        if src is None:
            raise NotFoundError(f"no source {sid}", hint="'archiver incident show ID' lists sources with their ids")
        if src.status not in (st.CAPTURED, st.GONE) or src.url is None:
            raise NotCapturedError(
                f"source {sid} is {src.status}: only captured or gone sources are re-checked",
                hint="'archiver run' captures pending sources first",
            )
        out.append(sid)
    if incident_id is None:
        return out
    if s.get(Incident, incident_id) is None:
        raise NotFoundError(f"no incident {incident_id!r}", hint="'archiver incident list' shows the known ids")
    return out + list(
        s.scalars(
            select(Source.id)
            .join(incident_sources, incident_sources.c.source_id == Source.id)
            .where(incident_sources.c.incident_id == incident_id, Source.status.in_([st.CAPTURED, st.GONE]))
            .order_by(Source.id)
        )
    )


def run_due(
    archive: Archive,
    make: Callable[[], Rechecker],
    *,
    max_time: float | None = None,
    incident_id: str | None = None,
) -> RecheckSummary:
    """Schedule what was captured since the last run, then re-check what is due (at most ``max_per_run``).

    ``make`` builds the :class:`Rechecker` only when something is due: a run with nothing to re-check starts no
    fetcher and looks for no tool.
    """
    settings = archive.settings.recheck
    with archive.session() as s:
        scheduled = schedule_new(s, settings)
        due = due_sources(s, archive.clock.now(), settings.max_per_run, incident_id)
    summary = make().run(due, max_time=max_time) if due else RecheckSummary()
    summary.scheduled = scheduled
    return summary


def after_captures(
    archive: Archive, *, workers: int | None, max_time: float | None, log: logging.Logger
) -> RecheckSummary:
    """``archiver run``'s re-check step, inside its lock, with what is left of its ``--max-time``."""
    if max_time is not None and max_time < 1.0:
        with archive.reading() as s:
            due = len(due_sources(s, archive.clock.now(), archive.settings.recheck.max_per_run))
        log.info("re-checks: no time left; %s due sources wait for the next run", due)
        return RecheckSummary(due=due, skipped=due, stopped_early=due > 0)
    summary = run_due(archive, lambda: Rechecker(archive, workers=workers), max_time=max_time)
    log_summary(log, summary)
    return summary


@dataclass(frozen=True)
class RecheckOptions:
    source_ids: tuple[int, ...] = ()
    incident_id: str | None = None
    due_only: bool = False  # with an incident: only its due sources
    reschedule: bool = False  # recompute every slot from settings.toml first
    workers: int | None = None
    max_time: float | None = None


def recheck_now(
    archive: Archive, options: RecheckOptions, progress: ProgressCallback | None = None
) -> tuple[RecheckSummary, dict[str, object]]:
    """``archiver recheck``: the named sources (or an incident's, or what is due) now, under the run lock.

    Returns the summary and what sealing did (receipts of recaptures timestamped, custody checkpoint).
    """
    from archiver import jobs  # jobs imports this module for archiver run

    archive.ensure_ready()
    with jobs.run_lock(archive.settings.root), jobs.run_log(archive.settings.root) as log:
        started = time.monotonic()
        with archive.session() as s:
            rescheduled = schedule_new(s, archive.settings.recheck, everything=True) if options.reschedule else 0
            named = None
            if options.source_ids or (options.incident_id is not None and not options.due_only):
                named = sources_to_check(s, incident_id=options.incident_id, source_ids=options.source_ids)
        log.info("re-check started (%s)", "due sources" if named is None else f"{len(named)} named sources")

        def make() -> Rechecker:
            return Rechecker(archive, workers=options.workers, progress=progress)

        if named is None:
            summary = run_due(archive, make, max_time=options.max_time, incident_id=options.incident_id)
        else:
            summary = make().run(named, max_time=options.max_time) if named else RecheckSummary()
        summary.scheduled += rescheduled
        summary.seconds = time.monotonic() - started
        log_summary(log, summary)
        return summary, jobs.seal(archive, log)


def log_summary(log: logging.Logger, summary: RecheckSummary) -> None:
    data = summary.as_dict()
    log.info(
        "re-checks: due=%s checked=%s still_online=%s changed=%s gone=%s returned=%s errors=%s skipped=%s",
        *(data[k] for k in ("due", "checked", "still_online", "changed", "gone", "returned", "errors", "skipped")),
    )
    for c in summary.checks:
        if c.result != "still-online":
            log.info("re-check %s source %s %s: %s", c.result, c.source_id, c.url, "; ".join(c.reasons))
    for f in summary.failing:
        log.warning(
            "re-checks of source %s (%s) failed %s times in a row", f["source_id"], f["url"], f["errors_in_a_row"]
        )
