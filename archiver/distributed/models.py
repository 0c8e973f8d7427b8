"""Catalogue tables of the scale path (migration 0005): distributed runs and their claims.

A claim is the one row per (run, source) that decides who captures the source in that run. Its states:

``queued``   enqueued, no worker has started it;
``working``  a worker holds it (and the PostgreSQL advisory lock that proves it is alive, see liveness.py);
``done``     captured (whatever the capture's outcome: ok, gone, failed are all data);
``error``    the task itself could not run the capture (the error is kept), the source stays pending;
``expired``  nobody finished it within ``[celery] claim_expiry``; its source is pending again for the next run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from archiver.catalogue.models import Base

QUEUED, WORKING, DONE, ERROR, EXPIRED = "queued", "working", "done", "error", "expired"
OPEN_STATES = (QUEUED, WORKING)
FINAL_STATES = (DONE, ERROR, EXPIRED)


class DistributedRun(Base):
    __tablename__ = "distributed_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    actor: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(200))
    sources: Mapped[int] = mapped_column(Integer)  # enqueued at the start; cited sources found later add claims


class RunClaim(Base):
    __tablename__ = "run_claims"
    __table_args__ = (UniqueConstraint("run_id", "source_id", name="uq_run_claims_run_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("distributed_runs.id"))
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    capture_id: Mapped[int | None] = mapped_column(ForeignKey("captures.id"))
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]
