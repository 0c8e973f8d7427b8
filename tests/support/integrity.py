"""Real archives for the receipt, verify and lookup tests: a local web site captured by the capture job, receipts,
timestamps from the openssl TSA, and the tampering an attacker with file-system and database access could do.

The capture job issues each capture's receipt itself, right after the capture's records, in the same WARC file.
:func:`issue_pending_receipts` issues receipts for captures that have none (captures made before receipts
existed, or rows a test added by hand), into a WARC file of their own.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from archiver import keys
from archiver.archive import Archive
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.integrity_models import Receipt
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile, incident_sources
from archiver.catalogue.warcs import record_closed_warc
from archiver.config import TsaSettings
from archiver.integrity.batches import BatchReport, CheckpointReport, checkpoint, timestamp_pending, tsa_configs
from archiver.integrity.receipts import CaptureFacts, catalogue_records, record_receipt, write_receipt
from archiver.manifest import parse_text
from archiver.timestamps import TsaConfig
from archiver.warc.records import ClosedWarc
from archiver.warc.writer import WarcSink
from tests.support.tsa import OpensslTsa

PAGE = b"""<!doctype html><html><head><title>Report</title><link rel="stylesheet" href="style.css"></head>
<body><h1>Strike on the hospital</h1><img src="photo.png"></body></html>
"""
FILES = {
    "report.html": PAGE,
    "style.css": b"h1 { color: #222; }\n",
    "photo.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
    "video.mp4": random.Random(5).randbytes(48_000),  # incompressible, as real video is
    "other.html": b"<!doctype html><html><body><p>Another incident</p></body></html>\n",
}

MANIFEST = """\
version: 1
incidents:
  - id: strike-a
    title: Strike A
    when: {{start: 2017-04-04}}
    place: {{name: Town A, country: SY}}
    summary: First test incident.
    sources:
      - url: {base}/report.html
        kind: article
      - url: {base}/video.mp4
        kind: video
  - id: strike-b
    title: Strike B
    when: {{start: 2017-05-05}}
    place: {{name: Town B, country: SY}}
    summary: Second test incident.
    sources:
      - url: {base}/other.html
        kind: article
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Site:
    base: str
    root: Path

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="session", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A few static files served by http.server on 127.0.0.1 (an ephemeral port)."""
    root = tmp_path_factory.mktemp("site")
    for name, body in FILES.items():
        (root / name).write_bytes(body)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield Site(f"http://{host!s}:{port}", root)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def make_job(archive: Archive, workers: int = 2) -> CaptureJob:
    """A web capture job without politeness delays (and without yt-dlp: these tests are about integrity)."""
    kwargs: dict[str, Any] = {"workers": workers, "gate": HostGate(4, 0.0)}
    if "media" in inspect.signature(CaptureJob.__init__).parameters:
        kwargs["media"] = False
    return CaptureJob(archive, **kwargs)


def issue_pending_receipts(archive: Archive) -> list[int]:
    """Issue a receipt for every ended capture that stored records and has none, into a WARC file of its own.

    The two steps of ``archiver.integrity.receipts`` as the job performs them: write (no transaction open),
    then record (in a transaction). Returns the capture ids.
    """
    signer = keys.load_signer(archive.settings.key_dir)
    with archive.session() as s:
        stored = select(Artifact.capture_id).distinct()
        ids = list(
            s.scalars(
                select(Capture.id)
                .where(
                    Capture.ended_at.is_not(None), Capture.id.in_(stored), Capture.id.not_in(select(Receipt.capture_id))
                )
                .order_by(Capture.id)
            )
        )
    settings = archive.settings
    sink = WarcSink(
        settings.warc_dir,
        prefix=settings.warc_prefix,
        clock=archive.clock,
        ids=archive.ids,
        max_size=settings.warc_max_size,
        on_close=partial(_closed, archive),
    )
    with sink:
        for cid in ids:
            with archive.session() as s:
                cap = s.get(Capture, cid)
                assert cap is not None
                incidents = s.scalars(
                    select(incident_sources.c.incident_id).where(incident_sources.c.source_id == cap.source_id)
                ).all()
                facts = CaptureFacts.of(cap, cap.source, incidents)
                records = catalogue_records(s, [cid])[cid]
            issued = write_receipt(sink, signer, facts, records)
            with archive.session() as s:
                warc = s.scalar(select(WarcFile).where(WarcFile.name == issued.ref.warc_file))
                if warc is None:
                    warc = WarcFile(name=issued.ref.warc_file, status="open", opened_at=archive.clock.now())
                    s.add(warc)
                    s.flush()
                record_receipt(s, archive.clock, issued, warc_file_id=warc.id, actor=archive.actor)
    return ids


def _closed(archive: Archive, closed: ClosedWarc) -> None:
    with archive.session() as s:
        record_closed_warc(
            s,
            archive.clock,
            actor=archive.actor,
            name=closed.name,
            sha256=closed.sha256,
            size=closed.size,
            records=closed.records,
            opened_at=closed.opened_at,
            closed_at=closed.closed_at,
        )


def recapture(archive: Archive, source_id: int) -> None:
    make_job(archive, workers=1).run([source_id])


def load_manifest(archive: Archive, site: Site) -> None:
    specs = parse_text(MANIFEST.format(base=site.base), "test.yaml", date(2026, 11, 1))
    with archive.store() as store:
        store.load(specs)


def with_tsa(archive: Archive, tsa: OpensslTsa, name: str = "test-tsa") -> list[TsaConfig]:
    """Configure ``tsa`` in the archive's settings (as [[tsa]] in settings.toml would) and return its config."""
    archive.settings = dataclasses.replace(archive.settings, tsas=(TsaSettings(name, tsa.url, tsa.ca_path),))
    return tsa_configs(archive.settings, timeout=5)


