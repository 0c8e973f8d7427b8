"""The custody segment of a bundle: the incident's events in full, the hashes alone of every other event between.

The chain rule is ``hash(n) = sha256(hash(n-1) as hex || canonical_json(event n))`` (:mod:`archiver.custody`).
A segment is the run of consecutive events from the incident's first event to its last (extended to the next
signed checkpoint of the chain head, when one exists, so that the segment ends at a statement signed and
timestamped independently). Events of the incident carry their full document, so their hashes can be
recomputed; every other event is present as ``{"seq", "prev_hash", "hash"}`` only, which keeps the links
checkable without revealing other incidents.

``exported`` events are not part of an incident's story in a bundle (they record bundles, not evidence), and
an export's own event is appended after its bag is complete: both appear as hash-only entries when they fall
inside the segment. So exporting an unchanged incident twice gives identical payload files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import custody
from archiver.bundle.contents import TokenEntry, token_entry
from archiver.catalogue.integrity_models import CustodyCheckpoint, TimestampToken
from archiver.catalogue.models import CustodyEvent
from archiver.integrity import Problem

EXCLUDED_ACTIONS = frozenset({"exported"})


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    prev_hash: str
    hash: str
    document: dict[str, Any] | None  # None: an event of something else, listed by its hash only

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash}
        if self.document is not None:
            out["event"] = self.document
        return out


@dataclass(frozen=True)
class CheckpointEntry:
    id: int
    seq: int
    head_hash: str
    statement_sha256: str
    signature: bytes
    key_id: str
    event_seq: int
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Segment:
    entries: tuple[ChainEntry, ...]
    checkpoint: CheckpointEntry | None
    checkpoint_tokens: tuple[TokenEntry, ...]

    @property
    def events(self) -> list[ChainEntry]:
        return [e for e in self.entries if e.document is not None]


def load_segment(session: Session, incident_id: str) -> Segment:
    own = [e for e in custody.events_for_incident(session, incident_id) if e.action not in EXCLUDED_ACTIONS]
    if not own:
        return Segment((), None, ())
    first, last = own[0].seq, own[-1].seq
    cp = session.scalars(
        select(CustodyCheckpoint)
        .where(CustodyCheckpoint.seq >= last)
        .order_by(CustodyCheckpoint.seq, CustodyCheckpoint.id)
        .limit(1)
    ).first()
    end = max(last, cp.seq) if cp is not None else last
    full = {e.seq for e in own}
    entries: list[ChainEntry] = []
    # Hash-only rows are read as three columns; full documents only for the incident's own events.
    rows = session.execute(
        select(CustodyEvent.seq, CustodyEvent.prev_hash, CustodyEvent.hash)
        .where(CustodyEvent.seq >= first, CustodyEvent.seq <= end)
        .order_by(CustodyEvent.seq)
    ).all()
    docs = {e.seq: custody.document_of(e) for e in own}
    for seq, prev, h in rows:
        entries.append(ChainEntry(seq, prev, h, docs[seq] if seq in full else None))
    tokens: tuple[TokenEntry, ...] = ()
    checkpoint = None
    if cp is not None:
        tokens = tuple(
            token_entry(t)
            for t in session.scalars(
                select(TimestampToken).where(TimestampToken.checkpoint_id == cp.id).order_by(TimestampToken.id)
            )
        )
        checkpoint = CheckpointEntry(
            cp.id, cp.seq, cp.head_hash, cp.statement_sha256, cp.signature, cp.key_id, cp.event_seq,
            tuple(t.id for t in tokens),
        )  # fmt: skip
    return Segment(tuple(entries), checkpoint, tokens)


def parse_chain(lines: Iterable[str], path: str) -> tuple[list[ChainEntry], list[Problem]]:
    """Read ``chain.jsonl`` lines; malformed lines are problems, not exceptions."""
    entries: list[ChainEntry] = []
    problems: list[Problem] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            doc = raw.get("event")
            if doc is not None and not isinstance(doc, dict):
                raise ValueError("event is not an object")
            entries.append(ChainEntry(int(raw["seq"]), str(raw["prev_hash"]), str(raw["hash"]), doc))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(Problem("custody-malformed", f"{path}:{n}", "a chain entry", str(exc)))
    return entries, problems


def check_segment(entries: Sequence[ChainEntry], path: str) -> list[Problem]:
    """Consecutive sequence numbers, each ``prev_hash`` equal to the hash before it, and each full event's hash
    recomputed. The first entry's ``prev_hash`` links to an event outside the segment (genesis for event 1)."""
    problems: list[Problem] = []
    prev: ChainEntry | None = None
    for e in entries:
        subject = f"{path} event {e.seq}"
        if prev is not None:
            if e.seq != prev.seq + 1:
                problems.append(Problem("custody-gap", subject, f"seq {prev.seq + 1}", f"seq {e.seq}"))
            if e.prev_hash != prev.hash:
                problems.append(Problem("custody-prev-hash", subject, prev.hash, e.prev_hash))
        elif e.seq == 1 and e.prev_hash != custody.GENESIS:
            problems.append(Problem("custody-prev-hash", subject, custody.GENESIS, e.prev_hash))
        if e.document is not None:
            try:
                if e.document.get("seq") != e.seq:
                    raise ValueError(f"its document says seq {e.document.get('seq')}")
                recomputed = custody.chain_hash(e.prev_hash, e.document)
            except (ValueError, TypeError) as exc:
                problems.append(Problem("custody-event", subject, "a canonical event document", str(exc)))
            else:
                if recomputed != e.hash:
                    problems.append(Problem("custody-hash", subject, recomputed, e.hash))
        prev = e
    return problems
