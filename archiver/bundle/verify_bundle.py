"""``archiver verify-bundle``: check an evidence bundle with no catalogue and no network.

Checks, each named in the report when it ran:

- ``bag``: the bag's structure and Payload-Oxum (the ``bagit`` library), then completeness (every file in the
  manifests exists, no unlisted payload file) and every SHA-256 and SHA-512 of the manifests and tag manifests;
- ``records``: every WARC record's block and payload digests recomputed from its bytes, against its own headers
  and against ``records.jsonl`` (the map from record id to bundle file and offset);
- ``receipts`` and ``signatures``: each receipt's digest, its Ed25519 signature by the bundled key, and every
  record it lists present with the digests it states (and its own WARC record holding exactly its bytes);
- ``merkle-paths``, ``batches``, ``tokens``: inclusion paths to the batch root, batch statements and signatures,
  RFC 3161 tokens against the bundled TSA certificates (or ``tsa_ca`` given by the person verifying);
- ``custody-chain``: the segment's links and recomputed hashes, and the signed checkpoint that ends it;
- ``media``: each media file is the payload of the record it names.

Problems are data (:class:`archiver.integrity.Problem`), each naming a kind and a path. A zip is checked
entry by entry before anything is extracted (:mod:`archiver.bundle.zipsafe`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import bagit

from archiver.bundle import layout
from archiver.bundle.direct import read_chunks
from archiver.bundle.proofs import check_receipts, check_timestamps
from archiver.bundle.segment import check_segment, parse_chain
from archiver.bundle.zipsafe import extract, zip_problems
from archiver.integrity import ERROR, Problem
from archiver.keys import key_id_of
from archiver.warc.reader import RecordProblem, StoredRecord, iter_records

BUFFER = 4 << 20


@dataclass(frozen=True)
class BundleReport:
    path: str
    checks: tuple[str, ...]
    counts: dict[str, int]
    problems: tuple[Problem, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return dict(sorted(out.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "checks": list(self.checks),
            "counts": dict(self.counts),
            "problems": [asdict(p) for p in self.problems],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Run:
    root: Path
    tsa_ca: bytes | None
    problems: list[Problem] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # every file's sha256, computed from its bytes
    records: dict[str, StoredRecord] = field(default_factory=dict)  # record id -> as read from the bundle
    key_id: str | None = None

    def add(self, kind: str, subject: str, expected: object = None, found: object = None) -> None:
        self.problems.append(
            Problem(kind, subject, None if expected is None else str(expected), None if found is None else str(found))
        )

    def json(self, relative: str) -> Any:
        try:
            return json.loads((self.root / relative).read_bytes())
        except FileNotFoundError:
            self.add("file-missing", relative, "the file", "none")
        except (OSError, ValueError) as exc:
            self.add("file-malformed", relative, "JSON", str(exc))
        return None


def verify_bundle(path: Path, *, tsa_ca: bytes | None = None) -> BundleReport:
    """Check the bag directory or zip at ``path``. Never raises for bad evidence (only for a missing path)."""
    started = time.monotonic()
    path = Path(path)
    if path.is_file():
        problems, _top = zip_problems(path)
        if problems:
            return BundleReport(str(path), ("zip",), {}, tuple(problems), time.monotonic() - started)
        with tempfile.TemporaryDirectory(prefix="archiver-bundle-") as tmp:
            run = _verify_dir(extract(path, Path(tmp)), tsa_ca)
        checks = ("zip", *run.checks)
    else:
        run = _verify_dir(path, tsa_ca)
        checks = tuple(run.checks)
    return BundleReport(str(path), checks, run.counts, tuple(run.problems), time.monotonic() - started)


def _verify_dir(root: Path, tsa_ca: bytes | None) -> _Run:
    run = _Run(root, tsa_ca)
    with _Reads(root) as reads:
        _check_bag(run, reads)
        _check_warcs(run, reads)
    public = _public_key(run)
    receipts = run.json(layout.RECEIPTS_INDEX)
    timestamps = run.json(layout.TIMESTAMPS_INDEX)
    if receipts is not None:
        run.checks += ["receipts", "signatures"]
        check_receipts(run.root, receipts, run.records, public, run.key_id, run.problems, run.counts)
    if timestamps is not None:
        run.checks += ["merkle-paths", "batches", "tokens"]
        check_timestamps(run.root, timestamps, receipts or [], public, run.key_id, tsa_ca, run.problems, run.counts)
    _check_custody(run, timestamps)
    _check_media(run)
    return run


def _manifest(run: _Run, name: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    try:
        text = (run.root / name).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        run.add("bag-manifest", name, "a readable manifest", str(exc))
        return entries
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or not rel:
            run.add("bag-manifest", f"{name}:{n}", "<digest>  <path>", line[:80])
            continue
        entries[unquote(rel)] = digest.lower()  # RFC 8493 §2.1.3 percent-encoding
    return entries


def _hash(path: Path, *, cached: bool = False) -> tuple[str, str] | OSError:
    """SHA-256 and SHA-512 of a file in one read (or why it could not be read). The read goes around the page
    cache unless ``cached`` (a WARC file, which the record scan reads at the same time: one of the two reads
    then comes from the cache)."""
    s256, s512 = hashlib.sha256(), hashlib.sha512()
    try:
        if cached:
            with path.open("rb") as f:
                while chunk := f.read(BUFFER):
                    s256.update(chunk)
                    s512.update(chunk)
        else:
            for piece in read_chunks(path, BUFFER):
                s256.update(piece)
                s512.update(piece)
    except OSError as exc:
        return exc
    return s256.hexdigest(), s512.hexdigest()


@dataclass(frozen=True)
class _Scan:
    records: list[StoredRecord]
    problems: list[RecordProblem]


def _scan(path: Path) -> _Scan:
    """Every record of a bundle WARC file, its digests recomputed, and every problem in the file."""
    problems: list[RecordProblem] = []
    return _Scan(list(iter_records(path, problems)), problems)


class _Reads:
    """The reading work of a check, run on a thread pool: the hash of each file, the record scan of each WARC
    file. ``hashlib`` and ``zlib`` release the GIL on large buffers, so the jobs use every core; they are
    started largest first and their results taken in a fixed order, so the report does not depend on timing.
    A WARC file is read twice (hashed as a file, and scanned record by record); the two jobs run at the same
    time, so the second read is served from the page cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pool = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="verify-bundle")
        self._hashes: dict[str, Future[tuple[str, str] | OSError]] = {}
        self._scans: dict[str, Future[_Scan]] = {}

    def start(self, hashes: list[str], scans: list[str]) -> None:
        warcs = set(scans)
        work = [(rel, True) for rel in hashes] + [(rel, False) for rel in scans]
        for rel, is_hash in sorted(work, key=lambda w: -_size(self.root / w[0])):
            if is_hash:
                self._hashes[rel] = self._pool.submit(_hash, self.root / rel, cached=rel in warcs)
            else:
                self._scans[rel] = self._pool.submit(_scan, self.root / rel)

    def hash(self, rel: str) -> tuple[str, str] | OSError:
        return self._hashes[rel].result()

    def scan(self, rel: str) -> _Scan:
        return self._scans[rel].result()

    def __enter__(self) -> _Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _check_bag(run: _Run, reads: _Reads) -> None:
    run.checks.append("bag")
    try:
        bagit.Bag(str(run.root)).validate(fast=True)  # structure, bagit.txt, Payload-Oxum
    except bagit.BagError as exc:
        run.add("bag-invalid", "bag", "a valid BagIt bag", str(exc))
    payload = {a: _manifest(run, f"manifest-{a}.txt") for a in layout.ALGORITHMS}
    tags = {a: _manifest(run, f"tagmanifest-{a}.txt") for a in layout.ALGORITHMS}
    on_disk = {p.relative_to(run.root).as_posix() for p in (run.root / layout.DATA).rglob("*") if p.is_file()}
    listed = set().union(*(set(m) for m in payload.values()))
    checked = sorted(listed & on_disk) + sorted(set().union(*(set(m) for m in tags.values())))
    present = [rel for rel in checked if (run.root / rel).is_file()]
    warcs = sorted(p.relative_to(run.root).as_posix() for p in (run.root / layout.WARC_DIR).glob("*.warc.gz"))
    reads.start(sorted(set(present)), warcs)
    for rel in sorted(on_disk - listed):
        run.add("bag-unexpected-file", rel, "only files listed in the manifests", "an unlisted file")
    for rel in sorted(listed - on_disk):
        run.add("bag-missing-file", rel, "the file listed in the manifests", "none")
    exists = set(present)
    for rel in checked:
        if rel not in exists:
            if not rel.startswith(layout.DATA + "/"):
                run.add("bag-missing-file", rel, "the tag file listed in the tag manifests", "none")
            continue
        hashed = reads.hash(rel)
        if isinstance(hashed, OSError):
            run.add("bag-unreadable", rel, "a readable file", str(hashed.strerror or hashed))
            continue
        got = dict(zip(layout.ALGORITHMS, hashed, strict=True))
        run.sha256[rel] = got["sha256"]
        for algorithm in layout.ALGORITHMS:
            want = (payload if rel.startswith(layout.DATA + "/") else tags)[algorithm].get(rel)
            if want is not None and want != got[algorithm]:
                run.add("bag-checksum", rel, f"{algorithm}:{want}", f"{algorithm}:{got[algorithm]}")
    run.counts["files"] = len(on_disk)


