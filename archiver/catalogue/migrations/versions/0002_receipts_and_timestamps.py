"""Capture receipts, Merkle timestamp batches, RFC 3161 tokens and custody checkpoints, write-once by trigger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WRITE_ONCE = "is write-once: UPDATE and DELETE are refused"
# Columns of a receipt that may change once, from NULL, when it joins a timestamp batch.
_BATCH_COLUMNS = ("batch_id", "leaf_index", "merkle_path")
_RECEIPT_CONTENT = (
    "id",
    "capture_id",
    "version",
    "sha256",
    "canonical",
    "signature",
    "key_id",
    "record_id",
    "created_at",
)
_WRITE_ONCE_TABLES = ("timestamp_batches", "custody_checkpoints", "timestamp_tokens")


def upgrade() -> None:
    op.create_table(
        "timestamp_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timestamp_batches")),
        sa.UniqueConstraint("statement_sha256", name=op.f("uq_timestamp_batches_statement_sha256")),
    )
    op.create_table(
        "custody_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_checkpoints")),
    )
    op.create_table(
        "receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("capture_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("leaf_index", sa.Integer(), nullable=True),
        sa.Column("merkle_path", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"], name=op.f("fk_receipts_capture_id_captures")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["timestamp_batches.id"], name=op.f("fk_receipts_batch_id_timestamp_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipts")),
        sa.UniqueConstraint("capture_id", name=op.f("uq_receipts_capture_id")),
        sa.UniqueConstraint("sha256", name=op.f("uq_receipts_sha256")),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipts_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "timestamp_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("tsa_name", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("token_der", sa.LargeBinary(), nullable=False),
        sa.Column("gen_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("policy_oid", sa.String(length=100), nullable=False),
        sa.Column("certificates", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(batch_id IS NULL AND checkpoint_id IS NOT NULL) OR (batch_id IS NOT NULL AND checkpoint_id IS NULL)",
            name=op.f("ck_timestamp_tokens_one_subject"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["timestamp_batches.id"], name=op.f("fk_timestamp_tokens_batch_id_timestamp_batches")
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["custody_checkpoints.id"],
            name=op.f("fk_timestamp_tokens_checkpoint_id_custody_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timestamp_tokens")),
    )
    with op.batch_alter_table("timestamp_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_timestamp_tokens_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_timestamp_tokens_checkpoint_id"), ["checkpoint_id"], unique=False)

    # Not in batch mode: on SQLite that could rebuild custody_events and lose its append-only triggers.
    op.create_index("ix_custody_events_subject", "custody_events", ["subject"], unique=False)

    _write_once_triggers()


def _write_once_triggers() -> None:
    """The database refuses to rewrite or remove integrity rows, as it does for the custody log (0001)."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in _WRITE_ONCE_TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} {WRITE_ONCE}'); END"
                )
        op.execute(
            f"CREATE TRIGGER receipts_no_delete BEFORE DELETE ON receipts "
            f"BEGIN SELECT RAISE(ABORT, 'receipts {WRITE_ONCE}'); END"
        )
        op.execute(
            f"CREATE TRIGGER receipts_no_update BEFORE UPDATE OF {', '.join(_RECEIPT_CONTENT)} ON receipts "
            f"BEGIN SELECT RAISE(ABORT, 'receipts {WRITE_ONCE}'); END"
        )
        op.execute(
            f"CREATE TRIGGER receipts_batched_once BEFORE UPDATE OF {', '.join(_BATCH_COLUMNS)} ON receipts "
            f"WHEN OLD.batch_id IS NOT NULL BEGIN SELECT RAISE(ABORT, 'receipts {WRITE_ONCE}'); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION integrity_write_once() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '% {WRITE_ONCE}', TG_TABLE_NAME; END $$"
        )
        for table in _WRITE_ONCE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION integrity_write_once()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION integrity_write_once()"
            )
        op.execute(
            f"CREATE TRIGGER receipts_no_change BEFORE DELETE OR UPDATE OF {', '.join(_RECEIPT_CONTENT)} "
            "ON receipts FOR EACH ROW EXECUTE FUNCTION integrity_write_once()"
        )
        op.execute(
            f"CREATE TRIGGER receipts_batched_once BEFORE UPDATE OF {', '.join(_BATCH_COLUMNS)} ON receipts "
            "FOR EACH ROW WHEN (OLD.batch_id IS NOT NULL) EXECUTE FUNCTION integrity_write_once()"
        )
        op.execute(
            "CREATE TRIGGER receipts_no_truncate BEFORE TRUNCATE ON receipts "
            "FOR EACH STATEMENT EXECUTE FUNCTION integrity_write_once()"
        )
    else:
        raise NotImplementedError(f"no write-once triggers for {dialect}; add them before using it")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS integrity_write_once() CASCADE")
    elif dialect == "sqlite":
        for name in ("receipts_no_delete", "receipts_no_update", "receipts_batched_once"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for table in _WRITE_ONCE_TABLES:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")

    op.drop_index("ix_custody_events_subject", table_name="custody_events")
    with op.batch_alter_table("timestamp_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_timestamp_tokens_checkpoint_id"))
        batch_op.drop_index(batch_op.f("ix_timestamp_tokens_batch_id"))
    op.drop_table("timestamp_tokens")
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipts_batch_id"))
    op.drop_table("receipts")
    op.drop_table("custody_checkpoints")
    op.drop_table("timestamp_batches")
