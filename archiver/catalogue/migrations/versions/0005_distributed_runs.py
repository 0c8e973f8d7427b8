"""Distributed runs: one claim per (run, source) so that at-least-once delivery captures each source once, and
the worker process that made each capture.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("captures") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=200), nullable=True))

    op.create_table(
        "distributed_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("sources", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distributed_runs")),
    )
    op.create_table(
        "run_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("capture_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["distributed_runs.id"], name=op.f("fk_run_claims_run_id_distributed_runs")
        ),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_run_claims_source_id_sources")),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"], name=op.f("fk_run_claims_capture_id_captures")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_claims")),
        sa.UniqueConstraint("run_id", "source_id", name="uq_run_claims_run_source"),
    )
    with op.batch_alter_table("run_claims") as batch:
        batch.create_index(batch.f("ix_run_claims_state"), ["state"])
        batch.create_index(batch.f("ix_run_claims_source_id"), ["source_id"])


def downgrade() -> None:
    op.drop_table("run_claims")
    op.drop_table("distributed_runs")
    with op.batch_alter_table("captures") as batch:
        batch.drop_column("worker")