@dataclass(frozen=True)
class Built:
    captures: dict[str, int]  # file name -> capture id
    batch: BatchReport
    checkpoint: CheckpointReport


def capture_site(archive: Archive, site: Site) -> dict[str, int]:
    """Capture the test site's sources and issue their receipts; returns file name -> capture id."""
    load_manifest(archive, site)
    summary = make_job(archive).run()
    assert all(c.outcome == "ok" for c in summary.captures), summary.as_dict()
    with archive.session() as s:
        rows = s.execute(select(Source.url, Capture.id).join(Capture, Capture.source_id == Source.id)).all()
    return {str(url).rsplit("/", 1)[-1]: cid for url, cid in rows}


def build(archive: Archive, site: Site, tsa: OpensslTsa) -> Built:
    """Capture the site, timestamp the receipts, checkpoint the custody chain: an archive that verifies."""
    captures = capture_site(archive, site)
    tsas = with_tsa(archive, tsa)
    signer = keys.load_signer(archive.settings.key_dir)
    with archive.session() as s:
        batch = timestamp_pending(s, archive.clock, tsas, signer, actor=archive.actor)
    with archive.session() as s:
        cp = checkpoint(s, archive.clock, signer, tsas, actor=archive.actor)
    return Built(captures, batch, cp)


# --- tampering -----------------------------------------------------------------------------------------------

_SQLITE_TRIGGERS = [
    "custody_events_no_update",
    "custody_events_no_delete",
    "receipts_no_update",
    "receipts_no_delete",
    "receipts_batched_once",
    "timestamp_tokens_no_update",
    "timestamp_tokens_no_delete",
    "timestamp_batches_no_update",
    "timestamp_batches_no_delete",
    "custody_checkpoints_no_update",
    "custody_checkpoints_no_delete",
]
_PG_TRIGGERS = [
    ("custody_events_no_change", "custody_events"),
    ("receipts_no_change", "receipts"),
    ("receipts_batched_once", "receipts"),
    ("timestamp_tokens_no_change", "timestamp_tokens"),
    ("timestamp_batches_no_change", "timestamp_batches"),
    ("custody_checkpoints_no_change", "custody_checkpoints"),
]


def tamper(archive: Archive, *statements: str, **params: Any) -> None:
    """Run SQL as an attacker with database access would: drop the write-once triggers first."""
    with archive.catalogue.engine.begin() as conn:
        if archive.catalogue.dialect == "sqlite":
            for name in _SQLITE_TRIGGERS:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        else:
            for name, table in _PG_TRIGGERS:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name} ON {table}"))
        for statement in statements:
            conn.execute(text(statement), params)
