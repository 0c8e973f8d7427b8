"""Shared fixtures. Catalogue tests run on SQLite files and on the PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archiver.archive import Archive
from archiver.clock import FixedClock, SequentialIds
from archiver.config import load_settings

PG_ADMIN_URL = os.environ.get("ARCHIVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The fixed "now" of every test clock; manifests dated after it are "in the future".
TEST_NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TEST_TODAY = date(2026, 11, 1)
REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"

_pg_state: dict[str, object] = {}


def _pg_available() -> str | None:
    """None when reachable, else the reason."""
    if "reason" not in _pg_state:
        try:
            engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # any failure to connect means: skip, visibly
            _pg_state["reason"] = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    reason = _pg_state["reason"]
    return reason if isinstance(reason, str) else None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL into a fresh, empty schema of the test database; dropped afterwards."""
    reason = _pg_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalogue.sqlite'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(start=TEST_NOW, step=timedelta(milliseconds=1))


@pytest.fixture
def archive(tmp_path: Path, db_url: str, clock: FixedClock) -> Iterator[Archive]:
    """An initialised archive in a temporary root, on each catalogue backend."""
    settings = load_settings(tmp_path / "storage", db_url, collector="test-collector", env={})
    arch = Archive(settings, clock=clock, ids=SequentialIds())
    arch.init()
    yield arch
    arch.close()


@pytest.fixture
def sqlite_archive(tmp_path: Path, clock: FixedClock) -> Iterator[Archive]:
    settings = load_settings(tmp_path / "storage", None, collector="test-collector", env={})
    arch = Archive(settings, clock=clock, ids=SequentialIds())
    arch.init()
    yield arch
    arch.close()
