"""Group commit of capture bookkeeping: shared transactions, an intact custody chain, all-or-nothing batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from archiver import custody
from archiver.archive import Archive
from archiver.capture.committer import Batch, GroupCommitter, column_values
from archiver.capture.job import CaptureJob
from archiver.catalogue import store as st
from archiver.catalogue.models import Capture, CustodyEvent, Source
from archiver.catalogue.store import SourceRequest
from archiver.catalogue.warcs import artifact_from_ref, artifact_values
from archiver.warc.block import Digest
from archiver.warc.records import RecordRef

REPO = Path(__file__).resolve().parent.parent


def _note(b: Batch, **details: Any) -> custody.PendingEvent:
    """A custody note; its seq is known once the unit's batch has committed."""
    return b.custody.append(actor="tester", action="note", subject="archive", details=details)


def _events(archive: Archive) -> list[CustodyEvent]:
    with archive.session() as s:
        return list(custody.iter_events(s))


def _source(archive: Archive) -> int:
    with archive.store() as store:
        src, _ = store.ensure_source(SourceRequest(url="http://127.0.0.1:9/page"))
        return src.id


def _wait_queued(committer: GroupCommitter, n: int) -> None:
    deadline = time.monotonic() + 10
    while committer.queued < n:
        assert time.monotonic() < deadline, "units never queued"
        time.sleep(0.005)


