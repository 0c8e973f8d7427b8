"""Streaming reader and checker of ``.warc.gz`` files: each record's digests recomputed from stored bytes.

The file is read once, sequentially, in constant memory: each gzip member is inflated with :mod:`zlib`
directly and the record inside is parsed as the bytes arrive (a push parser), while :class:`DigestPass`
hashes its block and payload. warcio is not used here: it hard-codes SHA-1 for what it computes, may de-chunk
or decode content, and is several times slower; our digests must cover the bytes as stored.

Problems are data (:class:`RecordProblem`), not exceptions, so ``verify --deep`` can report every one. After a
damaged gzip member the reader resynchronises on the next gzip magic number and goes on.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from archiver.errors import WarcError
from archiver.warc.block import PAYLOAD_RECORD_TYPES, Digest, DigestPass, is_http_block
from archiver.warc.records import REVISIT

READ_SIZE = 1 << 20
OUT_MAX = 1 << 20  # inflated bytes per zlib call: a 1000:1 member never balloons in memory
FIRST_PIECE = 1 << 14  # small first feed, so the copy zlib makes of a member's unused tail stays small
MAX_HEAD = 1 << 20  # a WARC header larger than this is not a header
GZIP_MAGIC = b"\x1f\x8b\x08"  # RFC 1952 §2.3.1: ID1 ID2 CM=deflate

# Problem kinds.
BLOCK_DIGEST = "block-digest"
PAYLOAD_DIGEST = "payload-digest"
MISSING_DIGEST = "missing-digest"
UNSUPPORTED_DIGEST = "unsupported-digest"
TRUNCATED = "truncated"
BAD_GZIP = "bad-gzip"
BAD_HEADER = "bad-header"
CONTENT_LENGTH = "content-length"

MEMBER_OK = "ok"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # WARC 1.1 §4: a field name is a token


@dataclass(frozen=True)
class RecordProblem:
    """One thing wrong in a WARC file, at the gzip member starting at ``offset``."""

    offset: int
    record_id: str | None
    kind: str
    expected: str | None
    found: str | None

    def __str__(self) -> str:
        who = self.record_id or "unidentified record"
        return f"offset {self.offset} ({who}): {self.kind}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored. Digests are lowercase hex computed from the stored bytes; None when the block could
    not be read completely (then ``problems`` says why) or, for the payload, when the record type has none."""

    offset: int
    length: int  # of the gzip member
    headers: tuple[tuple[str, str], ...]
    record_type: str | None
    record_id: str | None
    target_uri: str | None
    content_length: int
    block_sha256: str | None
    payload_sha256: str | None
    problems: tuple[RecordProblem, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of the WARC field ``name`` (case-insensitive)."""
        return _first(self.headers, name)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class FileCheck:
    """The result of :func:`scan_file`: the whole file's SHA-256 and size, and every problem in it."""

    path: str
    sha256: str
    size: int
    records: int
    problems: tuple[RecordProblem, ...]


@dataclass(frozen=True)
class Member:
    offset: int
    length: int  # compressed bytes consumed
    status: str  # MEMBER_OK, TRUNCATED or BAD_GZIP
    error: str | None = None


def _first(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]], name: str) -> str | None:
    low = name.lower()
    return next((v for n, v in headers if n.lower() == low), None)


