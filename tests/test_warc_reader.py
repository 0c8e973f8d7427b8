"""The streaming reader: digests recomputed from stored bytes, and every kind of damage reported as data."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archiver.errors import WarcError
from archiver.warc import reader
from archiver.warc.block import DigestPass
from archiver.warc.reader import (
    BAD_GZIP,
    BAD_HEADER,
    BLOCK_DIGEST,
    CONTENT_LENGTH,
    MISSING_DIGEST,
    PAYLOAD_DIGEST,
    TRUNCATED,
    UNSUPPORTED_DIGEST,
    RecordProblem,
    check_file,
    copy_record,
    iter_records,
    scan_file,
)
from archiver.warc.records import RecordRef
from tests.support.warc_files import (
    body,
    flip,
    http_pair,
    inflate,
    make_sink,
    members,
    metadata,
    resource,
    rewrite_record,
    warcio_check,
)

PAYLOAD = b"the payload of the response, which the header must not be confused with"


@pytest.fixture
def warc(tmp_path: Path) -> tuple[bytes, list[RecordRef]]:
    """A closed file: warcinfo, request, response, resource, metadata (members 0..4)."""
    sink = make_sink(tmp_path / "src")
    refs = sink.write_group(http_pair(sink, "http://example.test/page", PAYLOAD))
    refs += sink.write_group([resource(body(40_000), "urn:test:media"), metadata("k: v\r\n", "urn:test:m")])
    closed = sink.close()
    assert closed is not None
    return Path(closed.path).read_bytes(), refs


def _problems(tmp_path: Path, data: bytes) -> list[RecordProblem]:
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(data)
    problems = check_file(path)
    assert list(scan_file(path).problems) == problems
    return problems


def _other_hex(m: re.Match[bytes]) -> bytes:
    return b"1" if m.group(0) == b"0" else b"0"


def _kinds(problems: list[RecordProblem]) -> list[tuple[int, str]]:
    return [(p.offset, p.kind) for p in problems]


def test_reads_back_what_was_written(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, refs = warc
    path = tmp_path / "w.warc.gz"
    path.write_bytes(data)
    records = list(iter_records(path))
    assert [r.record_type for r in records] == ["warcinfo", "request", "response", "resource", "metadata"]
    assert [(r.offset, r.length) for r in records] == members(data)
    for ref, rec in zip(refs, records[1:], strict=True):
        assert rec.record_id == ref.record_id and rec.target_uri == ref.target_uri
        assert rec.content_length == ref.content_length and rec.block_sha256 == ref.block_digest.hex
        assert rec.payload_sha256 == (ref.payload_digest.hex if ref.payload_digest else None)
    assert records[2].payload_sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    scan = scan_file(path)
    assert (scan.sha256, scan.size, scan.records, scan.problems) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        5,
        (),
    )


def test_payload_flip(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, refs = warc

    def change(record: bytes) -> bytes:
        return record.replace(b"payload of the", b"payload 0f the")

    damaged, offset = rewrite_record(data, 2, change)
    problems = _problems(tmp_path, damaged)
    assert _kinds(problems) == [(offset, BLOCK_DIGEST), (offset, PAYLOAD_DIGEST)]
    assert all(p.record_id == refs[1].record_id for p in problems)
    assert problems[1].expected == str(refs[1].payload_digest)
    assert problems[1].found == "sha256:" + hashlib.sha256(PAYLOAD.replace(b"of", b"0f")).hexdigest()
    # warcio agrees that something is wrong.
    assert warcio_check(tmp_path / "damaged.warc.gz").returncode == 1


def test_http_head_flip_only_breaks_block_digest(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, _ = warc
    damaged, offset = rewrite_record(data, 2, lambda r: r.replace(b"HTTP/1.1 200 OK", b"HTTP/1.1 201 OK"))
    assert _kinds(_problems(tmp_path, damaged)) == [(offset, BLOCK_DIGEST)]


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda r: re.sub(rb"(?<=WARC-Block-Digest: sha256:)[0-9a-f]", _other_hex, r, count=1), BLOCK_DIGEST),
        (lambda r: r.replace(b"Content-Length: ", b"Content-Length: 1", 1), CONTENT_LENGTH),
        (lambda r: r.replace(b"\r\n\r\n", b"\r\n", 1), BAD_HEADER),
        (lambda r: r.replace(b"WARC-Date:", b"WARC-Date", 1), BAD_HEADER),
        (lambda r: r.replace(b"WARC/1.1", b"HTTP/1.1", 1), BAD_HEADER),
        (lambda r: re.sub(rb"WARC-Block-Digest: [^\r]*\r\n", b"", r), MISSING_DIGEST),
        (
            lambda r: r.replace(b"WARC-Block-Digest: sha256:", b"WARC-Block-Digest: sha1:", 1),
            UNSUPPORTED_DIGEST,
        ),
        (lambda r: r[:-4] + b"\r\n\r\nextra", CONTENT_LENGTH),
        (lambda r: r[:-4] + b"XXXX", CONTENT_LENGTH),
    ],
    ids=[
        "digest",
        "length",
        "no-header-end",
        "no-colon",
        "not-warc",
        "no-digest",
        "sha1",
        "extra",
        "trailer",
    ],
)
def test_header_damage(tmp_path: Path, warc: tuple[bytes, list[RecordRef]], change, kind: str) -> None:  # type: ignore[no-untyped-def]
    data, _ = warc
    damaged, offset = rewrite_record(data, 3, change)
    problems = _problems(tmp_path, damaged)
    assert _kinds(problems) == [(offset, kind)]
    # The records around the damaged one are still read and checked.
    assert len([r for r in iter_records(tmp_path / "damaged.warc.gz", []) if r.ok]) == 4


def test_gzip_framing_damage(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, refs = warc
    spans = members(data)
    off, length = spans[3]
    # The magic number of a member: unreadable, the reader resynchronises on the next member.
    problems = _problems(tmp_path, flip(data, off + 1))
    assert _kinds(problems) == [(off, BAD_GZIP)] and problems[0].record_id is None
    assert [r.record_type for r in iter_records(tmp_path / "damaged.warc.gz", [])] == [
        "warcinfo",
        "request",
        "response",
        "metadata",
    ]
    # The CRC-32 in the trailer: the record was readable, so the problem names it.
    problems = _problems(tmp_path, flip(data, off + length - 6))
    assert _kinds(problems) == [(off, BAD_GZIP)] and problems[0].record_id == refs[2].record_id
    # A byte in the middle of the deflate stream.
    problems = _problems(tmp_path, flip(data, off + length // 2))
    assert _kinds(problems) == [(off, BAD_GZIP)]
    # Garbage between members, and after the last one, is one problem each.
    problems = _problems(tmp_path, data[:off] + b"\x1f\x8b\x08garbage" * 50 + data[off:] + b"\0" * 300)
    assert _kinds(problems) == [(off, BAD_GZIP), (len(data) + 500, BAD_GZIP)]


def test_truncation(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, refs = warc
    off, length = members(data)[3]
    problems = _problems(tmp_path, data[: off + length // 2])
    assert _kinds(problems) == [(off, TRUNCATED)] and problems[0].record_id == refs[2].record_id
    problems = _problems(tmp_path, data[: off + 5])  # not even the WARC header
    assert _kinds(problems) == [(off, TRUNCATED)] and problems[0].record_id is None
    assert _problems(tmp_path, data[:off]) == []  # cut at a record boundary: nothing to see in the file


def test_content_length_too_short_with_valid_gzip(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, _ = warc
    off, length = members(data)[3]
    record = inflate(data[off : off + length])
    damaged, offset = rewrite_record(data, 3, lambda r: r[: len(r) // 2])
    problems = _problems(tmp_path, damaged)
    assert _kinds(problems) == [(offset, CONTENT_LENGTH)]
    assert problems[0].expected == "40000" and int(problems[0].found or 0) < 40000
    assert len(record) > 40000


def test_unattached_damage_raises_without_a_problem_list(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, _ = warc
    path = tmp_path / "w.warc.gz"
    path.write_bytes(data + b"garbage")
    with pytest.raises(WarcError, match="bad-gzip"):
        list(iter_records(path))
    collected: list[RecordProblem] = []
    assert len(list(iter_records(path, collected))) == 5 and _kinds(collected) == [(len(data), BAD_GZIP)]


def test_copy_record(tmp_path: Path, warc: tuple[bytes, list[RecordRef]]) -> None:
    data, refs = warc
    src = tmp_path / "w.warc.gz"
    src.write_bytes(data)
    out = io.BytesIO()
    info_off, info_len = members(data)[0]
    copy_record(src, info_off, info_len, out)
    for ref in refs:
        copy_record(src, ref.offset, ref.length, out)
        assert out.getvalue()[-ref.length :] == data[ref.offset : ref.offset + ref.length]
    bundle = tmp_path / "bundle.warc.gz"
    bundle.write_bytes(out.getvalue())
    assert check_file(bundle) == [] and warcio_check(bundle).returncode == 0
    with pytest.raises(WarcError):
        copy_record(src, refs[0].offset + 1, 10, io.BytesIO())
    with pytest.raises(WarcError):
        copy_record(src, refs[-1].offset, refs[-1].length + 1, io.BytesIO())


def test_empty_and_non_gzip_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    assert check_file(empty) == [] and scan_file(empty).sha256 == hashlib.sha256(b"").hexdigest()
    plain = tmp_path / "plain.warc.gz"
    plain.write_bytes(b"WARC/1.1\r\n" * 1000)
    assert _kinds(check_file(plain)) == [(0, BAD_GZIP)]


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
def test_digest_pass_finds_http_head_across_chunks(split: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"
    for block, payload_at in [
        (head + b"body\n\nmore", len(head)),
        (b"HTTP/1.0 200 OK\nA: b\n\nbody", 22),  # bare LF line ends, as some servers send
        (b"\r\nbody", 2),
        (b"HTTP/1.1 200 OK\r\nno end", None),
    ]:
        dp = DigestPass(payload=True, http=True)
        for i in range(0, len(block), split):
            dp.update(block[i : i + split])
        assert dp.payload_offset == payload_at
        assert dp.block_hex() == hashlib.sha256(block).hexdigest()
        rest = b"" if payload_at is None else block[payload_at:]
        assert dp.payload_hex() == hashlib.sha256(rest).hexdigest()


def test_highly_compressible_member_in_constant_memory(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.write_group([resource(b"\0" * 30_000_000, "urn:zeros")])
    closed = sink.close()
    assert closed is not None
    seen: list[int] = []
    with open(closed.path, "rb") as f:
        walker = reader.GzipMembers(f)
        assert walker.next_member(lambda d: None) is not None  # warcinfo
        assert walker.next_member(lambda d: seen.append(len(d))) is not None
    assert max(seen) <= reader.OUT_MAX and sum(seen) > 30_000_000
    assert check_file(closed.path) == []


@pytest.mark.slow
def test_faster_than_warcio_check(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, max_size=1 << 40)
    for i in range(1500):
        sink.write_group(http_pair(sink, f"http://example.test/{i}", body(i * 37 % 60_000, i)))
    sink.write_group([resource(body(40_000_000), "urn:big")])
    closed = sink.close()
    assert closed is not None
    # Both as fresh processes, so each pays its own interpreter start-up and imports.
    ours = [sys.executable, "-c", "import sys; from archiver.warc.reader import scan_file as s; "
            "sys.exit(len(s(sys.argv[1]).problems))", closed.path]  # fmt: skip
    timings = []
    for run in (lambda: subprocess.run(ours, check=True), lambda: warcio_check(closed.path)):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    assert timings[0] < timings[1], timings