def _check_warcs(run: _Run, reads: _Reads) -> None:
    run.checks.append("records")
    listed: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        lines = (run.root / layout.RECORDS).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        run.add("file-missing", layout.RECORDS, "the record map", str(exc))
        lines = []
    for n, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
            listed[(str(entry["file"]), int(entry["offset"]))] = entry
        except (ValueError, KeyError, TypeError) as exc:
            run.add("records-malformed", f"{layout.RECORDS}:{n}", "a record entry", str(exc))
    count = 0
    for warc in sorted((run.root / layout.WARC_DIR).glob("*.warc.gz")):
        rel = warc.relative_to(run.root).as_posix()
        scan = reads.scan(rel)
        for rec in scan.records:
            count += 1
            where = f"{rel} @ {rec.offset} ({rec.record_id})"
            entry = listed.pop((rel, rec.offset), None)
            if entry is None:
                run.add("record-unlisted", where, f"a record listed in {layout.RECORDS}", rec.record_id)
                continue
            if rec.record_id:
                run.records[rec.record_id] = rec
            payload = rec.payload_sha256 if rec.header("WARC-Payload-Digest") is not None else None
            for kind, want, got in (
                ("record-id", entry.get("id"), rec.record_id),
                ("record-length", entry.get("length"), rec.length),
                ("record-block-sha256", entry.get("block_sha256"), rec.block_sha256),
                ("record-payload-sha256", entry.get("payload_sha256"), payload),
            ):
                if want != got and rec.block_sha256 is not None:
                    run.add(kind, where, want, got)
        for p in scan.problems:
            run.add(f"record-{p.kind}", f"{rel} @ {p.offset} ({p.record_id})", p.expected, p.found)
    for (rel, offset), entry in sorted(listed.items()):
        run.add("record-missing", f"{rel} @ {offset}", f"record {entry.get('id')}", "no record at that offset")
    run.counts["records"] = count