class _BackgroundHash:
    """A SHA-256 updated on a worker thread (hashlib releases the GIL), so hashing a whole file overlaps with
    inflating and hashing its records on the main thread. At most a few chunks wait in the queue."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="warc-file-hash")
        self._queue: deque[Future[None]] = deque()

    def update(self, data: bytes | memoryview) -> None:
        self._queue.append(self._pool.submit(self._hash.update, data))
        while len(self._queue) > 4:
            self._queue.popleft().result()

    def hexdigest(self) -> str:
        while self._queue:
            self._queue.popleft().result()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class GzipMembers:
    """Walk the gzip members of a file, inflating each into a callback, reading every byte once.

    With ``prefix_hash``, ``prefix_sha256`` (for repair) is the hash of the members accepted with
    :meth:`accept` so far, which must be contiguous from offset 0. With ``file_hash``, ``file_sha256`` is the
    hash of every byte of the file read (call :meth:`drain` first to read to the end, and :meth:`close`).
    """

    def __init__(self, f: BinaryIO, *, file_hash: bool = False, prefix_hash: bool = False) -> None:
        self._f = f
        self._buf = b""
        self._pos = 0  # index of the next unread byte in _buf
        self._buf_off = 0  # file offset of _buf[0]
        self._hashed_upto = 0
        self._file_hash = _BackgroundHash() if file_hash else None
        self._prefix = hashlib.sha256() if prefix_hash else None
        self._pending = self._prefix

    def tell(self) -> int:
        return self._buf_off + self._pos

    @property
    def file_sha256(self) -> str:
        assert self._file_hash is not None, "GzipMembers(file_hash=True) computes the file hash"
        return self._file_hash.hexdigest()

    @property
    def prefix_sha256(self) -> str:
        assert self._prefix is not None, "GzipMembers(prefix_hash=True) computes the prefix hash"
        return self._prefix.hexdigest()

    def accept(self) -> None:
        """The member just read is good: extend the accepted prefix's hash with it."""
        self._prefix = self._pending

    def close(self) -> None:
        if self._file_hash is not None:
            self._file_hash.close()

    def _hash(self, offset: int, data: bytes) -> None:
        """Add bytes read at ``offset`` to the file hash, skipping any re-read after a resync."""
        if self._file_hash is not None and offset + len(data) > self._hashed_upto:
            self._file_hash.update(memoryview(data)[max(0, self._hashed_upto - offset) :])
            self._hashed_upto = offset + len(data)

    def drain(self) -> None:
        """Read (and hash) whatever of the file has not been read yet."""
        offset = self._buf_off + len(self._buf)
        while data := self._f.read(READ_SIZE):
            self._hash(offset, data)
            offset += len(data)
        self._buf, self._pos, self._buf_off = b"", 0, offset

    def _more(self) -> bool:
        """Read the next chunk after what is buffered (keeping the unread rest); False at end of file."""
        data = self._f.read(READ_SIZE)
        if not data:
            return False
        self._hash(self._buf_off + len(self._buf), data)
        rest = self._buf[self._pos :]
        self._buf_off += self._pos
        self._buf = rest + data if rest else data
        self._pos = 0
        return True

    def seek(self, offset: int) -> None:
        if self._buf_off <= offset <= self._buf_off + len(self._buf):
            self._pos = offset - self._buf_off
            return
        self._f.seek(offset)
        self._buf, self._pos, self._buf_off = b"", 0, offset

    def next_member(self, sink: Callable[[bytes], None]) -> Member | None:
        """Inflate the member at the current position into ``sink``; None at end of file."""
        start = self.tell()
        if self._pos >= len(self._buf) and not self._more():
            return None
        inflater = zlib.decompressobj(31)
        pending = self._pending = None if self._prefix is None else self._prefix.copy()
        piece_size = FIRST_PIECE
        used_total = 0
        while True:
            if self._pos >= len(self._buf) and not self._more():
                return Member(start, used_total, TRUNCATED)
            piece = memoryview(self._buf)[self._pos : self._pos + piece_size]
            try:
                out = inflater.decompress(piece, OUT_MAX)
                while True:
                    if out:
                        sink(out)
                    if inflater.eof or not inflater.unconsumed_tail:
                        break
                    out = inflater.decompress(inflater.unconsumed_tail, OUT_MAX)
            except zlib.error as exc:
                return Member(start, used_total, BAD_GZIP, str(exc))
            used = len(piece) - len(inflater.unused_data) if inflater.eof else len(piece)
            if pending is not None:
                pending.update(piece[:used])
            self._pos += used
            used_total += used
            if inflater.eof:
                return Member(start, used_total, MEMBER_OK)
            piece_size = min(piece_size * 2, READ_SIZE)

    def resync(self, offset: int) -> bool:
        """Move to the first gzip magic number at or after ``offset``; False if there is none."""
        self.seek(offset)
        while True:
            i = self._buf.find(GZIP_MAGIC, self._pos)
            if i >= 0:
                self._pos = i
                return True
            self._pos = max(self._pos, len(self._buf) - (len(GZIP_MAGIC) - 1))
            if not self._more():
                return False


