"""Checks of the integrity rows, for ``verify --deep``: receipts, timestamp batches, tokens, custody checkpoints.

Nothing here reads a WARC file (that is :mod:`archiver.verify`) and nothing here trusts the rows it checks:

- a receipt is recomputed from the catalogue rows it describes (capture, source, Artifact rows), and must
  match its stored bytes, its hash, its signature by the archive key, the WARC record that holds it, and lead
  through its Merkle path to its batch's root; a capture that stored records and has no receipt is an error
  when the custody log says one was signed (removed), a warning otherwise (captured before receipts existed);
- a batch statement ``{"root", "size"}`` is recomputed, its signature checked, and every token must timestamp
  that statement's SHA-256 and chain to a TSA certificate configured in the settings;
- a checkpoint must name an event the chain still holds, with the same hash.

Problems are data (:class:`archiver.integrity.Problem`), one per finding, each with a precise ``kind``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, joinedload

from archiver.canonical import canonical_json
from archiver.catalogue.integrity_models import CustodyCheckpoint, Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import Artifact, Capture, CustodyEvent, incident_sources
from archiver.errors import TimestampError
from archiver.integrity import WARNING, Problem
from archiver.integrity.batches import batch_statement, checkpoint_statement
from archiver.integrity.receipts import (
    RECEIPT_ROLE,
    ReceiptRecord,
    catalogue_records,
    first_difference,
    rebuild_canonical,
)
from archiver.keys import verify_signature
from archiver.merkle import verify_inclusion
from archiver.timestamps import parse_token, verify_token

_CHUNK = 500  # receipts checked per round of queries

# --- receipts ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptCheck:
    receipts: int
    signatures_checked: int
    merkle_checked: int
    problems: tuple[Problem, ...]


def check_receipts(
    session: Session, *, capture_ids: Collection[int] | None = None, public_pem: bytes | None, key_id: str | None
) -> ReceiptCheck:
    """Check every receipt (or those of ``capture_ids``): stored hash, recomputation from the catalogue rows,
    incident links, signature (when ``public_pem`` is given), the WARC record holding it, the Merkle path."""
    problems: list[Problem] = []
    count = signed = merkle = 0
    for chunk in _chunks(session, capture_ids):
        ids = [r.capture_id for r in chunk]
        # One round of queries per chunk: captures and sources land in the identity map, so the per-receipt
        # rebuild below reads no rows of its own.
        session.scalars(select(Capture).options(joinedload(Capture.source)).where(Capture.id.in_(ids))).all()
        batches = _batches(session, {r.batch_id for r in chunk if r.batch_id is not None})
        links = _links(session, ids)
        records = _receipt_records(session, [r.record_id for r in chunk])
        listed = catalogue_records(session, ids)
        for row in chunk:
            count += 1
            problems += _check_one(
                session,
                row,
                links.get(row.capture_id, set()),
                records.get(row.record_id),
                listed.get(row.capture_id, []),
            )
            if public_pem is not None:
                signed += 1
                problems += _check_signature(row, public_pem, key_id)
            if row.batch_id is not None:
                merkle += 1
            problems += _check_path(row, batches.get(row.batch_id) if row.batch_id is not None else None)
        session.expunge_all()
    problems += _without_receipt(session, capture_ids)
    return ReceiptCheck(count, signed, merkle, tuple(problems))


def _without_receipt(session: Session, capture_ids: Collection[int] | None) -> list[Problem]:
    """Ended captures that stored records but have no receipt: removed (an error, when the custody log says one
    was signed) or never issued (a warning: captured before receipts existed)."""
    stored = select(Artifact.capture_id).where(Artifact.role != RECEIPT_ROLE)
    query = select(Capture.id).where(
        Capture.ended_at.is_not(None),
        Capture.id.in_(stored),
        ~exists().where(Receipt.capture_id == Capture.id),
    )
    if capture_ids is None:
        found = list(session.scalars(query.order_by(Capture.id)))
    else:
        ids = sorted(capture_ids)
        parts = (query.where(Capture.id.in_(ids[i : i + _CHUNK])) for i in range(0, len(ids), _CHUNK))
        found = [cid for part in parts for cid in session.scalars(part.order_by(Capture.id))]
    problems = []
    for cid in found:
        # The "signed" event's details are canonical JSON, whose first key is "capture".
        signed = select(CustodyEvent.seq).where(
            CustodyEvent.action == "signed", CustodyEvent.details.like(f'{{"capture":{cid},%')
        )
        seq = session.scalar(signed.limit(1))
        if seq is not None:
            problems.append(Problem("receipt-missing", f"receipt:{cid}", f"the receipt signed in event {seq}", "none"))
        else:
            problems.append(Problem("receipt-none", f"receipt:{cid}", "a receipt", "never issued", WARNING))
    return problems


def _chunks(session: Session, capture_ids: Collection[int] | None) -> Iterator[list[Receipt]]:
    if capture_ids is not None:
        ids = sorted(capture_ids)
        for i in range(0, len(ids), _CHUNK):
            part = ids[i : i + _CHUNK]
            rows = session.scalars(select(Receipt).where(Receipt.capture_id.in_(part)).order_by(Receipt.id)).all()
            if rows:
                yield list(rows)
        return
    last = 0
    while rows := session.scalars(select(Receipt).where(Receipt.id > last).order_by(Receipt.id).limit(_CHUNK)).all():
        last = rows[-1].id
        yield list(rows)


def _batches(session: Session, ids: set[int]) -> dict[int, TimestampBatch]:
    if not ids:
        return {}
    return {b.id: b for b in session.scalars(select(TimestampBatch).where(TimestampBatch.id.in_(ids)))}


def _links(session: Session, capture_ids: list[int]) -> dict[int, set[str]]:
    rows = session.execute(
        select(Capture.id, incident_sources.c.incident_id)
        .join(incident_sources, incident_sources.c.source_id == Capture.source_id)
        .where(Capture.id.in_(capture_ids))
    ).all()
    links: dict[int, set[str]] = {}
    for cid, incident in rows:
        links.setdefault(cid, set()).add(incident)
    return links


def _receipt_records(session: Session, record_ids: list[str]) -> dict[str, Artifact]:
    rows = session.scalars(select(Artifact).where(Artifact.record_id.in_(record_ids), Artifact.role == RECEIPT_ROLE))
    return {a.record_id: a for a in rows}


def _check_one(
    session: Session, row: Receipt, linked: set[str], record: Artifact | None, listed: list[ReceiptRecord]
) -> list[Problem]:
    subject = f"receipt:{row.capture_id}"
    actual = hashlib.sha256(row.canonical).hexdigest()
    problems: list[Problem] = []
    if actual != row.sha256:
        problems.append(Problem("receipt-hash", subject, row.sha256, actual))
    try:
        stored = json.loads(row.canonical)
        incidents = stored["incidents"]
        if not isinstance(incidents, list) or not all(isinstance(i, str) for i in incidents):
            raise ValueError("its incidents are not a list of ids")
        if canonical_json(stored) != row.canonical:
            raise ValueError("not the canonical form of a receipt")
    except (ValueError, TypeError, KeyError) as exc:
        return [*problems, Problem("receipt-content", subject, "a canonical JSON receipt", str(exc))]
    for incident in incidents:
        if incident not in linked:
            problems.append(Problem("receipt-incident", subject, f"source linked to incident {incident}", "no link"))
    rebuilt = rebuild_canonical(session, row.capture_id, row.key_id, incidents, listed)
    if rebuilt is None:
        problems.append(Problem("receipt-content", subject, "an ended capture in the catalogue", "none"))
    elif rebuilt != row.canonical:
        path = first_difference(json.loads(rebuilt), stored) or "$"
        want, got = _at(json.loads(rebuilt), path), _at(stored, path)
        problems.append(Problem("receipt-content", subject, f"{path} = {want}", f"{path} = {got}"))
    if record is None or record.capture_id != row.capture_id:
        problems.append(Problem("receipt-record", subject, f"receipt record {row.record_id}", "no such artifact"))
    elif record.block_sha256 != actual:
        problems.append(
            Problem("receipt-record", subject, f"record block sha256:{actual}", f"sha256:{record.block_sha256}")
        )
    return problems


def _at(doc: Any, path: str) -> str:
    """The value at a path made by :func:`first_difference`, as compact JSON (or ``absent``)."""
    value = doc
    for part in path.replace("[", ".[").split(".")[1:]:
        try:
            value = value[int(part[1:-1])] if part.startswith("[") else value[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return "absent"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_signature(row: Receipt, public_pem: bytes, key_id: str | None) -> list[Problem]:
    subject = f"receipt:{row.capture_id}"
    if key_id is not None and row.key_id != key_id:
        return [Problem("receipt-key", subject, f"signed by archive key {key_id}", f"key {row.key_id}")]
    if not verify_signature(public_pem, hashlib.sha256(row.canonical).digest(), row.signature):
        return [Problem("receipt-signature", subject, "a valid Ed25519 signature by the archive key", "invalid")]
    return []


def _check_path(row: Receipt, batch: TimestampBatch | None) -> list[Problem]:
    subject = f"receipt:{row.capture_id}"
    if row.batch_id is None:
        return [Problem("receipt-pending", subject, "a timestamp", "waiting for the next batch", WARNING)]
    if batch is None:
        return [Problem("receipt-merkle", subject, f"batch {row.batch_id}", "no such batch")]
    try:
        path = [bytes.fromhex(p) for p in row.merkle_path or []]
        leaf = hashlib.sha256(row.canonical).digest()
        ok = row.leaf_index is not None and verify_inclusion(
            leaf, row.leaf_index, batch.size, path, bytes.fromhex(batch.root)
        )
    except (ValueError, TypeError):
        ok = False
    if not ok:
        return [
            Problem(
                "receipt-merkle",
                subject,
                f"leaf {row.leaf_index} of batch {batch.id} root {batch.root}",
                "an inclusion path that does not lead to that root",
            )
        ]
    return []


# --- tokens, batches, checkpoints -----------------------------------------------------------------------------

# verify_token's problems start with their kind (see archiver.timestamps.verify_token).
_TOKEN_KINDS = (
    ("malformed token", "token-malformed"),
    ("not a granted timestamp", "token-malformed"),
    ("token for other data", "token-other-data"),
    ("untrusted TSA", "token-untrusted"),
    ("no trusted TSA certificate", "token-untrusted"),
    ("signature invalid", "token-signature"),
)


def check_token(row: TimestampToken, digest: bytes, trusted_pems: bytes | None) -> list[Problem]:
    """A stored token must timestamp ``digest`` (recomputed by the caller, not the row's own column), be signed
    by a TSA whose certificate chains to a configured CA, and carry the genTime the row claims."""
    subject = f"token:{row.id}"
    problems = []
    for text in verify_token(row.token_der, digest, trusted_pems or b""):
        kind = next((k for prefix, k in _TOKEN_KINDS if text.startswith(prefix)), "token-invalid")
        problems.append(Problem(kind, subject, f"a trusted token for {digest.hex()} from {row.tsa_name}", text))
    try:
        token = parse_token(row.tsa_name, row.token_der)
    except TimestampError:
        return problems  # already reported as malformed
    if token.gen_time != row.gen_time:
        problems.append(Problem("token-gen-time", subject, str(row.gen_time), str(token.gen_time)))
    return problems


def _signature(
    kind: str, subject: str, row: Any, digest: bytes, public_pem: bytes, key_id: str | None
) -> list[Problem]:
    if key_id is not None and row.key_id != key_id:
        return [Problem(f"{kind}-key", subject, f"signed by archive key {key_id}", f"key {row.key_id}")]
    if not verify_signature(public_pem, digest, row.signature):
        return [Problem(f"{kind}-signature", subject, "a valid Ed25519 signature by the archive key", "invalid")]
    return []


@dataclass(frozen=True)
class BatchCheck:
    batches: int
    tokens: int
    problems: tuple[Problem, ...]


def check_batches(
    session: Session,
    *,
    batch_ids: Collection[int] | None = None,
    public_pem: bytes | None,
    key_id: str | None,
    trusted_pems: bytes | None,
) -> BatchCheck:
    query = select(TimestampBatch).order_by(TimestampBatch.id)
    if batch_ids is not None:
        query = query.where(TimestampBatch.id.in_(sorted(batch_ids)))
    problems: list[Problem] = []
    batches = tokens = 0
    for batch in session.scalars(query).all():
        batches += 1
        subject = f"batch:{batch.id}"
        digest = hashlib.sha256(batch_statement(batch.root, batch.size)).digest()
        if digest.hex() != batch.statement_sha256:
            problems.append(Problem("batch-statement", subject, digest.hex(), batch.statement_sha256))
        if public_pem is not None:
            problems += _signature("batch", subject, batch, digest, public_pem, key_id)
        members = session.scalar(select(func.count()).select_from(Receipt).where(Receipt.batch_id == batch.id))
        if members != batch.size:
            problems.append(Problem("batch-size", subject, f"{batch.size} receipts", f"{members} receipts"))
        rows = session.scalars(select(TimestampToken).where(TimestampToken.batch_id == batch.id)).all()
        if not rows:
            problems.append(Problem("batch-no-token", subject, "at least one timestamp token", "none"))
        for row in rows:
            tokens += 1
            problems += check_token(row, digest, trusted_pems)
    return BatchCheck(batches, tokens, tuple(problems))


@dataclass(frozen=True)
class CheckpointCheck:
    checkpoints: int
    tokens: int
    problems: tuple[Problem, ...]


def check_checkpoints(
    session: Session, *, public_pem: bytes | None, key_id: str | None, trusted_pems: bytes | None
) -> CheckpointCheck:
    head = session.scalar(select(func.max(CustodyEvent.seq))) or 0
    problems: list[Problem] = []
    count = tokens = 0
    for cp in session.scalars(select(CustodyCheckpoint).order_by(CustodyCheckpoint.id)).all():
        count += 1
        subject = f"checkpoint:{cp.id}"
        digest = hashlib.sha256(checkpoint_statement(cp.seq, cp.head_hash)).digest()
        if digest.hex() != cp.statement_sha256:
            problems.append(Problem("checkpoint-statement", subject, digest.hex(), cp.statement_sha256))
        if public_pem is not None:
            problems += _signature("checkpoint", subject, cp, digest, public_pem, key_id)
        problems += _checkpoint_chain(session, cp, head)
        rows = session.scalars(select(TimestampToken).where(TimestampToken.checkpoint_id == cp.id)).all()
        if not rows:
            problems.append(Problem("checkpoint-untimestamped", subject, "a timestamp token", "none", WARNING))
        for row in rows:
            tokens += 1
            problems += check_token(row, digest, trusted_pems)
    return CheckpointCheck(count, tokens, tuple(problems))


def _checkpoint_chain(session: Session, cp: CustodyCheckpoint, head: int) -> list[Problem]:
    """The chain must still hold the checkpointed event with its hash, and the event recording the checkpoint."""
    subject = f"checkpoint:{cp.id}"
    if head < cp.event_seq:
        return [
            Problem(
                "checkpoint-chain-cut",
                subject,
                f"custody events up to seq {cp.event_seq}",
                f"the chain ends at seq {head}",
            )
        ]
    problems = []
    if cp.seq > 0:
        found = session.scalar(select(CustodyEvent.hash).where(CustodyEvent.seq == cp.seq))
        if found != cp.head_hash:
            problems.append(
                Problem(
                    "checkpoint-hash", subject, f"event {cp.seq} hash {cp.head_hash}", f"{found or 'no such event'}"
                )
            )
    event = session.get(CustodyEvent, cp.event_seq)
    details: dict[str, Any] = {}
    if event is not None and event.action == "checkpoint":
        try:
            parsed = json.loads(event.details)
            details = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            details = {}  # an edited event: the chain check names it
    if details.get("seq") != cp.seq or details.get("hash") != cp.head_hash:
        problems.append(
            Problem(
                "checkpoint-event",
                subject,
                f"a checkpoint event at seq {cp.event_seq}",
                "another event" if event is not None else "no such event",
            )
        )
    return problems
