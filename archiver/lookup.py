"""Lookup: "is this exactly what we captured, from where, when, and who has touched it since?"

Given a file (hashed here, streaming) or a SHA-256, :func:`lookup` finds every stored record whose payload has
that digest (index ``ix_artifacts_payload_sha256``) and reports, for each: the incident(s), the source URL,
the capture's UTC times and outcome, the WARC file, offset and record id, the capture's receipt with the status
of its signature, Merkle path and timestamps (genTime, TSA), and the custody history of the source, of the
WARC file holding the record, and of the receipt's timestamp batch. A digest we do not hold gives a report
with ``found=False`` and no matches, never an error.

Signatures and tokens are checked when the caller passes the archive's public key and the configured TSA
certificates (:func:`lookup_archive` does); otherwise they are reported as ``unchecked``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.archive import Archive
from archiver.catalogue.integrity_models import Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import Artifact, Capture, CustodyEvent, Source, WarcFile, incident_sources
from archiver.errors import NotFoundError
from archiver.integrity.batches import batch_statement, trusted_tsa_pems
from archiver.keys import PUBLIC_KEY_NAME, verify_signature
from archiver.merkle import verify_inclusion
from archiver.timestamps import verify_token

_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
_BUFFER = 4 << 20
VALID, INVALID, UNCHECKED = "valid", "invalid", "unchecked"


@dataclass(frozen=True)
class TimestampInfo:
    tsa: str
    gen_time: datetime
    status: str  # valid | invalid | unchecked
    problem: str | None = None


@dataclass(frozen=True)
class ReceiptInfo:
    sha256: str
    key_id: str
    signature: str  # valid | invalid | unchecked
    batch_id: int | None  # None: still waiting for a timestamp
    merkle: str | None  # valid | invalid, None while pending
    timestamps: tuple[TimestampInfo, ...]

    @property
    def pending(self) -> bool:
        return self.batch_id is None


@dataclass(frozen=True)
class CustodyEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Match:
    artifact_id: int
    role: str
    record_type: str
    media_type: str | None
    size: int
    target_uri: str | None
    record_id: str
    warc_file: str
    offset: int
    length: int
    record_date: datetime
    capture_id: int
    capture_started: datetime
    capture_ended: datetime | None
    outcome: str
    source_id: int
    source_url: str | None
    incidents: tuple[str, ...]
    receipt: ReceiptInfo | None
    custody: tuple[CustodyEntry, ...]


@dataclass(frozen=True)
class LookupReport:
    query: str  # what was asked: a path or a digest
    sha256: str
    matches: tuple[Match, ...]

    @property
    def found(self) -> bool:
        return bool(self.matches)


def sha256_of_file(path: Path) -> str:
    """SHA-256 of a file, streamed (a video may be gigabytes)."""
    digest = hashlib.sha256()
    buf = bytearray(_BUFFER)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                digest.update(view[:n])
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: no such file", hint="give a file path or a 64-character SHA-256") from exc
    except OSError as exc:
        raise NotFoundError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def resolve_query(file_or_sha256: str | os.PathLike[str]) -> str:
    """The SHA-256 hex a query stands for: a ``Path`` is hashed; a string is a digest if it looks like one
    (64 hex digits, optionally ``sha256:``), else a path."""
    if isinstance(file_or_sha256, str) and (m := _DIGEST.fullmatch(file_or_sha256.strip())):
        return m.group(1).lower()
    return sha256_of_file(Path(file_or_sha256))


def lookup(
    session: Session,
    file_or_sha256: str | os.PathLike[str],
    *,
    public_pem: bytes | None = None,
    trusted_tsa_pems: bytes | None = None,
) -> LookupReport:
    digest = resolve_query(file_or_sha256)
    rows = session.execute(
        select(Artifact, Capture, Source, WarcFile.name)
        .join(Capture, Artifact.capture_id == Capture.id)
        .join(Source, Capture.source_id == Source.id)
        .join(WarcFile, Artifact.warc_file_id == WarcFile.id)
        .where(Artifact.payload_sha256 == digest)
        .order_by(Artifact.id)
    ).all()
    matches = []
    for art, cap, src, warc_name in rows:
        incidents = session.scalars(
            select(incident_sources.c.incident_id)
            .where(incident_sources.c.source_id == src.id)
            .order_by(incident_sources.c.incident_id)
        ).all()
        receipt_row = session.scalar(select(Receipt).where(Receipt.capture_id == cap.id))
        receipt = _receipt_info(session, receipt_row, public_pem, trusted_tsa_pems) if receipt_row else None
        subjects = [f"source:{src.id}", f"warc:{warc_name}"]
        if receipt_row is not None and receipt_row.batch_id is not None:
            subjects.append(f"batch:{receipt_row.batch_id}")
        matches.append(
            Match(
                art.id,
                art.role,
                art.record_type,
                art.media_type,
                art.size,
                art.target_uri,
                art.record_id,
                warc_name,
                art.offset,
                art.length,
                art.record_date,
                cap.id,
                cap.started_at,
                cap.ended_at,
                cap.outcome,
                src.id,
                src.url,
                tuple(incidents),
                receipt,
                _history(session, subjects),
            )
        )
    return LookupReport(str(file_or_sha256), digest, tuple(matches))


def lookup_archive(archive: Archive, file_or_sha256: str | os.PathLike[str]) -> LookupReport:
    """:func:`lookup` with the archive's public key and configured TSA certificates, so statuses are checked."""
    digest = resolve_query(file_or_sha256)  # hash a file before any database transaction opens
    public = archive.settings.key_dir / PUBLIC_KEY_NAME
    public_pem = public.read_bytes() if public.exists() else None
    trusted = trusted_tsa_pems(archive.settings)
    with archive.reading() as s:
        report = lookup(s, digest, public_pem=public_pem, trusted_tsa_pems=trusted)
    return LookupReport(str(file_or_sha256), report.sha256, report.matches)


