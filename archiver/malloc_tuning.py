"""glibc malloc settings for the processes that capture with many threads: fewer arenas, and freed memory kept.

**Arenas.** glibc gives a thread that finds the other arenas locked an arena of its own, up to eight per core,
and an arena hands memory back to the system only from the top of its heap. A capture process's threads each
allocate and free response bodies, WARC records and statement parameters, so with 32 threads each arena holds its
own scattered free space, and the process's resident size grows by tens of MB that no Python object uses
(bench/README.md: about 20 MB over the two processes of the crawl benchmark). Python's own allocator serves the
small objects under the GIL, so threads seldom contend for malloc and a few arenas cost no speed.

**Freed memory kept.** Every WARC record is one gzip member, so every record makes a zlib compressor: about
256 KB of state in four blocks, freed when the record is written. glibc hands the top of a heap back to the
system as soon as 128 KB of it is free, so each record's state came from fresh pages, each one a page fault that
the kernel zero-fills: 30 us per record before a byte was compressed, and the compression ran on cold memory
(5 KB of a JPEG: 146 us; with the memory kept, 61 us). Keeping up to :data:`TRIM_THRESHOLD` free at the top of
a heap makes the next record reuse the same pages. Setting it turns off glibc's sliding mmap threshold, so
:data:`MMAP_THRESHOLD` is set with it: blocks up to 1 MB come from the heaps, larger ones are mapped apart and
unmapped when freed, as before.

The environment wins: ``MALLOC_ARENA_MAX``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_`` (or any
``GLIBC_TUNABLES``), read by glibc at start, leave the matching settings alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

ARENAS = 2
TRIM_THRESHOLD = 8 << 20  # free bytes kept at the top of a heap
MMAP_THRESHOLD = 1 << 20  # blocks from this size up are mapped on their own

# mallopt's parameter numbers in glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_for_capture() -> None:
    """Both settings, before the capture threads start (a forked child inherits them). Every capture job calls
    it; each setting is made once per process."""
    limit_arenas()
    keep_freed_memory()


@functools.cache
def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let threads created from now on share at most ``arenas`` malloc arenas. True if the limit was set (glibc,
    no ``MALLOC_ARENA_MAX`` in the environment); the arenas that exist stay."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


@functools.cache
def keep_freed_memory(trim: int = TRIM_THRESHOLD, mmap: int = MMAP_THRESHOLD) -> bool:
    """Keep up to ``trim`` bytes free at the top of each heap instead of handing them back at once, and map only
    blocks of ``mmap`` bytes or more on their own. True if set (glibc, nothing about it in the environment)."""
    if any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc is loaded, no search needed
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
