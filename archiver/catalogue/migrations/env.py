"""Alembic environment: runs against the engine the archiver hands over (never a URL from an ini file)."""

from __future__ import annotations

from alembic import context

from archiver.catalogue.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
