"""Capture receipts: a canonical, signed statement of what one capture stored, in the catalogue and in the WARC.

A receipt is canonical JSON (:func:`archiver.canonical.canonical_json`) naming the receipt type and version, the
signing key, the capture (id, method, UTC start and end, outcome, HTTP status, final URL, collector, egress,
tool versions), the source (id, URL), the incidents citing it, and every record the capture wrote (id, type,
target URI, WARC file, offset, length, block and payload SHA-256), ordered by file and offset. Its SHA-256 is
what is signed (Ed25519 over the 32 digest bytes) and, batched, timestamped. Anyone can check a signature with::

    openssl pkeyutl -verify -pubin -inkey archive-key.pub.pem -rawin -in receipt.sha256.bin -sigfile receipt.sig

Issuing is two steps, because writing to the sink must happen outside a catalogue transaction (rotating a
file calls the sink's ``on_close``, which opens its own transaction and takes the custody lock):

1. :func:`write_receipt` (no transaction open): builds and signs the receipt, writes it as a WARC ``metadata``
   record (``application/json``, target ``urn:archiver:receipt:<capture id>``,
   ``WARC-Refers-To`` the main response record), fsynced. :func:`write_with_receipt` writes a capture's records
   and its receipt in one group instead (one fsync): the receipt is built and signed once the records' places
   in the file are known, before the group is made durable;
2. :func:`record_receipt` (in the transaction that adds the capture's Artifact rows and ends the Capture): the
   receipt record's Artifact row (role ``receipt``), the :class:`Receipt` row and a custody event ``signed``.
   It first rebuilds the receipt from those rows and refuses one that does not match, so every receipt the
   catalogue holds is one that ``verify`` can recompute.

:func:`archiver.integrity.checks.check_receipts` is the verify side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import custody
from archiver.canonical import canonical_json
from archiver.catalogue.integrity_models import Receipt
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile, incident_sources
from archiver.catalogue.warcs import artifact_values
from archiver.clock import Clock, utc_iso
from archiver.errors import ArchiverError
from archiver.keys import Signer
from archiver.warc.block import Block, block_from_bytes
from archiver.warc.records import METADATA, REQUEST, RESPONSE, RecordRef, RecordSpec
from archiver.warc.writer import WarcSink

RECEIPT_TYPE = "archiver/capture-receipt"
RECEIPT_VERSION = 1
RECEIPT_ROLE = "receipt"
RECEIPT_MEDIA_TYPE = "application/json"


def receipt_uri(capture_id: int) -> str:
    return f"urn:archiver:receipt:{capture_id}"


@dataclass(frozen=True)
class ReceiptRecord:
    """One record as a receipt lists it; made from a :class:`RecordRef` when issuing, from an Artifact row when
    checking."""

    record_id: str
    record_type: str
    target_uri: str | None
    warc_file: str
    offset: int
    length: int
    block_sha256: str
    payload_sha256: str | None

    @classmethod
    def from_ref(cls, ref: RecordRef) -> ReceiptRecord:
        payload = ref.payload_digest.hex if ref.payload_digest is not None else None
        return cls(
            ref.record_id,
            ref.record_type,
            ref.target_uri,
            ref.warc_file,
            ref.offset,
            ref.length,
            ref.block_digest.hex,
            payload,
        )

    @classmethod
    def from_artifact(cls, row: Artifact, warc_name: str) -> ReceiptRecord:
        return cls(
            row.record_id,
            row.record_type,
            row.target_uri,
            warc_name,
            row.offset,
            row.length,
            row.block_sha256,
            row.payload_sha256,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], warc_name: str) -> ReceiptRecord:
        """From the column values of an Artifact row (as a bulk insert takes them)."""
        return cls(
            row["record_id"],
            row["record_type"],
            row["target_uri"],
            warc_name,
            row["offset"],
            row["length"],
            row["block_sha256"],
            row["payload_sha256"],
        )

    def document(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "type": self.record_type,
            "target": self.target_uri,
            "warc": self.warc_file,
            "offset": self.offset,
            "length": self.length,
            "block_sha256": self.block_sha256,
            "payload_sha256": self.payload_sha256,
        }


@dataclass(frozen=True)
class CaptureFacts:
    """What a receipt states about a capture, as plain values (so it can be built outside a transaction)."""

    capture_id: int
    method: str
    started_at: datetime
    ended_at: datetime
    outcome: str
    http_status: int | None
    final_url: str | None
    collector: str
    egress: str | None
    tools: Mapping[str, Any]
    source_id: int
    source_url: str | None
    incident_ids: tuple[str, ...]

    @classmethod
    def of(cls, capture: Capture, source: Source, incident_ids: Iterable[str]) -> CaptureFacts:
        if capture.ended_at is None:
            raise ValueError(f"capture {capture.id} has not ended: a receipt states its end time")
        return cls(
            capture.id,
            capture.method,
            capture.started_at,
            capture.ended_at,
            capture.outcome,
            capture.http_status,
            capture.final_url,
            capture.collector,
            capture.egress,
            dict(capture.tools),
            source.id,
            source.url,
            tuple(sorted(set(incident_ids))),
        )


def load_facts(
    session: Session,
    capture_id: int,
    *,
    ended_at: datetime,
    outcome: str,
    http_status: int | None,
    final_url: str | None,
    extra_tools: Mapping[str, Any] | None = None,
) -> CaptureFacts:
    """Facts of a capture that is about to end: the row's fixed fields, the end the caller is about to commit
    (with ``extra_tools``, tool versions it will merge over the row's), and the incidents linked to its source."""
    cap = session.get(Capture, capture_id)
    if cap is None:
        raise ArchiverError(f"capture {capture_id} does not exist")
    return CaptureFacts(
        cap.id,
        cap.method,
        cap.started_at,
        ended_at,
        outcome,
        http_status,
        final_url,
        cap.collector,
        cap.egress,
        {**cap.tools, **(extra_tools or {})},
        cap.source_id,
        cap.source.url,
        incidents_of(session, cap.source_id),
    )


def incidents_of(session: Session, source_id: int) -> tuple[str, ...]:
    """The incidents a source is linked to, as a receipt lists them: sorted, each once."""
    ids = session.scalars(select(incident_sources.c.incident_id).where(incident_sources.c.source_id == source_id))
    return tuple(sorted(set(ids)))


def _record_order(r: ReceiptRecord) -> tuple[str, int]:
    return (r.warc_file, r.offset)


def receipt_document(facts: CaptureFacts, key_id: str, records: Iterable[ReceiptRecord]) -> dict[str, Any]:
    ordered = sorted(records, key=_record_order)
    return {
        "type": RECEIPT_TYPE,
        "version": RECEIPT_VERSION,
        "signing_key": key_id,
        "capture": {
            "id": facts.capture_id,
            "method": facts.method,
            "started_at": utc_iso(facts.started_at),
            "ended_at": utc_iso(facts.ended_at),
            "outcome": facts.outcome,
            "http_status": facts.http_status,
            "final_url": facts.final_url,
            "collector": facts.collector,
            "egress": facts.egress,
            "tools": dict(facts.tools),
        },
        "source": {"id": facts.source_id, "url": facts.source_url},
        "incidents": sorted(facts.incident_ids),
        "records": [r.document() for r in ordered],
    }


@dataclass(frozen=True)
class IssuedReceipt:
    """A receipt written to the WARC (``ref``) and not yet recorded in the catalogue."""

    facts: CaptureFacts
    canonical: bytes
    sha256: str
    signature: bytes
    key_id: str
    ref: RecordRef
    records: tuple[ReceiptRecord, ...] = ()  # what it lists, in its order (file, offset)


def _main_record(refs: Sequence[ReceiptRecord], final_url: str | None) -> str | None:
    """The record a receipt refers to: the response for the final URL, else the first response, else the first
    record that is not a request."""
    responses = [r for r in refs if r.record_type == RESPONSE]
    for r in responses:
        if final_url is not None and r.target_uri == final_url:
            return r.record_id
    if responses:
        return responses[0].record_id
    return next((r.record_id for r in refs if r.record_type != REQUEST), None)


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt built and signed, not yet written (:func:`sign_receipt`)."""

    facts: CaptureFacts
    canonical: bytes
    sha256: str
    signature: bytes
    key_id: str
    records: tuple[ReceiptRecord, ...]
    refers_to: str | None

    def spec(self, block: Block) -> RecordSpec:
        """Its WARC record, with ``block`` made of :attr:`canonical` (``block_from_bytes(..., has_payload=False)``)."""
        # WARC 1.1: WARC-Refers-To links a metadata record to the record it describes. The signature and key id
        # go in extension fields (WARC 1.1 §4 allows them; readers ignore unknown fields): the WARC alone carries
        # both.
        headers = (() if self.refers_to is None else (("WARC-Refers-To", self.refers_to),)) + (
            ("Archiver-Key-Id", self.key_id),
            ("Archiver-Signature", f"ed25519:{self.signature.hex()}"),
        )
        return RecordSpec(METADATA, block, RECEIPT_MEDIA_TYPE, receipt_uri(self.facts.capture_id), headers=headers)

    def issued(self, ref: RecordRef) -> IssuedReceipt:
        return IssuedReceipt(self.facts, self.canonical, self.sha256, self.signature, self.key_id, ref, self.records)


def sign_receipt(
    signer: Signer,
    facts: CaptureFacts,
    refs: Sequence[RecordRef | ReceiptRecord],
    *,
    refers_to: str | None = None,
) -> SignedReceipt:
    """Build and sign the receipt of a capture whose records are ``refs``.

    ``refs`` are what the sink returned for the capture's records, or (for a capture committed before receipts
    existed) :class:`ReceiptRecord` values from :func:`catalogue_records`.
    """
    records = [ReceiptRecord.from_ref(r) if isinstance(r, RecordRef) else r for r in refs]
    if not records:
        raise ValueError("a receipt lists the records of its capture; this capture wrote none")
    ordered = tuple(sorted(records, key=_record_order))
    canonical = canonical_json(receipt_document(facts, signer.key_id, ordered))
    digest = hashlib.sha256(canonical).digest()
    signature = signer.sign(digest)
    main = refers_to if refers_to is not None else _main_record(records, facts.final_url)
    return SignedReceipt(facts, canonical, digest.hex(), signature, signer.key_id, ordered, main)


def write_receipt(
    sink: WarcSink,
    signer: Signer,
    facts: CaptureFacts,
    refs: Sequence[RecordRef | ReceiptRecord],
    *,
    refers_to: str | None = None,
) -> IssuedReceipt:
    """Build, sign and write the receipt of a capture whose records ``refs`` are on disk. Call it with no
    catalogue transaction open (see the module docstring); raises :class:`WarcError` if the write fails."""
    signed = sign_receipt(signer, facts, refs, refers_to=refers_to)
    with block_from_bytes(signed.canonical, has_payload=False) as block:
        (ref,) = sink.write_group([signed.spec(block)])
    return signed.issued(ref)


def write_with_receipt(
    sink: WarcSink, signer: Signer, facts: CaptureFacts, specs: Sequence[RecordSpec]
) -> tuple[list[RecordRef], IssuedReceipt]:
    """Write a capture's records and its receipt as one group: one file, one fsync. The receipt is built and
    signed while the group is written, once the records' places are known. Call it with no catalogue
    transaction open; raises :class:`WarcError` if the write fails (then none of the group is kept)."""
    made: list[tuple[SignedReceipt, Block]] = []

    def receipt(refs: list[RecordRef]) -> list[RecordSpec]:
        signed = sign_receipt(signer, facts, refs)
        block = block_from_bytes(signed.canonical, has_payload=False)
        made.append((signed, block))
        return [signed.spec(block)]

    try:
        *refs, ref = sink.write_group(specs, then=receipt)
    finally:
        for _, block in made:
            block.close()
    return refs, made[0][0].issued(ref)


def catalogue_records(session: Session, capture_ids: Collection[int]) -> dict[int, list[ReceiptRecord]]:
    """The records each capture's receipt must list, from its Artifact rows (all but the receipt's own)."""
    rows = session.execute(
        select(Artifact, WarcFile.name)
        .join(WarcFile, Artifact.warc_file_id == WarcFile.id)
        .where(Artifact.capture_id.in_(capture_ids), Artifact.role != RECEIPT_ROLE)
    ).all()
    out: dict[int, list[ReceiptRecord]] = {}
    for artifact, name in rows:
        out.setdefault(artifact.capture_id, []).append(ReceiptRecord.from_artifact(artifact, name))
    return out


def rebuild_canonical(
    session: Session,
    capture_id: int,
    key_id: str,
    incident_ids: Iterable[str],
    records: list[ReceiptRecord] | None = None,
) -> bytes | None:
    """The receipt the catalogue rows say capture ``capture_id`` should have (None if the capture is gone).
    ``records`` may be given when already loaded (see :func:`check_receipts`)."""
    cap = session.get(Capture, capture_id)
    if cap is None or cap.ended_at is None:
        return None
    if records is None:
        records = catalogue_records(session, [capture_id]).get(capture_id, [])
    return canonical_json(receipt_document(CaptureFacts.of(cap, cap.source, incident_ids), key_id, records))


def record_receipt(session: Session, clock: Clock, issued: IssuedReceipt, *, warc_file_id: int, actor: str) -> Receipt:
    """Add the receipt's rows and custody event in the caller's transaction, after the capture's Artifact rows
    and end. Raises :class:`ArchiverError` (so the transaction rolls back) if the catalogue disagrees with it."""
    facts = issued.facts
    session.add(receipt_artifact(issued, warc_file_id=warc_file_id))
    session.flush()
    rebuilt = rebuild_canonical(session, facts.capture_id, issued.key_id, facts.incident_ids)
    _refuse_mismatch(rebuilt, issued)
    receipt = Receipt(**receipt_values(issued, clock))
    session.add(receipt)
    custody.append(
        session,
        clock,
        actor=actor,
        action="signed",
        subject=f"source:{facts.source_id}",
        details=signed_details(issued),
    )
    return receipt


def check_rows(issued: IssuedReceipt, capture: CaptureFacts, records: Iterable[ReceiptRecord]) -> None:
    """:func:`record_receipt`'s check for a writer that inserts rows in bulk and does not read them back: the
    receipt rebuilt from the values of the rows about to be inserted (``capture``, the capture's end as it will
    be committed; ``records``, made with :meth:`ReceiptRecord.from_row` from its Artifact rows but the receipt's
    own) must be the receipt issued. Raises :class:`ArchiverError` otherwise."""
    ordered = sorted(records, key=_record_order)
    # The receipt is a function of (facts, key, ordered records): equal inputs make equal bytes, so comparing
    # the inputs is the same check without building and serialising the document a second time.
    if issued.records and capture == issued.facts and tuple(ordered) == issued.records:
        return
    _refuse_mismatch(canonical_json(receipt_document(capture, issued.key_id, ordered)), issued)


def receipt_artifact(issued: IssuedReceipt, *, warc_file_id: int) -> Artifact:
    """The Artifact row of the receipt's own WARC record (role ``receipt``)."""
    return Artifact(**receipt_artifact_values(issued, warc_file_id=warc_file_id))


