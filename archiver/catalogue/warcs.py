"""Catalogue rows for what the WARC sink wrote: one Artifact per record, and the record of a closed file.

Every writer of the archive (the capture job, receipts, recovery) goes through these two functions so that an
Artifact row always says exactly what its :class:`RecordRef` says, and every closed file gets its custody event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import custody
from archiver.catalogue.models import Artifact, WarcFile
from archiver.clock import Clock
from archiver.warc.records import RecordRef


def artifact_values(
    ref: RecordRef,
    *,
    capture_id: int,
    role: str,
    warc_file_id: int,
    media_type: str | None = None,
    with_payload_digest: bool = True,
) -> dict[str, Any]:
    """The Artifact columns of one stored record: the one place they are derived from a :class:`RecordRef`.
    Plain values, so a capture run can bulk-insert them without building ORM objects."""
    return {
        "capture_id": capture_id,
        "role": role,
        "record_type": ref.record_type,
        "record_id": ref.record_id,
        "target_uri": ref.target_uri,
        "media_type": media_type,
        "size": ref.payload_length,
        "payload_sha256": ref.payload_digest.hex if with_payload_digest and ref.payload_digest else None,
        "block_sha256": ref.block_digest.hex,
        "warc_file_id": warc_file_id,
        "offset": ref.offset,
        "length": ref.length,
        "record_date": ref.date,
    }


def artifact_from_ref(
    ref: RecordRef,
    *,
    capture_id: int,
    role: str,
    warc_file_id: int,
    media_type: str | None = None,
    with_payload_digest: bool = True,
) -> Artifact:
    return Artifact(
        **artifact_values(
            ref,
            capture_id=capture_id,
            role=role,
            warc_file_id=warc_file_id,
            media_type=media_type,
            with_payload_digest=with_payload_digest,
        )
    )


def record_closed_warc(
    session: Session,
    clock: Clock,
    *,
    actor: str,
    name: str,
    sha256: str,
    size: int,
    records: int,
    opened_at: datetime | None,
    closed_at: datetime,
    recorded_by: str | None = None,
) -> WarcFile:
    """Mark the file closed with its digest and size (creating its row if needed) and append ``warc.closed``."""
    row = session.scalar(select(WarcFile).where(WarcFile.name == name))
    if row is None:
        row = WarcFile(name=name, status="closed", opened_at=opened_at)
        session.add(row)
    row.sha256, row.size, row.records, row.closed_at, row.status = sha256, size, records, closed_at, "closed"
    if opened_at is not None:
        row.opened_at = opened_at
    details: dict[str, object] = {"sha256": sha256, "size": size, "records": records}
    if recorded_by is not None:
        details["recorded_by"] = recorded_by
    custody.append(session, clock, actor=actor, action="warc.closed", subject=f"warc:{name}", details=details)
    session.flush()
    return row
