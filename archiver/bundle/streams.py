"""Byte streams of a bundle: files hashed while they are written, records copied, payloads extracted.

Every payload file of a bag is written through a :class:`HashingFile`, which computes its SHA-256 and SHA-512
in the same pass (RFC 8493 §2.1.3 manifests), so the bag's manifests never need a second read of 2 GB of
WARC data. Records are copied byte for byte (:func:`archiver.warc.reader.copy_record`): a record's gzip member
is the unit the receipts and digests describe. A media file is the *payload* of its record, streamed out of the
gzip member in constant memory and checked against the digest the catalogue holds before it is accepted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from archiver.errors import BundleError, WarcError
from archiver.warc.block import DigestPass, is_http_block
from archiver.warc.reader import MEMBER_OK, GzipMembers, RecordParser, copy_record

CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120


def safe_name(text: str, *, limit: int = MAX_NAME) -> str:
    """A path component made from one of our ids: ASCII letters, digits, ``.``, ``_`` and ``-`` only, never
    ``.``/``..`` or a hidden name, at most ``limit`` characters. Anything else becomes ``_``."""
    name = _UNSAFE.sub("_", text).strip("._") or "_"
    return name[:limit]


@dataclass(frozen=True)
class FileDigests:
    path: str  # relative to the bag root, with forward slashes
    size: int
    sha256: str
    sha512: str


class _Digests:
    """SHA-256 and SHA-512 updated on one worker thread (``hashlib`` releases the GIL on large buffers), so that
    hashing overlaps reading and writing on the caller's thread; at most a few chunks wait in the queue, so
    memory stays constant. Small writes are hashed inline: a thread hop would cost more than the hash."""

    INLINE = 1 << 16

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha512 = hashlib.sha512()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bundle-hash")
        self._queue: deque[Future[None]] = deque()

    def _both(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        self.sha512.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) < self.INLINE and not self._queue:
            self._both(data)
            return
        self._queue.append(self._pool.submit(self._both, bytes(data)))
        while len(self._queue) > 4:
            self._queue.popleft().result()

    def finish(self) -> tuple[str, str]:
        while self._queue:
            self._queue.popleft().result()
        self._pool.shutdown(wait=True)
        return self.sha256.hexdigest(), self.sha512.hexdigest()


class HashingFile:
    """A new file (never an existing one) whose SHA-256 and SHA-512 are computed as it is written."""

    def __init__(self, root: Path, relative: str) -> None:
        self.relative = relative
        self.path = root / relative
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._f: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise BundleError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        self._hashes = _Digests()
        self.size = 0
        self._digests: FileDigests | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._f.write(data)
        self._hashes.update(data)
        n = len(data)
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def close(self) -> FileDigests:
        if self._digests is None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            sha256, sha512 = self._hashes.finish()
            self._digests = FileDigests(self.relative, self.size, sha256, sha512)
        return self._digests

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._digests is None:
            self._f.close()
            self._hashes.finish()


def write_bytes(root: Path, relative: str, data: bytes) -> FileDigests:
    with HashingFile(root, relative) as f:
        f.write(data)
        return f.close()


def copy_span(src: Path, offset: int, length: int, dst: HashingFile) -> None:
    """Copy ``length`` bytes of whole gzip members starting at ``offset`` (one record, or several adjacent)."""
    try:
        copy_record(src, offset, length, dst)  # type: ignore[arg-type]  # HashingFile writes like a BinaryIO
    except WarcError as exc:
        raise BundleError(f"cannot copy records from {src.name}: {exc.message}") from exc


@dataclass(frozen=True)
class ExtractedPayload:
    size: int
    sha256: str  # of the bytes written: the record's payload as stored


def extract_payload(src: Path, offset: int, dst: HashingFile | BinaryIO) -> ExtractedPayload:
    """Stream the payload of the record whose gzip member starts at ``offset`` into ``dst``.

    The payload is what ``WARC-Payload-Digest`` covers (WARC 1.1 §5.9): for ``application/http`` blocks the
    entity after the HTTP head, found by the same :class:`DigestPass` rule the writer and reader use, so the
    digest of the bytes written here is comparable with the catalogue's ``payload_sha256``.
    """
    state = _PayloadSink(dst)
    try:
        with open(src, "rb") as f:
            members = GzipMembers(f)
            members.seek(offset)
            member = members.next_member(state.feed)
    except OSError as exc:
        raise BundleError(f"cannot read {src}: {exc.strerror or exc}") from exc
    if member is None or member.status != MEMBER_OK or state.parser.headers is None:
        raise BundleError(f"{src.name} @ {offset}: no complete WARC record to extract a payload from")
    if state.block_seen != state.parser.content_length:
        raise BundleError(f"{src.name} @ {offset}: record block is shorter than its Content-Length")
    return ExtractedPayload(state.written, state.hash.hexdigest())


class _PayloadSink:
    """Receives a member's inflated bytes: WARC head (parsed by :class:`RecordParser`), then the block, of
    which the payload part is written out and hashed; the closing CRLF CRLF is dropped."""

    def __init__(self, dst: HashingFile | BinaryIO) -> None:
        self.dst = dst
        self.parser = RecordParser(digests=False)
        self.digest: DigestPass | None = None
        self.block_seen = 0
        self.written = 0
        self.hash = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        if self.parser.headers is None:
            before = self.parser.after_head
            self.parser.feed(data)
            if not _has_head(self.parser):
                return
            # The parser has consumed the head; what it counted after the head is the start of the block.
            rest = self.parser.after_head - before
            data = data[len(data) - rest :] if rest else b""
            ctype = self.parser.fields.get("content-type", "")
            self.digest = DigestPass(payload=True, http=is_http_block(ctype))
        self._block(data)

    def _block(self, data: bytes) -> None:
        assert self.digest is not None
        left = self.parser.content_length - self.block_seen
        view = memoryview(data)[: max(left, 0)]
        if not view:
            return
        start = self.block_seen
        self.block_seen += len(view)
        if self.digest.payload_offset is None:
            # Only until the payload starts: the block digest is not needed here, the payload's is taken below.
            self.digest.update(view)
        begin = self.digest.payload_offset
        if begin is None or begin >= self.block_seen:
            return
        piece = view[max(begin - start, 0) :]
        self.dst.write(piece)
        self.hash.update(piece)
        self.written += len(piece)


def _has_head(parser: RecordParser) -> bool:
    """Whether the parser has read the whole WARC head (a function, so the check is re-read after ``feed``)."""
    return parser.headers is not None
