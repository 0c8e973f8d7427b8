"""The bound on glibc's malloc arenas (archiver.malloc_arenas), observed in glibc's own statistics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

# Eight threads allocate at once (blocks under the mmap threshold, so from an arena), then glibc's malloc_stats()
# prints one "Arena N:" section per arena to stderr.
PROGRAM = textwrap.dedent(
    """
    import ctypes, sys, threading
    from archiver import malloc_arenas
    print(malloc_arenas.limit_arenas() if sys.argv[1] == "limit" else None)
    ready = threading.Barrier(8)
    held = []
    def work():
        ready.wait()
        held.append([bytearray(100_000) for _ in range(20)])
        ready.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL(None).malloc_stats()
    """
)


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], env={**environ, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip(), sum(1 for line in out.stderr.splitlines() if line.startswith("Arena "))


def test_threads_share_the_bounded_arenas() -> None:
    said, unbounded = _arenas("none")
    assert unbounded > 2  # glibc's default: an arena per thread, up to eight per core
    said, bounded = _arenas("limit")
    assert said == "True"
    assert bounded == 2


def test_the_environment_setting_wins() -> None:
    said, arenas = _arenas("limit", MALLOC_ARENA_MAX="3")
    assert said == "False"
    assert arenas == 3
