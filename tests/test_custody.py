"""The custody log: append-only in the database, hash-chained, gapless, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from archiver import custody
from archiver.archive import Archive
from archiver.canonical import canonical_json
from archiver.catalogue.db import Catalogue
from archiver.clock import FixedClock, SystemClock
from archiver.config import load_settings
from tests.conftest import TEST_NOW


def _append_many(archive: Archive, n: int) -> None:
    with archive.session() as s:
        for i in range(n):
            custody.append(
                s, archive.clock, actor="tester", action="note", subject="archive", details={"i": i, "text": "نص"}
            )


def test_chain_links_and_hashes(archive: Archive) -> None:
    _append_many(archive, 5)
    with archive.session() as s:
        report = custody.check_chain(s)
        events = list(custody.iter_events(s))
    assert report.ok and report.events == 6  # archive.initialised + 5 notes
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == "0" * 64
    for prev, cur in itertools.pairwise(events):
        assert cur.prev_hash == prev.hash
    # The documented formula, recomputed independently of the module.
    e = events[3]
    doc = {
        "seq": e.seq,
        "at": e.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "incident": e.incident_id,
        "details": json.loads(e.details),
    }
    assert hashlib.sha256(e.prev_hash.encode() + canonical_json(doc)).hexdigest() == e.hash
    assert report.head_hash == events[-1].hash


def test_times_keep_microseconds_in_utc(archive: Archive) -> None:
    archive.clock = FixedClock(start=TEST_NOW + timedelta(microseconds=123457))
    _append_many(archive, 1)
    with archive.session() as s:
        last = list(custody.iter_events(s))[-1]
    assert last.at == TEST_NOW + timedelta(microseconds=123457)
    assert last.at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("statement", ["UPDATE custody_events SET actor = 'mallory'", "DELETE FROM custody_events"])
def test_database_refuses_update_and_delete(archive: Archive, statement: str) -> None:
    _append_many(archive, 2)
    with pytest.raises(DBAPIError, match="append-only"), archive.catalogue.engine.begin() as conn:
        conn.execute(text(statement))
    with archive.session() as s:
        assert custody.check_chain(s).events == 3


def test_postgres_refuses_truncate(pg_url: str, clock: FixedClock, tmp_path: Path) -> None:
    arch = Archive(load_settings(tmp_path / "storage", pg_url, collector="t", env={}), clock=clock)
    arch.init()
    try:
        with pytest.raises(DBAPIError, match="append-only"), arch.catalogue.engine.begin() as conn:
            conn.execute(text("TRUNCATE custody_events"))
    finally:
        arch.close()


def _tamper(archive: Archive, sql: str) -> None:
    """Edit the log as an attacker with database access would: drop the triggers first."""
    with archive.catalogue.engine.begin() as conn:
        if archive.catalogue.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER custody_events_no_update"))
            conn.execute(text("DROP TRIGGER custody_events_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER custody_events_no_change ON custody_events"))
        conn.exec_driver_sql(sql)


@pytest.mark.parametrize(
    ("sql", "bad_seq", "kind"),
    [
        ('UPDATE custody_events SET details = \'{"i":99,"text":"x"}\' WHERE seq = 4', 4, "hash"),
        ("UPDATE custody_events SET actor = 'mallory' WHERE seq = 3", 3, "hash"),
        ("DELETE FROM custody_events WHERE seq = 5", 6, "gap"),
        ("DELETE FROM custody_events WHERE seq = 7", None, None),  # cutting the head: caught by checkpoints, not here
        ("UPDATE custody_events SET details = 'not json' WHERE seq = 2", 2, "details"),
    ],
)
def test_tampering_names_first_bad_event(archive: Archive, sql: str, bad_seq: int | None, kind: str | None) -> None:
    _append_many(archive, 6)
    _tamper(archive, sql)
    with archive.session() as s:
        report = custody.check_chain(s)
    assert report.first_bad_seq == bad_seq
    if kind:
        assert report.problems[0].kind == kind


def test_sqlite_cli_edit_is_detected(sqlite_archive: Archive) -> None:
    """The 'done when' of the foundation: edit a row with the sqlite3 module, custody check fails at that row."""
    _append_many(sqlite_archive, 3)
    path = sqlite_archive.settings.root / "catalogue.sqlite"
    con = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE custody_events SET actor='x' WHERE seq=2")
    con.execute("DROP TRIGGER custody_events_no_update")
    con.execute("UPDATE custody_events SET actor='x' WHERE seq=2")
    con.commit()
    con.close()
    with sqlite_archive.session() as s:
        assert custody.check_chain(s).first_bad_seq == 2


def test_concurrent_appenders_keep_the_chain_gapless(archive: Archive) -> None:
    """Several connections appending at once: one chain, no gaps, no forks (advisory lock / BEGIN IMMEDIATE)."""
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        cat = Catalogue(archive.settings.db_url)
        try:
            for i in range(10):
                with cat.session() as s:
                    custody.append(s, SystemClock(), actor=f"w{k}", action="note", subject="archive", details={"i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            cat.dispose()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with archive.session() as s:
        report = custody.check_chain(s)
    assert report.ok, report.problems
    assert report.events == 41


def test_unknown_action_is_refused(archive: Archive) -> None:
    with pytest.raises(ValueError, match="unknown custody action"), archive.session() as s:
        custody.append(s, archive.clock, actor="a", action="deleted", subject="archive")


def test_event_rolls_back_with_its_change(archive: Archive) -> None:
    with pytest.raises(RuntimeError), archive.session() as s:
        custody.append(s, archive.clock, actor="a", action="note", subject="archive")
        raise RuntimeError("the change failed")
    with archive.session() as s:
        assert custody.check_chain(s).events == 1
