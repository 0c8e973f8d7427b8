"""``archiver run`` on several cores: the sources spread over capture processes, one per core.

One process cannot go faster than its interpreter: a captured page costs 5-10 ms of Python time (requests,
WARC records, digests, the catalogue's rows and custody events), and under the GIL that caps a process at
100-130 pages/s whatever its thread count (bench/README.md). So the run is split by host:

- The parent repairs what a crash left (:meth:`CaptureJob.recover`), chooses the pending sources and groups them
  by host, busiest host first. It closes its catalogue connections and forks. A child shares nothing with the
  parent but the run lock's file description (held until the parent exits) and the pipe it talks on.
- With a ``per_host_delay``, hosts are handed out whole, on demand: each process starts with one, and one that
  could start more captures than its hosts allow asks for the next (the parent answers its children through
  their pipes). It captures all of that host's sources, so ``per_host`` and the delay hold exactly, and a
  process that drew slow or heavy hosts takes fewer of them instead of finishing last.
- With no delay (and ``per_host`` at least the number of processes), every host is split instead: each process
  takes every n-th source of every host and its part of ``per_host`` (:func:`per_host_shares`), so the limit
  holds for the host as a whole. Whole hosts handed out one by one leave the last ones to run alone at the end,
  each capped at ``per_host``, while the other processes idle.
- Each child runs a :class:`CaptureJob` over its share with its part of the worker threads, its own WARC files
  (named with its pid, ``flock``-held as the distributed workers' are) and its own group commit. SQLite
  serialises the processes' transactions (``BEGIN IMMEDIATE``; the writers take turns on an ``flock`` first,
  :class:`archiver.catalogue.db.WriterTurn`), and each transaction reads
  the custody chain's head under that lock, so the chain stays one chain.
- A report's citations on a host the child owns are captured by it; the rest are left pending and taken by the
  next round, which the parent starts for the pending sources this run has not tried yet.

Crash safety is the single process's: children die with the parent (``PR_SET_PDEATHSIG``), and the next run
repairs every ``.open`` file and marks unfinished captures interrupted. A child that dies alone is noticed at
the end of the round: its file is repaired and its captures marked interrupted at once, and its sources are
retried by the next run.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from archiver.archive import Archive
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob, ProgressCallback, RunSummary
from archiver.errors import ArchiverError

MIN_SOURCES_PER_PROCESS = 25  # fewer than this per process and forking costs more than it saves
MAX_AUTO_PROCESSES = 4
MAX_ROUNDS = 4  # the first round, then citations found on hosts another process owned (depth 1), with slack
PR_SET_PDEATHSIG = 1
_numbers = itertools.count(1)  # capture processes forked by this process


def processes_for(setting: int, sources: int, hosts: int, workers: int) -> int:
    """How many capture processes a run of ``sources`` on ``hosts`` hosts uses. ``setting``: 0 is automatic
    (one per core, at most 4, and at least 25 sources each); otherwise that many, never more than there are
    hosts or workers."""
    if setting > 0:
        wanted = setting
    else:
        wanted = min(os.cpu_count() or 1, MAX_AUTO_PROCESSES, sources // MIN_SOURCES_PER_PROCESS)
    return max(1, min(wanted, hosts, workers))


class HostPool:
    """The hosts of a round, each with its sources, busiest host first: handed out whole (:meth:`take`) or split
    over the processes (:meth:`split`). Thread-safe."""

    def __init__(self, pairs: list[tuple[int, str]]) -> None:
        by_host: dict[str, list[int]] = {}
        for sid, host in pairs:
            by_host.setdefault(host, []).append(sid)
        self._left = sorted(by_host.items(), key=lambda item: (-len(item[1]), item[0]), reverse=True)
        self._lock = threading.Lock()
        self.given: dict[int, list[int]] = {}  # process number -> the sources handed to it

    def split(self, processes: int) -> list[list[int]]:
        """Every host's sources dealt over ``processes`` processes, one by one, busiest host first: each process
        gets a share of every host (the dealing goes on where the last host's ended, so the odd ones spread);
        the pool is left empty."""
        with self._lock:
            shares: list[list[int]] = [[] for _ in range(processes)]
            turn = itertools.cycle(shares)
            for _, ids in reversed(self._left):
                for sid in ids:
                    next(turn).append(sid)
            self._left = []
            for i, ids in enumerate(shares):
                self.given.setdefault(i, []).extend(ids)
            return shares

    def take(self, process: int) -> tuple[str, list[int]] | None:
        """The next host and its sources for ``process``, or None when every host has been handed out."""
        with self._lock:
            if not self._left:
                return None
            host, ids = self._left.pop()
            self.given.setdefault(process, []).extend(ids)
            return host, ids


@dataclass
class _Child:
    process: Any
    conn: Connection
    number: int  # its number in the round's HostPool
    summary: RunSummary | None = None
    tried: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ShardOptions:
    processes: int
    workers: int
    follow_citations: bool | None
    browser: bool | None


def run_sharded(
    archive: Archive,
    options: ShardOptions,
    progress: ProgressCallback,
    *,
    max_time: float | None,
    job_factory: Callable[..., CaptureJob] = CaptureJob,
) -> RunSummary:
    """Capture every pending source over ``options.processes`` processes (see the module docstring)."""
    started = time.monotonic()
    deadline = None if max_time is None else started + max_time
    with _keeper(archive, job_factory) as keeper:
        total = keeper.recover()
        queue = keeper.pending_sources()
        pairs = keeper.hosts_of(queue)
    progress("start", len(queue))
    tried: set[int] = set()
    for _ in range(MAX_ROUNDS):
        if not pairs:
            break
        n = processes_for(options.processes, len(pairs), len({h for _, h in pairs}), options.workers)
        if n == 1:  # a small run: in this process, as it always was
            _merge(total, _run_here(archive, options, [sid for sid, _ in pairs], deadline, progress, job_factory))
            break  # one job captures what its sources cite itself: nothing is left for another round
        pool = HostPool(pairs)
        children, interrupted = _round(archive, options, n, pool, deadline, progress, job_factory, total, tried)
        died = [c for c in children if c.summary is None]
        for c in children:
            tried.update(pool.given.get(c.number, []) if c.summary is None else c.tried)
            if c.summary is not None:
                _merge(total, c.summary)
        if died:
            for c in died:
                code = c.process.exitcode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                total.warnings.append(
                    f"capture process {c.process.pid} ended with {how}; its unfinished captures are marked "
                    "interrupted and are retried by the next run"
                )
                progress("warning", total.warnings[-1])
            with _keeper(archive, job_factory) as after:
                again = after.recover()
            total.repaired.extend(again.repaired)
            total.interrupted += again.interrupted
        if interrupted:
            raise KeyboardInterrupt
        with _keeper(archive, job_factory) as keeper:
            pairs = keeper.hosts_of([sid for sid in keeper.pending_sources() if sid not in tried])
        if pairs and (total.stopped_early or (deadline is not None and time.monotonic() > deadline)):
            total.stopped_early = True  # still pending in the catalogue: the next run takes them
            break
    total.seconds = time.monotonic() - started
    return total


@contextmanager
def _keeper(archive: Archive, job_factory: Callable[..., CaptureJob]) -> Iterator[CaptureJob]:
    """A job that captures nothing: for recovery and for choosing (and reading) the sources of a round."""
    job = job_factory(archive, workers=1, media=False, browser=False)
    try:
        yield job
    finally:
        job.close()


def per_host_shares(per_host: int, delay: float, processes: int) -> list[int] | None:
    """Each process's part of ``per_host`` when every host is split over the processes, or None when hosts stay
    whole: with a delay between a host's requests (a rate no process could keep alone if another shared the
    host), or fewer requests per host than processes."""
    if delay > 0 or per_host < processes or processes < 2:
        return None
    return [per_host // processes + (1 if i < per_host % processes else 0) for i in range(processes)]


def _job(
    archive: Archive,
    options: ShardOptions,
    workers: int,
    progress: ProgressCallback,
    job_factory: Callable[..., CaptureJob],
    file_tag: str | None = None,
    per_host: int | None = None,
) -> CaptureJob:
    """The job that captures one share (in this process or a child). Its own "start" is not passed on: the
    parent announced the whole run's count. ``per_host``: its part of the per-host limit, when hosts are split
    over the processes."""
    extra: dict[str, Any] = {} if per_host is None else {"gate": HostGate(per_host, 0.0)}
    return job_factory(
        archive,
        workers=max(1, workers),
        progress=lambda kind, data: None if kind == "start" else progress(kind, data),
        follow_citations=options.follow_citations,
        browser=options.browser,
        file_tag=file_tag,
        **extra,
    )


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _run_here(
    archive: Archive,
    options: ShardOptions,
    ids: list[int],
    deadline: float | None,
    progress: ProgressCallback,
    job_factory: Callable[..., CaptureJob],
) -> RunSummary:
    job = _job(archive, options, options.workers, progress, job_factory)
    return job.run(ids, max_time=_left(deadline), recover=False)


def _round(
    archive: Archive,
    options: ShardOptions,
    n: int,
    pool: HostPool,
    deadline: float | None,
    progress: ProgressCallback,
    job_factory: Callable[..., CaptureJob],
    total: RunSummary,
    tried: set[int],
) -> tuple[list[_Child], bool]:
    """``n`` processes capture the sources of ``pool``: this one and ``n - 1`` children; returns the children and
    whether Ctrl-C interrupted the round.

    With no delay between a host's requests, every host is split: each process takes its share of every host's
    sources, with its part of ``per_host``. Otherwise hosts stay whole: each process starts with one (the busiest
    to this process) and asks for the next whenever it could start more captures than its hosts allow.
    """
    workers = [options.workers // n + (1 if i < options.workers % n else 0) for i in range(n)]
    net = archive.settings.network
    limits = per_host_shares(net.per_host, net.per_host_delay, n)
    if limits is None:
        first = [_take(pool, i, owned) for i, owned in enumerate([set[str]() for _ in range(n)])]
        shares: list[int | None] = [None] * n
    else:  # no host is owned: what the sources cite is left to the next round, split again
        first = [(ids, set[str]()) for ids in pool.split(n)]
        shares = list(limits)
    # Built before any fork: what it refuses (no ffmpeg, no key) is refused once, before a child exists.
    job = _job(archive, options, workers[0], progress, job_factory, file_tag=str(os.getpid()), per_host=shares[0])
    children = _start(archive, options, workers[1:], first[1:], shares[1:], deadline, job_factory)
    relay = threading.Thread(target=_collect, args=(children, progress, pool), name="capture-relay", daemon=True)
    relay.start()
    ids, owned = first[0]
    interrupted = False
    try:
        try:
            summary = job.run(
                ids,
                max_time=_left(deadline),
                recover=False,
                owns=owned.__contains__,
                more=(lambda: _take(pool, 0, owned)[0]) if limits is None else None,
            )
            _merge(total, summary)
        finally:
            tried.update(job.submitted)
    except KeyboardInterrupt:
        interrupted = True  # what was running here has finished; the children finish theirs and stop
        for c in children:
            if c.process.is_alive():
                os.kill(c.process.pid, signal.SIGTERM)
    finally:
        relay.join()
    return children, interrupted


def _take(pool: HostPool, process: int, owned: set[str]) -> tuple[list[int], set[str]]:
    """The next host's sources for this process (see :func:`_own`). Returns the sources and ``owned``."""
    return _own(pool.take(process), owned), owned


