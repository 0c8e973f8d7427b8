"""Values that cross the WARC seam: what a capturer asks the sink to write, and where it landed.

Capturers (web fetcher, yt-dlp media, browser) build :class:`RecordSpec` values; the sink
(:mod:`archiver.warc.writer`) writes them and returns :class:`RecordRef` values that the catalogue stores as
artifacts. Neither side knows the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from archiver.warc.block import Block, Digest

# WARC 1.1 §6: record types we write.
WARCINFO = "warcinfo"
REQUEST = "request"
RESPONSE = "response"
RESOURCE = "resource"
METADATA = "metadata"
CONVERSION = "conversion"
REVISIT = "revisit"

HTTP_REQUEST_TYPE = "application/http;msgtype=request"
HTTP_RESPONSE_TYPE = "application/http;msgtype=response"


@dataclass(frozen=True)
class RecordSpec:
    """One record to write.

    ``record_id`` may be preassigned (``<urn:uuid:...>``) so that records of one group can refer to each other
    (``WARC-Concurrent-To``, ``WARC-Refers-To``) before they are written. ``headers`` are extra WARC named
    fields in order (``WARC-IP-Address``, ``WARC-Truncated``, ``WARC-Refers-To``, ...). The sink adds
    ``WARC-Record-ID`` (if not preassigned), ``WARC-Date``, ``WARC-Type``, ``WARC-Target-URI``,
    ``WARC-Warcinfo-ID``, ``Content-Type``, ``Content-Length``, ``WARC-Block-Digest`` and, when the block has
    one, ``WARC-Payload-Digest``.
    """

    type: str
    block: Block
    content_type: str
    target_uri: str | None = None
    record_id: str | None = None
    date: datetime | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RecordRef:
    """Where a record was written and what it holds. ``offset``/``length`` delimit its gzip member."""

    record_id: str
    record_type: str
    target_uri: str | None
    warc_file: str  # final file name (never the ``.open`` name)
    offset: int
    length: int
    date: datetime
    content_type: str
    content_length: int
    block_digest: Digest
    payload_digest: Digest | None
    payload_length: int
    headers: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class ClosedWarc:
    """A WARC file that was closed: fsynced, renamed from ``*.open`` and made read-only."""

    name: str
    path: str
    sha256: str
    size: int
    opened_at: datetime
    closed_at: datetime
    records: int
