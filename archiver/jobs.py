"""Scheduled jobs: the one entry point cron calls (``archiver run``) and its lock.

The lock is an advisory ``flock`` on ``<root>/run.lock``: the kernel releases it when the process dies, even by
kill -9, so a crashed run never blocks the next one, and a second run started while one works exits at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from archiver.archive import Archive
from archiver.capture.job import CaptureJob, ProgressCallback, RunSummary
from archiver.errors import LockedError


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    path = root / "run.lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = (root / "run.pid").read_text(encoding="utf-8").strip() if (root / "run.pid").exists() else "?"
        raise LockedError(
            f"another archiver run is working on {root} (pid {holder})",
            hint="it will finish on its own; this run exits without doing anything",
        ) from None
    try:
        (root / "run.pid").write_text(str(os.getpid()), encoding="utf-8")
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class RunOptions:
    workers: int | None = None
    max_time: float | None = None
    follow_citations: bool | None = None


def run(archive: Archive, options: RunOptions, progress: ProgressCallback | None = None) -> RunSummary:
    """Capture everything pending (and what reports cite), under the run lock."""
    archive.ensure_ready()
    with run_lock(archive.settings.root):
        job = CaptureJob(archive, workers=options.workers, progress=progress, follow_citations=options.follow_citations)
        return job.run(max_time=options.max_time)


def capture(
    archive: Archive,
    url: str,
    incident_id: str | None,
    options: RunOptions,
    progress: ProgressCallback | None = None,
) -> RunSummary:
    archive.ensure_ready()
    with run_lock(archive.settings.root):
        job = CaptureJob(archive, workers=options.workers, progress=progress)
        return job.capture_url(url, incident_id, follow_citations=bool(options.follow_citations))