def _own(got: tuple[str, list[int]] | None, owned: set[str]) -> list[int]:
    """The sources of a host handed to this process, which then owns the host (the citations found on it are
    captured here); no sources when every host has been handed out."""
    if got is None:
        return []
    host, ids = got
    owned.add(host)
    return list(ids)


def _start(
    archive: Archive,
    options: ShardOptions,
    workers: list[int],
    first: list[tuple[list[int], set[str]]],
    shares: list[int | None],
    deadline: float | None,
    job_factory: Callable[..., CaptureJob],
) -> list[_Child]:
    # No connection may cross the fork (SQLite's and libpq's state is per process): the children open their own,
    # and this process's pool reconnects when it is next used.
    archive.catalogue.dispose()
    # What exists now is shared with the children page by page until somebody writes to it; the cycle
    # collector would write to every object it scans. Frozen objects are never scanned (nor collected).
    gc.freeze()
    ctx = multiprocessing.get_context("fork")
    children = []
    for i, (count, (ids, owned), share) in enumerate(zip(workers, first, shares, strict=True), start=1):
        number = next(_numbers)  # never the same twice in this process, whatever the round (ids.for_process)
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(
                archive,
                options,
                ids,
                owned,
                max(1, count),
                deadline,
                child_end,
                job_factory,
                os.getpid(),
                number,
                share,
            ),
            name=f"capture-{number}",
            daemon=False,
        )
        proc.start()
        child_end.close()
        children.append(_Child(proc, parent_end, i))
    return children


