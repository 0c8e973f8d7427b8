"""The catalogue schema (SQLAlchemy 2 typed ORM). Every change to it goes through an Alembic migration.

Times are timezone-aware UTC with microseconds on every backend (:class:`UTCDateTime`). Decimal facts such as
coordinates are kept as the text the manifest gave, so no float rounding ever changes evidence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; SQLite keeps no zone, so it is re-attached on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, for Core statements (bulk inserts and updates built once)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


incident_sources = Table(
    "incident_sources",
    Base.metadata,
    Column("incident_id", String(100), ForeignKey("incidents.id"), primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), primary_key=True),
    Column("cited_by_id", Integer, ForeignKey("sources.id"), nullable=True),
    Column("cited_as", Text, nullable=True),
    Column("note", Text, nullable=True),
    Column("added_at", UTCDateTime(), nullable=False),
)


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    when_start: Mapped[str] = mapped_column(String(40))
    when_end: Mapped[str | None] = mapped_column(String(40))
    when_timezone: Mapped[str | None] = mapped_column(String(64))
    when_precision: Mapped[str] = mapped_column(String(10))
    when_approximate: Mapped[bool] = mapped_column(Boolean, default=False)
    # The earliest instant the incident may have started, in UTC, for sorting and range queries.
    when_start_utc: Mapped[datetime | None]
    place_name: Mapped[str] = mapped_column(Text)
    place_admin: Mapped[list[Any]] = mapped_column(default=list)
    country: Mapped[str] = mapped_column(String(2))
    lat: Mapped[str | None] = mapped_column(String(32))
    lon: Mapped[str | None] = mapped_column(String(32))
    facility: Mapped[str | None] = mapped_column(Text)
    categories: Mapped[list[Any]] = mapped_column(default=list)
    summary: Mapped[str] = mapped_column(Text)
    manifest_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    sources: Mapped[list[Source]] = relationship(
        secondary=incident_sources,
        primaryjoin="Incident.id == incident_sources.c.incident_id",
        secondaryjoin="Source.id == incident_sources.c.source_id",
        back_populates="incidents",
        order_by="Source.id",
    )


class Source(Base):
    """A URL to capture, or a lead: a cited source whose URL is not known yet."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # What makes two sources one: platform identity (``youtube:ID``), the normalised URL, or ``lead:<hash>``.
    identity_key: Mapped[str] = mapped_column(String(2048), unique=True)
    url: Mapped[str | None] = mapped_column(Text)
    lead: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))
    platform: Mapped[str | None] = mapped_column(String(20))
    item_id: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(Text)
    publisher: Mapped[str | None] = mapped_column(Text)
    published: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    discovered_from_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    follow_citations: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_captured_at: Mapped[datetime | None]
    gone_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    last_checked_at: Mapped[datetime | None]
    check_errors: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # failed re-checks in a row

    incidents: Mapped[list[Incident]] = relationship(
        secondary=incident_sources,
        primaryjoin="Source.id == incident_sources.c.source_id",
        secondaryjoin="Incident.id == incident_sources.c.incident_id",
        back_populates="sources",
        order_by="Incident.id",
    )
    discovered_from: Mapped[Source | None] = relationship(remote_side=[id])
    captures: Mapped[list[Capture]] = relationship(back_populates="source", order_by="Capture.id")


class Capture(Base):
    """One attempt to archive one source."""

    __tablename__ = "captures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(16))  # web | media | browser
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # running until it ends; ok | failed | gone | interrupted
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    requested_url: Mapped[str | None] = mapped_column(Text)
    final_url: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    collector: Mapped[str] = mapped_column(String(200))
    egress: Mapped[str | None] = mapped_column(String(200))
    # The worker process (host:pid:nonce) that ran it; None for the local executor (which holds the run lock).
    worker: Mapped[str | None] = mapped_column(String(200))
    tools: Mapped[dict[str, Any]] = mapped_column(default=dict)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    source: Mapped[Source] = relationship(back_populates="captures")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="capture", order_by="Artifact.id")


class WarcFile(Base):
    __tablename__ = "warc_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    records: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))  # open | closed | repaired


class Artifact(Base):
    """One stored WARC record."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_payload_sha256", "payload_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))  # request | page | requisite | media | metadata | ...
    record_type: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str] = mapped_column(String(64), unique=True)
    target_uri: Mapped[str | None] = mapped_column(Text)
    media_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    payload_sha256: Mapped[str | None] = mapped_column(String(64))
    block_sha256: Mapped[str] = mapped_column(String(64))
    warc_file_id: Mapped[int] = mapped_column(ForeignKey("warc_files.id"), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    record_date: Mapped[datetime]

    capture: Mapped[Capture] = relationship(back_populates="artifacts")
    warc_file: Mapped[WarcFile] = relationship()


class CustodyEvent(Base):
    """Append-only, hash-chained. UPDATE and DELETE are refused by database triggers (see the migrations)."""

    __tablename__ = "custody_events"
    __table_args__ = (UniqueConstraint("hash"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)
    subject: Mapped[str] = mapped_column(String(2048))
    incident_id: Mapped[str | None] = mapped_column(String(100), index=True)
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class MediaItem(Base):
    """A video or other media item downloaded by a media capture, with the platform's identity at that time.

    What investigators search by: platform and item id, channel, uploader, upload time, the media's SHA-256.
    """

    __tablename__ = "media_items"
    __table_args__ = (Index("ix_media_items_platform_item", "platform", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    platform: Mapped[str] = mapped_column(String(40))
    extractor: Mapped[str] = mapped_column(String(80))
    item_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(Text)
    channel_id: Mapped[str | None] = mapped_column(String(200), index=True)
    uploader: Mapped[str | None] = mapped_column(Text)
    uploader_id: Mapped[str | None] = mapped_column(String(200))
    upload_time: Mapped[datetime | None]
    upload_date: Mapped[str | None] = mapped_column(String(10))
    duration: Mapped[str | None] = mapped_column(String(32))  # seconds, as text: never a rounded float
    view_count: Mapped[int | None] = mapped_column(BigInteger)
    like_count: Mapped[int | None] = mapped_column(BigInteger)
    webpage_url: Mapped[str | None] = mapped_column(Text)
    format_id: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    media_record_id: Mapped[str | None] = mapped_column(String(64))
    captured_at: Mapped[datetime]


from archiver.catalogue import integrity_models  # noqa: E402, F401  (puts the integrity tables on Base.metadata)
from archiver.distributed import models as distributed_models  # noqa: E402, F401  (run claims, 0005)


class SourceCheck(Base):
    """One re-check of a captured source: what was fetched again and what it was compared with (migration 0004)."""

    __tablename__ = "source_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(index=True)
    method: Mapped[str] = mapped_column(String(16))  # web | media
    result: Mapped[str] = mapped_column(String(16), index=True)  # still-online | changed | gone | error
    http_status: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    payload_sha256: Mapped[str | None] = mapped_column(String(64))  # of what this check fetched (not stored)
    previous_sha256: Mapped[str | None] = mapped_column(String(64))  # of the capture it was compared with
    text_sha256: Mapped[str | None] = mapped_column(String(64))  # normalised main text, see archiver/recheck_probe.py
    previous_text_sha256: Mapped[str | None] = mapped_column(String(64))
    previous_capture_id: Mapped[int | None] = mapped_column(ForeignKey("captures.id"))
    capture_id: Mapped[int | None] = mapped_column(ForeignKey("captures.id"))  # the recapture, if one was made
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
