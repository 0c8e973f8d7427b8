"""Records copied byte for byte, and the payloads wanted as files taken from them in the same pass.

A bundle WARC holds the original gzip members of the incident's records: a record's member is the unit the
receipts and digests describe, so it is copied unchanged (:func:`copy_members`). When a record's payload is
also wanted as a file of the bag (a video in its native format, a screenshot for the report), its compressed
bytes are inflated as they stream past the copy (:class:`PayloadTap`), so every byte of the original WARC
file is read once. The payload is what ``WARC-Payload-Digest`` covers (WARC 1.1 §5.9): for ``application/http``
blocks the entity after the HTTP head, found by the same :class:`DigestPass` rule the writer and reader use,
so the SHA-256 of the file written (computed by its :class:`HashingFile`) compares with the catalogue's
``payload_sha256``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import BinaryIO, Protocol

from archiver.bundle.streams import CHUNK, HashingFile
from archiver.errors import BundleError
from archiver.warc.block import DigestPass, is_http_block
from archiver.warc.reader import GZIP_MAGIC, OUT_MAX, RecordParser

VERIFY_HINT = "run 'archiver verify --deep' to find the damage"


class _PayloadSink:
    """Receives a member's inflated bytes: WARC head (parsed by :class:`RecordParser`), then the block, of
    which the payload part is written to every destination; the closing CRLF CRLF is dropped."""

    def __init__(self, dsts: Sequence[HashingFile]) -> None:
        self.dsts = dsts
        self.parser = RecordParser(digests=False)
        self.digest: DigestPass | None = None
        self.block_seen = 0
        self.written = 0

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
            # Only until the payload starts: the block digest is not needed here, the file's hash is the payload's.
            self.digest.update(view)
        begin = self.digest.payload_offset
        if begin is None or begin >= self.block_seen:
            return
        piece = view[max(begin - start, 0) :]
        for dst in self.dsts:
            dst.write(piece)
        self.written += len(piece)


def _has_head(parser: RecordParser) -> bool:
    """Whether the parser has read the whole WARC head (a function, so the check is re-read after ``feed``)."""
    return parser.headers is not None


class PayloadTap:
    """The payload of one record, written to new files (each empty so far) as its gzip member streams past."""

    def __init__(self, where: str, dsts: Sequence[HashingFile]) -> None:
        if any(d.tell() for d in dsts):
            raise ValueError("a payload goes into files of its own")
        self.where = where
        self.files = tuple(dsts)
        self._inflater = zlib.decompressobj(31)  # RFC 1952 gzip member
        self._sink = _PayloadSink(dsts)
        self._trailing = False

    def feed(self, data: bytes | memoryview) -> None:
        z = self._inflater
        if z.eof:
            self._trailing = self._trailing or bool(data)
            return
        try:
            out = z.decompress(data, OUT_MAX)  # bounded: a 1000:1 member never balloons in memory
            while True:
                if out:
                    self._sink.feed(out)
                if z.eof or not z.unconsumed_tail:
                    break
                out = z.decompress(z.unconsumed_tail, OUT_MAX)
        except zlib.error as exc:
            raise BundleError(f"{self.where}: bad gzip member: {exc}", hint=VERIFY_HINT) from exc

    def finish(self) -> int:
        """Check that one whole record went past; the number of payload bytes written."""
        z, sink = self._inflater, self._sink
        if not z.eof:
            raise BundleError(f"{self.where}: the gzip member ends before its end", hint=VERIFY_HINT)
        if z.unused_data or self._trailing:
            raise BundleError(f"{self.where}: more than one gzip member in the record's span", hint=VERIFY_HINT)
        if sink.parser.headers is None:
            raise BundleError(f"{self.where}: no complete WARC record to extract a payload from", hint=VERIFY_HINT)
        if sink.block_seen != sink.parser.content_length:
            raise BundleError(f"{self.where}: record block is shorter than its Content-Length", hint=VERIFY_HINT)
        return sink.written

    def abort(self) -> None:
        """Close the files of a tap whose record will not be complete (the export fails)."""
        for f in self.files:
            f.abort()


class Span(Protocol):
    """A record of a copied span whose payload is wanted: where its member lies in the source file, how to
    start its :class:`PayloadTap` (when the copy reaches it, so one tap at a time is open) and what to do with
    it when its last byte has gone past."""

    offset: int
    length: int

    def open(self) -> PayloadTap: ...

    def done(self, tap: PayloadTap) -> None: ...


def copy_members(
    src: BinaryIO, name: str, start: int, length: int, out: HashingFile, spans: Sequence[Span] = ()
) -> None:
    """Copy ``length`` bytes of whole gzip members starting at ``start`` (one record, or several adjacent) from
    ``src`` to ``out``, feeding the tap of each span the bytes of its record (``spans`` sorted by offset, not
    overlapping, inside the copied range)."""
    tap: PayloadTap | None = None
    try:
        src.seek(start)
        pos, end, i = start, start + length, 0
        while pos < end:
            chunk = src.read(min(CHUNK, end - pos))
            if not chunk:
                raise BundleError(f"{name} ends at offset {pos}, inside the records at {start} + {length}",
                                  hint=VERIFY_HINT)  # fmt: skip
            if pos == start and not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
                raise BundleError(f"{name}: no gzip member starts at offset {start}", hint=VERIFY_HINT)
            out.write(chunk)
            stop = pos + len(chunk)
            view = memoryview(chunk)
            while i < len(spans) and spans[i].offset < stop:
                span = spans[i]
                if tap is None:
                    tap = span.open()
                tap.feed(view[max(span.offset, pos) - pos : min(span.offset + span.length, stop) - pos])
                if span.offset + span.length > stop:
                    break
                done, tap = tap, None
                span.done(done)
                i += 1
            pos = stop
        if i != len(spans):
            raise BundleError(f"{name}: a record to extract lies outside the records copied at {start} + {length}")
    except OSError as exc:
        raise BundleError(f"cannot copy records from {name}: {exc.strerror or exc}") from exc
    finally:
        if tap is not None:
            tap.abort()
