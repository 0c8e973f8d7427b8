"""What goes into an incident's bundle, read from the catalogue once into plain values.

An incident's evidence is every record of every capture of every source linked to it (``incident_sources``),
found by its Artifact row (WARC file, offset, length, record id, digests), with the capture receipts, the
timestamp batches that cover them (statement, signature, tokens, TSA certificates), the media items, and the
custody segment (:mod:`archiver.bundle.segment`). Ordering is fixed everywhere (ids, file names, offsets) so
that two exports of an unchanged incident produce identical bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalogue.integrity_models import Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import Artifact, Capture, Incident, MediaItem, Source, WarcFile, incident_sources
from archiver.clock import utc_iso
from archiver.errors import NotFoundError


@dataclass(frozen=True)
class RecordEntry:
    record_id: str
    record_type: str
    role: str
    target_uri: str | None
    media_type: str | None
    capture_id: int
    warc_file: str
    offset: int
    length: int
    block_sha256: str
    payload_sha256: str | None
    record_date: datetime | None  # None for the warcinfo records a bundle adds


@dataclass(frozen=True)
class CaptureEntry:
    id: int
    source_id: int
    method: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    requested_url: str | None
    final_url: str | None
    http_status: int | None
    error: str | None
    collector: str


@dataclass(frozen=True)
class SourceEntry:
    id: int
    url: str | None
    lead: str | None
    kind: str
    platform: str | None
    item_id: str | None
    title: str | None
    status: str
    gone_at: datetime | None
    last_captured_at: datetime | None
    cited_as: str | None
    captures: tuple[CaptureEntry, ...]


@dataclass(frozen=True)
class MediaEntry:
    capture_id: int
    source_id: int
    platform: str
    item_id: str
    format_id: str | None
    title: str | None
    sha256: str | None
    size: int | None
    record_id: str | None


@dataclass(frozen=True)
class TokenEntry:
    id: int
    tsa_name: str
    digest: str
    token_der: bytes
    gen_time: datetime
    certificates: str


@dataclass(frozen=True)
class BatchEntry:
    id: int
    root: str
    size: int
    statement_sha256: str
    signature: bytes
    key_id: str
    tokens: tuple[TokenEntry, ...]


@dataclass(frozen=True)
class ReceiptEntry:
    capture_id: int
    sha256: str
    canonical: bytes
    signature: bytes
    key_id: str
    record_id: str
    batch_id: int | None
    leaf_index: int | None
    merkle_path: tuple[str, ...]


@dataclass(frozen=True)
class IncidentContents:
    incident: dict[str, Any]
    sources: tuple[SourceEntry, ...]
    records: tuple[RecordEntry, ...]  # ordered by original WARC file name, then offset
    media: tuple[MediaEntry, ...]
    receipts: tuple[ReceiptEntry, ...]
    batches: tuple[BatchEntry, ...]

    @property
    def warc_files(self) -> list[str]:
        return sorted({r.warc_file for r in self.records})

    @property
    def payload_bytes(self) -> int:
        return sum(r.length for r in self.records)


def incident_document(inc: Incident) -> dict[str, Any]:
    """The incident's facts as the manifest gave them (no catalogue bookkeeping times: they are not evidence)."""
    return {
        "id": inc.id,
        "title": inc.title,
        "when": {
            "start": inc.when_start,
            "end": inc.when_end,
            "timezone": inc.when_timezone,
            "precision": inc.when_precision,
            "approximate": inc.when_approximate,
        },
        "place": {
            "name": inc.place_name,
            "admin": list(inc.place_admin),
            "country": inc.country,
            "lat": inc.lat,
            "lon": inc.lon,
        },
        "facility": inc.facility,
        "categories": list(inc.categories),
        "summary": inc.summary,
    }


