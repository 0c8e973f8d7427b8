"""Fixity: does the archive still hold exactly what the catalogue, the receipts and the custody log say?

``verify_archive`` (``archiver verify``) checks, at file level, every closed WARC file against the SHA-256 and
size the catalogue recorded when it was closed: missing file, size mismatch, hash mismatch. Files are read in
4 MiB buffers and hashed two at a time on a thread pool (``hashlib`` and file reads release the GIL).

With ``deep`` it also reads every record (:func:`archiver.warc.reader.iter_records`) and checks its block and
payload digests against its own headers and against its Artifact row (offset, length, record id, type,
target, date, digests), then the integrity rows (:mod:`archiver.integrity.checks`: receipts, signatures,
Merkle paths, batches, tokens against the configured TSA certificates), the custody chain
(:func:`archiver.custody.check_chain`) and the checkpoints of its head.

Problems are data. The report says exactly which checks ran (a check that could not run, such as signatures
without the public key, is not listed), and the run itself is appended to the custody log as ``verified``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from archiver import custody
from archiver.archive import Archive
from archiver.catalogue.integrity_models import Receipt
from archiver.catalogue.models import Artifact, Capture, Incident, WarcFile, incident_sources
from archiver.clock import warc_date
from archiver.errors import NotFoundError, SigningKeyError, WarcError
from archiver.integrity import ERROR, WARNING, Problem
from archiver.integrity.batches import trusted_tsa_pems
from archiver.integrity.checks import check_batches, check_checkpoints, check_receipts
from archiver.keys import PUBLIC_KEY_NAME, key_id_of
from archiver.warc.reader import RecordProblem, StoredRecord, iter_records
from archiver.warc.records import WARCINFO

HASH_BUFFER = 4 << 20
WORKERS = 2
CLOSED_STATUSES = ("closed", "repaired")

ProgressCallback = Callable[[str, Any], None]


@dataclass(frozen=True)
class VerifyReport:
    scope: str  # "archive" or "incident:<id>"
    deep: bool
    checks: tuple[str, ...]  # the checks that ran, and only those
    counts: dict[str, int]
    problems: tuple[Problem, ...]  # errors and warnings
    seconds: float
    event_seq: int | None = None  # the custody event "verified" recording this run

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    def kinds(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.errors).items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "deep": self.deep,
            "ok": self.ok,
            "checks": list(self.checks),
            "counts": dict(self.counts),
            "problems": [asdict(p) for p in self.problems],
            "seconds": round(self.seconds, 3),
            "custody_event": self.event_seq,
        }


@dataclass(frozen=True)
class FileHash:
    size: int
    sha256: str | None  # None when the size already differed and the file was not read


def hash_file(path: Path, expected_size: int | None = None) -> FileHash:
    """SHA-256 and size of a file, streamed in large buffers; skips reading when the size already differs."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if expected_size is not None and size != expected_size:
            return FileHash(size, None)
        with contextlib.suppress(AttributeError, OSError):  # advice only; absent on some platforms
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        digest = hashlib.sha256()
        buf = bytearray(HASH_BUFFER)
        view = memoryview(buf)
        read = 0
        while n := f.readinto(buf):
            digest.update(view[:n])
            read += n
    return FileHash(read, digest.hexdigest())


@dataclass(frozen=True)
class _Art:
    id: int
    record_id: str
    record_type: str
    target_uri: str | None
    length: int
    block_sha256: str
    payload_sha256: str | None
    record_date: datetime


@dataclass
class _Run:
    archive: Archive
    deep: bool
    progress: ProgressCallback
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    checks: list[str] = field(default_factory=list)

    def ran(self, check: str) -> None:
        if check not in self.checks:
            self.checks.append(check)


def verify_archive(
    archive: Archive,
    *,
    incident: str | None = None,
    deep: bool = False,
    progress: ProgressCallback | None = None,
    workers: int = WORKERS,
) -> VerifyReport:
    """Verify the whole archive, or the files and receipts of one incident. Never raises for bad evidence:
    raises only when the check itself cannot start (unknown incident, unreadable TSA CA file)."""
    started = time.monotonic()
    run = _Run(archive, deep, progress or (lambda _kind, _data: None))
    trusted = trusted_tsa_pems(archive.settings) if deep else None  # a config error stops us before any work
    with archive.reading() as s:
        files, capture_ids = _scope(s, incident)
    _check_files(run, files, workers)
    if incident is None:
        _uncatalogued_files(run, {f.name for f in files})
    if deep:
        _check_catalogue(run, incident, capture_ids, trusted)
    scope = "archive" if incident is None else f"incident:{incident}"
    report = VerifyReport(
        scope, deep, tuple(run.checks), dict(run.counts), tuple(run.problems), time.monotonic() - started
    )
    with archive.session() as s:
        event = custody.append(
            s,
            archive.clock,
            actor=archive.actor,
            action="verified",
            subject=scope,
            incident=incident,
            details={
                "scope": scope,
                "deep": deep,
                "checks": list(report.checks),
                "counts": report.counts,
                "outcome": "ok" if report.ok else "failed",
                "errors": len(report.errors),
                "warnings": len(report.warnings),
                "kinds": report.kinds(),
            },
        )
        seq = event.seq
    return VerifyReport(report.scope, deep, report.checks, report.counts, report.problems, report.seconds, seq)


