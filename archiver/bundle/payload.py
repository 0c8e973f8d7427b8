"""The payload files of a bundle: records, media, receipts, timestamps, key and custody segment.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from archiver.bundle import layout
from archiver.bundle.contents import IncidentContents, MediaEntry, RecordEntry, TokenEntry
from archiver.bundle.segment import Segment
from archiver.bundle.streams import FileDigests, HashingFile, copy_span, extract_payload, safe_name, write_bytes
from archiver.canonical import canonical_json
from archiver.clock import utc_iso
from archiver.errors import BundleError
from archiver.integrity.batches import checkpoint_statement
from archiver.warc.reader import GzipMembers, RecordParser


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass(frozen=True)
class PlacedRecord:
    entry: RecordEntry
    bundle_file: str  # relative to the bag root
    bundle_offset: int

    def as_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "id": e.record_id,
            "type": e.record_type,
            "role": e.role,
            "target": e.target_uri,
            "media_type": e.media_type,
            "capture": e.capture_id,
            "date": utc_iso(e.record_date) if e.record_date else None,
            "file": self.bundle_file,
            "offset": self.bundle_offset,
            "length": e.length,
            "original_file": e.warc_file,
            "original_offset": e.offset,
            "block_sha256": e.block_sha256,
            "payload_sha256": e.payload_sha256,
        }


def _warcinfo(path: Path) -> tuple[str, int, str] | None:
    """The record id, member length and block sha256 (computed here) of the warcinfo record starting the file."""
    parser = RecordParser(digests=True)
    try:
        with path.open("rb") as f:
            member = GzipMembers(f).next_member(parser.feed)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if member is None or parser.headers is None or parser.fields.get("warc-type") != "warcinfo":
        return None
    rid = parser.fields.get("warc-record-id")
    if not rid or parser.check is None or not parser.complete:
        return None
    return rid, member.length, parser.check.block_hex()


def _runs(records: list[RecordEntry]) -> Iterator[list[RecordEntry]]:
    """Adjacent records (one ending where the next starts) as one run, copied with one read."""
    run: list[RecordEntry] = []
    for r in records:
        if run and run[-1].offset + run[-1].length != r.offset:
            yield run
            run = []
        if run and r.offset < run[-1].offset + run[-1].length:
            raise BundleError(f"{r.warc_file}: records overlap at offset {r.offset}; run 'archiver verify --deep'")
        run.append(r)
    if run:
        yield run


def write_warcs(root: Path, warc_dir: Path, contents: IncidentContents) -> tuple[list[FileDigests], list[PlacedRecord]]:
    """One bundle WARC per original file: its warcinfo record, then the incident's records in file order."""
    digests: list[FileDigests] = []
    placed: list[PlacedRecord] = []
    prefix = safe_name(str(contents.incident["id"]), limit=80)
    for n, name in enumerate(contents.warc_files, 1):
        src = warc_dir / name
        if not src.is_file():
            raise BundleError(f"WARC file {name} is missing from {warc_dir}", hint="run 'archiver verify'")
        relative = f"{layout.WARC_DIR}/{prefix}-{n:03d}.warc.gz"
        records = [r for r in contents.records if r.warc_file == name]
        with HashingFile(root, relative) as out:
            info = _warcinfo(src)
            if info is not None and records[0].offset >= info[1]:
                rid, length, block = info
                first = records[0]
                entry = RecordEntry(rid, "warcinfo", "warcinfo", None, "application/warc-fields", first.capture_id,
                                    name, 0, length, block, None, None)  # fmt: skip
                placed.append(PlacedRecord(entry, relative, out.tell()))
                copy_span(src, 0, length, out)
            for run in _runs(records):
                start = out.tell()
                for r in run:
                    placed.append(PlacedRecord(r, relative, start + r.offset - run[0].offset))
                copy_span(src, run[0].offset, run[-1].offset + run[-1].length - run[0].offset, out)
            digests.append(out.close())
    lines = "".join(json.dumps(p.as_dict(), sort_keys=True, ensure_ascii=False) + "\n" for p in placed)
    digests.append(write_bytes(root, layout.RECORDS, lines.encode("utf-8")))
    return digests, placed


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


