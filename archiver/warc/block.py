"""A WARC record block, spooled to disk and hashed in the same pass that writes it.

WARC 1.1 §5.9 and §5.10: the block digest covers the whole block (for an HTTP response: status line, headers
and entity); the payload digest covers the entity only. Both headers precede the block in the record, so the
block is spooled first (memory up to ``SPOOL_MEMORY`` bytes, then a temporary file) while both SHA-256 digests
are computed, and the sink copies the spool into the WARC afterwards, hashing again as it copies so that the
digest it writes is always one computed from the bytes it stored.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

SPOOL_MEMORY = 1 << 20
CHUNK = 1 << 16


@dataclass(frozen=True)
class Digest:
    """A SHA-256 digest. ``str()`` gives the WARC header form ``sha256:<lowercase hex>``."""

    hex: str

    def __str__(self) -> str:
        return f"sha256:{self.hex}"

    @classmethod
    def parse(cls, label: str) -> Digest:
        algo, _, value = label.partition(":")
        if algo.lower() != "sha256" or len(value) != 64:
            raise ValueError(f"not a sha256 digest label: {label!r}")
        return cls(value.lower())


class Block:
    """A finished block: bytes in a spool, their length and digests. Read it with :meth:`chunks`."""

    def __init__(
        self,
        spool: IO[bytes],
        length: int,
        block_digest: Digest,
        payload_digest: Digest | None,
        payload_offset: int,
        payload_length: int,
    ) -> None:
        self._spool = spool
        self.length = length
        self.block_digest = block_digest
        self.payload_digest = payload_digest
        self.payload_offset = payload_offset
        self.payload_length = payload_length

    def chunks(self, start: int = 0) -> Iterator[bytes]:
        self._spool.seek(start)
        while True:
            chunk = self._spool.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def payload_chunks(self) -> Iterator[bytes]:
        return self.chunks(self.payload_offset)

    def read_head(self) -> bytes:
        """The bytes before the payload (HTTP status line and headers), usually small."""
        self._spool.seek(0)
        return self._spool.read(self.payload_offset)

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> Block:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockBuilder:
    """Write a block's head (if any) then its payload in chunks; both digests are computed as bytes arrive.

    >>> b = BlockBuilder(); b.write_head(b"HTTP/1.1 200 OK\\r\\n\\r\\n"); b.write_payload(b"hi")
    >>> blk = b.finish(); blk.length
    21
    """

    def __init__(self, *, has_payload: bool = True) -> None:
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        self._block = hashlib.sha256()
        self._payload = hashlib.sha256() if has_payload else None
        self._length = 0
        self._payload_offset = 0
        self._payload_started = False
        self._finished = False

    def write_head(self, data: bytes) -> None:
        if self._payload_started:
            raise RuntimeError("head written after payload")
        self._write(data)
        self._payload_offset = self._length

    def write_payload(self, data: bytes) -> None:
        self._payload_started = True
        self._write(data)
        if self._payload is not None:
            self._payload.update(data)

    def _write(self, data: bytes) -> None:
        if self._finished:
            raise RuntimeError("block already finished")
        self._spool.write(data)
        self._block.update(data)
        self._length += len(data)

    @property
    def payload_length(self) -> int:
        return self._length - self._payload_offset

    def finish(self) -> Block:
        self._finished = True
        self._spool.flush()
        return Block(
            self._spool,
            self._length,
            Digest(self._block.hexdigest()),
            Digest(self._payload.hexdigest()) if self._payload is not None else None,
            self._payload_offset,
            self._length - self._payload_offset,
        )

    def abort(self) -> None:
        self._finished = True
        self._spool.close()


def block_from_bytes(data: bytes, *, head: bytes = b"", has_payload: bool = True) -> Block:
    b = BlockBuilder(has_payload=has_payload)
    if head:
        b.write_head(head)
    b.write_payload(data)
    return b.finish()


def block_from_file(path: str, *, head: bytes = b"") -> Block:
    """Spool a local file (yt-dlp output, a screenshot) into a block, hashing as it is read."""
    b = BlockBuilder()
    if head:
        b.write_head(head)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            b.write_payload(chunk)
    return b.finish()


# Record types whose WARC-Payload-Digest covers a payload (WARC 1.1 §5.9: response, resource, conversion; a
# request block has a payload too when it carries a body). A revisit's payload digest names the *original*
# payload, so it is never recomputed from the revisit's own block.
PAYLOAD_RECORD_TYPES = frozenset({"response", "resource", "conversion", "request"})


def is_http_block(content_type: str) -> bool:
    """``application/http`` blocks (WARC 1.1 §6.3) carry an HTTP head before their payload."""
    return content_type.split(";", 1)[0].strip().lower() == "application/http"


def _http_head_end(window: bytes) -> int:
    """Index just past the first empty line (``LF LF`` or ``LF CR LF``) in ``window``, or -1."""
    lf = window.find(b"\n\n")
    crlf = window.find(b"\n\r\n")
    if lf < 0:
        return -1 if crlf < 0 else crlf + 3
    if crlf < 0 or lf < crlf:
        return lf + 2
    return crlf + 3


class DigestPass:
    """Recompute a block's SHA-256 digests from its bytes as they stream past, in one pass.

    The writer runs this over the bytes it copies into the WARC and the reader over the bytes it decompresses,
    so both apply one rule. For ``application/http`` blocks the payload starts after the first empty line of
    the HTTP head (RFC 9112 §2.1), as warcio and pywb read it; the entity is hashed as stored (still chunked
    or compressed if it was so transferred). For other blocks the payload is the whole block.
    """

    def __init__(self, *, payload: bool, http: bool) -> None:
        self._block = hashlib.sha256()
        self._payload = hashlib.sha256() if payload and http else None
        self._payload_is_block = payload and not http
        self._searching = payload and http
        # A virtual LF before the block lets an empty first line end the head, as it would for warcio.
        self._tail = b"\n"
        self.length = 0
        self.payload_offset: int | None = 0 if self._payload_is_block else None

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._block.update(view)
        if self._searching:
            window = self._tail + bytes(view)
            end = _http_head_end(window)
            if end < 0:
                self._tail = window[-2:]
            else:
                start = end - len(self._tail)
                self._searching = False
                self.payload_offset = self.length + start
                assert self._payload is not None
                self._payload.update(view[start:])
        elif self._payload is not None:
            self._payload.update(view)
        self.length += len(view)

    def block_hex(self) -> str:
        return self._block.hexdigest()

    def payload_hex(self) -> str | None:
        """The payload digest, or None when the record type has no payload. A head that never ends leaves
        an empty payload."""
        if self._payload_is_block:
            return self._block.hexdigest()
        return None if self._payload is None else self._payload.hexdigest()
