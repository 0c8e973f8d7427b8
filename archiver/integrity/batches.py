"""Trusted time for receipts and the custody log: Merkle batches and checkpoints, timestamped by every TSA.

**Batches.** All receipts not yet in a batch become the leaves (their 32-byte SHA-256 digests, in receipt
order) of one RFC 6962 Merkle tree (:class:`archiver.merkle.MerkleTree`). What gets signed and timestamped is
not the bare root but the *batch statement*::

    canonical_json({"root": "<hex Merkle root>", "size": <number of leaves>})

because the root alone does not fix the tree size (a path for leaf 0 of 4 also checks as leaf 0 of 3); the
size travels with the root as in a signed tree head (RFC 6962 §3.5). The statement's SHA-256 is sent once to
each configured TSA (RFC 3161), signed with the archive key, and each receipt keeps its leaf index and audit
path. A receipt then verifies alone, offline::

    receipt sha256 --(path, index, size)--> root --> statement --sha256--> token's message imprint

**No TSA reachable**: nothing is stored, the receipts stay pending and the next call retries with whatever
is pending then; nothing raises. One token is enough to form a batch; TSAs that failed are reported.

**Checkpoints.** :func:`checkpoint` signs and timestamps the statement ``{"seq", "hash"}`` of the custody
chain head. The chain proves its own continuity but not its length: deleting the newest events leaves a
valid chain. A checkpoint naming a later event, or another hash for its event, exposes such a cut.

Both functions commit the caller's session *before* contacting the TSAs, so that no database lock is held
over the network (SQLite transactions here begin IMMEDIATE and would stall every writer meanwhile), and add
their rows afterwards in a new transaction of the same session, which the caller commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from archiver import custody
from archiver.canonical import canonical_json
from archiver.catalogue.integrity_models import CustodyCheckpoint, Receipt, TimestampBatch, TimestampToken
from archiver.catalogue.models import CustodyEvent
from archiver.clock import Clock, utc_iso
from archiver.config import Settings
from archiver.errors import ConfigError, TimestampError
from archiver.keys import Signer
from archiver.merkle import MerkleTree
from archiver.timestamps import TimestampToken as Token
from archiver.timestamps import TsaConfig, request_timestamp


def tsa_configs(settings: Settings, *, timeout: float = 30.0) -> list[TsaConfig]:
    """The TSAs of ``[[tsa]]`` in settings.toml, as :func:`timestamp_pending` and :func:`checkpoint` take them."""
    return [TsaConfig(t.name, t.url, t.ca, timeout) for t in settings.tsas]


def trusted_tsa_pems(settings: Settings) -> bytes | None:
    """The CA certificates of every configured TSA, concatenated: what stored tokens are checked against.

    Trust comes from the settings only, never from certificates kept in the catalogue. None when no TSA is
    configured. Raises :class:`ConfigError` when a configured CA file cannot be read.
    """
    pems = [c.trusted_pems() for c in tsa_configs(settings)]
    return b"\n".join(pems) if pems else None


def batch_statement(root_hex: str, size: int) -> bytes:
    return canonical_json({"root": root_hex, "size": size})


def checkpoint_statement(seq: int, head_hash: str) -> bytes:
    return canonical_json({"seq": seq, "hash": head_hash})


@dataclass(frozen=True)
class TsaResult:
    """What one TSA answered: a token's genTime, or the reason there is no token."""

    name: str
    gen_time: datetime | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchReport:
    batch_id: int | None  # None when no batch was formed (nothing pending, no TSA answered)
    size: int  # receipts in the new batch
    root: str | None
    statement_sha256: str | None
    tsas: tuple[TsaResult, ...]
    pending: int  # receipts still waiting for a timestamp after this call
    note: str | None = None  # why no batch was formed

    @property
    def timestamped(self) -> bool:
        return self.batch_id is not None


@dataclass(frozen=True)
class CheckpointReport:
    checkpoint_id: int
    seq: int
    head_hash: str
    statement_sha256: str
    event_seq: int
    tsas: tuple[TsaResult, ...]


def pending_count(session: Session) -> int:
    """Receipts waiting for a timestamp (for ``archiver status``)."""
    return session.scalar(select(func.count()).select_from(Receipt).where(Receipt.batch_id.is_(None))) or 0


def _ask(tsas: Sequence[TsaConfig], digest: bytes) -> tuple[list[tuple[TsaConfig, Token]], list[TsaResult]]:
    tokens: list[tuple[TsaConfig, Token]] = []
    results: list[TsaResult] = []
    with requests.Session() as http:
        for tsa in tsas:
            try:
                token = request_timestamp(tsa, digest, session=http)
            except (TimestampError, ConfigError) as exc:
                results.append(TsaResult(tsa.name, None, exc.message))
                continue
            tokens.append((tsa, token))
            results.append(TsaResult(tsa.name, token.gen_time, None))
    return tokens, results


def _token_rows(tokens: list[tuple[TsaConfig, Token]], digest: bytes, now: datetime) -> list[TimestampToken]:
    rows = []
    for tsa, token in tokens:
        chain = b"".join(token.certificate_pems) + tsa.trusted_pems()
        rows.append(
            TimestampToken(
                tsa_name=tsa.name,
                digest=digest.hex(),
                token_der=token.der,
                gen_time=token.gen_time,
                serial=str(token.serial),
                policy_oid=token.policy_oid,
                certificates=chain.decode("ascii"),
                created_at=now,
            )
        )
    return rows