def _scope(s: Session, incident: str | None) -> tuple[list[WarcFile], list[int] | None]:
    """The WARC files to check, and the captures whose receipts to check (None: all of them)."""
    if incident is None:
        return list(s.scalars(select(WarcFile).order_by(WarcFile.name))), None
    if s.get(Incident, incident) is None:
        raise NotFoundError(f"no incident {incident!r}", hint="see 'archiver incidents' for the ids")
    captures = _incident_captures(incident)
    file_ids = select(Artifact.warc_file_id).where(Artifact.capture_id.in_(captures)).distinct()
    files = list(s.scalars(select(WarcFile).where(WarcFile.id.in_(file_ids)).order_by(WarcFile.name)))
    return files, list(s.scalars(captures))


def _incident_captures(incident: str) -> Select[Any]:
    joined = select(Capture.id).join(incident_sources, incident_sources.c.source_id == Capture.source_id)
    return joined.where(incident_sources.c.incident_id == incident)


# --- files and records ----------------------------------------------------------------------------------------


def _check_files(run: _Run, files: list[WarcFile], workers: int) -> None:
    run.ran("files")
    if run.deep:
        run.ran("records")
        run.ran("artifacts")
    warc_dir = run.archive.settings.warc_dir
    closed = [f for f in files if f.status in CLOSED_STATUSES]
    for f in files:
        if f.status not in CLOSED_STATUSES:
            run.counts["files_skipped"] += 1
            run.problems.append(Problem("file-not-closed", f"file:{f.name}", "a closed file", f.status, WARNING))
    run.progress("files", {"files": len(closed), "bytes": sum(f.size or 0 for f in closed)})
    in_flight: deque[tuple[WarcFile, Future[FileHash], Future[_Walk] | None]] = deque()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="verify") as pool:
        for f in closed:
            path = warc_dir / f.name
            walk = pool.submit(_walk_file, path, f.name, _artifacts(run.archive, f.id)) if run.deep else None
            in_flight.append((f, pool.submit(hash_file, path, f.size), walk))
            while len(in_flight) > workers:
                _file_done(run, *in_flight.popleft())
        while in_flight:
            _file_done(run, *in_flight.popleft())


def _file_done(run: _Run, row: WarcFile, hashed: Future[FileHash], walked: Future[_Walk] | None) -> None:
    subject = f"file:{row.name}"
    try:
        result = hashed.result()
    except FileNotFoundError:
        run.problems.append(Problem("file-missing", subject, f"{row.name} in {run.archive.settings.warc_dir}", "none"))
        if walked is not None:
            walked.result()  # reports nothing for a missing file; wait so that no work outlives the run
        return
    except OSError as exc:
        run.problems.append(Problem("file-unreadable", subject, "a readable file", str(exc)))
        return
    run.counts["files"] += 1
    run.counts["bytes"] += result.size
    if row.sha256 is None or row.size is None:
        run.problems.append(Problem("file-unrecorded", subject, "a recorded size and sha256", "none"))
    elif result.size != row.size:
        run.problems.append(Problem("file-size", subject, f"{row.size} bytes", f"{result.size} bytes"))
    elif result.sha256 != row.sha256:
        run.problems.append(Problem("file-hash", subject, f"sha256:{row.sha256}", f"sha256:{result.sha256}"))
    if walked is not None:
        walk = walked.result()
        run.counts["records"] += walk.records
        run.counts["artifacts"] += walk.artifacts
        run.problems += walk.problems
    run.progress("file", row.name)


def _artifacts(archive: Archive, warc_file_id: int) -> dict[int, _Art]:
    with archive.reading() as s:
        rows = s.execute(
            select(
                Artifact.offset,
                Artifact.id,
                Artifact.record_id,
                Artifact.record_type,
                Artifact.target_uri,
                Artifact.length,
                Artifact.block_sha256,
                Artifact.payload_sha256,
                Artifact.record_date,
            ).where(Artifact.warc_file_id == warc_file_id)
        ).all()
    return {
        r.offset: _Art(
            r.id, r.record_id, r.record_type, r.target_uri, r.length, r.block_sha256, r.payload_sha256, r.record_date
        )
        for r in rows
    }


@dataclass(frozen=True)
class _Walk:
    records: int
    artifacts: int
    problems: list[Problem]