def _collect(children: list[_Child], progress: ProgressCallback, pool: HostPool) -> None:
    """Relay the children's progress and answer their requests for hosts until every child has ended (a thread
    of the parent)."""
    live = {c.conn: c for c in children}
    while live:
        for conn in wait(list(live)):
            child = live[conn]  # type: ignore[index]
            try:
                kind, data = child.conn.recv()
                if kind == "more":
                    child.conn.send(pool.take(child.number))
                    continue
            except (EOFError, OSError):
                child.process.join()
                del live[conn]  # type: ignore[arg-type]
                continue
            if kind == "done":
                child.summary, child.tried = data
                continue
            try:
                progress(kind, data)
            except Exception:  # the relay must go on: children wait on it for their next host
                logging.getLogger("archiver").exception("relaying %s from capture process %s", kind, child.process.pid)


def _merge(total: RunSummary, part: RunSummary) -> None:
    total.captures.extend(part.captures)
    total.closed_warcs.extend(part.closed_warcs)
    total.warnings.extend(w for w in part.warnings if w not in total.warnings)
    total.stopped_early = total.stopped_early or part.stopped_early


def _child_main(
    archive: Archive,
    options: ShardOptions,
    ids: list[int],
    owned: set[str],
    workers: int,
    deadline: float | None,
    conn: Connection,
    job_factory: Callable[..., CaptureJob],
    parent: int,
    number: int,
    per_host: int | None,
) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    mine = Archive(archive.settings, clock=archive.clock, ids=archive.ids.for_process(number))
    sending = threading.Lock()  # progress comes from the workers too; one message at a time on the pipe

    def send(kind: str, data: Any) -> None:
        with sending:
            conn.send((kind, data))

    def more() -> list[int]:
        """Ask the parent for the next host (only this, the job's dispatching thread, reads the pipe)."""
        send("more", None)
        return _own(conn.recv(), owned)

    job = None
    try:
        job = _job(mine, options, workers, send, job_factory, file_tag=str(os.getpid()), per_host=per_host)
        signal.signal(signal.SIGTERM, lambda _sig, _frame: job.stop() if job is not None else None)
        summary = job.run(
            ids,
            max_time=_left(deadline),
            recover=False,
            owns=owned.__contains__,
            more=more if per_host is None else None,  # a share of every host: nothing more to ask for
        )
        send("done", (summary, sorted(job.submitted)))
    except ArchiverError as exc:
        send("error", exc.message)
        raise SystemExit(2) from None
    except Exception as exc:  # a bug: into the run log with its traceback, never onto the terminal
        logging.getLogger("archiver").exception("capture process %s failed", os.getpid())
        send("error", f"capture process {os.getpid()} failed ({type(exc).__name__}: {exc}); see the run log")
        raise SystemExit(70) from None
    finally:
        mine.close()
        conn.close()
        sys.stdout.flush()


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent dies (kill -9 of ``archiver run``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call: nobody would collect this process's work
        os._exit(1)


__all__ = ["HostPool", "ShardOptions", "processes_for", "run_sharded"]
