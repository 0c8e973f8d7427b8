"""CDXJ index lines for a WACZ (the format pywb and ReplayWeb.page look records up in).

A line is ``<SURT url key> <14-digit timestamp> <JSON>`` with the JSON giving the record's URL, media type,
HTTP status, payload digest, and its place (``filename``, ``offset``, ``length`` of its gzip member); lines
are sorted as plain byte strings so that a reader can binary-search them.

The URL key is the SURT form produced by the Internet Archive's default canonicalisation (what pywb applies to
every URL it is asked for), implemented here for http(s) URLs: host lower-cased without a leading ``www``/
``wwwN.``, labels reversed and joined by commas, the default port dropped, path and query lower-cased, query
arguments sorted, the fragment dropped, a trailing slash dropped (except the root). The ``surt`` package
itself is AGPL-licensed and is not a dependency; a test compares both on a set of URLs.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

_WWW = re.compile(r"^www\d*\.")
_DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_BYTES = 1 << 16


def surt_key(url: str) -> str:
    """The SURT url key of an http(s) URL (see the module docstring); other URLs are returned lower-cased."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.lower()
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return url.lower()
    host = _WWW.sub("", parts.hostname.lower())
    # The surt package reverses the labels of IP addresses too (127.0.0.1 -> 1,0,0,127); pywb looks keys up so.
    key = ",".join(reversed(host.strip(".").split(".")))
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        key += f":{port}"
    path = parts.path.lower() or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    query = parts.query.lower()
    if query:
        args = sorted(tuple(a.split("=", 1)) for a in query.split("&"))
        query = "&".join("=".join(a) for a in args)
    return f"{key}){path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Head:
    """What an index line needs from a record's first bytes: WARC date, HTTP status and content type."""

    warc_date: str | None
    status: str | None
    mime: str | None


def read_head(path: Path, offset: int) -> Head:
    """Inflate just the beginning of the gzip member at ``offset``: enough for the WARC and HTTP heads."""
    with path.open("rb") as f:
        f.seek(offset)
        raw = f.read(HEAD_BYTES)
    data = zlib.decompressobj(31).decompress(raw, HEAD_BYTES)
    head, _, block = data.partition(b"\r\n\r\n")
    fields: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    status = mime = None
    if fields.get("content-type", "").startswith("application/http"):
        http_head = block.split(b"\r\n\r\n", 1)[0].decode("iso-8859-1").split("\r\n")
        first = http_head[0].split(" ")
        status = first[1] if len(first) > 1 and first[1].isdigit() else None
        for line in http_head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                mime = value.split(";")[0].strip().lower()
                break
    else:
        mime = fields.get("content-type", "").split(";")[0].strip().lower() or None
        status = "200"
    return Head(fields.get("warc-date"), status, mime)


def timestamp14(warc_date: str) -> str:
    """``2026-11-01T12:00:00.123456Z`` -> ``20261101120000``."""
    digits = re.sub(r"\D", "", warc_date)
    return digits[:14].ljust(14, "0")


def cdxj_line(url: str, head: Head, *, digest: str | None, filename: str, offset: int, length: int) -> str:
    fields: dict[str, str] = {"url": url}
    if head.mime:
        fields["mime"] = head.mime
    if head.status:
        fields["status"] = head.status
    if digest:
        fields["digest"] = f"sha256:{digest}"
    fields.update({"length": str(length), "offset": str(offset), "filename": filename})
    return f"{surt_key(url)} {timestamp14(head.warc_date or '')} {json.dumps(fields, sort_keys=True)}"


def sorted_index(lines: Iterable[str]) -> bytes:
    return "".join(line + "\n" for line in sorted(lines, key=lambda s: s.encode("utf-8"))).encode("utf-8")
