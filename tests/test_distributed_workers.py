"""Real Celery workers (``archiver worker`` processes) against the real Redis and PostgreSQL: several workers,
every task delivered twice, one worker killed with SIGKILL in the middle of a capture. Every source ends captured
exactly once in the run, the killed worker's capture is interrupted and its WARC file repaired, every catalogued
record is on disk with its digests, and the custody chain holds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from archiver.archive import Archive
from archiver.catalogue.models import Capture, Source, WarcFile
from archiver.distributed.app import make_app, publish
from archiver.distributed.models import RunClaim
from tests.support.celery_workers import (
    SlowSite,
    assert_archive_consistent,
    cli,
    drop_queue,
    make_archive,
    new_queue,
    require_redis,
    worker_pool,
)

pytestmark = [pytest.mark.slow, pytest.mark.celery, pytest.mark.postgres]


def _wait_for(what: str, check: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(240)
def test_workers_one_killed_mid_capture_every_source_captured_once(tmp_path: Path, pg_url: str) -> None:
    require_redis()
    site = SlowSite(slow_seconds=4.0, latency=0.05)
    queue = new_queue()
    fast = [site.url(f"/p/{i}.html") for i in range(24)]
    slow = [site.url(f"/slow/{i}.html") for i in range(4)]
    root = tmp_path / "storage"
    # Fast pages first: the worker killed in a slow capture has written earlier ones into its own WARC file.
    arch = make_archive(root, pg_url, queue, fast[:12] + slow + fast[12:], visibility_timeout=5, busy_retry=1.0)
    try:
        with worker_pool(root, pg_url, tmp_path / "logs") as pool:
            workers = pool.start(3)
            coordinator = subprocess.Popen(
                [*cli(root, pg_url), "run", "--executor", "celery", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # At-least-once delivery, made certain: every claim of the run is enqueued a second time.
            run_id = _wait_for("the run's claims", lambda: _run_id(arch), 60)
            with arch.session() as s:
                pairs = [(c.id, c.source_id) for c in s.scalars(select(RunClaim).where(RunClaim.run_id == run_id))]
            assert publish(make_app(arch.settings), str(run_id), pairs) == len(slow) + len(fast)
            # Kill a worker in the middle of a slow capture: its Capture row is committed as running, the page
            # has not answered yet.
            victim_name = str(_wait_for("a slow capture in flight", lambda: _running_slow(arch), 60))
            victim_pid = int(victim_name.split(":")[1])
            victim = next(w for w in workers if w.pid == victim_pid)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            out, err = coordinator.communicate(timeout=150)
            assert coordinator.returncode == 0, err
            summary = json.loads(out)
        # Workers stopped (SIGTERM): each closed its WARC file. The killed worker's file was repaired by the
        # coordinator's final recovery, once no live process held it.
        assert summary["run_id"] == run_id and summary["enqueued"] == len(slow) + len(fast)
        assert summary["captured"] == len(slow) + len(fast) and summary["failed"] == 0
        assert summary["claims"]["states"] == {"done": len(slow) + len(fast)}
        with arch.session() as s:
            caps = s.scalars(select(Capture).where(Capture.run_id == run_id)).all()
            ok = Counter(c.source_id for c in caps if c.outcome == "ok")
            sources = s.scalars(select(Source.id)).all()
            assert ok == Counter(dict.fromkeys(sources, 1)), "each source captured exactly once in the run"
            interrupted = [c for c in caps if c.outcome == "interrupted"]
            assert [c.worker for c in interrupted] == [victim_name]
            assert {c.outcome for c in caps} == {"ok", "interrupted"}
            # Captures came from more than one worker, and every WARC file from exactly one process.
            assert len({c.worker for c in caps if c.outcome == "ok"}) >= 2
            files = {w.name: w.status for w in s.scalars(select(WarcFile))}
        # Names end in the writer's pid; the killed worker's file (if it had written one) was repaired, the
        # others closed by their writers.
        for name, status in files.items():
            pid = int(name.rsplit("-", 1)[1].split(".")[0])
            assert pid in {w.pid for w in workers}
            assert status == ("repaired" if pid == victim_pid else "closed"), (name, status)
            assert (name in summary["repaired_warcs"]) == (pid == victim_pid)
        assert any(int(n.rsplit("-", 1)[1].split(".")[0]) == victim_pid for n in files), "the victim wrote a file"
        assert_archive_consistent(arch)
        assert all(site.hits.get(f"/slow/{i}.html", 0) >= 1 for i in range(4))
    finally:
        site.close()
        arch.close()
        drop_queue(queue)


def _run_id(arch: Archive) -> str | None:
    with arch.session() as s:
        return s.scalar(select(RunClaim.run_id).limit(1))


def _running_slow(arch: Archive) -> str | None:
    with arch.session() as s:
        cap = s.scalars(
            select(Capture).where(Capture.outcome == "running", Capture.requested_url.like("%/slow/%"))
        ).first()
        return None if cap is None else cap.worker