def receipt_artifact_values(issued: IssuedReceipt, *, warc_file_id: int) -> dict[str, Any]:
    """:func:`receipt_artifact`'s column values, for a writer that inserts rows in bulk."""
    return artifact_values(
        issued.ref,
        capture_id=issued.facts.capture_id,
        role=RECEIPT_ROLE,
        warc_file_id=warc_file_id,
        media_type=RECEIPT_MEDIA_TYPE,
        with_payload_digest=False,
    )


def receipt_values(issued: IssuedReceipt, clock: Clock) -> dict[str, Any]:
    """Column values of the :class:`Receipt` row."""
    return {
        "capture_id": issued.facts.capture_id,
        "version": RECEIPT_VERSION,
        "sha256": issued.sha256,
        "canonical": issued.canonical,
        "signature": issued.signature,
        "key_id": issued.key_id,
        "record_id": issued.ref.record_id,
        "created_at": clock.now(),
    }


def signed_details(issued: IssuedReceipt) -> dict[str, Any]:
    """Details of the custody event ``signed`` that records the receipt."""
    ref = issued.ref
    return {
        "capture": issued.facts.capture_id,
        "receipt_sha256": issued.sha256,
        "key_id": issued.key_id,
        "record_id": ref.record_id,
        "warc": ref.warc_file,
        "offset": ref.offset,
    }