def _token_details(tokens: list[tuple[TsaConfig, Token]]) -> list[dict[str, Any]]:
    return [{"tsa": t.name, "gen_time": utc_iso(k.gen_time), "serial": str(k.serial)} for t, k in tokens]


def timestamp_pending(
    session: Session, clock: Clock, tsas: Sequence[TsaConfig], signer: Signer, *, actor: str
) -> BatchReport:
    """Batch every pending receipt under one Merkle root and timestamp its statement once per TSA.

    Commits ``session`` before the network requests (see the module docstring); the batch, its tokens, the
    receipts' paths and the custody event ``timestamped`` are added afterwards for the caller to commit.
    """
    rows = session.execute(select(Receipt.id, Receipt.sha256).where(Receipt.batch_id.is_(None)).order_by(Receipt.id))
    pending = [(rid, sha) for rid, sha in rows]
    if not pending:
        return BatchReport(None, 0, None, None, (), 0, "no receipt is waiting for a timestamp")
    if not tsas:
        return BatchReport(None, 0, None, None, (), len(pending), "no TSA is configured ([[tsa]] in settings.toml)")
    tree = MerkleTree([bytes.fromhex(sha) for _, sha in pending])
    root, size = tree.root.hex(), tree.size
    statement = batch_statement(root, size)
    digest = hashlib.sha256(statement).digest()
    session.commit()  # hold no database lock while the TSAs answer
    tokens, results = _ask(tsas, digest)
    if not tokens:
        note = "no TSA answered; the receipts stay pending and the next call retries"
        return BatchReport(None, 0, root, digest.hex(), tuple(results), len(pending), note)

    now = clock.now()
    batch = TimestampBatch(
        root=root,
        size=size,
        statement_sha256=digest.hex(),
        signature=signer.sign(digest),
        key_id=signer.key_id,
        created_at=now,
    )
    session.add(batch)
    session.flush()
    for row in _token_rows(tokens, digest, now):
        row.batch_id = batch.id
        session.add(row)
    params = [{"rid": rid, "leaf": i, "path": [p.hex() for p in tree.path(i)]} for i, (rid, _) in enumerate(pending)]
    claim = (
        update(Receipt)
        .where(Receipt.id == bindparam("rid"), Receipt.batch_id.is_(None))
        .values(batch_id=batch.id, leaf_index=bindparam("leaf"), merkle_path=bindparam("path"))
    )
    session.connection().execute(claim, params)
    claimed = session.scalar(select(func.count()).select_from(Receipt).where(Receipt.batch_id == batch.id))
    if claimed != size:
        # Another process batched some of these receipts while the TSAs answered: drop this batch whole.
        session.rollback()
        note = "another process timestamped some of these receipts meanwhile; nothing stored, try again"
        return BatchReport(None, 0, root, digest.hex(), tuple(results), pending_count(session), note)
    custody.append(
        session,
        clock,
        actor=actor,
        action="timestamped",
        subject=f"batch:{batch.id}",
        details={
            "batch": batch.id,
            "root": root,
            "size": size,
            "statement_sha256": digest.hex(),
            "key_id": signer.key_id,
            "receipts": [pending[0][0], pending[-1][0]],
            "tokens": _token_details(tokens),
        },
    )
    session.flush()
    return BatchReport(batch.id, size, root, digest.hex(), tuple(results), pending_count(session))


def checkpoint(
    session: Session, clock: Clock, signer: Signer, tsas: Sequence[TsaConfig], *, actor: str
) -> CheckpointReport:
    """Sign (and timestamp, with every TSA that answers) the custody chain head; custody event ``checkpoint``.

    A checkpoint is stored even when no TSA answers: the signature alone already exposes a later cut.
    Commits ``session`` before the network requests (see the module docstring).
    """
    head = session.execute(select(CustodyEvent.seq, CustodyEvent.hash).order_by(CustodyEvent.seq.desc()).limit(1))
    first = head.first()
    seq, head_hash = (first.seq, first.hash) if first else (0, custody.GENESIS)
    statement = checkpoint_statement(seq, head_hash)
    digest = hashlib.sha256(statement).digest()
    session.commit()  # hold no database lock while the TSAs answer
    tokens, results = _ask(tsas, digest)
    now = clock.now()
    row = CustodyCheckpoint(
        seq=seq,
        head_hash=head_hash,
        statement_sha256=digest.hex(),
        signature=signer.sign(digest),
        key_id=signer.key_id,
        event_seq=0,
        created_at=now,
    )
    event = custody.append(
        session,
        clock,
        actor=actor,
        action="checkpoint",
        subject="archive",
        details={
            "seq": seq,
            "hash": head_hash,
            "statement_sha256": digest.hex(),
            "key_id": signer.key_id,
            "tokens": _token_details(tokens),
        },
    )
    row.event_seq = event.seq
    session.add(row)
    session.flush()
    for token_row in _token_rows(tokens, digest, now):
        token_row.checkpoint_id = row.id
        session.add(token_row)
    session.flush()
    return CheckpointReport(row.id, seq, head_hash, digest.hex(), event.seq, tuple(results))
