"""The payload files of a bundle besides the records (:mod:`archiver.bundle.records`): media index, receipts,
timestamps and custody segment.

Each writer takes the bag root and plain values (:mod:`archiver.bundle.contents`, :mod:`archiver.bundle.segment`)
and returns the :class:`FileDigests` of what it wrote. JSON files are written with sorted keys and fixed
indentation, receipts and statements as the exact canonical bytes that were signed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from archiver.bundle import layout
from archiver.bundle.contents import IncidentContents, MediaEntry, RecordEntry, TokenEntry
from archiver.bundle.segment import Segment
from archiver.bundle.streams import FileDigests, Syncer, safe_name, write_bytes
from archiver.canonical import canonical_json
from archiver.clock import utc_iso
from archiver.errors import BundleError
from archiver.integrity.batches import checkpoint_statement


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _extension(entry: RecordEntry) -> str:
    mtype = (entry.media_type or "").split(";", 1)[0].strip().lower()
    if mtype in layout.EXTENSIONS:
        return layout.EXTENSIONS[mtype]
    suffix = PurePosixPath((entry.target_uri or "").split("?", 1)[0]).suffix.lstrip(".").lower()
    return suffix if re.fullmatch(r"[a-z0-9]{1,5}", suffix) else "bin"


@dataclass(frozen=True)
class MediaFile:
    media: MediaEntry
    record: RecordEntry
    path: str
    sha256: str
    size: int


def plan_media(contents: IncidentContents) -> list[tuple[MediaEntry, RecordEntry, str]]:
    """Each stored media item, its record and its path in the bag (``<platform>-<item id>-<format>.<ext>``)."""
    by_id = {r.record_id: r for r in contents.records}
    incident = safe_name(str(contents.incident["id"]), limit=80)
    planned: list[tuple[MediaEntry, RecordEntry, str]] = []
    used: set[str] = set()
    for m in contents.media:
        record = by_id.get(m.record_id or "")
        if record is None:
            continue  # a media item whose file was not stored (too large, failed): nothing to extract
        stem = "-".join(safe_name(p, limit=60) for p in (m.platform, m.item_id, m.format_id or "file"))
        name = f"{layout.MEDIA_DIR}/{incident}/{stem}.{_extension(record)}"
        n = 2
        while name in used:
            name = f"{layout.MEDIA_DIR}/{incident}/{stem}-{n}.{_extension(record)}"
            n += 1
        used.add(name)
        planned.append((m, record, name))
    return planned


def write_media_index(
    root: Path,
    planned: list[tuple[MediaEntry, RecordEntry, str]],
    extracted: Mapping[str, FileDigests],
    syncer: Syncer | None = None,
) -> tuple[list[FileDigests], list[MediaFile]]:
    """Check each extracted media file against the catalogue's digests, then write ``media.json``."""
    digests: list[FileDigests] = []
    files: list[MediaFile] = []
    for m, record, name in planned:
        got = extracted[name]
        for label, want in (("media item", m.sha256), ("record payload", record.payload_sha256)):
            if want is not None and want != got.sha256:
                raise BundleError(
                    f"media {m.platform}:{m.item_id}: extracted payload sha256:{got.sha256} differs from the "
                    f"{label} digest sha256:{want} (record {record.record_id})",
                    hint="run 'archiver verify --deep' to find the damage",
                )
        digests.append(got)
        files.append(MediaFile(m, record, name, got.sha256, got.size))
    index = [
        {
            "file": f.path,
            "record": f.record.record_id,
            "sha256": f.sha256,
            "size": f.size,
            "platform": f.media.platform,
            "item_id": f.media.item_id,
            "format": f.media.format_id,
            "title": f.media.title,
            "capture": f.media.capture_id,
            "source": f.media.source_id,
        }
        for f in files
    ]
    digests.append(write_bytes(root, layout.MEDIA_INDEX, json_bytes(index), syncer))
    return digests, files


def write_receipts(root: Path, contents: IncidentContents, syncer: Syncer | None = None) -> list[FileDigests]:
    digests: list[FileDigests] = []
    index = []
    for r in contents.receipts:
        digests.append(write_bytes(root, layout.receipt_file(r.capture_id), r.canonical, syncer))
        digests.append(write_bytes(root, layout.receipt_signature_file(r.capture_id), r.signature, syncer))
        index.append(
            {"capture": r.capture_id, "sha256": r.sha256, "key_id": r.key_id, "record": r.record_id,
             "batch": r.batch_id, "leaf_index": r.leaf_index, "merkle_path": list(r.merkle_path),
             "file": layout.receipt_file(r.capture_id), "signature": layout.receipt_signature_file(r.capture_id)}
        )  # fmt: skip
    digests.append(write_bytes(root, layout.RECEIPTS_INDEX, json_bytes(index), syncer))
    return digests


