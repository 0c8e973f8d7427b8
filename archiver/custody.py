"""The chain-of-custody log: append-only and hash-chained.

Every event is a row with a gapless sequence number, a UTC time with microseconds, an actor, an action, a
subject (``incident:<id>``, ``source:<n>``, ``warc:<name>``, ``archive``) and details. Its hash is

    hash = SHA-256( prev_hash_hex || canonical_json(event) )

where ``prev_hash_hex`` is the previous event's hash as 64 lowercase hex characters (64 zeros for the first event)
and ``event`` is ``{"seq", "at", "actor", "action", "subject", "incident", "details"}``. Hex text rather than raw
bytes so that a court's technical staff can recompute it with ``printf`` and ``sha256sum``.

:func:`append` is the only writer. It runs inside the caller's transaction, so an event commits or rolls back with
the change it records. The database refuses UPDATE and DELETE (triggers in the first migration).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, text
from sqlalchemy.orm import Session

from archiver.canonical import canonical_json, canonical_members
from archiver.catalogue.models import CustodyEvent, incident_sources, table_of
from archiver.clock import Clock, parse_utc, utc_iso

GENESIS = "0" * 64

# The vocabulary of actions. New actions are added here, never invented at call sites.
ACTIONS = frozenset(
    {
        "archive.initialised",
        "manifest.loaded",
        "incident.created",
        "incident.updated",
        "source.added",
        "source.linked",
        "source.discovered",
        "capture.started",
        "collected",
        "stored",
        "capture.failed",
        "gone",
        "still-online",
        "recaptured",
        "converted",
        "timestamped",
        "signed",
        "warc.closed",
        "warc.repaired",
        "verified",
        "exported",
        "checkpoint",
        "note",
    }
)

# A fixed key for PostgreSQL's transaction-scoped advisory lock that serialises appenders.
_PG_LOCK_KEY = 0x6375_7374_6F64_79  # "custody"


def event_document(
    seq: int, at: datetime, actor: str, action: str, subject: str, incident: str | None, details: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": utc_iso(at),
        "actor": actor,
        "action": action,
        "subject": subject,
        "incident": incident,
        "details": dict(details),
    }


def chain_hash(prev_hash: str, document: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(document)).hexdigest()


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    # SQLite: every transaction begins IMMEDIATE (archiver.catalogue.db), so writers are already serialised.


def _head(session: Session) -> tuple[int, str]:
    """The chain head (last seq and hash; 0 and GENESIS for an empty log), read under the appenders' lock."""
    _lock_chain(session)
    session.flush()
    head = session.execute(
        select(CustodyEvent.seq, CustodyEvent.hash).order_by(CustodyEvent.seq.desc()).limit(1)
    ).first()
    return (head.seq, head.hash) if head else (0, GENESIS)


@dataclass(frozen=True)
class PreparedEvent:
    """An event before its place in the chain is known: everything but ``seq``, ``at`` and the hashes,
    already in canonical JSON (the details, the largest part, are serialised once, here)."""

    actor: str
    action: str
    subject: str
    incident: str | None
    details_json: bytes
    members: dict[str, bytes]


def prepare_event(
    *, actor: str, action: str, subject: str, incident: str | None, details: Mapping[str, Any] | None
) -> PreparedEvent:
    if action not in ACTIONS:
        raise ValueError(f"unknown custody action {action!r}")
    details_json = canonical_json(dict(details or {}))
    members = {
        "actor": canonical_json(actor),
        "action": canonical_json(action),
        "subject": canonical_json(subject),
        "incident": canonical_json(incident),
        "details": details_json,
    }
    return PreparedEvent(actor, action, subject, incident, details_json, members)


def _sealed(event: PreparedEvent, seq: int, prev: str, at: datetime) -> dict[str, Any]:
    """The column values of ``event`` as number ``seq`` after ``prev``: the one place the hashing rule is
    applied (``chain_hash`` of ``event_document``, which :func:`check_chain` uses, gives the same hash)."""
    at_iso = utc_iso(at)
    document = canonical_members({**event.members, "seq": canonical_json(seq), "at": canonical_json(at_iso)})
    return {
        "seq": seq,
        "at": parse_utc(at_iso),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "incident_id": event.incident,
        "details": event.details_json.decode("utf-8"),
        "prev_hash": prev,
        "hash": hashlib.sha256(prev.encode("ascii") + document).hexdigest(),
    }


