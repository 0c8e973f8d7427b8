"""Crash repair: cut an ``.open`` file back to its last complete record, keep the tail aside, never lose data."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from archiver.clock import FixedClock
from archiver.warc.reader import check_file, iter_records
from archiver.warc.repair import RepairResult, repair_open_files
from tests.support.warc_files import (
    body,
    deflate,
    make_sink,
    members,
    mode,
    resource,
    warcio_check,
)

CLOCK = FixedClock()


def _open_file(directory: Path, groups: list[list[int]]) -> tuple[Path, bytes, list[str]]:
    """Write groups of resources of the given sizes and leave the file open, as a crash would.

    Returns the .open path, its bytes and the record ids in file order (warcinfo first)."""
    sink = make_sink(directory)
    for i, sizes in enumerate(groups):
        sink.write_group([resource(body(n, i * 10 + j), f"urn:r:{i}:{j}") for j, n in enumerate(sizes)])
    (path,) = directory.glob("*.open")
    data = path.read_bytes()
    ids = [r.record_id or "" for r in iter_records(path)]
    return path, data, ids


def _crash_copy(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def _expect(result: RepairResult, original: bytes, cut_at: int, tail: bytes, ids: list[str]) -> None:
    """The repaired file holds exactly the complete records of ``original[:cut_at]``; the rest is aside."""
    ends = [off + length for off, length in members(original)]
    kept = sum(1 for end in ends if end <= cut_at)
    keep = ends[kept - 1] if kept else 0
    data = original[:cut_at] + tail
    assert result.kept_records == kept and result.record_ids == tuple(ids[:kept])
    if kept == 0:
        assert result.damaged and result.name.endswith(".warc.gz.damaged")
        assert Path(result.path).read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
        return
    final = Path(result.path)
    assert not result.damaged and final.name == result.name and final.name.endswith(".warc.gz")
    assert final.read_bytes() == original[:keep] and result.size == result.kept_bytes == keep
    assert result.sha256 == hashlib.sha256(original[:keep]).hexdigest()
    assert result.cut_bytes == len(data) - keep and mode(final) == 0o444
    if result.cut_bytes:
        assert result.cut_path is not None and Path(result.cut_path).read_bytes() == data[keep:]
    else:
        assert result.cut_path is None


def test_every_cut_of_a_small_file(tmp_path: Path) -> None:
    path, data, ids = _open_file(tmp_path / "live", [[0], [30], [5]])
    assert len(data) < 1200
    for cut in range(len(data) + 1):
        crash = _crash_copy(tmp_path / f"c{cut}", path.name, data[:cut])
        (result,) = repair_open_files(crash.parent, CLOCK)
        _expect(result, data, cut, b"", ids)
        assert not list(crash.parent.glob("*.open"))


@pytest.mark.parametrize(
    "garbage",
    [b"\0" * 4096, b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + b"\x55" * 100, b"WARC/1.1\r\nContent-Length: 10\r\n\r\n"],
    ids=["zeros", "gzip-header", "plain-record"],
)
def test_random_cuts_with_garbage(tmp_path: Path, garbage: bytes) -> None:
    path, data, ids = _open_file(tmp_path / "live", [[200_000, 10], [3000], [0, 50_000]])
    rnd = random.Random(len(garbage))
    ends = [off + length for off, length in members(data)]
    cuts = [*ends, *(rnd.randrange(len(data)) for _ in range(20))]
    for i, cut in enumerate(cuts):
        crash = _crash_copy(tmp_path / f"c{i}", path.name, data[:cut] + garbage)
        (result,) = repair_open_files(crash.parent, CLOCK)
        _expect(result, data, cut, garbage, ids)


def test_appended_valid_member_that_is_not_a_warc_record(tmp_path: Path) -> None:
    path, data, ids = _open_file(tmp_path / "live", [[10]])
    tail = deflate(b"WARC/1.1\r\nContent-Length: 100\r\n\r\nshort\r\n\r\n")
    crash = _crash_copy(tmp_path / "c", path.name, data + tail)
    (result,) = repair_open_files(crash.parent, CLOCK)
    _expect(result, data, len(data), tail, ids)


def test_leaves_closed_and_live_files_alone(tmp_path: Path) -> None:
    closed_sink = make_sink(tmp_path)
    closed_sink.write_group([resource(b"closed", "urn:closed")])
    closed = closed_sink.close()
    assert closed is not None
    before = Path(closed.path).stat()
    live = make_sink(tmp_path)
    live.write_group([resource(b"live", "urn:live")])
    (open_path,) = tmp_path.glob("*.open")
    assert repair_open_files(tmp_path, CLOCK) == []  # the live sink holds its file's flock
    assert open_path.exists()
    after = Path(closed.path).stat()
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)
    live_closed = live.close()
    assert live_closed is not None and check_file(live_closed.path) == []
    assert repair_open_files(tmp_path, CLOCK) == []


def test_crash_between_link_and_unlink(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.write_group([resource(b"x", "urn:x")])
    closed = sink.close()
    assert closed is not None
    os.link(closed.path, closed.path + ".open")  # as if the sink died right after linking the final name
    (result,) = repair_open_files(tmp_path, CLOCK)
    assert result.name == closed.name and result.sha256 == closed.sha256 and result.cut_bytes == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [closed.name]


def test_empty_open_file_is_kept_as_damaged(tmp_path: Path) -> None:
    (tmp_path / "x-20260101000000-00000-h.warc.gz.open").write_bytes(b"")
    (result,) = repair_open_files(tmp_path, CLOCK)
    assert result.damaged and result.kept_records == 0 and result.size == 0
    assert [p.name for p in tmp_path.iterdir()] == ["x-20260101000000-00000-h.warc.gz.damaged"]
    assert repair_open_files(tmp_path, CLOCK) == []


def test_second_repair_after_an_interrupted_one(tmp_path: Path) -> None:
    path, data, ids = _open_file(tmp_path / "live", [[100], [100]])
    crash = _crash_copy(tmp_path / "c", path.name, data + b"tail")
    # An earlier repair that died after setting the tail aside but before truncating:
    (crash.parent / (path.name.removesuffix(".open") + ".cut")).write_bytes(b"tail")
    (result,) = repair_open_files(crash.parent, CLOCK)
    _expect(result, data, len(data), b"tail", ids)
    assert result.cut_path is not None and result.cut_path.endswith(".cut.1")


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from archiver.clock import SystemClock, RandomIds
    from archiver.warc.writer import WarcSink
    from tests.support.warc_files import body, http_pair, metadata
    sink = WarcSink(Path(sys.argv[1]), prefix="kill", clock=SystemClock(), ids=RandomIds(), host="h",
                    max_size=1 << 40)
    i = 0
    while True:
        # Every fourth body is large, so the sink flushes mid-group and a kill can cut a record short.
        size = 4_000_000 if i % 4 == 3 else i * 7919 % 300_000
        group = [*http_pair(sink, f"http://example.test/{i}", body(size, i)),
                 metadata(f"n: {i}\\r\\n", f"urn:test:{i}")]
        for ref in sink.write_group(group):
            print(ref.record_id, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_sigkill_then_repair(tmp_path: Path, delay: float) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env, cwd=root
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first group is on disk: the writer is in its loop
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    acknowledged = [first.decode().strip()] + [line.decode().strip() for line in proc.stdout]
    proc.wait()
    (result,) = repair_open_files(tmp_path, CLOCK)
    assert not result.damaged and result.kept_records > 1
    # Every record the writer reported written survived; at most one unreported group followed.
    assert set(acknowledged) <= set(result.record_ids)
    assert len(result.record_ids) - 1 - len(acknowledged) <= 3
    assert check_file(result.path) == []
    run = warcio_check(result.path)
    assert run.returncode == 0, run.stdout
    assert hashlib.sha256(Path(result.path).read_bytes()).hexdigest() == result.sha256
    assert not list(tmp_path.glob("*.open"))