def _receipt_info(session: Session, row: Receipt, public_pem: bytes | None, trusted: bytes | None) -> ReceiptInfo:
    digest = hashlib.sha256(row.canonical).digest()
    signature = UNCHECKED
    if public_pem is not None:
        signature = VALID if verify_signature(public_pem, digest, row.signature) else INVALID
    batch = session.get(TimestampBatch, row.batch_id) if row.batch_id is not None else None
    if row.batch_id is None:
        return ReceiptInfo(row.sha256, row.key_id, signature, None, None, ())
    if batch is None:  # a batch row that vanished: verify names it
        return ReceiptInfo(row.sha256, row.key_id, signature, row.batch_id, INVALID, ())
    path = [bytes.fromhex(p) for p in row.merkle_path or []]
    leaf_ok = row.leaf_index is not None and verify_inclusion(
        digest, row.leaf_index, batch.size, path, bytes.fromhex(batch.root)
    )
    statement = hashlib.sha256(batch_statement(batch.root, batch.size)).digest()
    tokens = session.scalars(
        select(TimestampToken).where(TimestampToken.batch_id == batch.id).order_by(TimestampToken.id)
    ).all()
    infos = []
    for token in tokens:
        if trusted is None:
            infos.append(TimestampInfo(token.tsa_name, token.gen_time, UNCHECKED))
            continue
        problems = verify_token(token.token_der, statement, trusted)
        status = INVALID if problems else VALID
        infos.append(TimestampInfo(token.tsa_name, token.gen_time, status, "; ".join(problems) or None))
    return ReceiptInfo(row.sha256, row.key_id, signature, batch.id, VALID if leaf_ok else INVALID, tuple(infos))


def _history(session: Session, subjects: list[str]) -> tuple[CustodyEntry, ...]:
    events = session.scalars(
        select(CustodyEvent).where(CustodyEvent.subject.in_(subjects)).order_by(CustodyEvent.seq)
    ).all()
    return tuple(CustodyEntry(e.seq, e.at, e.actor, e.action, e.subject, _details(e.details)) for e in events)


def _details(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}  # an edited event; verify names it
    return value if isinstance(value, dict) else {"value": value}
