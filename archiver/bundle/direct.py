"""Large bundle files written (and read back) around the page cache (``O_DIRECT``), where the file system allows it.

A bundle writes twice the bytes of the incident's WARC data (the records, and the media taken out of them).
Through the page cache every written byte is copied into a cache page first, which the kernel must find, and
on a virtual machine often obtain from the host: measured on the 2-core VM of bench/export_bench.py, that is
1.6-2.5 ms of system time per MB, more than hashing the byte with SHA-256 and SHA-512 costs. With
``O_DIRECT`` the disk reads the bytes from our buffer: 0.1 ms/MB, and no other program's cache is evicted.

``O_DIRECT`` wants buffer addresses, lengths and file offsets aligned to the device's block size, so bytes
are gathered in a page-aligned buffer (an anonymous ``mmap``) and written a whole buffer at a time; the last,
partial block is written padded with zeros and the file is then cut to its true length. If the file system
refuses ``O_DIRECT`` (tmpfs, some network file systems), at open or at the first write, the file is written
through the cache as usual. Durability still takes an ``fsync`` (for the metadata and the device's cache).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
BUFFER = 1 << 20  # a multiple of ALIGN
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere files go through the cache


class DirectFile:
    """A new file, written with ``O_DIRECT`` when possible. :meth:`flush` ends it (writes the last block and
    sets the length): call it once, after the last :meth:`write`, before ``fsync``."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(path, flags | _O_DIRECT, 0o666) if _O_DIRECT else os.open(path, flags, 0o666)
            self.direct = bool(_O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, flags, 0o666)  # the file system has no O_DIRECT
            self.direct = False
        self._buf = mmap.mmap(-1, BUFFER)  # page-aligned
        self._fill = 0
        self._size = 0
        self._ended = False

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._ended:
            raise ValueError("write after flush: the file is complete")
        view = memoryview(data).cast("B")
        n = len(view)
        while view:
            take = min(len(view), BUFFER - self._fill)
            self._buf[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == BUFFER:
                self._write_out(BUFFER)
                self._fill = 0
        self._size += n
        return n

    def _write_out(self, length: int) -> None:
        with memoryview(self._buf) as whole:
            view = whole[:length]
            while view:
                try:
                    done = os.write(self._fd, view)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    self._buffered()  # O_DIRECT refused at the first write: go on through the cache
                    continue
                view = view[done:]
            view.release()

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
        self.direct = False

    def flush(self) -> None:
        """End the file: write what is buffered (as whole blocks when direct) and set the file's length."""
        if self._ended:
            return
        self._ended = True
        if self._fill:
            if self.direct:
                padded = -(-self._fill // ALIGN) * ALIGN
                self._buf[self._fill : padded] = bytes(padded - self._fill)
                self._write_out(padded)
            else:
                self._write_out(self._fill)
            self._fill = 0
        os.ftruncate(self._fd, self._size)  # drops the padding of the last block

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(BufferError):  # a view still held by a traceback: the GC frees it
                self._buf.close()
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0


def read_chunks(path: Path, size: int = BUFFER) -> Iterator[memoryview]:
    """The bytes of a file, ``size`` at a time, read around the page cache when the file system allows it
    (verifying a bag reads each byte once: filling the cache with it would only cost time). Each chunk is
    valid until the next one is asked for."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    direct = bool(_O_DIRECT)
    try:
        fd = os.open(path, flags | _O_DIRECT) if direct else os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd, direct = os.open(path, flags), False
    buf = mmap.mmap(-1, -(-size // ALIGN) * ALIGN)  # page-aligned
    try:
        while True:
            try:
                n = os.readv(fd, [buf])
            except OSError as exc:
                if exc.errno != errno.EINVAL or not direct:
                    raise
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                direct = False
                continue
            if n == 0:
                return
            view = memoryview(buf)[:n]
            try:
                yield view
            finally:
                view.release()
    finally:
        os.close(fd)
        with contextlib.suppress(BufferError):
            buf.close()
