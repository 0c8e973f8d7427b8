"""Media items: the platform identity of every downloaded video, searchable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("capture_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=40), nullable=False),
        sa.Column("extractor", sa.String(length=80), nullable=False),
        sa.Column("item_id", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("channel_id", sa.String(length=200), nullable=True),
        sa.Column("uploader", sa.Text(), nullable=True),
        sa.Column("uploader_id", sa.String(length=200), nullable=True),
        sa.Column("upload_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("upload_date", sa.String(length=10), nullable=True),
        sa.Column("duration", sa.String(length=32), nullable=True),
        sa.Column("view_count", sa.BigInteger(), nullable=True),
        sa.Column("like_count", sa.BigInteger(), nullable=True),
        sa.Column("webpage_url", sa.Text(), nullable=True),
        sa.Column("format_id", sa.String(length=200), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("media_record_id", sa.String(length=64), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"], name=op.f("fk_media_items_capture_id_captures")),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name=op.f("fk_media_items_source_id_sources")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_items")),
    )
    with op.batch_alter_table("media_items") as batch:
        batch.create_index("ix_media_items_platform_item", ["platform", "item_id"])
        batch.create_index(batch.f("ix_media_items_capture_id"), ["capture_id"])
        batch.create_index(batch.f("ix_media_items_source_id"), ["source_id"])
        batch.create_index(batch.f("ix_media_items_channel_id"), ["channel_id"])
        batch.create_index(batch.f("ix_media_items_sha256"), ["sha256"])


def downgrade() -> None:
    op.drop_table("media_items")
