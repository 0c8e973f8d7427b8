"""Real ``archiver worker`` processes for the scale-path tests, a site with slow pages, and the integrity checks.

Workers are subprocesses (``archiver worker --pool solo``: the worker is the process that captures, so killing it
is killing the capture in flight) against the real Redis on 127.0.0.1:6379 and the test's PostgreSQL schema.
Each test gets a queue of its own on a Redis database the rest of the suite does not use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from archiver import custody
from archiver.archive import Archive
from archiver.catalogue.models import Artifact, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.clock import FixedClock, SequentialIds
from archiver.config import load_settings
from archiver.warc.reader import iter_records
from tests.conftest import TEST_NOW
from tests.support.site import Site
from tests.support.warc_files import warcio_check

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11


def redis_available() -> str | None:
    """None when Redis answers PING, else the reason."""
    import redis

    try:
        redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {type(exc).__name__}"
    return None


def require_redis() -> None:
    reason = redis_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the Celery tests")
        pytest.skip(reason)


class SlowSite(Site):
    """``/p/<n>.html`` pages with one image each; ``/slow/<n>.html`` answers after ``slow_seconds``, every other
    path after ``latency``."""

    def __init__(self, slow_seconds: float = 4.0, latency: float = 0.0) -> None:
        self.slow_seconds, self.latency = slow_seconds, latency
        super().__init__()

    def content(self, path: str) -> tuple[str, bytes] | None:
        if path.startswith(("/p/", "/slow/")):
            return (
                "text/html; charset=utf-8",
                f"<html><body><h1>{path}</h1><img src='/img{path}.png'></body></html>".encode(),
            )
        if path.startswith("/img/"):
            return "image/png", hashlib.sha256(path.encode()).digest() * 64
        return None

    def delay(self, path: str) -> float:
        return self.slow_seconds if path.startswith("/slow/") else self.latency


def settings_toml(queue: str, *, visibility_timeout: int = 5, busy_retry: float = 1.0, idle_close: float = 30.0) -> str:
    return (
        "[archive]\n"
        'warc_prefix = "t"\n'
        "[network]\n"
        "per_host = 8\nper_host_delay = 0.0\nconnect_timeout = 5.0\nread_timeout = 20.0\ntotal_timeout = 60.0\n"
        "retries = 1\n"
        "[celery]\n"
        f'broker_url = "redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"\n'
        f'queue = "{queue}"\n'
        f"visibility_timeout = {visibility_timeout}\n"
        f"busy_retry = {busy_retry}\n"
        f"idle_close = {idle_close}\n"
    )


def make_archive(root: Path, db_url: str, queue: str, urls: list[str], **celery: float) -> Archive:
    """An initialised archive on ``db_url`` with the scale-path settings and one source per URL."""
    settings = load_settings(root, db_url, collector="test-collector", env={})
    arch = Archive(settings, clock=FixedClock(start=TEST_NOW), ids=SequentialIds())
    arch.init()
    (root / "settings.toml").write_text(settings_toml(queue, **celery), encoding="utf-8")  # type: ignore[arg-type]
    arch.close()
    arch = Archive(load_settings(root, db_url, collector="test-collector", env={}))
    with arch.store() as store:
        for u in urls:
            store.ensure_source(SourceRequest(url=u))
    return arch


def new_queue() -> str:
    return "archiver-test-" + secrets.token_hex(4)


def drop_queue(queue: str) -> None:
    import redis

    with contextlib.suppress(Exception):
        redis.Redis(REDIS_HOST, REDIS_PORT, db=REDIS_DB).delete(queue)


def cli(root: Path, db_url: str) -> list[str]:
    return [sys.executable, "-m", "archiver", "--root", str(root), "--db", db_url, "--collector", "test-collector"]


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


@dataclass
class Workers:
    root: Path
    db_url: str
    logs: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, n: int, *, pool: str = "solo", concurrency: int = 1, timeout: float = 60) -> list[Worker]:
        new = []
        for _ in range(n):
            log = self.logs / f"worker-{len(self.started)}.log"
            out = log.open("wb")
            argv = [*cli(self.root, self.db_url), "worker", "--pool", pool, "--concurrency", str(concurrency)]
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env())
            out.close()
            worker = Worker(proc, log)
            self.started.append(worker)
            new.append(worker)
        deadline = time.monotonic() + timeout
        for w in new:
            while " ready." not in w.text():
                if w.proc.poll() is not None:
                    raise AssertionError(f"worker exited {w.proc.returncode}:\n{w.text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker not ready after {timeout} s:\n{w.text()[-3000:]}")
                time.sleep(0.1)
        return new

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Celery's warm shutdown, which closes each worker's WARC file."""
        for w in self.started:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.started:
            try:
                w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()


@contextlib.contextmanager
def worker_pool(root: Path, db_url: str, logs: Path) -> Iterator[Workers]:
    logs.mkdir(parents=True, exist_ok=True)
    pool = Workers(root, db_url, logs)
    try:
        yield pool
    finally:
        pool.stop()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("ARCHIVER_ROOT", "ARCHIVER_DB_URL", "ARCHIVER_BROKER_URL", "ARCHIVER_QUEUE"):
        env.pop(key, None)
    return env


def assert_archive_consistent(arch: Archive) -> None:
    """No ``.open`` file; every file hashes to its row and passes ``warcio check``; every Artifact row points at a
    record on disk with its offset, length and digest; the custody chain holds."""
    warc_dir = arch.settings.warc_dir
    assert not list(warc_dir.glob("*.open")), list(warc_dir.glob("*.open"))
    with arch.session() as s:
        files = {w.id: w for w in s.scalars(select(WarcFile))}
        records = {}
        for w in files.values():
            assert w.status in ("closed", "repaired"), (w.name, w.status)
            path = warc_dir / w.name
            assert w.sha256 == hashlib.sha256(path.read_bytes()).hexdigest(), w.name
            check = warcio_check(path)
            assert check.returncode == 0, check.stdout + check.stderr
            for rec in iter_records(path):
                records[rec.record_id] = (w.id, rec)
        artifacts = s.scalars(select(Artifact)).all()
        assert artifacts
        for a in artifacts:
            wid, rec = records[a.record_id]
            assert (wid, rec.offset, rec.length, rec.block_sha256) == (
                a.warc_file_id,
                a.offset,
                a.length,
                a.block_sha256,
            )
        report = custody.check_chain(s)
        assert report.ok, report.problems
