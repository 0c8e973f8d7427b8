"""A bound on glibc's malloc arenas, for the processes that capture with many threads.

glibc gives a thread that finds the other arenas locked an arena of its own, up to eight per core, and an arena
hands memory back to the system only from the top of its heap. A capture process's threads each allocate and
free response bodies, WARC records and statement parameters, so with 32 threads each arena holds its own
scattered free space, and the process's resident size grows by tens of MB that no Python object uses
(bench/README.md: about 20 MB over the two processes of the crawl benchmark). Python's own allocator serves the
small objects under the GIL, so threads seldom contend for malloc and a few arenas cost no speed.

``MALLOC_ARENA_MAX`` in the environment, read by glibc at start, wins: the limit is set only when it is unset.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


@functools.cache
def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let threads created from now on share at most ``arenas`` malloc arenas. True if the limit was set (glibc,
    no ``MALLOC_ARENA_MAX`` in the environment); the arenas that exist stay. Once per process (a forked child
    inherits the setting): every capture job calls it."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc is loaded, no search needed
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))
