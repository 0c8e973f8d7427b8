"""The byte plumbing of an export: records copied byte for byte from real WARC files (several, in parallel) with
the wanted payloads taken in the same pass, files hashed on lanes of their own and synced once, damaged members
refused, and video stills made by real ffmpeg in batches that give the same bytes as single runs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zlib
from datetime import datetime
from pathlib import Path

import pytest

from archiver.bundle.contents import CaptureEntry, IncidentContents, RecordEntry, SourceEntry
from archiver.bundle.direct import BUFFER, DirectFile, read_chunks
from archiver.bundle.export import screenshots
from archiver.bundle.records import Extract, write_warcs
from archiver.bundle.stills import Stills
from archiver.bundle.streams import HashingFile, Lane, Syncer
from archiver.bundle.taps import PayloadTap
from archiver.errors import BundleError
from archiver.warc.records import ClosedWarc, RecordRef
from tests.support.warc_files import body, deflate, http_pair, make_sink, resource


def _archive(directory: Path) -> list[RecordRef]:
    """Three WARC files (the sink rotates after each group): a page and a video resource in each."""
    closed: list[ClosedWarc] = []
    refs: list[RecordRef] = []
    with make_sink(directory, closed, max_size=1) as sink:
        for i in range(3):
            page = http_pair(sink, f"http://127.0.0.1/page-{i}", body(3000 + i, seed=i))
            refs += sink.write_group([*page, resource(body(300_000 + i, seed=10 + i), f"urn:video:{i}")])
    assert len(closed) == 3
    return refs


def _entry(ref: RecordRef, role: str) -> RecordEntry:
    payload = ref.payload_digest.hex if ref.payload_digest else None
    return RecordEntry(ref.record_id, ref.record_type, role, ref.target_uri, ref.content_type, 1, ref.warc_file,
                       ref.offset, ref.length, ref.block_digest.hex, payload, ref.date)  # fmt: skip


def _contents(refs: list[RecordRef]) -> IncidentContents:
    records = sorted((_entry(r, "media" if r.record_type == "resource" else "page") for r in refs),
                     key=lambda r: (r.warc_file, r.offset))  # fmt: skip
    return IncidentContents({"id": "inc-1"}, (), tuple(records), (), (), ())


def _digests(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()


def test_records_copied_and_payloads_taken_in_one_pass(tmp_path: Path) -> None:
    warcs = tmp_path / "warcs"
    refs = _archive(warcs)
    contents = _contents(refs)
    wanted = [r for r in contents.records if r.role == "media" or r.record_type == "response"]
    extracts = [Extract(r, f"data/out/{n}.bin") for n, r in enumerate(wanted)]
    extracts.append(Extract(wanted[0], "data/out/again.bin"))  # one payload into two files
    seen: list[str] = []
    syncer = Syncer()
    done = write_warcs(tmp_path / "a", warcs, contents, extracts=extracts, syncer=syncer,
                       on_extracted=lambda path, _e: seen.append(path), workers=3)  # fmt: skip
    syncer.finish()
    bag = tmp_path / "a"
    assert [f.path for f in done.files] == [f"data/warc/inc-1-00{n}.warc.gz" for n in (1, 2, 3)] + [
        "data/records.jsonl"
    ]
    for f in done.files:
        assert (f.sha256, f.sha512) == _digests(bag / f.path) and f.size == (bag / f.path).stat().st_size
    # Byte-identical members at the places records.jsonl states.
    for p in done.placed:
        e = p.entry
        original = (warcs / e.warc_file).read_bytes()[e.offset : e.offset + e.length]
        assert (bag / p.bundle_file).read_bytes()[p.bundle_offset : p.bundle_offset + e.length] == original
    assert [p.entry.record_type for p in done.placed].count("warcinfo") == 3
    # Each extracted file holds exactly the payload: its sha256 is the record's payload digest.
    assert sorted(seen) == sorted(done.extracted) == sorted(e.path for e in extracts)
    for x in extracts:
        got = done.extracted[x.path].digests
        assert got.sha256 == x.record.payload_sha256 and (got.sha256, got.sha512) == _digests(bag / x.path)
    video = next(x for x in extracts if x.record.target_uri == "urn:video:1")
    assert (bag / video.path).read_bytes() == body(300_001, seed=11)
    # The same with one worker: the output does not depend on the order jobs finish in.
    again = write_warcs(tmp_path / "b", warcs, contents, extracts=extracts, workers=1)
    assert again.files == done.files and again.placed == done.placed
    assert {k: v.digests for k, v in again.extracted.items()} == {k: v.digests for k, v in done.extracted.items()}


def test_damaged_source_member_is_refused(tmp_path: Path) -> None:
    warcs = tmp_path / "warcs"
    contents = _contents(_archive(warcs))
    video = next(r for r in contents.records if r.target_uri == "urn:video:2")
    path = warcs / video.warc_file
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[video.offset + video.length // 2] ^= 0x40  # inside the deflate stream: the CRC no longer holds
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"urn|@ \d+"):
        write_warcs(tmp_path / "bag", warcs, contents, extracts=[Extract(video, "data/v.bin")], workers=2)


def test_payload_tap_checks_the_wholedeflate(tmp_path: Path) -> None:
    block = b"payload bytes"
    head = f"WARC/1.1\r\nWARC-Type: resource\r\nContent-Length: {len(block)}\r\n\r\n".encode()
    good = deflate(head + block + b"\r\n\r\n")

    def tap(name: str) -> tuple[PayloadTap, HashingFile]:
        f = HashingFile(tmp_path, name)
        return PayloadTap(name, [f]), f

    t, f = tap("ok.bin")
    for i in range(0, len(good), 7):  # any cut of the compressed bytes
        t.feed(good[i : i + 7])
    assert t.finish() == len(block)
    assert f.close().sha256 == hashlib.sha256(block).hexdigest()
    cases = [
        (good[:-6], "ends before its end"),
        (good + good, "more than one gzip member"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "bad gzip member"),
        (deflate(head.replace(b"13", b"99") + block + b"\r\n\r\n"), "shorter than its Content-Length"),
        (deflate(b"not a WARC head\r\n\r\n"), "no complete WARC record"),
    ]
    for n, (data, message) in enumerate(cases):
        t, f = tap(f"bad-{n}.bin")
        with pytest.raises(BundleError, match=message):
            t.feed(data)
            t.finish()
        t.abort()
    with pytest.raises(ValueError):
        f = HashingFile(tmp_path, "used.bin")
        f.write(b"x")
        PayloadTap("used", [f])


def test_hashing_file_lane_copies_buffers_that_may_change(tmp_path: Path) -> None:
    chunks = [bytes([n]) * (1 << 17) for n in range(20)]
    with HashingFile(tmp_path, "f.bin", lane=True) as f:
        buf = bytearray(1 << 17)
        for c in chunks:
            buf[:] = c
            f.write(buf)  # reused at once by the caller: the lane must have its own copy
            f.write(memoryview(c)[:10])
        got = f.close()
    data = b"".join(c + c[:10] for c in chunks)
    assert (
        (got.sha256, got.sha512)
        == _digests(tmp_path / "f.bin")
        == (
            hashlib.sha256(data).hexdigest(),
            hashlib.sha512(data).hexdigest(),
        )
    )
    assert got.size == len(data) == f.tell()


def test_lane_and_syncer_report_failures(tmp_path: Path) -> None:
    lane = Lane("test")

    def fail() -> None:
        raise BundleError("disk full")

    lane.submit(fail)
    with pytest.raises(BundleError, match="disk full"):
        lane.close()
    syncer = Syncer()
    files = [(tmp_path / f"{n}.txt").open("wb") for n in range(3)]
    for n, f in enumerate(files):
        f.write(b"x")
        f.flush()
        syncer.closed(f, tmp_path / f"{n}.txt")
    syncer.finish([tmp_path])
    assert all(f.closed for f in files)
    staging = Syncer(durable=False)
    f = (tmp_path / "s.txt").open("wb")
    staging.closed(f, tmp_path / "s.txt")
    assert f.closed
    staging.finish([tmp_path])


def test_screenshot_names_are_unique() -> None:
    shot = RecordEntry("<urn:uuid:1>", "resource", "screenshot", "urn:s", "image/png", 7, "a.warc.gz", 0, 10, "0" * 64,
                       None, None)  # fmt: skip
    other = RecordEntry("<urn:uuid:2>", "resource", "screenshot", "urn:s", "image/png", 7, "a.warc.gz", 10, 10,
                        "0" * 64, None, None)  # fmt: skip
    capture = CaptureEntry(7, 3, "browser", datetime(2026, 1, 1), None, "ok", None, None, None,
                           None, "c")  # fmt: skip
    source = SourceEntry(3, "http://x", None, "article", None, None, None, "captured", None, None, None, (capture,))
    contents = IncidentContents({"id": "i"}, (source,), (shot, other), (), (), ())
    paths = [p for _, p, _ in screenshots(contents)]
    assert paths == ["data/thumbnails/screenshot-capture-7.png", "data/thumbnails/screenshot-capture-7-2.png"]


def _video(path: Path, seconds: str, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"color=c={colour}:size=160x120:rate=10", "-t", seconds, "-c:v", "mpeg4",
                    "-movflags", "+faststart", "-y", str(path)], check=True)  # fmt: skip


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_stills_in_batches_match_single_runs_and_survive_a_bad_file(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    for name, colour in (("a", "red"), ("b", "blue"), ("c", "green")):
        _video(bag / f"data/{name}.mp4", "0.3", colour)
    (bag / "data/bad.mp4").write_bytes(zlib.compress(b"not a video") * 10)
    # Batches of two: a and b in one ffmpeg run; bad and c fail together, then c gets a run of its own.
    names = ["data/a.mp4", "data/b.mp4", "data/bad.mp4", "data/c.mp4"]
    with Stills(bag, batch=2) as batched:
        for n in names:
            batched.submit(n)
        together = batched.results(names)
    with Stills(bag, batch=1) as single:
        for n in names:
            single.submit(n)
        alone = single.results(names)
    assert sorted(together) == ["data/a.mp4", "data/b.mp4", "data/c.mp4"]
    assert together == alone and len(set(together.values())) == 3
    assert all(v.startswith(b"\xff\xd8") for v in together.values())
    assert not list(bag.glob(".still-*"))


def test_direct_file_writes_exact_bytes_around_the_cache(tmp_path: Path) -> None:
    sizes = [1, 4095, 4097, BUFFER - 3, BUFFER + 5, 3 * BUFFER, 10, 0, 777]
    data = body(sum(sizes), seed=3)
    for name, fall_back_after in (("direct.bin", None), ("switched.bin", 4)):
        f = DirectFile(tmp_path / name)
        at = 0
        for n, size in enumerate(sizes):
            if n == fall_back_after:
                f._buffered()  # what happens when the first direct write is refused: the rest goes buffered
            f.write(memoryview(data)[at : at + size])
            at += size
        f.flush()
        with pytest.raises(ValueError):
            f.write(b"late")
        f.close()
        assert (tmp_path / name).read_bytes() == data
    empty = DirectFile(tmp_path / "empty.bin")
    empty.flush()
    empty.close()
    assert (tmp_path / "empty.bin").read_bytes() == b"" and empty.closed
    with pytest.raises(FileExistsError):
        DirectFile(tmp_path / "empty.bin")


def test_read_chunks_gives_every_byte_once(tmp_path: Path) -> None:
    for size in (0, 1, 4095, 4096, 4097, 3 * (1 << 16) + 17):
        data = body(size, seed=size)
        (tmp_path / "f.bin").write_bytes(data)
        pieces = [bytes(p) for p in read_chunks(tmp_path / "f.bin", 1 << 16)]
        assert b"".join(pieces) == data and all(len(p) <= 1 << 16 for p in pieces)
    with pytest.raises(FileNotFoundError):
        list(read_chunks(tmp_path / "missing.bin"))