def load_contents(session: Session, incident_id: str) -> IncidentContents:
    """Everything the bundle of ``incident_id`` holds, except the custody segment. Raises NotFoundError."""
    inc = session.get(Incident, incident_id)
    if inc is None:
        raise NotFoundError(f"no incident {incident_id!r}", hint="see 'archiver incident list' for the ids")
    links = session.execute(
        select(Source, incident_sources.c.cited_as)
        .join(incident_sources, incident_sources.c.source_id == Source.id)
        .where(incident_sources.c.incident_id == incident_id)
        .order_by(Source.id)
    ).all()
    source_ids = [src.id for src, _ in links]
    captures = _captures(session, source_ids)
    by_source: dict[int, list[CaptureEntry]] = {}
    for c in captures:
        by_source.setdefault(c.source_id, []).append(c)
    sources = tuple(
        SourceEntry(
            src.id,
            src.url,
            src.lead,
            src.kind,
            src.platform,
            src.item_id,
            src.title,
            src.status,
            src.gone_at,
            src.last_captured_at,
            cited_as,
            tuple(by_source.get(src.id, ())),
        )
        for src, cited_as in links
    )
    capture_ids = [c.id for c in captures]
    records = _records(session, capture_ids)
    media = tuple(
        MediaEntry(
            m.capture_id, m.source_id, m.platform, m.item_id, m.format_id, m.title, m.sha256, m.size, m.media_record_id
        )
        for m in _chunked(session, MediaItem, MediaItem.capture_id, capture_ids, MediaItem.id)
    )
    receipt_rows = list(_chunked(session, Receipt, Receipt.capture_id, capture_ids, Receipt.capture_id))
    receipts = tuple(
        ReceiptEntry(
            r.capture_id,
            r.sha256,
            r.canonical,
            r.signature,
            r.key_id,
            r.record_id,
            r.batch_id,
            r.leaf_index,
            tuple(r.merkle_path or ()),
        )
        for r in receipt_rows
    )
    batch_ids = sorted({r.batch_id for r in receipts if r.batch_id is not None})
    return IncidentContents(incident_document(inc), sources, records, media, receipts, _batches(session, batch_ids))


def _chunked(session: Session, model: Any, column: Any, ids: list[int], order: Any) -> Iterable[Any]:
    for i in range(0, len(ids), 500):
        yield from session.scalars(select(model).where(column.in_(ids[i : i + 500])).order_by(order))


def _captures(session: Session, source_ids: list[int]) -> list[CaptureEntry]:
    rows = _chunked(session, Capture, Capture.source_id, source_ids, Capture.id)
    out = [
        CaptureEntry(
            c.id,
            c.source_id,
            c.method,
            c.started_at,
            c.ended_at,
            c.outcome,
            c.requested_url,
            c.final_url,
            c.http_status,
            c.error,
            c.collector,
        )
        for c in rows
    ]
    return sorted(out, key=lambda c: c.id)


def _records(session: Session, capture_ids: list[int]) -> tuple[RecordEntry, ...]:
    out: list[RecordEntry] = []
    for i in range(0, len(capture_ids), 500):
        rows = session.execute(
            select(Artifact, WarcFile.name)
            .join(WarcFile, Artifact.warc_file_id == WarcFile.id)
            .where(Artifact.capture_id.in_(capture_ids[i : i + 500]))
        ).all()
        out += [
            RecordEntry(
                a.record_id,
                a.record_type,
                a.role,
                a.target_uri,
                a.media_type,
                a.capture_id,
                name,
                a.offset,
                a.length,
                a.block_sha256,
                a.payload_sha256,
                a.record_date,
            )
            for a, name in rows
        ]
    return tuple(sorted(out, key=lambda r: (r.warc_file, r.offset)))


def _batches(session: Session, batch_ids: list[int]) -> tuple[BatchEntry, ...]:
    if not batch_ids:
        return ()
    tokens: dict[int, list[TokenEntry]] = {}
    for t in session.scalars(
        select(TimestampToken).where(TimestampToken.batch_id.in_(batch_ids)).order_by(TimestampToken.id)
    ):
        assert t.batch_id is not None
        tokens.setdefault(t.batch_id, []).append(token_entry(t))
    batches = session.scalars(
        select(TimestampBatch).where(TimestampBatch.id.in_(batch_ids)).order_by(TimestampBatch.id)
    )
    return tuple(
        BatchEntry(b.id, b.root, b.size, b.statement_sha256, b.signature, b.key_id, tuple(tokens.get(b.id, ())))
        for b in batches
    )


def token_entry(t: TimestampToken) -> TokenEntry:
    return TokenEntry(t.id, t.tsa_name, t.digest, t.token_der, t.gen_time, t.certificates)


def capture_document(c: CaptureEntry) -> dict[str, Any]:
    return {
        "id": c.id,
        "source": c.source_id,
        "method": c.method,
        "started_at": utc_iso(c.started_at),
        "ended_at": utc_iso(c.ended_at) if c.ended_at else None,
        "outcome": c.outcome,
        "requested_url": c.requested_url,
        "final_url": c.final_url,
        "http_status": c.http_status,
        "error": c.error,
        "collector": c.collector,
    }


def source_document(s: SourceEntry) -> dict[str, Any]:
    return {
        "id": s.id,
        "url": s.url,
        "lead": s.lead,
        "kind": s.kind,
        "platform": s.platform,
        "item_id": s.item_id,
        "title": s.title,
        "status": s.status,
        "gone_at": utc_iso(s.gone_at) if s.gone_at else None,
        "last_captured_at": utc_iso(s.last_captured_at) if s.last_captured_at else None,
        "cited_as": s.cited_as,
        "captures": [capture_document(c) for c in s.captures],
    }
