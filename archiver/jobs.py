"""Scheduled jobs: the one entry point cron calls (``archiver run``) and its lock.

The lock is an advisory ``flock`` on ``<root>/run.lock``: the kernel releases it when the process dies, even by
kill -9, so a crashed run never blocks the next one, and a second run started while one works exits at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from archiver import keys, recheck_due
from archiver.archive import Archive
from archiver.capture import probes
from archiver.capture.job import CaptureJob, ProgressCallback, RunSummary
from archiver.capture.shards import ShardOptions, run_sharded
from archiver.errors import LockedError
from archiver.integrity import batches


def _quiet(_kind: str, _data: object) -> None:
    return None


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


@contextmanager
def run_log(root: Path) -> Iterator[logging.Logger]:
    """Append the run's story to ``<root>/logs/archiver.log`` (cron mails only what is printed)."""
    log = logging.getLogger("archiver")
    (root / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(root / "logs" / "archiver.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s pid=%(process)d %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()


def _log_summary(log: logging.Logger, summary: RunSummary) -> None:
    data = summary.as_dict()
    log.info(
        "run finished: captured=%s gone=%s failed=%s discovered=%s records=%s bytes=%s seconds=%s stopped_early=%s",
        data["captured"],
        data["gone"],
        data["failed"],
        data["discovered"],
        data["records"],
        data["bytes"],
        data["seconds"],
        data["stopped_early"],
    )
    for name in data["repaired_warcs"]:
        log.warning("repaired WARC left by a crash: %s", name)
    for c in data["captures"]:
        if c["outcome"] != "ok":
            log.info("%s %s status=%s error=%s", c["outcome"], c["url"], c["http_status"], c["error"])


def seal(archive: Archive, log: logging.Logger | None = None) -> dict[str, object]:
    """Timestamp waiting receipts (one Merkle batch, one request per TSA) and checkpoint the custody head.

    No TSA reachable is not a failure: the receipts wait, ``archiver status`` shows how many, the next run
    retries. The checkpoint is signed either way, so a cut chain head is visible.
    """
    signer = keys.load_signer(archive.settings.key_dir)
    tsas = batches.tsa_configs(archive.settings)
    with archive.session() as s:
        batch = batches.timestamp_pending(s, archive.clock, tsas, signer, actor=archive.actor)
    with archive.session() as s:
        point = batches.checkpoint(s, archive.clock, signer, tsas, actor=archive.actor)
    result: dict[str, object] = {
        "timestamped_receipts": batch.size if batch.timestamped else 0,
        "receipts_waiting": batch.pending,
        "tsas": [{"name": t.name, "ok": t.ok, "error": t.error} for t in batch.tsas],
        "timestamp_note": batch.note,
        "checkpoint": {"seq": point.seq, "hash": point.head_hash},
    }
    if log is not None:
        log.info("integrity: %s", result)
    return result


@dataclass(frozen=True)
class RunOptions:
    workers: int | None = None
    max_time: float | None = None
    follow_citations: bool | None = None
    executor: str = "local"  # local: a thread pool in this process; celery: workers (archiver.distributed)
    wait: bool = True  # celery: wait for the workers to finish the run (False: enqueue and exit, for cron)
    browser: bool | None = None  # None: [browser] settings decide per source; True: every source; False: none
    processes: int | None = None  # local: capture processes (None: settings, 0: one per core; capture.shards)


def run(archive: Archive, options: RunOptions, progress: ProgressCallback | None = None) -> RunSummary:
    """Capture everything pending (and what reports cite), under the run lock."""
    if options.executor == "celery":
        from archiver.distributed.coordinator import run_distributed

        return run_distributed(archive, options, progress)
    archive.ensure_ready()
    with run_lock(archive.settings.root), run_log(archive.settings.root) as log:
        # The capture jobs name ffmpeg's and Chromium's versions in their warcinfo: asked now (if the command has
        # not asked already), they answer while the catalogue is read and repaired (archiver.capture.probes).
        probes.ask_ahead_for_run(archive.settings, options.browser)
        net = archive.settings.network
        shard = ShardOptions(
            processes=net.processes if options.processes is None else options.processes,
            workers=options.workers or net.workers,
            follow_citations=options.follow_citations,
            browser=options.browser,
        )
        log.info(
            "run started (workers=%s, processes=%s, max_time=%s)", shard.workers, shard.processes, options.max_time
        )
        summary = run_sharded(archive, shard, progress or _quiet, max_time=options.max_time)
        _log_summary(log, summary)
        # Then re-check the captured sources that are due, within what --max-time leaves (docs/rechecks.md).
        left = None if options.max_time is None else options.max_time - summary.seconds
        rechecks = recheck_due.after_captures(archive, workers=options.workers, max_time=left, log=log)
        summary.rechecks = rechecks.as_dict()
        summary.integrity = seal(archive, log)
        return summary


def capture(
    archive: Archive,
    url: str,
    incident_id: str | None,
    options: RunOptions,
    progress: ProgressCallback | None = None,
) -> RunSummary:
    """Capture one URL now, under the same lock, log and sealing as a run."""
    archive.ensure_ready()
    with run_lock(archive.settings.root), run_log(archive.settings.root) as log:
        log.info("capture of %s started", url)
        job = CaptureJob(archive, workers=options.workers, progress=progress, browser=options.browser)
        summary = job.capture_url(url, incident_id, follow_citations=bool(options.follow_citations))
        _log_summary(log, summary)
        summary.integrity = seal(archive, log)
        return summary
