"""Repair the ``*.warc.gz.open`` files a crash left behind: cut each back to its last complete record.

The sink fsyncs every group before reporting it written, so after a crash everything a caller was told about
lies in a prefix of complete records, and only the tail after it can be damaged (a partial gzip member, a
record shorter than its Content-Length, zeros or garbage from an unsynced page). Repair keeps that prefix,
moves the tail it cuts into a read-only ``<name>.cut`` file beside it (evidence is never destroyed, only set
aside), and closes the file the way the sink would have: fsynced, read-only, renamed without replacing.

A file without even one complete record is renamed to ``<name>.damaged`` and reported; nothing is deleted.
Closed files are never opened for writing, and an ``.open`` file that a live sink still holds (``flock``) is
skipped. Run it under the storage lock, before the first sink of a run opens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from archiver.clock import Clock
from archiver.errors import WarcError
from archiver.warc.reader import MEMBER_OK, READ_SIZE, GzipMembers, RecordParser
from archiver.warc.writer import OPEN_SUFFIX, fsync_dir, rename_no_replace

CUT_SUFFIX = ".cut"
FRESH_EMPTY_SECONDS = 600  # file-system age (mtime), not a recorded time: the system clock is what counts
DAMAGED_SUFFIX = ".damaged"


@dataclass(frozen=True)
class RepairResult:
    """What repair did to one ``.open`` file.

    ``name``/``path`` are the file's new name and path (the final WARC name, or ``<final>.damaged`` when
    ``damaged``). ``sha256`` and ``size`` describe that file as it now is; ``cut_bytes`` were moved to
    ``cut_path``. ``record_ids`` are the kept records' ids, in file order (the warcinfo record first).
    """

    name: str
    path: str
    kept_records: int
    kept_bytes: int
    cut_bytes: int
    sha256: str
    size: int
    record_ids: tuple[str, ...]
    repaired_at: datetime
    damaged: bool = False
    cut_path: str | None = None


@dataclass(frozen=True)
class _Prefix:
    records: int
    length: int
    sha256: str
    record_ids: tuple[str, ...]


def repair_open_files(directory: Path, clock: Clock, *, shared: bool = False) -> list[RepairResult]:
    """Repair every ``*.warc.gz.open`` file in ``directory`` (see the module docstring).

    ``shared``: sinks of other processes may be starting in the directory right now, so an empty file younger than
    ``FRESH_EMPTY_SECONDS`` is left alone (see :func:`_repair`).
    """
    results = []
    for path in sorted(Path(directory).glob("*.warc.gz" + OPEN_SUFFIX)):
        if path.is_symlink() or not path.is_file():
            continue
        result = _repair(path, clock, shared=shared)
        if result is not None:
            results.append(result)
    return results


def held_by_writer(path: Path) -> bool:
    """Whether a live sink holds ``path`` (an ``.open`` file, or a closed one whose close it is still recording)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _valid_prefix(fd: int) -> _Prefix:
    """Walk the members from offset 0 and stop at the first that is not a complete, well-formed record."""
    ids: list[str] = []
    with os.fdopen(os.dup(fd), "rb") as f:
        members = GzipMembers(f, prefix_hash=True)
        end = 0
        while True:
            # Digests are not recomputed: a crash cannot change bytes inside a member whose CRC-32 holds.
            parser = RecordParser(digests=False)
            member = members.next_member(parser.feed)
            if member is None or member.status != MEMBER_OK or not parser.complete or parser.headers is None:
                break
            members.accept()
            end = member.offset + member.length
            ids.append(parser.fields.get("warc-record-id", ""))
        return _Prefix(len(ids), end, members.prefix_sha256, tuple(ids))


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, READ_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def _preserve_tail(fd: int, start: int, final: Path) -> Path:
    """Copy bytes ``start``.. of ``fd`` to a new read-only ``<final>.cut`` file, durably; returns its path.

    A repair interrupted after this step left a ``.cut`` already: the next free ``.cut.N`` is used.
    """
    n = 0
    while True:
        dst = final.with_name(final.name + CUT_SUFFIX + (f".{n}" if n else ""))
        try:
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            break
        except FileExistsError:
            n += 1
    try:
        os.lseek(fd, start, os.SEEK_SET)
        while chunk := os.read(fd, READ_SIZE):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fsync(out)
    finally:
        os.close(out)
    fsync_dir(final.parent)  # the tail must be safe before the WARC is truncated
    return dst


def _repair(path: Path, clock: Clock, *, shared: bool = False) -> RepairResult | None:
    final = path.with_name(path.name[: -len(OPEN_SUFFIX)])
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except PermissionError:
            # Already read-only: a sink that crashed mid-close; reading is enough to finish that (below).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # closed by its writer since we listed the directory
    except OSError as exc:
        raise WarcError(f"cannot open {path} for repair: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live sink is writing it
        if shared and os.fstat(fd).st_size == 0 and time.time() - os.fstat(fd).st_mtime < FRESH_EMPTY_SECONDS:
            # A sink in another process creates the file (O_EXCL) an instant before it takes the flock: an empty
            # young file is most likely that, not a crash. An empty file holds nothing, so waiting costs nothing.
            return None
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == os.fstat(fd).st_ino:
                return _repair_locked(path, final, fd, clock)
        return None  # renamed or replaced while we waited for the lock
    except OSError as exc:
        raise WarcError(f"cannot repair {path}: {exc}", hint="the .open file was left as it was") from exc
    finally:
        os.close(fd)


def _repair_locked(path: Path, final: Path, fd: int, clock: Clock) -> RepairResult:
    size = os.fstat(fd).st_size
    prefix = _valid_prefix(fd)
    directory = path.parent
    if final.exists() and final.samefile(path):
        # The sink crashed between linking the final name and unlinking the .open one: the file was
        # already closed, fsynced and complete. Only the stale name goes.
        path.unlink()
        fsync_dir(directory)
        return RepairResult(
            name=final.name,
            path=str(final),
            kept_records=prefix.records,
            kept_bytes=prefix.length,
            cut_bytes=0,
            sha256=prefix.sha256,
            size=size,
            record_ids=prefix.record_ids,
            repaired_at=clock.now(),
        )
    if prefix.records == 0:
        damaged = final.with_name(final.name + DAMAGED_SUFFIX)
        os.fchmod(fd, 0o444)
        rename_no_replace(path, damaged)
        fsync_dir(directory)
        return RepairResult(damaged.name, str(damaged), 0, 0, 0, _sha256_fd(fd), size, (), clock.now(), damaged=True)
    cut_path = None
    if size > prefix.length:
        cut_path = _preserve_tail(fd, prefix.length, final)
        os.ftruncate(fd, prefix.length)
    os.fchmod(fd, 0o444)
    os.fsync(fd)
    rename_no_replace(path, final)
    fsync_dir(directory)
    return RepairResult(
        name=final.name,
        path=str(final),
        kept_records=prefix.records,
        kept_bytes=prefix.length,
        cut_bytes=size - prefix.length,
        sha256=prefix.sha256,
        size=prefix.length,
        record_ids=prefix.record_ids,
        repaired_at=clock.now(),
        cut_path=None if cut_path is None else str(cut_path),
    )
