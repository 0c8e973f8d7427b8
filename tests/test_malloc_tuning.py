"""glibc malloc settings (archiver.malloc_tuning), observed in glibc's statistics and the kernel's page faults."""

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
    from archiver import malloc_tuning
    print(malloc_tuning.limit_arenas() if sys.argv[1] == "limit" else None)
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


# A WARC record's gzip member: a zlib compressor (about 256 KB of state) made, used and freed, 500 times. The
# kernel counts the minor page faults: fresh pages that it zero-filled for the process.
COMPRESSORS = textwrap.dedent(
    """
    import resource, sys, zlib
    from archiver import malloc_tuning
    print(malloc_tuning.keep_freed_memory() if sys.argv[1] == "keep" else None)
    data = bytes(range(256)) * 20
    zlib.compressobj(6, zlib.DEFLATED, 31)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(500):
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        c.compress(data)
        c.flush()
        del c
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", COMPRESSORS, mode], env={**environ, **env}, capture_output=True, text=True, check=True
    )
    said, faults = out.stdout.split()
    return said, int(faults)


def test_freed_compressor_memory_is_reused_not_faulted_in_again() -> None:
    said, unkept = _faults("none")
    assert unkept > 5000  # glibc's default: the freed state goes back to the system, each record faults it in
    said, kept = _faults("keep")
    assert said == "True"
    assert kept < 100


def test_the_environment_setting_of_the_thresholds_wins() -> None:
    said, faults = _faults("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert said == "False"
    assert faults > 5000