class _Tokens:
    """Token files and the certificate chains they were checked against, each chain written once."""

    def __init__(self, root: Path, syncer: Syncer | None) -> None:
        self.root = root
        self.syncer = syncer
        self.digests: list[FileDigests] = []
        self.chains: dict[str, str] = {}

    def write(self, stem: str, t: TokenEntry) -> dict[str, Any]:
        path = f"{layout.TIMESTAMPS_DIR}/{stem}.token-{t.id}.tsr"
        self.digests.append(write_bytes(self.root, path, t.token_der, self.syncer))
        chain = t.certificates.encode("ascii")
        key = hashlib.sha256(chain).hexdigest()
        if key not in self.chains:
            self.chains[key] = f"{layout.TSA_DIR}/{safe_name(t.tsa_name, limit=60)}-{key[:12]}.pem"
            self.digests.append(write_bytes(self.root, self.chains[key], chain, self.syncer))
        return {"file": path, "tsa": t.tsa_name, "digest": t.digest, "gen_time": utc_iso(t.gen_time),
                "certificates": self.chains[key]}  # fmt: skip


def write_timestamps(
    root: Path, contents: IncidentContents, segment: Segment, syncer: Syncer | None = None
) -> list[FileDigests]:
    from archiver.integrity.batches import batch_statement

    tokens = _Tokens(root, syncer)
    batches = []
    for b in contents.batches:
        stem = f"batch-{b.id}"
        statement = f"{layout.TIMESTAMPS_DIR}/{stem}.statement.json"
        signature = f"{layout.TIMESTAMPS_DIR}/{stem}.sig"
        tokens.digests.append(write_bytes(root, statement, batch_statement(b.root, b.size), syncer))
        tokens.digests.append(write_bytes(root, signature, b.signature, syncer))
        batches.append(
            {"id": b.id, "root": b.root, "size": b.size, "statement_sha256": b.statement_sha256, "key_id": b.key_id,
             "statement": statement, "signature": signature, "tokens": [tokens.write(stem, t) for t in b.tokens]}
        )  # fmt: skip
    checkpoint = None
    cp = segment.checkpoint
    if cp is not None:
        stem = f"checkpoint-{cp.id}"
        statement = f"{layout.TIMESTAMPS_DIR}/{stem}.statement.json"
        signature = f"{layout.TIMESTAMPS_DIR}/{stem}.sig"
        tokens.digests.append(write_bytes(root, statement, checkpoint_statement(cp.seq, cp.head_hash), syncer))
        tokens.digests.append(write_bytes(root, signature, cp.signature, syncer))
        checkpoint = {"id": cp.id, "seq": cp.seq, "hash": cp.head_hash, "statement_sha256": cp.statement_sha256,
                      "key_id": cp.key_id, "event_seq": cp.event_seq, "statement": statement, "signature": signature,
                      "tokens": [tokens.write(stem, t) for t in segment.checkpoint_tokens]}  # fmt: skip
    index = {"batches": batches, "checkpoint": checkpoint}
    return [*tokens.digests, write_bytes(root, layout.TIMESTAMPS_INDEX, json_bytes(index), syncer)]


CSV_FIELDS = ("seq", "at", "actor", "action", "subject", "incident", "details", "prev_hash", "hash")


def write_custody(root: Path, segment: Segment, syncer: Syncer | None = None) -> list[FileDigests]:
    chain = "".join(json.dumps(e.as_dict(), sort_keys=True, ensure_ascii=False) + "\n" for e in segment.entries)
    events = [e for e in segment.entries if e.document is not None]
    full = "".join(
        json.dumps({**(e.document or {}), "prev_hash": e.prev_hash, "hash": e.hash}, sort_keys=True,
                   ensure_ascii=False) + "\n"
        for e in events
    )  # fmt: skip
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180 line breaks
    writer.writerow(CSV_FIELDS)
    for e in events:
        doc = e.document or {}
        details = canonical_json(doc.get("details", {})).decode("utf-8")
        writer.writerow([e.seq, doc.get("at"), doc.get("actor"), doc.get("action"), doc.get("subject"),
                         doc.get("incident") or "", details, e.prev_hash, e.hash])  # fmt: skip
    return [
        write_bytes(root, layout.CHAIN, chain.encode("utf-8"), syncer),
        write_bytes(root, layout.EVENTS_JSONL, full.encode("utf-8"), syncer),
        write_bytes(root, layout.EVENTS_CSV, text.getvalue().encode("utf-8"), syncer),
    ]