def append(
    session: Session,
    clock: Clock,
    *,
    actor: str,
    action: str,
    subject: str,
    incident: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> CustodyEvent:
    """Append one event in the caller's transaction and return it."""
    event = prepare_event(actor=actor, action=action, subject=subject, incident=incident, details=details)
    seq, prev = _head(session)
    row = CustodyEvent(**_sealed(event, seq + 1, prev, clock.now()))
    session.add(row)
    session.flush()
    return row


class PendingEvent:
    """An event given to :meth:`ChainCursor.append`: its ``seq`` and ``hash`` once the cursor has flushed."""

    __slots__ = ("_event", "hash", "seq")

    def __init__(self, event: PreparedEvent) -> None:
        self._event = event
        self.seq: int | None = None
        self.hash: str | None = None


class ChainCursor:
    """Many appends in one transaction with one read of the chain head (group commit of capture runs).

    :meth:`append` prepares an event (checks its action, serialises its details) and touches no table, so a
    transaction's units can be run before it takes the catalogue's write lock. :meth:`flush`, which must run
    before the transaction commits, reads the head under the same lock as :func:`append` (PostgreSQL's
    advisory lock; SQLite's write lock, taken by ``BEGIN IMMEDIATE`` at the transaction's first statement),
    numbers, times and hashes the events in order and inserts them in one statement; the head is then carried
    forward in memory. Hashing goes through the same rule as :func:`append`, so the chain cannot tell the two
    apart.

    Code that calls :func:`append` in the same transaction must be preceded by :meth:`flush` (so that it sees
    the cursor's events) and followed by :meth:`invalidate` (so that the cursor reads the new head). Were either
    forgotten, two events would claim one ``seq`` (the primary key) and the transaction would fail: the chain
    can be refused, never forked.
    """

    def __init__(self, session: Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._head: tuple[int, str] | None = None
        self._pending: list[PendingEvent] = []

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        incident: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> PendingEvent:
        """Add one event; it is numbered and inserted at the next :meth:`flush`."""
        return self.add(prepare_event(actor=actor, action=action, subject=subject, incident=incident, details=details))

    def add(self, event: PreparedEvent) -> PendingEvent:
        """:meth:`append` of an event prepared beforehand (:func:`prepare_event`, outside the transaction)."""
        pending = PendingEvent(event)
        self._pending.append(pending)
        return pending

    @property
    def head(self) -> tuple[int, str] | None:
        """The (seq, hash) the next event follows, if read yet."""
        return self._head

    def flush(self) -> None:
        """Number, time, hash and insert the events added since the last flush (one statement)."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        seq, prev = self._head if self._head is not None else _head(self._session)
        rows = []
        for pending in events:
            seq += 1
            values = _sealed(pending._event, seq, prev, self._clock.now())
            prev = values["hash"]
            pending.seq, pending.hash = seq, prev
            rows.append(values)
        self._session.execute(insert(table_of(CustodyEvent)), rows)
        self._head = (seq, prev)

    def invalidate(self) -> None:
        """Forget the head: another writer in this transaction (:func:`append`) has moved it."""
        self.flush()
        self._head = None


def document_of(row: CustodyEvent) -> dict[str, Any]:
    return event_document(row.seq, row.at, row.actor, row.action, row.subject, row.incident_id, json.loads(row.details))


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    kind: str  # gap | prev-hash | hash | details
    expected: str
    found: str

    def __str__(self) -> str:
        return f"custody event {self.seq}: {self.kind}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class ChainReport:
    events: int
    head_seq: int
    head_hash: str
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        return self.problems[0].seq if self.problems else None


def iter_events(session: Session, *, batch: int = 5000) -> Iterator[CustodyEvent]:
    """All events in sequence order, fetched in batches (the log may hold millions)."""
    last = 0
    while True:
        rows = session.scalars(
            select(CustodyEvent).where(CustodyEvent.seq > last).order_by(CustodyEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def check_chain(session: Session) -> ChainReport:
    """Walk the whole chain: gapless sequence, each prev_hash, each recomputed hash. Problems are data."""
    problems: list[ChainProblem] = []
    expected_seq, prev, count, head_hash = 1, GENESIS, 0, GENESIS
    for row in iter_events(session):
        count += 1
        if row.seq != expected_seq:
            problems.append(ChainProblem(row.seq, "gap", str(expected_seq), str(row.seq)))
        if row.prev_hash != prev:
            problems.append(ChainProblem(row.seq, "prev-hash", prev, row.prev_hash))
        try:
            recomputed = chain_hash(row.prev_hash, document_of(row))
        except (ValueError, TypeError) as exc:  # details no longer valid JSON
            problems.append(ChainProblem(row.seq, "details", "canonical JSON", str(exc)))
        else:
            if recomputed != row.hash:
                problems.append(ChainProblem(row.seq, "hash", recomputed, row.hash))
        prev, head_hash, expected_seq = row.hash, row.hash, row.seq + 1
    return ChainReport(count, expected_seq - 1, head_hash, tuple(problems))


def events_for_incident(session: Session, incident_id: str) -> list[CustodyEvent]:
    """Events about the incident itself, or about one of its sources and no other incident, in sequence order.

    A source cited by two incidents was added under one of them: that event belongs to the other incident's
    story only as a link, so an export for one incident never reveals another incident's events.
    """
    source_ids = session.scalars(
        select(incident_sources.c.source_id).where(incident_sources.c.incident_id == incident_id)
    ).all()
    subjects = [f"source:{sid}" for sid in source_ids]
    return list(
        session.scalars(
            select(CustodyEvent)
            .where(
                or_(
                    CustodyEvent.incident_id == incident_id,
                    CustodyEvent.subject == f"incident:{incident_id}",
                    and_(CustodyEvent.incident_id.is_(None), CustodyEvent.subject.in_(subjects)),
                )
            )
            .order_by(CustodyEvent.seq)
        )
    )