def write_media(root: Path, warc_dir: Path, contents: IncidentContents) -> tuple[list[FileDigests], list[MediaFile]]:
    by_id = {r.record_id: r for r in contents.records}
    incident = safe_name(str(contents.incident["id"]), limit=80)
    digests: list[FileDigests] = []
    files: list[MediaFile] = []
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
        with HashingFile(root, name) as out:
            got = extract_payload(warc_dir / record.warc_file, record.offset, out)
            written = out.close()
        for label, want in (("media item", m.sha256), ("record payload", record.payload_sha256)):
            if want is not None and want != got.sha256:
                raise BundleError(
                    f"media {m.platform}:{m.item_id}: extracted payload sha256:{got.sha256} differs from the "
                    f"{label} digest sha256:{want} (record {record.record_id})",
                    hint="run 'archiver verify --deep' to find the damage",
                )
        digests.append(written)
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
    digests.append(write_bytes(root, layout.MEDIA_INDEX, json_bytes(index)))
    return digests, files


def write_receipts(root: Path, contents: IncidentContents) -> list[FileDigests]:
    digests: list[FileDigests] = []
    index = []
    for r in contents.receipts:
        digests.append(write_bytes(root, layout.receipt_file(r.capture_id), r.canonical))
        digests.append(write_bytes(root, layout.receipt_signature_file(r.capture_id), r.signature))
        index.append(
            {"capture": r.capture_id, "sha256": r.sha256, "key_id": r.key_id, "record": r.record_id,
             "batch": r.batch_id, "leaf_index": r.leaf_index, "merkle_path": list(r.merkle_path),
             "file": layout.receipt_file(r.capture_id), "signature": layout.receipt_signature_file(r.capture_id)}
        )  # fmt: skip
    digests.append(write_bytes(root, layout.RECEIPTS_INDEX, json_bytes(index)))
    return digests


class _Tokens:
    """Token files and the certificate chains they were checked against, each chain written once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests: list[FileDigests] = []
        self.chains: dict[str, str] = {}

    def write(self, stem: str, t: TokenEntry) -> dict[str, Any]:
        path = f"{layout.TIMESTAMPS_DIR}/{stem}.token-{t.id}.tsr"
        self.digests.append(write_bytes(self.root, path, t.token_der))
        chain = t.certificates.encode("ascii")
        key = hashlib.sha256(chain).hexdigest()
        if key not in self.chains:
            self.chains[key] = f"{layout.TSA_DIR}/{safe_name(t.tsa_name, limit=60)}-{key[:12]}.pem"
            self.digests.append(write_bytes(self.root, self.chains[key], chain))
        return {"file": path, "tsa": t.tsa_name, "digest": t.digest, "gen_time": utc_iso(t.gen_time),
                "certificates": self.chains[key]}  # fmt: skip


def write_timestamps(root: Path, contents: IncidentContents, segment: Segment) -> list[FileDigests]:
    from archiver.integrity.batches import batch_statement

    tokens = _Tokens(root)
    batches = []
    for b in contents.batches:
        stem = f"batch-{b.id}"
        statement = f"{layout.TIMESTAMPS_DIR}/{stem}.statement.json"
        signature = f"{layout.TIMESTAMPS_DIR}/{stem}.sig"
        tokens.digests.append(write_bytes(root, statement, batch_statement(b.root, b.size)))
        tokens.digests.append(write_bytes(root, signature, b.signature))
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
        tokens.digests.append(write_bytes(root, statement, checkpoint_statement(cp.seq, cp.head_hash)))
        tokens.digests.append(write_bytes(root, signature, cp.signature))
        checkpoint = {"id": cp.id, "seq": cp.seq, "hash": cp.head_hash, "statement_sha256": cp.statement_sha256,
                      "key_id": cp.key_id, "event_seq": cp.event_seq, "statement": statement, "signature": signature,
                      "tokens": [tokens.write(stem, t) for t in segment.checkpoint_tokens]}  # fmt: skip
    index = {"batches": batches, "checkpoint": checkpoint}
    return [*tokens.digests, write_bytes(root, layout.TIMESTAMPS_INDEX, json_bytes(index))]


CSV_FIELDS = ("seq", "at", "actor", "action", "subject", "incident", "details", "prev_hash", "hash")


def write_custody(root: Path, segment: Segment) -> list[FileDigests]:
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
        write_bytes(root, layout.CHAIN, chain.encode("utf-8")),
        write_bytes(root, layout.EVENTS_JSONL, full.encode("utf-8")),
        write_bytes(root, layout.EVENTS_CSV, text.getvalue().encode("utf-8")),
    ]
