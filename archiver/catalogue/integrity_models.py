"""Catalogue tables of the integrity layer: capture receipts, timestamp batches, tokens and custody checkpoints.

Created by migration 0002. ``archiver.catalogue.models`` imports this module at its end, so ``Base.metadata``
(what Alembic and the tests see) holds these tables too.

Rows here are written once. The one later change is a receipt joining a timestamp batch (``batch_id``,
``leaf_index``, ``merkle_path`` go from NULL to their values, once); database triggers refuse any other UPDATE
and every DELETE, as they do for the custody log. Verification never trusts these rows: it recomputes receipts
from the catalogue, checks signatures with the archive's public key and tokens against the configured TSA
certificates (never certificates read from the database).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from archiver.catalogue.models import Base, CustodyEvent

# Lookup's custody history and verify's checkpoint checks select events by subject (``source:<id>``).
Index("ix_custody_events_subject", CustodyEvent.subject)


class TimestampBatch(Base):
    """One Merkle tree over receipts, whose signed statement ``{"root", "size"}`` was timestamped.

    The statement, not the bare root, is what is signed and timestamped: an RFC 6962 root does not fix the tree
    size (a path for leaf 0 of 4 also checks as leaf 0 of 3), so the size travels with it, as in a signed tree
    head (RFC 6962 §3.5).
    """

    __tablename__ = "timestamp_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root: Mapped[str] = mapped_column(String(64))  # hex RFC 6962 Merkle Tree Hash
    size: Mapped[int] = mapped_column(Integer)
    statement_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    signature: Mapped[bytes] = mapped_column(LargeBinary)  # Ed25519 over the 32-byte statement SHA-256
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class CustodyCheckpoint(Base):
    """A signed (and, when a TSA answered, timestamped) statement ``{"seq", "hash"}`` of the custody chain head.

    A cut chain head (the last events deleted) leaves an intact chain; a checkpoint naming a later event, or
    another hash for its event, exposes the cut.
    """

    __tablename__ = "custody_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    statement_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))
    event_seq: Mapped[int] = mapped_column(BigInteger)  # the "checkpoint" custody event that records this row
    created_at: Mapped[datetime]


class Receipt(Base):
    """The signed canonical receipt of one capture, and where it sits in a timestamp batch once batched."""

    __tablename__ = "receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id"), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    canonical: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)  # Ed25519 over the 32-byte SHA-256 of ``canonical``
    key_id: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(64))  # the WARC metadata record that holds ``canonical``
    created_at: Mapped[datetime]
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("timestamp_batches.id"), index=True)
    leaf_index: Mapped[int | None] = mapped_column(Integer)
    merkle_path: Mapped[list[Any] | None]  # hex node hashes, RFC 6962 §2.1.1 audit path, leaf's sibling first


class TimestampToken(Base):
    """A DER TimeStampResp (RFC 3161 §2.4.2) as the TSA sent it, for a batch or a checkpoint statement."""

    __tablename__ = "timestamp_tokens"
    __table_args__ = (
        CheckConstraint(
            "(batch_id IS NULL AND checkpoint_id IS NOT NULL) OR (batch_id IS NOT NULL AND checkpoint_id IS NULL)",
            name="one_subject",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("timestamp_batches.id"), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("custody_checkpoints.id"), index=True)
    tsa_name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))  # hex SHA-256 the token's message imprint must equal
    token_der: Mapped[bytes] = mapped_column(LargeBinary)
    gen_time: Mapped[datetime]
    serial: Mapped[str] = mapped_column(String(64))  # up to 160 bits (RFC 3161 §2.4.2): text, not an integer
    policy_oid: Mapped[str] = mapped_column(String(100))
    # The TSA's chain as known when the token was accepted: certificates embedded in the token (signer first),
    # then the CA certificates the operator configured. Kept for bundles; verify trusts only the configuration.
    certificates: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
