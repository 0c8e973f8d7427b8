"""Re-checks: when a captured source was last looked at again, and what each look found.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # sources.next_check_at and its index exist since 0001; the schedule now fills them in.
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("check_errors", sa.Integer(), nullable=False, server_default="0"))

    op.create_table(
        "source_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("payload_sha256", sa.String(length=64), nullable=True),
        sa.Column("previous_sha256", sa.String(length=64), nullable=True),
        sa.Column("text_sha256", sa.String(length=64), nullable=True),
        sa.Column("previous_text_sha256", sa.String(length=64), nullable=True),
        sa.Column("previous_capture_id", sa.Integer(), nullable=True),
        sa.Column("capture_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_source_checks_source_id_sources")),
        sa.ForeignKeyConstraint(
            ["previous_capture_id"], ["captures.id"], name=op.f("fk_source_checks_previous_capture_id_captures")
        ),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"], name=op.f("fk_source_checks_capture_id_captures")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_checks")),
    )
    with op.batch_alter_table("source_checks") as batch:
        batch.create_index(batch.f("ix_source_checks_source_id"), ["source_id"])
        batch.create_index(batch.f("ix_source_checks_checked_at"), ["checked_at"])
        batch.create_index(batch.f("ix_source_checks_result"), ["result"])


def downgrade() -> None:
    op.drop_table("source_checks")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("check_errors")
        batch.drop_column("last_checked_at")
