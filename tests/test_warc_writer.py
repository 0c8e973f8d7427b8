"""WarcSink: round trip through warcio, cdxj-indexer and our reader; naming, rotation, threads, failures."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from archiver.clock import FixedClock, SequentialIds
from archiver.errors import WarcError
from archiver.warc import writer
from archiver.warc.block import Block, block_from_bytes
from archiver.warc.reader import check_file, iter_records
from archiver.warc.records import (
    HTTP_RESPONSE_TYPE,
    RESOURCE,
    RESPONSE,
    REVISIT,
    ClosedWarc,
    RecordRef,
    RecordSpec,
)
from archiver.warc.writer import WarcSink, deflater
from tests.support.warc_files import (
    body,
    cdxj_index,
    http_pair,
    make_sink,
    metadata,
    mode,
    resource,
    response_head,
    warcio_check,
)

NAME = re.compile(r"test-\d{14}-\d{5}-testhost\.warc\.gz")
SIZES = [0, 1, 1000, 70_000, 3_000_000]


def _stored_blocks(path: str) -> dict[str, bytes]:
    """Every record's block as warcio reads it, undecoded (no HTTP parsing, no de-chunking)."""
    out = {}
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, no_record_parse=True):
            out[rec.rec_headers.get_header("WARC-Record-ID")] = rec.raw_stream.read()
    return out