class RecordParser:
    """Push parser for the one WARC record inside a gzip member (WARC 1.1 §4): header, block, CRLF CRLF."""

    def __init__(self, *, digests: bool = True) -> None:
        self._digests = digests
        self._head = bytearray()
        self.headers: list[tuple[str, str]] | None = None
        self.fields: dict[str, str] = {}  # lower-cased name -> first value
        self.header_error: str | None = None
        self.content_length = 0
        self.after_head = 0  # bytes inflated after the header's blank line
        self._trailer = bytearray()
        self.check: DigestPass | None = None

    def feed(self, data: bytes) -> None:
        if self.headers is not None:
            self._feed_body(data)
            return
        if self.header_error is not None:
            return  # nothing more to learn from this member; it is still inflated to check its framing
        if not self._head:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self._start_body(data[:end], memoryview(data)[end + 4 :])
                return
            self._head += data
        else:
            searched = len(self._head)
            self._head += data
            end = self._head.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                head, rest = bytes(self._head[:end]), self._head[end + 4 :]
                self._head = bytearray()
                self._start_body(head, memoryview(rest))
                return
        if len(self._head) > MAX_HEAD:
            self.header_error = f"no end of WARC header in the first {MAX_HEAD} bytes"
            self._head = bytearray()

    def _start_body(self, head: bytes, rest: memoryview) -> None:
        self._parse_head(head)
        if self.headers is not None:
            self._feed_body(rest)

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("utf-8", "replace").split("\r\n")
        if not lines[0].startswith("WARC/"):
            self.header_error = f"first line is {lines[0][:40]!r}, not a WARC version"
            return
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # WARC 1.1 §4: folded continuation line
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {line.strip()}")
                continue
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name.rstrip()):
                self.header_error = f"malformed WARC header line {line[:60]!r}"
                return
            headers.append((name.strip(), value.strip()))
        fields: dict[str, str] = {}
        for name, value in headers:
            fields.setdefault(name.lower(), value)
        length = fields.get("content-length")
        if length is None or not (length.isascii() and length.isdigit()):
            self.header_error = f"Content-Length is {length!r}"
            return
        self.content_length = int(length)
        self.headers, self.fields = headers, fields
        if self._digests:
            rtype = fields.get("warc-type")
            has_payload = rtype in PAYLOAD_RECORD_TYPES or (rtype != REVISIT and "warc-payload-digest" in fields)
            ctype = fields.get("content-type", "")
            self.check = DigestPass(payload=has_payload, http=is_http_block(ctype))

    def _feed_body(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        block_left = self.content_length - self.after_head
        if block_left > 0 and self.check is not None:
            self.check.update(view[:block_left])
        if len(view) > block_left and len(self._trailer) < 4:
            start = max(block_left, 0)
            self._trailer += view[start : start + 4 - len(self._trailer)]
        self.after_head += len(view)

    @property
    def complete(self) -> bool:
        """The whole block and exactly the closing CRLF CRLF arrived (nothing more)."""
        return self.headers is not None and self.after_head == self.content_length + 4 and self._trailer == b"\r\n\r\n"


def _digest_problems(offset: int, rid: str | None, parser: RecordParser) -> list[RecordProblem]:
    headers, check = parser.headers, parser.check
    assert headers is not None and check is not None
    problems: list[RecordProblem] = []
    wanted = [("WARC-Block-Digest", BLOCK_DIGEST, check.block_hex())]
    fields = parser.fields
    label = fields.get("warc-payload-digest")
    payload = check.payload_hex()
    if label is not None and payload is not None:
        wanted.append(("WARC-Payload-Digest", PAYLOAD_DIGEST, payload))
    for name, kind, found in wanted:
        label = fields.get(name.lower())
        if label is None:
            problems.append(RecordProblem(offset, rid, MISSING_DIGEST, name, None))
            continue
        try:
            expected = Digest.parse(label)
        except ValueError:
            problems.append(RecordProblem(offset, rid, UNSUPPORTED_DIGEST, f"{name}: sha256:<hex>", label))
            continue
        if expected.hex != found:
            problems.append(RecordProblem(offset, rid, kind, str(expected), str(Digest(found))))
    return problems


def _walk(members: GzipMembers, *, digests: bool) -> Iterator[StoredRecord | RecordProblem]:
    """Records (with their own problems) and the problems that belong to no readable record."""
    damaged = False  # inside a stretch of unreadable bytes: report it once, not at every false gzip magic
    while True:
        parser = RecordParser(digests=digests)
        member = members.next_member(parser.feed)
        if member is None:
            return
        headers = parser.headers
        rid = parser.fields.get("warc-record-id")
        problems: list[RecordProblem] = []
        if member.status == BAD_GZIP:
            if not damaged or headers is not None:
                problems.append(RecordProblem(member.offset, rid, BAD_GZIP, "a valid gzip member", member.error))
            damaged = True
        elif member.status == TRUNCATED:
            found = f"file ends {member.length} bytes into the gzip member"
            problems.append(RecordProblem(member.offset, rid, TRUNCATED, "a complete gzip member", found))
        elif headers is None:
            found = parser.header_error or "no end of WARC header"
            problems.append(RecordProblem(member.offset, None, BAD_HEADER, "a WARC header", found))
        elif not parser.complete:
            # One record per member: anything but block + CRLF CRLF means Content-Length is wrong.
            found = str(parser.after_head - 4)
            if parser.after_head == parser.content_length + 4:
                found = "block not followed by CRLF CRLF"
            expected = str(parser.content_length)
            problems.append(RecordProblem(member.offset, rid, CONTENT_LENGTH, expected, found))
        elif digests:
            problems.extend(_digest_problems(member.offset, rid, parser))
        if member.status != BAD_GZIP:
            damaged = False
        if headers is None:
            yield from problems
        else:
            # Digests of a block read only in part would describe bytes that are not the record.
            check = parser.check if member.status == MEMBER_OK and parser.complete else None
            yield StoredRecord(
                offset=member.offset,
                length=member.length,
                headers=tuple(headers),
                record_type=parser.fields.get("warc-type"),
                record_id=rid,
                target_uri=parser.fields.get("warc-target-uri"),
                content_length=parser.content_length,
                block_sha256=None if check is None else check.block_hex(),
                payload_sha256=None if check is None else check.payload_hex(),
                problems=tuple(problems),
            )
        if member.status == TRUNCATED or (member.status == BAD_GZIP and not members.resync(member.offset + 1)):
            return


def iter_records(path: Path | str, problems: list[RecordProblem] | None = None) -> Iterator[StoredRecord]:
    """Every readable record of a ``.warc.gz`` file, in order, each with its own ``problems``.

    Every problem (a record's own, and damage that belongs to no readable record) is appended to
    ``problems`` when a list is given; without one, damage that belongs to no record raises
    :class:`WarcError`, so that it is never silently skipped.
    """
    try:
        with open(path, "rb") as f:
            for item in _walk(GzipMembers(f), digests=True):
                if isinstance(item, RecordProblem):
                    if problems is None:
                        raise WarcError(f"{path}: {item}")
                    problems.append(item)
                    continue
                if problems is not None:
                    problems.extend(item.problems)
                yield item
    except OSError as exc:
        raise WarcError(f"cannot read {path}: {exc}") from exc


def scan_file(path: Path | str) -> FileCheck:
    """One pass over a file: its SHA-256 and size, the number of readable records and every problem."""
    problems: list[RecordProblem] = []
    records = 0
    try:
        with open(path, "rb") as f:
            members = GzipMembers(f, file_hash=True)
            try:
                for item in _walk(members, digests=True):
                    if isinstance(item, RecordProblem):
                        problems.append(item)
                    else:
                        records += 1
                        problems.extend(item.problems)
                members.drain()  # the walk reads to the end; this makes sure the hash covers every byte
                return FileCheck(str(path), members.file_sha256, members.tell(), records, tuple(problems))
            finally:
                members.close()
    except OSError as exc:
        raise WarcError(f"cannot read {path}: {exc}") from exc


def check_file(path: Path | str) -> list[RecordProblem]:
    """Every problem in a ``.warc.gz`` file (empty when all is well)."""
    problems: list[RecordProblem] = []
    for _ in iter_records(path, problems):
        pass
    return problems


def copy_record(src_path: Path | str, offset: int, length: int, dst: BinaryIO) -> None:
    """Copy one record's gzip member byte for byte (bundles keep original records, so digests still hold)."""
    try:
        with open(src_path, "rb") as src:
            src.seek(offset)
            left = length
            first = True
            while left > 0:
                chunk = src.read(min(left, READ_SIZE))
                if not chunk:
                    raise WarcError(f"{src_path} ends before offset {offset} + length {length}")
                if first and not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
                    raise WarcError(f"{src_path}: no gzip member starts at offset {offset}")
                first = False
                dst.write(chunk)
                left -= len(chunk)
    except OSError as exc:
        raise WarcError(f"cannot copy record at {offset} from {src_path}: {exc}") from exc