def _public_key(run: _Run) -> bytes | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        pem = (run.root / layout.PUBLIC_KEY).read_bytes()
        key = load_pem_public_key(pem)
    except (OSError, ValueError) as exc:
        run.add("key-invalid", layout.PUBLIC_KEY, "the archive's Ed25519 public key", str(exc))
        return None
    if not isinstance(key, Ed25519PublicKey):
        run.add("key-invalid", layout.PUBLIC_KEY, "an Ed25519 public key", type(key).__name__)
        return None
    run.key_id = key_id_of(key)
    return pem


def _check_custody(run: _Run, timestamps: Any) -> None:
    run.checks.append("custody-chain")
    try:
        lines = (run.root / layout.CHAIN).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        run.add("file-missing", layout.CHAIN, "the custody segment", str(exc))
        return
    entries, problems = parse_chain(lines, layout.CHAIN)
    run.problems += problems + check_segment(entries, layout.CHAIN)
    run.counts["custody_entries"] = len(entries)
    run.counts["custody_events"] = sum(1 for e in entries if e.document is not None)
    full = {e.seq: e for e in entries if e.document is not None}
    try:
        listed = [json.loads(x) for x in (run.root / layout.EVENTS_JSONL).read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError) as exc:
        run.add("file-malformed", layout.EVENTS_JSONL, "JSON lines", str(exc))
        listed = []
    if sorted(int(e.get("seq", -1)) for e in listed) != sorted(full):
        run.add("custody-events", layout.EVENTS_JSONL, "the full events of the chain segment", "other events")
    for e in listed:
        entry = full.get(int(e.get("seq", -1)))
        doc = {k: v for k, v in e.items() if k not in ("prev_hash", "hash")}
        if entry is not None and (doc != entry.document or e.get("hash") != entry.hash):
            run.add("custody-events", f"{layout.EVENTS_JSONL} event {e.get('seq')}", "the chain's event", "another")
    cp = (timestamps or {}).get("checkpoint") if isinstance(timestamps, dict) else None
    if isinstance(cp, dict):
        by_seq = {e.seq: e for e in entries}
        entry = by_seq.get(int(cp.get("seq", -1)))
        if entry is None or entry.hash != cp.get("hash"):
            found = "no such event in the segment" if entry is None else entry.hash
            run.add("custody-checkpoint", f"{layout.CHAIN} event {cp.get('seq')}", cp.get("hash"), found)


def _check_media(run: _Run) -> None:
    run.checks.append("media")
    index = run.json(layout.MEDIA_INDEX)
    for item in index if isinstance(index, list) else []:
        rel = str(item.get("file"))
        got = run.sha256.get(rel)
        if got is None:
            hashed = _hash(run.root / rel) if (run.root / rel).is_file() else None
            if isinstance(hashed, tuple):
                got = hashed[0]
            else:
                run.add("media-missing", rel, "the media file", "none")
                continue
        if got != item.get("sha256"):
            run.add("media-sha256", rel, f"sha256:{item.get('sha256')}", f"sha256:{got}")
        rec = run.records.get(str(item.get("record")))
        if rec is None:
            run.add("media-record", rel, f"record {item.get('record')} in the bundle", "none")
        elif rec.payload_sha256 != got:
            run.add("media-record", rel, f"payload sha256:{rec.payload_sha256} of {rec.record_id}", f"sha256:{got}")
    run.counts["media"] = len(index) if isinstance(index, list) else 0
