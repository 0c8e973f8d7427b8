"""Byte streams of a bundle: files hashed while they are written, on worker threads, and made durable once.

Every payload file of a bag is written through a :class:`HashingFile`, which computes its SHA-256 and SHA-512
in the same pass (RFC 8493 §2.1.3 manifests), so the bag's manifests never need a second read of the data.
A large file can be written on a :class:`Lane` of its own: the caller's thread goes on reading and inflating
while the lane writes and hashes (``hashlib``, ``zlib`` and file I/O release the GIL on large buffers, so the
threads use separate cores). At most :attr:`Lane.BACKLOG` chunks wait, so memory stays constant.

Durability costs one ``fsync`` per file, issued by a :class:`Syncer` on background threads as each file is
closed (the disk writes it back while the next file is copied, and concurrent ``fsync`` calls share journal
commits), and waited for once, before the bundle is renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from archiver.bundle.direct import DirectFile
from archiver.errors import BundleError

CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120
Bytes = bytes | bytearray | memoryview


def safe_name(text: str, *, limit: int = MAX_NAME) -> str:
    """A path component made from one of our ids: ASCII letters, digits, ``.``, ``_`` and ``-`` only, never
    ``.``/``..`` or a hidden name, at most ``limit`` characters. Anything else becomes ``_``."""
    name = _UNSAFE.sub("_", text).strip("._") or "_"
    return name[:limit]


@dataclass(frozen=True)
class FileDigests:
    path: str  # relative to the bag root, with forward slashes
    size: int
    sha256: str
    sha512: str


def frozen(data: Bytes) -> bytes | memoryview:
    """``data`` as a buffer nobody can change while another thread reads it (copied only when it could be)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, memoryview) and isinstance(data.obj, bytes):
        return data
    return bytes(data)


class Lane:
    """One worker thread running the calls submitted to it in order. :meth:`submit` waits while more than
    ``BACKLOG`` calls are pending, so the chunks they hold bound the memory used; an exception raised by a
    call is raised again by the next :meth:`submit` or by :meth:`close`."""

    BACKLOG = 4

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._queue: deque[Future[None]] = deque()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.append(self._pool.submit(fn, *args))
        while len(self._queue) > self.BACKLOG:
            self._queue.popleft().result()

    def close(self) -> None:
        try:
            while self._queue:
                self._queue.popleft().result()
        finally:
            for pending in self._queue:
                pending.cancel()
            self._pool.shutdown(wait=True)


class Syncer:
    """``fsync`` of closed files on background threads, and of the directories that hold them at the end.

    With ``durable=False`` (a staging folder that is zipped and removed) files are only closed. At most
    ``PENDING`` files wait for their ``fsync``, each holding its descriptor open until then.
    """

    PENDING = 64

    def __init__(self, *, durable: bool = True, workers: int = 4) -> None:
        self.durable = durable
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bundle-fsync") if durable else None
        self._queue: deque[Future[None]] = deque()
        self._lock = threading.Lock()

    def closed(self, f: BinaryIO | DirectFile, path: Path) -> None:
        """Take over ``f`` (flushed): sync it in the background and close it."""
        if self._pool is None:
            f.close()
            return
        with self._lock:  # files are closed by several copying threads at once
            self._queue.append(self._pool.submit(_fsync_close, f, path))
            oldest = self._queue.popleft() if len(self._queue) > self.PENDING else None
        if oldest is not None:
            oldest.result()

    def finish(self, dirs: Iterable[Path] = ()) -> None:
        """Wait for every file's ``fsync``, then sync ``dirs`` (so the new names are durable too)."""
        try:
            while self._queue:
                self._queue.popleft().result()
            if self.durable:
                for d in sorted(set(dirs)):
                    sync_dir(d)
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # files already handed over are still synced and closed
        self._queue.clear()


def _fsync_close(f: BinaryIO | DirectFile, path: Path) -> None:
    try:
        os.fsync(f.fileno())
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        f.close()


def sync_file(path: Path) -> None:
    """``fsync`` a file written and closed by someone else (a zip)."""
    _sync_path(path, os.O_RDONLY)


def sync_dir(path: Path) -> None:
    """``fsync`` a directory, making the names created in it durable (POSIX leaves this to the caller)."""
    _sync_path(path, os.O_RDONLY | os.O_DIRECTORY)


def _sync_path(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise BundleError(f"cannot sync {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


class HashingFile:
    """A new file (never an existing one) whose SHA-256 and SHA-512 are computed as it is written.

    With ``lane=True`` (for large files) writing and hashing run on a thread of the file's own and the bytes go
    around the page cache (:class:`archiver.bundle.direct.DirectFile`); without a ``syncer`` the file is synced
    when closed, with one the syncer does it.
    """

    def __init__(self, root: Path, relative: str, *, syncer: Syncer | None = None, lane: bool = False) -> None:
        self.relative = relative
        self.path = root / relative
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A large file goes around the page cache (see archiver.bundle.direct); small ones through it.
            self._f: BinaryIO | DirectFile = DirectFile(self.path) if lane else open(self.path, "xb")  # noqa: SIM115
        except OSError as exc:
            raise BundleError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()
        self._syncer = syncer
        self._lane = Lane("bundle-write") if lane else None
        self.size = 0
        self._digests: FileDigests | None = None

    def write(self, data: Bytes) -> int:
        if self._lane is None:
            self._put(data)
        else:
            self._lane.submit(self._put, frozen(data))
        n = len(data)
        self.size += n
        return n

    def _put(self, data: Bytes) -> None:
        try:
            self._f.write(data)
        except OSError as exc:
            raise BundleError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._sha256.update(data)
        self._sha512.update(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> FileDigests:
        if self._digests is None:
            if self._lane is not None:
                lane, self._lane = self._lane, None
                lane.close()
            try:
                self._f.flush()
            except OSError as exc:
                self._f.close()
                raise BundleError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
            if self._syncer is None:
                _fsync_close(self._f, self.path)
            else:
                self._syncer.closed(self._f, self.path)
            self._digests = FileDigests(self.relative, self.size, self._sha256.hexdigest(), self._sha512.hexdigest())
        return self._digests

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()

    def abort(self) -> None:
        """Close a file that will not be finished (the export fails and its folder is removed)."""
        if self._digests is None:
            try:
                if self._lane is not None:
                    with contextlib.suppress(Exception):  # the exception being handled is the one to report
                        self._lane.close()
            finally:
                self._f.close()


def write_bytes(root: Path, relative: str, data: bytes, syncer: Syncer | None = None) -> FileDigests:
    with HashingFile(root, relative, syncer=syncer) as f:
        f.write(data)
        return f.close()
