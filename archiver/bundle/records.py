"""The incident's records copied into bundle WARC files, with the payloads wanted as files taken on the way.

One bundle WARC per original file: its warcinfo record, then the incident's records in file order, adjacent
records copied as one span (:func:`archiver.bundle.taps.copy_members`). Files are copied in parallel, one job
each, and within a job the bundle WARC and every extracted payload are written and hashed on lanes of their own
(:class:`archiver.bundle.streams.HashingFile`): the job's thread only reads and inflates. The results are put
together in file order, so the output does not depend on which job finished first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.bundle import layout
from archiver.bundle.contents import IncidentContents, RecordEntry
from archiver.bundle.streams import FileDigests, HashingFile, Syncer, safe_name, write_bytes
from archiver.bundle.taps import PayloadTap, copy_members
from archiver.clock import utc_iso
from archiver.errors import BundleError
from archiver.warc.reader import GzipMembers, RecordParser


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


@dataclass(frozen=True)
class Extract:
    """A record whose payload the bag holds as a file of its own at ``path``."""

    record: RecordEntry
    path: str


@dataclass(frozen=True)
class Extracted:
    record: RecordEntry
    digests: FileDigests  # of the file, which holds exactly the record's payload: its sha256 is the payload's


@dataclass(frozen=True)
class WarcsWritten:
    files: tuple[FileDigests, ...]  # the bundle WARC files, then records.jsonl
    placed: tuple[PlacedRecord, ...]
    extracted: dict[str, Extracted]  # by path


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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


def _runs(records: Sequence[RecordEntry]) -> list[list[RecordEntry]]:
    """Adjacent records (one ending where the next starts) as one run, copied with one read."""
    runs: list[list[RecordEntry]] = []
    run: list[RecordEntry] = []
    for r in records:
        if run and run[-1].offset + run[-1].length != r.offset:
            runs.append(run)
            run = []
        if run and r.offset < run[-1].offset + run[-1].length:
            raise BundleError(f"{r.warc_file}: records overlap at offset {r.offset}; run 'archiver verify --deep'")
        run.append(r)
    if run:
        runs.append(run)
    return runs


@dataclass(frozen=True)
class _Job:
    root: Path
    src: Path
    relative: str
    records: tuple[RecordEntry, ...]
    extracts: dict[str, list[str]]  # record id -> paths of the files its payload goes to
    syncer: Syncer | None
    on_extracted: Callable[[str, Extracted], None] | None


class _Extraction:
    """One record's payload going to its files (a :class:`archiver.bundle.taps.Span`)."""

    def __init__(self, job: _Job, record: RecordEntry, results: dict[str, Extracted]) -> None:
        self.job, self.record, self.results = job, record, results
        self.offset, self.length = record.offset, record.length

    def open(self) -> PayloadTap:
        files: list[HashingFile] = []
        try:
            for path in self.job.extracts[self.record.record_id]:
                files.append(HashingFile(self.job.root, path, syncer=self.job.syncer, lane=True))
        except BaseException:
            for f in files:
                f.abort()
            raise
        r = self.record
        return PayloadTap(f"{r.warc_file} @ {r.offset} ({r.record_id})", files)

    def done(self, tap: PayloadTap) -> None:
        try:
            tap.finish()
            for f in tap.files:
                self.results[f.relative] = Extracted(self.record, f.close())
        finally:
            tap.abort()  # whatever was not closed above
        if self.job.on_extracted is not None:
            for f in tap.files:
                self.job.on_extracted(f.relative, self.results[f.relative])


def _copy_file(job: _Job) -> tuple[FileDigests, list[PlacedRecord], dict[str, Extracted]]:
    try:
        return _copy(job)
    except OSError as exc:
        raise BundleError(f"cannot copy records from {job.src}: {exc.strerror or exc}") from exc


def _copy(job: _Job) -> tuple[FileDigests, list[PlacedRecord], dict[str, Extracted]]:
    records = list(job.records)
    placed: list[PlacedRecord] = []
    info = _warcinfo(job.src)
    if info is not None and records[0].offset >= info[1]:
        rid, length, block = info
        first = records[0]
        records.insert(0, RecordEntry(rid, "warcinfo", "warcinfo", None, "application/warc-fields",
                                      first.capture_id, first.warc_file, 0, length, block, None, None))  # fmt: skip
    extracted: dict[str, Extracted] = {}
    with HashingFile(job.root, job.relative, syncer=job.syncer, lane=True) as out, job.src.open("rb") as src:
        for run in _runs(records):
            start = out.tell()
            placed += [PlacedRecord(r, job.relative, start + r.offset - run[0].offset) for r in run]
            spans = [_Extraction(job, r, extracted) for r in run if r.record_id in job.extracts]
            length = run[-1].offset + run[-1].length - run[0].offset
            copy_members(src, job.src.name, run[0].offset, length, out, spans)
        written = out.close()
    return written, placed, extracted


def write_warcs(
    root: Path,
    warc_dir: Path,
    contents: IncidentContents,
    *,
    extracts: Sequence[Extract] = (),
    syncer: Syncer | None = None,
    on_extracted: Callable[[str, Extracted], None] | None = None,
    workers: int | None = None,
) -> WarcsWritten:
    """Copy the incident's records (and extract the payloads of ``extracts``) into ``root``; ``on_extracted``
    is called, from a worker thread, as each extracted file is complete."""
    wanted: dict[str, list[str]] = {}
    for e in extracts:
        wanted.setdefault(e.record.record_id, []).append(e.path)
    by_file: dict[str, list[RecordEntry]] = {}
    for r in contents.records:
        by_file.setdefault(r.warc_file, []).append(r)
    prefix = safe_name(str(contents.incident["id"]), limit=80)
    jobs = []
    for n, name in enumerate(contents.warc_files, 1):
        src = warc_dir / name
        if not src.is_file():
            raise BundleError(f"WARC file {name} is missing from {warc_dir}", hint="run 'archiver verify'")
        records = tuple(by_file[name])
        mine = {r.record_id: wanted[r.record_id] for r in records if r.record_id in wanted}
        jobs.append(_Job(root, src, f"{layout.WARC_DIR}/{prefix}-{n:03d}.warc.gz", records, mine, syncer,
                         on_extracted))  # fmt: skip
    pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="bundle-copy")
    try:
        # Largest first, so that the last job to start is a short one.
        order = sorted(range(len(jobs)), key=lambda i: -sum(r.length for r in jobs[i].records))
        futures = {i: pool.submit(_copy_file, jobs[i]) for i in order}
        results = [futures[i].result() for i in range(len(jobs))]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    files = [f for f, _, _ in results]
    placed = [p for _, ps, _ in results for p in ps]
    extracted = {k: v for _, _, ex in results for k, v in ex.items()}
    lines = "".join(json.dumps(p.as_dict(), sort_keys=True, ensure_ascii=False) + "\n" for p in placed)
    files.append(write_bytes(root, layout.RECORDS, lines.encode("utf-8"), syncer))
    return WarcsWritten(tuple(files), tuple(placed), extracted)
