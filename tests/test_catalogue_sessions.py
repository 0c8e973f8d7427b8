"""Reading sessions: a snapshot that neither waits on nor blocks a writer, and never writes."""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from sqlalchemy import select, text

from archiver.archive import Archive
from archiver.catalogue import db
from archiver.catalogue.db import Catalogue
from archiver.catalogue.models import Incident
from archiver.errors import CatalogueError
from archiver.manifest import parse_text
from tests.conftest import TEST_TODAY

MANIFEST = """\
version: 1
incidents:
  - id: test-incident
    title: A test incident
    when: {start: 2017-04-04}
    place: {name: Khan Shaykhoun, country: SY}
    summary: A test incident.
"""


def test_reader_does_not_wait_for_a_writer_holding_the_lock(sqlite_archive: Archive) -> None:
    with sqlite_archive.session() as writer:
        writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is held until this block ends
        started = time.monotonic()
        with sqlite_archive.reading() as reader:
            assert reader.scalars(select(Incident)).all() == []
        assert time.monotonic() - started < 5  # a writer's BEGIN IMMEDIATE would wait the 30 s busy timeout


def test_reader_sees_a_snapshot_and_leaves_no_changes(archive: Archive) -> None:
    with archive.reading() as reader:
        before = reader.scalars(select(Incident)).all()
        with archive.store() as store:
            store.load(parse_text(MANIFEST, "t.yaml", TEST_TODAY))
        assert reader.scalars(select(Incident)).all() == before  # same snapshot for the whole session
        reader.add(Incident(id="never-written", title="x"))
    with archive.reading() as reader:
        assert reader.get(Incident, "never-written") is None  # reading sessions roll back
        assert reader.get(Incident, "test-incident") is not None


def test_postgresql_reader_refuses_writes(archive: Archive) -> None:
    if archive.catalogue.dialect != "postgresql":
        pytest.skip("SQLite has no read-only transactions; the session is rolled back instead")
    with pytest.raises(CatalogueError), archive.reading() as reader:
        reader.execute(text("CREATE TABLE should_not_exist (x int)"))


def test_schema_check_expects_the_newest_migration(sqlite_archive: Archive) -> None:
    # check_schema compares against a constant so that a start need not load Alembic: it must name the head.
    assert db.head_revision() == db.HEAD_REVISION
    assert db.current_revision(sqlite_archive.catalogue.engine) == db.HEAD_REVISION
    sqlite_archive.catalogue.check()
    with sqlite_archive.session() as s:
        s.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    with pytest.raises(CatalogueError, match="schema is at 0004, this version needs 0005"):
        sqlite_archive.catalogue.check()


def test_schema_check_on_an_empty_database(tmp_path: Path) -> None:
    cat = Catalogue(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        assert db.current_revision(cat.engine) is None
        with pytest.raises(CatalogueError, match="has no schema"):
            cat.check()
    finally:
        cat.dispose()


def _take_turn(turn: db.WriterTurn, conn: Connection) -> None:
    started = time.monotonic()
    with turn():
        conn.send(time.monotonic() - started)


def test_writer_turns_exclude_processes_forked_while_one_is_held(tmp_path: Path) -> None:
    """A process forked while its parent holds the turn neither inherits the parent's hold (the open file
    description's lock) nor deadlocks on the copied thread lock: it waits for the parent, then takes it."""
    turn = db.WriterTurn(tmp_path / "catalogue.sqlite.writer-lock")
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)
    with turn():
        child = ctx.Process(target=_take_turn, args=(turn, child_end))
        child.start()
        time.sleep(0.4)
    child.join(20)
    assert child.exitcode == 0
    assert parent_end.poll(1) and parent_end.recv() >= 0.3  # it waited for the parent's turn to end
    with turn():  # and the parent takes it again afterwards
        pass
