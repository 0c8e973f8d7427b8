"""Helpers for the WARC writer, reader and repair tests: record specs, sinks, member surgery, warcio runs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from archiver.clock import FixedClock, SequentialIds
from archiver.warc.block import block_from_bytes
from archiver.warc.records import (
    HTTP_REQUEST_TYPE,
    HTTP_RESPONSE_TYPE,
    METADATA,
    REQUEST,
    RESOURCE,
    RESPONSE,
    ClosedWarc,
    RecordSpec,
)
from archiver.warc.writer import WarcSink

BIN = Path(sys.executable).parent


def make_sink(directory: Path, closed: list[ClosedWarc] | None = None, **kwargs: object) -> WarcSink:
    return WarcSink(
        directory,
        prefix="test",
        clock=FixedClock(),
        ids=SequentialIds(),
        host="testhost",
        on_close=None if closed is None else closed.append,
        **kwargs,  # type: ignore[arg-type]
    )


def response_head(body_len: int, ctype: str = "application/octet-stream") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {body_len}\r\n\r\n".encode()


def http_pair(sink: WarcSink, url: str, body: bytes) -> list[RecordSpec]:
    """A request/response pair linked by WARC-Concurrent-To, as the web capturer writes them."""
    response_id = sink.new_record_id()
    host = url.split("/")[2]
    request = block_from_bytes(b"", head=f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = block_from_bytes(body, head=response_head(len(body)))
    return [
        RecordSpec(
            REQUEST,
            request,
            HTTP_REQUEST_TYPE,
            url,
            headers=(("WARC-Concurrent-To", response_id), ("WARC-IP-Address", "127.0.0.1")),
        ),
        RecordSpec(
            RESPONSE,
            response,
            HTTP_RESPONSE_TYPE,
            url,
            record_id=response_id,
            headers=(("WARC-IP-Address", "127.0.0.1"),),
        ),
    ]


def resource(body: bytes, uri: str, ctype: str = "video/mp4") -> RecordSpec:
    return RecordSpec(RESOURCE, block_from_bytes(body), ctype, uri)


def metadata(text: str, uri: str, refers_to: str | None = None) -> RecordSpec:
    headers = () if refers_to is None else (("WARC-Refers-To", refers_to),)
    return RecordSpec(
        METADATA,
        block_from_bytes(text.encode(), has_payload=False),
        "application/warc-fields",
        uri,
        headers=headers,
    )


def body(n: int, seed: int = 0) -> bytes:
    """Half random (incompressible), half text (compressible) bytes."""
    rnd = random.Random(seed)
    half = n // 2
    text = b"evidence " * (n // 9 + 1)
    return rnd.randbytes(half) + text[: n - half]


def members(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every gzip member in ``data`` (which must be well formed)."""
    out = []
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        assert d.eof
        length = len(data) - pos - len(d.unused_data)
        out.append((pos, length))
        pos += length
    return out


def inflate(member: bytes) -> bytes:
    return zlib.decompress(member, 31)


def deflate(record: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(record) + c.flush()


def rewrite_record(data: bytes, index: int, change: Callable[[bytes], bytes]) -> tuple[bytes, int]:
    """Replace member ``index`` by a well-framed member holding ``change(record)``; returns (data, offset)."""
    offset, length = members(data)[index]
    new = deflate(change(inflate(data[offset : offset + length])))
    return data[:offset] + new + data[offset + length :], offset


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def warcio_check(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "warcio"), "check", "-v", str(path)], capture_output=True, text=True, timeout=60)


def cdxj_index(path: Path | str) -> list[str]:
    run = subprocess.run([str(BIN / "cdxj-indexer"), str(path)], capture_output=True, text=True, timeout=60, check=True)
    return [line for line in run.stdout.splitlines() if line.strip()]


def mode(path: Path | str) -> int:
    return os.stat(path).st_mode & 0o777