def test_concurrent_units_share_transactions_and_keep_the_chain(archive: Archive) -> None:
    """Units from many threads commit in shared transactions; plain appends from other sessions interleave."""
    committer = GroupCommitter(archive.session, archive.clock)
    threads, per_thread = 12, 15
    start = threading.Barrier(threads + 2)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                first, second = committer.submit(
                    lambda b, i=i: (_note(b, t=t, i=i, part=1), _note(b, t=t, i=i, part=2))
                )
                assert first.seq is not None and second.seq == first.seq + 1  # a unit's events are consecutive
        except BaseException as exc:
            errors.append(exc)

    def plain_appender() -> None:
        start.wait()
        for i in range(10):
            with archive.session() as s:
                custody.append(s, archive.clock, actor="other", action="note", subject="archive", details={"i": i})

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    pool += [threading.Thread(target=plain_appender) for _ in range(2)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(60)
    assert not errors
    with archive.session() as s:
        report = custody.check_chain(s)
    assert report.ok, report.problems
    assert report.events == 1 + threads * per_thread * 2 + 2 * 10
    assert committer.units == threads * per_thread
    assert committer.transactions < committer.units  # units were gathered, not committed one by one


def test_deferred_rows_and_generated_ids(archive: Archive) -> None:
    sid = _source(archive)
    committer = GroupCommitter(archive.session, archive.clock)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    values = {"source_id": sid, "method": "web", "started_at": now, "outcome": "running", "collector": "t"}
    ids = committer.submit(
        lambda b: [b.insert_returning_id(Capture, {**values, "requested_url": str(i)}) for i in range(3)]
    )
    got = [p.get() for p in ids]
    with archive.session() as s:
        rows = {c.id: c.requested_url for c in s.scalars(select(Capture))}
    assert rows == {got[0]: "0", got[1]: "1", got[2]: "2"}  # each id is its own row's


def test_a_failing_unit_fails_alone(archive: Archive) -> None:
    """A batch with a bad unit is rolled back and re-run unit by unit: the others commit, the bad one raises."""
    committer = GroupCommitter(archive.session, archive.clock)
    started, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def hold(b: Batch) -> None:  # keeps the leader in its transaction while the next batch queues up
        _note(b, unit="holder")
        started.set()
        release.wait(10)

    def good(name: str) -> Any:
        return lambda b: _note(b, unit=name)

    def bad(b: Batch) -> None:
        _note(b, unit="bad")
        raise ValueError("a unit's own failure")

    def run(name: str, work: Any) -> None:
        try:
            results[name] = committer.submit(work)
        except ValueError as exc:
            results[name] = exc

    holder = threading.Thread(target=run, args=("holder", hold))
    holder.start()
    assert started.wait(10)
    others = [threading.Thread(target=run, args=(n, w)) for n, w in (("a", good("a")), ("bad", bad), ("b", good("b")))]
    for th in others:
        th.start()
    _wait_queued(committer, 3)
    release.set()
    for th in [holder, *others]:
        th.join(20)
    assert isinstance(results["bad"], ValueError)
    units = [e.details for e in _events(archive)[1:]]
    assert sorted(units) == sorted(['{"unit":"holder"}', '{"unit":"a"}', '{"unit":"b"}'])
    # holder alone, then a+bad+b together (rolled back), then each of the three alone
    assert committer.transactions == 5
    with archive.session() as s:
        assert custody.check_chain(s).ok


_CRASH = r"""
import os, signal, sys, threading, time
from archiver.archive import Archive
from archiver.capture.committer import GroupCommitter
from archiver.catalogue.models import Capture
from archiver.clock import SystemClock
from archiver.config import load_settings
from datetime import UTC, datetime

root, url, sid = sys.argv[1], sys.argv[2], int(sys.argv[3])
archive = Archive(load_settings(root, url, collector="crash-test", env={}))
committer = GroupCommitter(archive.session, archive.clock)
started, release = threading.Event(), threading.Event()

def hold(b):
    b.custody.append(actor="t", action="note", subject="archive", details={"unit": "committed"})
    started.set()
    release.wait(10)

def rows(b):
    b.custody.append(actor="t", action="note", subject="archive", details={"unit": "lost"})
    b.insert_returning_id(Capture, {"source_id": sid, "method": "web", "started_at": datetime.now(UTC),
                                    "outcome": "running", "collector": "t"})

def crash(b):
    b.flush()  # the batch's rows are in the database's open transaction now
    print("flushed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

threads = [threading.Thread(target=committer.submit, args=(hold,))]
threads[0].start()
started.wait(10)
for w in (rows, crash):
    threads.append(threading.Thread(target=committer.submit, args=(w,)))
    threads[-1].start()
while committer.queued < 2:
    time.sleep(0.005)
release.set()
for t in threads:
    t.join(20)
"""


def test_a_crash_mid_batch_commits_nothing_of_it(archive: Archive) -> None:
    """kill -9 while a batch's rows are written but not committed: none of them survive, the chain holds."""
    sid = _source(archive)
    before = len(_events(archive))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(archive.settings.root), archive.settings.db_url, str(sid)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "flushed" in proc.stdout
    events = _events(archive)
    assert [e.details for e in events[before:]] == ['{"unit":"committed"}']  # the earlier batch only
    with archive.session() as s:
        assert s.scalar(select(func.count()).select_from(Capture)) == 0
        assert custody.check_chain(s).ok
    # The chain goes on from the committed head.
    committer = GroupCommitter(archive.session, archive.clock)
    assert committer.submit(lambda b: _note(b, after="crash")).seq == events[-1].seq + 1


def test_cursor_and_plain_appends_in_one_transaction(archive: Archive) -> None:
    with archive.session() as s:
        cursor = custody.ChainCursor(s, archive.clock)
        cursor.append(actor="t", action="note", subject="archive", details={"n": 1})
        cursor.flush()
        custody.append(s, archive.clock, actor="t", action="note", subject="archive", details={"n": 2})
        cursor.invalidate()
        cursor.append(actor="t", action="note", subject="archive", details={"n": 3})
        cursor.flush()
    with archive.session() as s:
        report = custody.check_chain(s)
    assert report.ok and report.events == 4


def test_a_stale_cursor_is_refused_not_forked(archive: Archive) -> None:
    """Forgetting invalidate() after a plain append makes two events claim one seq: the commit fails."""
    with pytest.raises(IntegrityError), archive.session() as s:
        cursor = custody.ChainCursor(s, archive.clock)
        cursor.append(actor="t", action="note", subject="archive")
        cursor.flush()
        custody.append(s, archive.clock, actor="t", action="note", subject="archive")
        cursor.append(actor="t", action="note", subject="archive")
        cursor.flush()
    with archive.session() as s:
        report = custody.check_chain(s)
    assert report.ok and report.events == 1


@pytest.mark.parametrize("payload", [True, False])
@pytest.mark.parametrize("with_payload_digest", [True, False])
def test_artifact_values_match_the_orm_row(payload: bool, with_payload_digest: bool) -> None:
    ref = RecordRef(
        record_id="<urn:uuid:00000000-0000-0000-0000-000000000001>",
        record_type="response",
        target_uri="http://127.0.0.1/x",
        warc_file="a.warc.gz",
        offset=10,
        length=20,
        date=datetime(2026, 1, 1, tzinfo=UTC),
        content_type="application/http; msgtype=response",
        content_length=30,
        block_digest=Digest("a" * 64),
        payload_digest=Digest("b" * 64) if payload else None,
        payload_length=7,
    )
    kw: dict[str, Any] = {"capture_id": 3, "role": "page", "warc_file_id": 4, "media_type": "text/html"}
    orm = column_values(artifact_from_ref(ref, with_payload_digest=with_payload_digest, **kw))
    assert artifact_values(ref, with_payload_digest=with_payload_digest, **kw) == orm


def test_a_capture_begun_by_another_job_object_is_finished_from_its_row(archive: Archive) -> None:
    """_finish states the capture as _begin committed it; without that in memory it reads the row instead."""
    sid = _source(archive)
    first, second = CaptureJob(archive, media=False), CaptureJob(archive, media=False)
    cid = first._begin(sid, first._source_facts(sid), "web", {"archiver": "x"})
    part = second._finish(
        sid,
        cid,
        url="http://127.0.0.1:9/page",
        outcome="failed",
        status_on_outcome={"ok": st.CAPTURED, "failed": st.FAILED},
        http_status=None,
        final_url=None,
        error="connection refused",
        records=[],
        details={},
    )
    first.close()
    second.close()
    assert part.source_status == st.FAILED
    with archive.session() as s:
        cap, src = s.get(Capture, cid), s.get(Source, sid)
        assert cap is not None and src is not None
        assert (cap.outcome, cap.error, cap.tools, src.status) == (
            "failed",
            "connection refused",
            {"archiver": "x"},
            "failed",
        )
        events = [e for e in custody.iter_events(s) if e.action == "capture.failed"]
        assert len(events) == 1 and '"method":"web"' in events[0].details
        assert custody.check_chain(s).ok
