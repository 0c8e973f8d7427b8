"""The scale path in one process: claims, takeover of a dead worker's claim, duplicate deliveries, recovery that
leaves live workers alone, enqueueing on the real Redis. Real PostgreSQL, real HTTP on 127.0.0.1, real WARC files.

Worker processes killed for real are in tests/test_distributed_workers.py (slow).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from archiver import jobs
from archiver.archive import Archive
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Capture, Source
from archiver.cli import cli
from archiver.config import load_settings
from archiver.distributed import claims
from archiver.distributed.app import TASK_NAME, close_worker_process, make_app
from archiver.distributed.coordinator import run_distributed
from archiver.distributed.liveness import Liveness, WorkerIdentity, worker_alive
from archiver.distributed.models import RunClaim
from archiver.distributed.process import WorkerProcess
from archiver.errors import ConfigError
from archiver.warc.repair import repair_open_files
from tests.support.celery_workers import (
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    SlowSite,
    assert_archive_consistent,
    drop_queue,
    make_archive,
    new_queue,
    require_redis,
)
from tests.support.warc_files import http_pair

pytestmark = pytest.mark.postgres


@pytest.fixture
def slow_site() -> Iterator[SlowSite]:
    s = SlowSite(slow_seconds=1.0)
    yield s
    s.close()


@pytest.fixture
def pg_archive(tmp_path: Path, pg_url: str, slow_site: SlowSite) -> Iterator[Archive]:
    queue = new_queue()
    arch = make_archive(tmp_path / "storage", pg_url, queue, [slow_site.url(f"/p/{i}.html") for i in range(3)])
    yield arch
    close_worker_process()
    arch.close()
    drop_queue(queue)


def _sources(arch: Archive) -> list[int]:
    with arch.session() as s:
        return list(s.scalars(select(Source.id).order_by(Source.id)))


def _run(arch: Archive, run_id: str = "run-1") -> dict[int, int]:
    """A run with a claim per source, as the coordinator records it: source id -> claim id."""
    with arch.session() as s:
        pairs = claims.new_run(s, arch.clock, run_id=run_id, actor="t", queue="q", source_ids=_sources(arch))
    return {sid: cid for cid, sid in pairs}


def _captures(arch: Archive, source_id: int) -> list[tuple[str | None, str, str | None]]:
    with arch.session() as s:
        rows = s.scalars(select(Capture).where(Capture.source_id == source_id).order_by(Capture.id))
        return [(c.run_id, c.outcome, c.worker) for c in rows]


def test_celery_settings_from_file_and_environment(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "settings.toml").write_text('[celery]\nbroker_url = "redis://10.0.0.5:6379/2"\nbusy_retry = 3\n')
    settings = load_settings(root, env={})
    assert (settings.celery.broker_url, settings.celery.busy_retry, settings.celery.queue) == (
        "redis://10.0.0.5:6379/2",
        3.0,
        "archiver",
    )
    env = {"ARCHIVER_BROKER_URL": "amqp://mq.example.org//", "ARCHIVER_QUEUE": "evidence"}
    assert load_settings(root, env=env).celery.broker_url == "amqp://mq.example.org//"
    assert load_settings(root, env=env).celery.queue == "evidence"
    for bad, words in (("busy_retry = -1", "must be positive"), ('broker_url = "http://x"', "redis://"),
                       ("bogus = 1", "unknown setting"), ('idle_close = "soon"', "expected float")):  # fmt: skip
        (root / "settings.toml").write_text(f"[celery]\n{bad}\n")
        with pytest.raises(ConfigError, match=words):
            load_settings(root, env={})


def test_celery_executor_refuses_sqlite(sqlite_archive: Archive) -> None:
    with pytest.raises(ConfigError, match="needs a PostgreSQL catalogue"):
        jobs.run(sqlite_archive, jobs.RunOptions(executor="celery"))
    result = CliRunner().invoke(
        cli, ["--root", str(sqlite_archive.settings.root), "run", "--executor", "celery"], catch_exceptions=False
    )
    assert result.exit_code == 2 and "PostgreSQL" in result.output


def test_the_same_task_delivered_twice_captures_once(pg_archive: Archive) -> None:
    """Celery's own task code path (``apply``: the task body as a worker runs it), delivered twice per claim."""
    app = make_app(pg_archive.settings)
    task = app.tasks[TASK_NAME]
    run = _run(pg_archive)
    for sid, cid in run.items():
        first = task.apply(args=["run-1", cid]).get()
        second = task.apply(args=["run-1", cid]).get()
        assert (first["status"], first["outcome"]) == ("captured", "ok")
        assert second["status"] == "duplicate" and "already done" in second["note"]
        caps = _captures(pg_archive, sid)
        assert len(caps) == 1 and caps[0][:2] == ("run-1", "ok") and caps[0][2] is not None
    with pg_archive.session() as s:
        assert {c.state for c in s.scalars(select(RunClaim))} == {"done"}
    close_worker_process()  # what the worker's shutdown signal does: the WARC file is closed and recorded
    names = [p.name for p in pg_archive.settings.warc_dir.glob("*.warc.gz")]
    assert len(names) == 1 and names[0].endswith(f"-{__import__('os').getpid()}.warc.gz")
    assert_archive_consistent(pg_archive)