def _walk_file(path: Path, name: str, artifacts: dict[int, _Art]) -> _Walk:
    """Every record of one file against its own digests and its Artifact row (runs on a worker thread)."""
    found: list[RecordProblem] = []
    out: list[Problem] = []
    records = compared = 0
    expected = dict(artifacts)
    try:
        for rec in iter_records(path, found):
            records += 1
            art = expected.pop(rec.offset, None)
            if art is None:
                if rec.record_type != WARCINFO:
                    where = f"record:{rec.record_id} ({name} @ {rec.offset})"
                    out.append(Problem("record-uncatalogued", where, "an Artifact row", "none", WARNING))
                continue
            compared += 1
            out += _compare(rec, art)
    except WarcError:
        return _Walk(0, 0, [])  # the file-level check names a missing or unreadable file
    for p in found:
        # Damage that hides a record's header is named after the record the catalogue expects there.
        art = artifacts.get(p.offset)
        rid = p.record_id or (art.record_id if art is not None else "?")
        out.append(Problem(f"record-{p.kind}", f"record:{rid} ({name} @ {p.offset})", p.expected, p.found))
        expected.pop(p.offset, None)
    out += [
        Problem("artifact-no-record", f"artifact:{a.id}", f"record {a.record_id} in {name}", "no record at its offset")
        for a in expected.values()
    ]
    return _Walk(records, compared, out)


def _compare(rec: StoredRecord, art: _Art) -> Iterator[Problem]:
    subject = f"artifact:{art.id}"
    pairs = [
        ("record-id", art.record_id, rec.record_id),
        ("record-type", art.record_type, rec.record_type),
        ("target-uri", art.target_uri, rec.target_uri),
        ("record-date", warc_date(art.record_date), rec.header("WARC-Date")),
    ]
    if rec.block_sha256 is not None:  # None: the record could not be read whole, and says why itself
        pairs.append(("length", str(art.length), str(rec.length)))
        pairs.append(("block-sha256", art.block_sha256, rec.block_sha256))
        # A record without a WARC-Payload-Digest (a request with no body) has no payload digest to agree on.
        payload = rec.payload_sha256 if rec.header("WARC-Payload-Digest") is not None else None
        pairs.append(("payload-sha256", art.payload_sha256, payload))
    for kind, expected, found in pairs:
        if expected != found:
            yield Problem(f"artifact-{kind}", subject, expected, found)


def _uncatalogued_files(run: _Run, known: set[str]) -> None:
    warc_dir = run.archive.settings.warc_dir
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(warc_dir.glob("*.warc.gz")):
            if path.name not in known:
                run.problems.append(
                    Problem("file-uncatalogued", f"file:{path.name}", "a catalogue row", "none", WARNING)
                )


# --- catalogue --------------------------------------------------------------------------------------------


def _public_key(run: _Run) -> tuple[bytes | None, str | None]:
    path = run.archive.settings.key_dir / PUBLIC_KEY_NAME
    try:
        pem = path.read_bytes()
        key = load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{path} is not an Ed25519 public key")
    except (OSError, ValueError, SigningKeyError) as exc:
        run.problems.append(Problem("key-missing", "archive", f"the archive public key {path}", str(exc)))
        return None, None
    return pem, key_id_of(key)


def _check_catalogue(run: _Run, incident: str | None, capture_ids: list[int] | None, trusted: bytes | None) -> None:
    archive = run.archive
    public_pem, key_id = _public_key(run)
    if trusted is None:
        run.problems.append(
            Problem(
                "tokens-unchecked",
                "archive",
                "configured TSA CA certificates ([[tsa]])",
                "none: timestamp tokens were not checked",
                WARNING,
            )
        )
    run.progress("check", "custody-chain")
    with archive.session() as s:
        chain = custody.check_chain(s)
    run.ran("custody-chain")
    run.counts["events"] = chain.events
    run.problems += [Problem(f"custody-{p.kind}", f"event:{p.seq}", p.expected, p.found) for p in chain.problems]

    run.progress("check", "checkpoints")
    with archive.session() as s:
        cps = check_checkpoints(s, public_pem=public_pem, key_id=key_id, trusted_pems=trusted)
    run.ran("checkpoints")
    run.counts["checkpoints"] = cps.checkpoints
    run.problems += [p for p in cps.problems if trusted is not None or not p.kind.startswith("token-")]

    run.progress("check", "receipts")
    with archive.session() as s:
        receipts = check_receipts(s, capture_ids=capture_ids, public_pem=public_pem, key_id=key_id)
        batch_ids = None
        if incident is not None:
            in_scope = select(Receipt.batch_id).where(Receipt.capture_id.in_(_incident_captures(incident)))
            batch_ids = {b for b in s.scalars(in_scope.distinct()) if b is not None}
        batches = check_batches(s, batch_ids=batch_ids, public_pem=public_pem, key_id=key_id, trusted_pems=trusted)
    run.ran("receipts")
    run.ran("merkle-paths")
    run.ran("batches")
    run.counts["receipts"] = receipts.receipts
    run.counts["merkle_paths"] = receipts.merkle_checked
    run.counts["batches"] = batches.batches
    run.problems += receipts.problems
    run.problems += [p for p in batches.problems if trusted is not None or not p.kind.startswith("token-")]
    if public_pem is not None:
        run.ran("signatures")
        run.counts["signatures"] = receipts.signatures_checked + batches.batches + cps.checkpoints
    if trusted is not None:
        run.ran("tokens")
        run.counts["tokens"] = batches.tokens + cps.tokens