def _refuse_mismatch(rebuilt: bytes | None, issued: IssuedReceipt) -> None:
    if rebuilt != issued.canonical:
        where = "the capture is missing or has not ended" if rebuilt is None else _first_difference(rebuilt, issued)
        raise ArchiverError(
            f"the receipt of capture {issued.facts.capture_id} does not match the catalogue rows ({where})",
            hint="record the receipt after adding the capture's Artifact rows and ending the Capture; this is a bug",
        )


def _first_difference(rebuilt: bytes, issued: IssuedReceipt) -> str:
    path = first_difference(json.loads(rebuilt), json.loads(issued.canonical))
    return f"{path} differs" if path else "byte form differs"


def issue_receipt(
    session: Session,
    sink: WarcSink,
    signer: Signer,
    clock: Clock,
    capture: Capture,
    source: Source,
    incidents: Iterable[str],
    refs: Sequence[RecordRef],
    *,
    actor: str | None = None,
) -> Receipt:
    """Both steps at once, for callers whose sink never opens a catalogue transaction of its own (no
    ``on_close`` that writes custody events). The capture job uses :func:`write_receipt` then
    :func:`record_receipt` instead. ``capture`` must have ended; the sink is written before the session is used.
    """
    issued = write_receipt(sink, signer, CaptureFacts.of(capture, source, incidents), refs)
    warc = session.scalar(select(WarcFile).where(WarcFile.name == issued.ref.warc_file))
    if warc is None:
        warc = WarcFile(name=issued.ref.warc_file, status="open", opened_at=clock.now())
        session.add(warc)
        session.flush()
    return record_receipt(session, clock, issued, warc_file_id=warc.id, actor=actor or capture.collector)


def first_difference(expected: Any, found: Any, path: str = "$") -> str | None:
    """The JSON path of the first place two documents differ, or None when they are equal."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found)):
            if key not in expected or key not in found:
                return f"{path}.{key}"
            sub = first_difference(expected[key], found[key], f"{path}.{key}")
            if sub:
                return sub
        return None
    if isinstance(expected, list) and isinstance(found, list):
        for i, (e, f) in enumerate(zip(expected, found, strict=False)):
            sub = first_difference(e, f, f"{path}[{i}]")
            if sub:
                return sub
        return None if len(expected) == len(found) else f"{path}.length"
    return None if expected == found and type(expected) is type(found) else path