def test_busy_claim_waits_for_a_live_owner_and_a_dead_one_is_taken_over(pg_archive: Archive) -> None:
    run = _run(pg_archive)
    (sid, cid), (sid2, cid2) = list(run.items())[:2]
    owner = WorkerProcess(pg_archive.settings, media=False)
    other = WorkerProcess(pg_archive.settings, media=False)
    try:
        # The owner claims the source and starts a capture, as a worker does before its first request.
        assert owner.liveness.try_claim(cid)
        with pg_archive.session() as s:
            assert claims.begin(s, pg_archive.clock, cid, owner.name).go
            s.add(Capture(source_id=sid, run_id="run-1", method="web", started_at=pg_archive.clock.now(),
                          outcome="running", collector="t", worker=owner.name))  # fmt: skip
        assert other.execute(cid).status == "busy"
        # Recovery (the coordinator's, under the run lock) leaves a live worker's capture running.
        CaptureJob(pg_archive, media=False).recover()
        assert _captures(pg_archive, sid) == [("run-1", "running", owner.name)]
        owner.liveness.close()  # the owner's session ends, as when its process is killed
        with pg_archive.session() as s:
            assert not worker_alive(s, owner.name) and worker_alive(s, other.name)
        result = other.execute(cid)
        assert (result.status, result.extra["took_over_from"], result.extra["interrupted"]) == (
            "captured",
            owner.name,
            1,
        )
        assert _captures(pg_archive, sid) == [("run-1", "interrupted", owner.name), ("run-1", "ok", other.name)]
        assert other.execute(cid).status == "duplicate"

        # A dead owner that had committed its capture, but not the claim: the capture is adopted, not repeated.
        third = WorkerProcess(pg_archive.settings, media=False)
        assert third.liveness.try_claim(cid2)
        with pg_archive.session() as s:
            assert claims.begin(s, pg_archive.clock, cid2, third.name).go
        third.job.capture_source(sid2, run_id="run-1")
        third.liveness.close()
        third.close()
        adopted = other.execute(cid2)
        assert adopted.status == "adopted" and adopted.summary is not None and adopted.summary.outcome == "ok"
        assert [c[1] for c in _captures(pg_archive, sid2)] == ["ok"]
    finally:
        owner.close()
        other.close()
    assert_archive_consistent(pg_archive)


def test_recovery_leaves_a_live_workers_open_warc_file_and_running_capture(pg_archive: Archive) -> None:
    identity = WorkerIdentity.current(pg_archive.ids)
    live = Liveness(pg_archive.catalogue.engine, identity)
    job = CaptureJob(pg_archive, media=False, worker=identity.name)
    try:
        job.sink.write_group(http_pair(job.sink, "http://127.0.0.1:9/x", b"body"))
        open_files = list(pg_archive.settings.warc_dir.glob("*.open"))
        assert len(open_files) == 1
        summary = CaptureJob(pg_archive, media=False).recover()
        assert summary.repaired == [] and list(pg_archive.settings.warc_dir.glob("*.open")) == open_files
    finally:
        job.close()
        live.close()
    assert not list(pg_archive.settings.warc_dir.glob("*.open"))


def test_repair_in_a_shared_directory_leaves_a_just_created_empty_file(tmp_path: Path) -> None:
    from archiver.clock import FixedClock

    path = tmp_path / "t-20260101000000-00000-h-1.warc.gz.open"
    path.write_bytes(b"")
    assert repair_open_files(tmp_path, FixedClock(), shared=True) == []
    assert path.exists()
    assert [r.damaged for r in repair_open_files(tmp_path, FixedClock())] == [True]


def test_stale_claims_expire_and_their_sources_become_pending_again(pg_archive: Archive) -> None:
    from datetime import timedelta

    from archiver.clock import FixedClock

    run = _run(pg_archive)
    with pg_archive.session() as s:
        assert claims.open_source_ids(s) == set(run)
        assert claims.expire_stale(s, pg_archive.clock, 3600) == 0
    later = FixedClock(start=pg_archive.clock.now() + timedelta(hours=2))
    with pg_archive.session() as s:
        assert claims.expire_stale(s, later, 3600) == len(run)
    with pg_archive.session() as s:
        assert claims.open_source_ids(s) == set()
        assert {c.state for c in s.scalars(select(RunClaim))} == {"expired"}


@pytest.mark.celery
def test_enqueue_without_waiting_then_a_second_run_leaves_claimed_sources_alone(pg_archive: Archive) -> None:
    import redis

    require_redis()
    queue = pg_archive.settings.celery.queue
    r = redis.Redis(REDIS_HOST, REDIS_PORT, db=REDIS_DB)
    first = run_distributed(pg_archive, jobs.RunOptions(executor="celery", wait=False))
    assert first.enqueued == 3 and r.llen(queue) == 3 and not first.waited
    second = run_distributed(pg_archive, jobs.RunOptions(executor="celery", wait=False))
    assert second.enqueued == 0 and r.llen(queue) == 3
    result = CliRunner().invoke(cli, ["--root", str(pg_archive.settings.root), "--db", pg_archive.settings.db_url,
                                      "run-status", first.run_id, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"queued": 3' in result.output
    unknown = CliRunner().invoke(
        cli, ["--root", str(pg_archive.settings.root), "--db", pg_archive.settings.db_url, "run-status", "nope"]
    )
    assert unknown.exit_code == 3