def test_round_trip(tmp_path: Path) -> None:
    closed: list[ClosedWarc] = []
    sink = make_sink(tmp_path, closed)
    given: dict[str, bytes] = {}  # record id -> the block bytes we handed over
    refs = []
    for i, n in enumerate(SIZES):
        url = f"http://example.test/{i}"
        group = [*http_pair(sink, url, body(n, i)), resource(body(n, i + 100), f"urn:test:media:{i}")]
        group.append(metadata(f"size: {n}\r\n", f"urn:test:meta:{i}", refers_to=group[1].record_id))
        written = sink.write_group(group)
        for spec, ref in zip(group, written, strict=True):
            given[ref.record_id] = b"".join(spec.block.chunks())
        refs.extend(written)
    assert (tmp_path / (refs[0].warc_file + ".open")).exists()
    result = sink.close()
    assert result is not None and closed == [result]
    path = Path(result.path)

    assert NAME.fullmatch(result.name) and sorted(p.name for p in tmp_path.iterdir()) == [result.name]
    assert mode(path) == 0o444
    data = path.read_bytes()
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == len(data)
    assert result.records == len(refs) + 1  # and the warcinfo record

    # (1) warcio check passes, digest by digest.
    run = warcio_check(path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("digest pass") == len(refs) + 1

    # (2) cdxj-indexer indexes the responses and resources.
    lines = cdxj_index(path)
    assert len(lines) == 2 * len(SIZES)
    assert all(f'"filename": "{result.name}"' in line for line in lines)

    # (3) warcio reads back every block byte for byte.
    blocks = _stored_blocks(str(path))
    for ref in refs:
        assert blocks[ref.record_id] == given[ref.record_id]

    # (4) our reader recomputes the digests at the refs' offsets; (5) they are sha256 of the bytes given.
    stored = {r.record_id: r for r in iter_records(path)}
    for ref in refs:
        rec = stored[ref.record_id]
        assert (rec.offset, rec.length, rec.problems) == (ref.offset, ref.length, ())
        assert rec.block_sha256 == ref.block_digest.hex == hashlib.sha256(given[ref.record_id]).hexdigest()
        if ref.record_type == RESOURCE:
            assert ref.payload_digest is not None
            assert rec.payload_sha256 == ref.payload_digest.hex == rec.block_sha256
        if ref.record_type == RESPONSE:
            payload = given[ref.record_id][ref.content_length - ref.payload_length :]
            assert rec.payload_sha256 == ref.payload_digest.hex == hashlib.sha256(payload).hexdigest()  # type: ignore[union-attr]
        if ref.record_type == "metadata":
            assert ref.payload_digest is None and rec.header("WARC-Payload-Digest") is None
    assert check_file(path) == []


def test_headers_in_order_and_warcinfo(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, warcinfo={"operator": "Test Org", "isPartOf": "incident-1"})
    date = datetime(2017, 4, 4, 3, 30, tzinfo=UTC)
    spec = RecordSpec(
        RESPONSE,
        block_from_bytes(b"hi", head=response_head(2)),
        HTTP_RESPONSE_TYPE,
        "https://example.test/a",
        date=date,
        headers=(("WARC-IP-Address", "127.0.0.1"), ("WARC-Truncated", "length")),
    )
    (ref,) = sink.write_group([spec])
    closed = sink.close()
    assert closed is not None
    info, rec = list(iter_records(closed.path))
    assert [n for n, _ in rec.headers] == [
        "WARC-Type",
        "WARC-Record-ID",
        "WARC-Date",
        "WARC-Target-URI",
        "WARC-Warcinfo-ID",
        "WARC-IP-Address",
        "WARC-Truncated",
        "Content-Type",
        "Content-Length",
        "WARC-Block-Digest",
        "WARC-Payload-Digest",
    ]
    assert ref.headers == rec.headers and ref.date == date
    assert rec.header("WARC-Date") == "2017-04-04T03:30:00.000000Z"
    assert rec.header("WARC-Warcinfo-ID") == info.record_id
    assert rec.header("WARC-Block-Digest") == f"sha256:{rec.block_sha256}"
    assert info.record_type == "warcinfo" and info.header("WARC-Filename") == closed.name
    assert info.header("Content-Type") == "application/warc-fields"
    with open(closed.path, "rb") as f:
        fields = next(iter(ArchiveIterator(f))).content_stream().read().decode()
    assert "format: WARC File Format 1.1\r\n" in fields
    assert "conformsTo: http://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/" in fields
    assert "hostname: testhost\r\n" in fields and "operator: Test Org\r\n" in fields
    assert fields.startswith("software: evidence-archiver/")


def test_same_clock_and_ids_give_identical_bytes(tmp_path: Path) -> None:
    out = []
    for name in ("a", "b"):
        sink = make_sink(tmp_path / name)
        sink.write_group([*http_pair(sink, "http://example.test/", body(5000)), resource(b"x", "urn:x")])
        closed = sink.close()
        assert closed is not None
        out.append(Path(closed.path).read_bytes())
    assert out[0] == out[1]


def test_name_collision_bumps_serial(tmp_path: Path) -> None:
    first = make_sink(tmp_path)
    first.write_group([resource(b"one", "urn:1")])
    second = make_sink(tmp_path)  # same fixed clock, prefix and host: the same first name
    second.write_group([resource(b"two", "urn:2")])
    a, b = first.close(), second.close()
    assert a is not None and b is not None
    assert a.name.endswith("-00000-testhost.warc.gz") and b.name.endswith("-00001-testhost.warc.gz")
    third = make_sink(tmp_path)  # closed files block their names too
    third.write_group([resource(b"three", "urn:3")])
    c = third.close()
    assert c is not None and c.name.endswith("-00002-testhost.warc.gz")


def test_host_is_sanitised(tmp_path: Path) -> None:
    sink = WarcSink(tmp_path, prefix="p", clock=FixedClock(), ids=SequentialIds(), host="my host/../é.example")
    sink.write_group([resource(b"x", "urn:x")])
    closed = sink.close()
    assert closed is not None and closed.name.endswith("-my-host-..--.example.warc.gz")
    with pytest.raises(WarcError):
        WarcSink(tmp_path, prefix="../p", clock=FixedClock(), ids=SequentialIds())


def test_rotation(tmp_path: Path) -> None:
    closed: list[ClosedWarc] = []
    sink = make_sink(tmp_path, closed, max_size=20_000)
    groups = []
    for i in range(12):
        groups.append(sink.write_group(http_pair(sink, f"http://example.test/{i}", body(6000, i))))
    big = sink.write_group([resource(body(100_000), "urn:big"), metadata("a: b\r\n", "urn:big-meta")])
    last = sink.close()
    assert last is not None and closed[-1] == last
    assert len(closed) >= 3 and len({c.name for c in closed}) == len(closed)
    assert {p.name for p in tmp_path.iterdir()} == {c.name for c in closed}
    for group in [*groups, big]:
        assert len({ref.warc_file for ref in group}) == 1  # a group never spans files
        for a, b in itertools.pairwise(group):
            assert b.offset == a.offset + a.length
    assert big[0].warc_file == last.name  # the oversized group went whole into one file
    by_name = {c.name: c for c in closed}
    for c in closed:
        data = Path(c.path).read_bytes()
        assert mode(c.path) == 0o444 and hashlib.sha256(data).hexdigest() == c.sha256
        assert check_file(c.path) == []
        run = warcio_check(c.path)
        assert run.returncode == 0, run.stdout
        # Rotation happens before a group once the file has reached max_size, never in the middle.
        starts = [g[0].offset for g in [*groups, big] if g[0].warc_file == c.name]
        assert max(starts) < 20_000
        assert c.size >= 20_000 or c == last
    assert sum(by_name[n].records for n in by_name) == 12 * 2 + 2 + len(closed)


def test_concurrent_groups_are_contiguous(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, max_size=200_000)
    results: list[list[list]] = [[] for _ in range(8)]  # type: ignore[type-arg]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                url = f"http://example.test/{t}/{i}"
                group = [*http_pair(sink, url, body(500 * i, t * 100 + i)), metadata(f"t: {t}\r\n", url)]
                results[t].append(sink.write_group(group))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sink.close()
    assert not errors
    stored = {}
    for path in sorted(tmp_path.iterdir()):
        assert check_file(path) == []
        info, *records = iter_records(path)
        assert info.record_type == "warcinfo"
        for rec in records:
            assert rec.header("WARC-Warcinfo-ID") == info.record_id  # records built ahead name their own file
            stored[rec.record_id] = (path.name, rec.offset, rec.length, rec.target_uri)
    all_groups = [g for per_thread in results for g in per_thread]
    assert len(all_groups) == 8 * 15
    for group in all_groups:
        assert len({ref.warc_file for ref in group}) == 1
        for a, b in itertools.pairwise(group):
            assert b.offset == a.offset + a.length
        for ref in group:
            assert stored.pop(ref.record_id) == (ref.warc_file, ref.offset, ref.length, ref.target_uri)
    assert not stored


def test_a_record_built_for_a_file_that_rotated_away_is_built_again_for_its_own(tmp_path: Path) -> None:
    """A group is encoded before the lock; if its file rotated meanwhile, it must name the file it lands in."""
    sink = make_sink(tmp_path, max_size=20_000)
    (first,) = sink.write_group([resource(b"first", "urn:first")])
    block = block_from_bytes(body(3000))
    encoding, release = threading.Event(), threading.Event()
    reads: list[int] = []
    original = block.chunks

    def paused(start: int = 0) -> Iterator[bytes]:
        reads.append(start)
        if len(reads) == 1:  # the encoding before the lock: hold it while other groups rotate the file
            encoding.set()
            release.wait(10)
        return original(start)

    block.chunks = paused  # type: ignore[method-assign]
    landed: list[list[RecordRef]] = []
    late = threading.Thread(
        target=lambda: landed.append(sink.write_group([RecordSpec(RESOURCE, block, "video/mp4", "urn:late")]))
    )
    late.start()
    assert encoding.wait(10)
    sink.write_group([resource(body(60_000), "urn:fills")])  # the first file passes max_size
    (rotated,) = sink.write_group([resource(b"x", "urn:rotates")])  # the next group opens a second file
    release.set()
    late.join(10)
    sink.close()
    ((ref,),) = landed
    assert rotated.warc_file != first.warc_file and ref.warc_file == rotated.warc_file
    info, *records = iter_records(tmp_path / ref.warc_file)
    (rec,) = [r for r in records if r.record_id == ref.record_id]
    assert rec.header("WARC-Warcinfo-ID") == info.record_id
    assert len(reads) == 2  # built again, under the lock
    assert check_file(tmp_path / ref.warc_file) == [] and warcio_check(tmp_path / ref.warc_file).returncode == 0


def test_invalid_specs_write_nothing(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    bad = [
        RecordSpec(RESOURCE, block_from_bytes(b"x"), "text/plain", "urn:x\r\nWARC-Type: evil"),
        RecordSpec(RESOURCE, block_from_bytes(b"x"), "text/plain", "urn:x", headers=(("Content-Length", "1"),)),
        RecordSpec(RESOURCE, block_from_bytes(b"x"), "text/plain", "urn:x", headers=(("Bad Name", "v"),)),
        RecordSpec(RESOURCE, block_from_bytes(b"x"), "text/plain", "urn:x", record_id="urn:no-brackets"),
        RecordSpec(RESOURCE, block_from_bytes(b"x"), "text/plain", "urn:x", date=datetime(2020, 1, 1)),
        RecordSpec("warcinfo", block_from_bytes(b"x"), "text/plain"),
    ]
    for spec in bad:
        with pytest.raises(WarcError):
            sink.write_group([resource(b"fine", "urn:fine"), spec])
    assert list(tmp_path.iterdir()) == [] and sink.close() is None
    # A revisit may name the payload digest it revisits.
    revisit = RecordSpec(
        REVISIT,
        block_from_bytes(response_head(0), has_payload=False),
        HTTP_RESPONSE_TYPE,
        "http://example.test/",
        headers=(
            ("WARC-Profile", "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"),
            ("WARC-Payload-Digest", "sha256:" + "0" * 64),
        ),
    )
    sink.write_group([revisit])
    closed = sink.close()
    assert closed is not None and check_file(closed.path) == []


def _tampered(data: bytes) -> Block:
    """A block whose spool changed after it was hashed (a bug or bit rot between spooling and writing)."""
    blk = block_from_bytes(data)
    blk._spool.seek(len(data) // 2)
    blk._spool.write(b"!")
    return blk


def test_digest_mismatch_cuts_the_group_out(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    good = sink.write_group([resource(b"before", "urn:before")])
    size_before = (tmp_path / (good[0].warc_file + ".open")).stat().st_size
    bad_group = [
        resource(b"fine", "urn:fine"),
        RecordSpec(RESOURCE, _tampered(body(200_000)), "video/mp4", "urn:t"),
    ]
    with pytest.raises(WarcError, match="changed since they were hashed"):
        sink.write_group(bad_group)
    assert (tmp_path / (good[0].warc_file + ".open")).stat().st_size == size_before
    # An HTTP block whose head was not marked as such: its payload digest is not the one the reader computes.
    unmarked = block_from_bytes(response_head(2) + b"hi")
    with pytest.raises(WarcError, match="payload digest"):
        sink.write_group([RecordSpec(RESPONSE, unmarked, HTTP_RESPONSE_TYPE, "http://example.test/")])
    after = sink.write_group([resource(b"after", "urn:after")])
    closed = sink.close()
    assert closed is not None
    assert after[0].offset == size_before
    assert [r.target_uri for r in iter_records(closed.path)] == [None, "urn:before", "urn:after"]
    assert hashlib.sha256(Path(closed.path).read_bytes()).hexdigest() == closed.sha256
    assert check_file(closed.path) == [] and warcio_check(closed.path).returncode == 0


def test_context_manager_closes_and_sink_reopens(tmp_path: Path) -> None:
    closed: list[ClosedWarc] = []
    with make_sink(tmp_path, closed) as sink:
        sink.write_group([resource(b"a", "urn:a")])
        first = sink.close()
        assert first is not None and sink.close() is None
        sink.write_group([resource(b"b", "urn:b")])
    assert len(closed) == 2 and all(mode(c.path) == 0o444 for c in closed)
    assert sink.write_group([]) == [] and sink.current_name is None


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from archiver.errors import WarcError
    from tests.support.warc_files import body, make_sink, resource as spec
    # A file size limit makes write(2) fail with EFBIG part-way through a group, as a full disk would.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    sink = make_sink(Path(sys.argv[1]))
    sink.write_group([spec(b"small one", "urn:1")])
    try:
        sink.write_group([spec(body(150_000), "urn:big"), spec(body(150_000, 1), "urn:big2")])
    except WarcError as exc:
        print("refused:", exc.__cause__.__class__.__name__)
    sink.write_group([spec(b"small two", "urn:2")])
    print(sink.close().path)
    """
)


def test_failed_write_leaves_no_partial_group(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    refused, path = run.stdout.splitlines()
    assert refused == "refused: OSError"
    assert [r.target_uri for r in iter_records(path)] == [None, "urn:1", "urn:2"]
    assert check_file(path) == [] and warcio_check(path).returncode == 0


def test_a_failed_fsync_fails_the_group_and_retires_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux reports a lost writeback once (a later fsync may succeed without the lost pages), so after a
    failed fsync nothing more is written to the file or claimed durable; it stays .open for repair."""
    sink = make_sink(tmp_path)
    (first,) = sink.write_group([resource(b"durable", "urn:1")])
    real_fsync = os.fsync
    failures = iter([OSError(5, "Input/output error")])

    def fsync_failing_once(fd: int) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    with pytest.raises(WarcError, match="durable") as err:
        sink.write_group([resource(b"lost", "urn:2")])
    assert err.value.hint is not None and "repair" in err.value.hint
    (after,) = sink.write_group([resource(b"next", "urn:3")])
    closed = sink.close()
    assert closed is not None and after.warc_file == closed.name != first.warc_file
    retired = tmp_path / (first.warc_file + ".open")
    assert retired.exists()  # left for the next run's repair, never closed as if it were whole
    assert [r.target_uri for r in iter_records(closed.path)] == [None, "urn:3"]


def test_records_added_by_then_know_where_the_group_landed(tmp_path: Path) -> None:
    """``then`` (a receipt listing the group's offsets) ends the same group: one file, one fsync."""
    sink = make_sink(tmp_path)
    sink.write_group([resource(b"before", "urn:before")])
    seen: list[RecordRef] = []

    def listing(refs: list[RecordRef]) -> list[RecordSpec]:
        seen.extend(refs)
        return [metadata("".join(f"at: {r.offset}+{r.length}\r\n" for r in refs), "urn:listing")]

    refs = sink.write_group(http_pair(sink, "http://example.test/a", body(3000)), then=listing)
    assert refs[:2] == seen and len(refs) == 3
    assert refs[2].offset == refs[1].offset + refs[1].length and refs[2].warc_file == refs[0].warc_file
    size = (tmp_path / (refs[0].warc_file + ".open")).stat().st_size

    def broken(refs: list[RecordRef]) -> list[RecordSpec]:
        raise ValueError("cannot sign")

    with pytest.raises(ValueError, match="cannot sign"):
        sink.write_group([resource(b"lost", "urn:lost")], then=broken)
    assert (tmp_path / (refs[0].warc_file + ".open")).stat().st_size == size  # nothing of that group kept
    closed = sink.close()
    assert closed is not None
    listed = {r.target_uri: r for r in iter_records(closed.path)}
    assert set(listed) == {None, "urn:before", "http://example.test/a", "urn:listing"}
    text = _stored_blocks(closed.path)[listed["urn:listing"].record_id].decode()
    assert text == "".join(f"at: {r.offset}+{r.length}\r\n" for r in seen)
    assert check_file(closed.path) == [] and warcio_check(closed.path).returncode == 0


# -- the gzip members' deflater ----------------------------------------------------------------------------------


@pytest.mark.parametrize("isal", [True, False], ids=["isa-l", "zlib"])
def test_every_level_makes_gzip_members_any_reader_inflates(isal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not isal:
        monkeypatch.setattr(writer, "isal_zlib", None)  # a platform without python-isal's wheels
    data = b"<p>\xd8\xb4\xd9\x87\xd8\xa7\xd8\xaf\xd8\xa9</p>" * 300 + os.urandom(5000)
    for level in range(10):
        comp = deflater(level)()
        member = comp.compress(data) + comp.flush()
        assert member[:3] == b"\x1f\x8b\x08" and member[4:8] == b"\0\0\0\0"  # gzip, no mtime: same bytes
        assert zlib.decompress(member, 31) == data
        if level > 0:
            assert len(member) < len(data)


def test_isa_l_deflates_when_installed_at_the_nearest_level() -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")  # a dependency: its absence is a broken install
    assert [deflater(level).args[0] for level in (1, 3, 4, 6, 7, 9)] == [1, 1, 2, 2, 3, 3]
    assert deflater(6).func is isal_zlib.compressobj
    assert deflater(0).func is zlib.compressobj  # stored, through zlib
    with pytest.raises(WarcError):
        deflater(10)
