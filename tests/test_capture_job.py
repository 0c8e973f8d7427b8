"""The capture run end to end: real HTTP on 127.0.0.1, real WARC files, real catalogue (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from archiver import custody
from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.manifest import parse_text
from archiver.warc.reader import check_file, iter_records
from tests.conftest import TEST_TODAY
from tests.support.hostile import HostileServer
from tests.support.hostile import hostile_server as hostile_server
from tests.support.site import Site
from tests.support.site import site as site

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 20

REPORT = """<!doctype html><html><head><title>Hospital struck</title><link rel="stylesheet" href="/style.css"></head>
<body><nav><a href="/about">About us</a> <a href="/category/news">News</a></nav>
<article><h1>Hospital struck in the night</h1>
<p>The surgical hospital was hit by several airstrikes overnight and is out of service, according to local medics.
Footage of the destruction <a href="/footage.html">was published by a local media centre</a> shortly after.</p>
<p>The health directorate <a href="/statement.html">issued a statement</a> mourning a doctor killed in the strike,
and a civil defence volunteer described the rescue to reporters at the scene in detail.</p>
<img src="/photo.png" alt="damage"></article>
<footer><a href="/privacy">Privacy</a> <a href="mailto:desk@example.org">Contact</a></footer></body></html>"""

MANIFEST = """version: 1
incidents:
  - id: test-hospital-2017-03-25
    title: Strike on a test hospital
    when: {{start: 2017-03-25}}
    place: {{name: Testtown, country: SY}}
    summary: A test incident.
    reports:
      - id: r1
        url: {report}
        title: Hospital struck
"""


def _site_with_report(site: Site) -> str:
    site.add("/style.css", "body { background: url(/bg.png) }", "text/css")
    site.add("/bg.png", PNG, "image/png")
    site.add("/photo.png", PNG, "image/png")
    site.add("/footage.html", "<html><body><p>footage page</p><img src='/photo.png'></body></html>")
    site.add("/statement.html", "<html><body><p>statement</p><a href='/deeper.html'>deeper</a></body></html>")
    return site.add("/report.html", REPORT)


def _job(archive: Archive, **kw: object) -> CaptureJob:
    settings = FetchSettings(
        connect_timeout=1, read_timeout=1, total_timeout=2, retries=1, backoff_base=0.05, backoff_max=0.2
    )
    return CaptureJob(archive, workers=4, fetch_settings=settings, gate=HostGate(4, 0.0), **kw)  # type: ignore[arg-type]


def _assert_catalogue_matches_warcs(archive: Archive) -> None:
    """Every artifact row points at a record that is on disk, whose digests are the row's."""
    warc_dir = archive.settings.warc_dir
    assert not list(warc_dir.glob("*.open")), "a finished run leaves no open WARC"
    with archive.session() as s:
        files = {w.id: w for w in s.scalars(select(WarcFile))}
        for w in files.values():
            path = warc_dir / w.name
            assert w.status == "closed" and w.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert check_file(path) == []
            assert path.stat().st_mode & 0o222 == 0, "closed WARC files are read-only"
        records = {}
        for w in files.values():
            for rec in iter_records(warc_dir / w.name):
                records[rec.record_id] = (w.id, rec)
        for a in s.scalars(select(Artifact)):
            wid, rec = records[a.record_id]
            assert (wid, rec.offset, rec.length) == (a.warc_file_id, a.offset, a.length)
            assert rec.block_sha256 == a.block_sha256
            declared = dict(rec.headers).get("WARC-Payload-Digest")
            assert a.payload_sha256 == (rec.payload_sha256 if declared else None)
            cap = a.capture
            if cap.method == "web" and a.role in ("request", "redirect", "page", "requisite"):
                # A capture's start is when its traffic started, even when its row was begun ahead of it.
                assert cap.started_at <= a.record_date and (cap.ended_at is None or a.record_date <= cap.ended_at)
        assert custody.check_chain(s).ok


def test_a_capture_begun_ahead_starts_when_its_traffic_starts(sqlite_archive: Archive, site: Site) -> None:
    """The dispatcher commits the rows of the captures it hands out; one that waits for a free worker states
    the time its traffic started, not the time it was handed out."""
    urls = [site.add(f"/q{i}.html", f"<html><body>{i}</body></html>") for i in range(3)]
    with sqlite_archive.store() as store:
        for u in urls:
            store.ensure_source(SourceRequest(url=u))
    settings = FetchSettings(connect_timeout=1, read_timeout=1, total_timeout=2, retries=0)
    job = CaptureJob(sqlite_archive, workers=1, fetch_settings=settings, gate=HostGate(4, 0.0))
    summary = job.run()
    assert [c.outcome for c in summary.captures] == ["ok"] * 3
    with sqlite_archive.session() as s:
        caps = s.scalars(select(Capture).where(Capture.method == "web").order_by(Capture.id)).all()
        assert len(caps) == 3 and len({c.started_at for c in caps}) == 3
        for before, after in itertools.pairwise(sorted(caps, key=lambda c: c.started_at)):
            assert before.ended_at is not None and before.ended_at < after.started_at  # one worker: one at a time
    _assert_catalogue_matches_warcs(sqlite_archive)


def test_a_new_warc_files_row_waiting_for_the_catalogue_holds_no_capture_back(sqlite_archive: Archive) -> None:
    """The first group written to a new WARC file commits the file's row before its capture can commit; while
    that waits for the catalogue's write lock, another capture thread still starts its traffic. (It once held
    the job's own lock, which every capture takes when its traffic starts: the test below then failed when the
    second capture started a moment after the first began writing.)"""
    job = CaptureJob(sqlite_archive, workers=1, gate=HostGate(4, 0.0))
    db = sqlite3.connect(sqlite_archive.settings.root / "catalogue.sqlite", check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")
    connecting = threading.Event()
    event.listen(sqlite_archive.catalogue.engine, "engine_connect", lambda _conn: connecting.set())
    registering = threading.Thread(target=job._warc_id, args=("held.warc.gz",))
    registering.start()
    # The registration's transaction is about to begin (and wait on the catalogue), under whatever lock
    # _warc_id holds.
    assert connecting.wait(10)
    starting = threading.Thread(target=job._started, args=(0,))
    starting.start()
    starting.join(timeout=2)
    started_while_held = not starting.is_alive()
    db.rollback()
    db.close()
    registering.join(timeout=10)
    starting.join(timeout=10)
    job.close()
    assert started_while_held
    assert not registering.is_alive()
    with sqlite_archive.session() as s:
        assert s.scalar(select(WarcFile.status).where(WarcFile.name == "held.warc.gz")) == "open"


def test_a_capture_waiting_for_its_transaction_lets_the_next_one_fetch(sqlite_archive: Archive, site: Site) -> None:
    """The worker limit counts traffic: one worker, and the second capture's request goes out while the first
    waits for the catalogue's write lock (held here by another connection) to commit what it fetched."""
    first = site.add("/first.html", "<html><body>first</body></html>")
    second = site.add("/second.html", "<html><body>second</body></html>")
    with sqlite_archive.store() as store:
        for u in (first, second):
            store.ensure_source(SourceRequest(url=u))
    db = sqlite3.connect(sqlite_archive.settings.root / "catalogue.sqlite", check_same_thread=False)
    released: list[str] = []  # what ended the hold
    lock = threading.Lock()

    def release(why: str) -> None:
        with lock:
            if not released:
                released.append(why)
                db.rollback()

    # Held until the second capture's request comes (the worker limit let it go out while the first capture
    # waits for the catalogue), or for 10 s if it does not come.
    timer = threading.Timer(10.0, release, ("time",))
    timer.daemon = True

    def hold_the_catalogue(path: str) -> None:
        if path == "/first.html":  # both captures are begun by now; the first one's end must wait
            db.execute("BEGIN IMMEDIATE")
            timer.start()
        elif path == "/second.html" and timer.is_alive():
            release("second request")

    site.on_request = hold_the_catalogue
    settings = FetchSettings(connect_timeout=2, read_timeout=2, total_timeout=4, retries=0)
    summary = CaptureJob(sqlite_archive, workers=1, fetch_settings=settings, gate=HostGate(4, 0.0)).run()
    timer.cancel()
    with lock:
        db.close()
    assert sorted(c.outcome for c in summary.captures) == ["ok", "ok"]
    assert released == ["second request"]
    with sqlite_archive.session() as s:
        caps = s.scalars(select(Capture).where(Capture.method == "web").order_by(Capture.started_at)).all()
        assert caps[0].ended_at is not None and caps[0].ended_at <= caps[1].started_at  # one worker's traffic
    _assert_catalogue_matches_warcs(sqlite_archive)


def test_report_page_requisites_and_citations(archive: Archive, site: Site) -> None:
    report_url = _site_with_report(site)
    with archive.store() as store:
        store.load(parse_text(MANIFEST.format(report=report_url), "m.yaml", TEST_TODAY))
    summary = _job(archive).run()
    by_url = {c.url: c for c in summary.captures}
    assert by_url[report_url].outcome == "ok" and by_url[report_url].discovered == 2
    # The cited pages are captured at depth 1; what they cite is not followed further.
    assert {site.url("/footage.html"), site.url("/statement.html")} <= set(by_url)
    assert site.url("/deeper.html") not in by_url and "/deeper.html" not in site.hits
    assert "/about" not in site.hits and "/privacy" not in site.hits  # navigation and footer are not citations
    assert site.hits["/bg.png"] == 1  # a requisite of a stylesheet
    with archive.session() as s:
        report = s.scalars(select(Source).where(Source.url == report_url)).one()
        cited = s.scalars(select(Source).where(Source.discovered_from_id == report.id)).all()
        assert {c.depth for c in cited} == {1} and all(c.status == "captured" for c in cited)
        assert [i.id for i in cited[0].incidents] == ["test-hospital-2017-03-25"]
        roles = {a.role for a in s.scalars(select(Artifact).join(Capture).where(Capture.source_id == report.id))}
        assert roles == {"page", "request", "requisite", "receipt"}
        events = [e.action for e in custody.events_for_incident(s, "test-hospital-2017-03-25")]
        assert events.count("source.discovered") == 2 and "collected" in events and "stored" in events
    _assert_catalogue_matches_warcs(archive)
    # Nothing is pending any more: a second run captures nothing.
    assert _job(archive).run().captures == []


HOSTILE = {
    "/ok": "ok",
    "/404": "gone",
    "/410": "gone",
    "/flaky?key=job": "ok",
    "/reset": "failed",
    "/endless": "failed",
    "/slow": "failed",
    "/loop": "failed",
    "/redirect?n=3": "ok",
    "/wrong-length": "failed",
    "/gzip-bomb": "ok",
    "/arabic": "ok",
    "/cp1256": "ok",
    "/pdf": "ok",
    "/chunked": "ok",
}


def test_hostile_servers_are_recorded_and_the_run_goes_on(archive: Archive, hostile_server: HostileServer) -> None:
    with archive.store() as store:
        store.load(parse_text(MANIFEST.format(report="https://example.invalid/r"), "m.yaml", TEST_TODAY))
        ids = {}
        for path in HOSTILE:
            src, _ = store.add_source("test-hospital-2017-03-25", SourceRequest(url=hostile_server.url(path)))
            ids[src.id] = path
    summary = _job(archive).run(list(ids))
    got = {ids[c.source_id]: c.outcome for c in summary.captures}
    assert got == HOSTILE
    with archive.session() as s:
        for cap in s.scalars(select(Capture)):
            assert cap.outcome in ("ok", "failed", "gone") and cap.ended_at is not None
            if cap.outcome == "failed":
                assert cap.error
        truncated = [c for c in s.scalars(select(Capture)) if c.details.get("truncated")]
        assert truncated, "cut bodies are kept and marked"
        bomb = s.scalars(
            select(Artifact).where(Artifact.target_uri == hostile_server.url("/gzip-bomb"), Artifact.role == "page")
        ).one()
        assert bomb.size < 100_000
    _assert_catalogue_matches_warcs(archive)


def test_failed_sources_are_retried_then_left(sqlite_archive: Archive, site: Site) -> None:
    url = site.url("/missing-then-present.html")
    with sqlite_archive.store() as store:
        store.ensure_source(SourceRequest(url=site.url("/down")))  # 404: gone, not retried
        _src, _ = store.ensure_source(SourceRequest(url=url))
    site.server.shutdown()  # nothing answers: connection errors
    site.server.server_close()
    first = _job(sqlite_archive).run()
    assert {c.outcome for c in first.captures} == {"failed"}
    assert len(_job(sqlite_archive).pending_sources()) == 2


def test_capture_url_without_incident_and_recovery_of_interrupted(sqlite_archive: Archive, site: Site) -> None:
    url = site.add("/one.html", "<html><body>one</body></html>")
    with sqlite_archive.session() as s:
        src = Source(identity_key=url, url=url, kind="article", status="pending", created_at=sqlite_archive.clock.now())
        s.add(src)
        s.flush()
        s.add(
            Capture(
                source_id=src.id, method="web", started_at=sqlite_archive.clock.now(), outcome="running", collector="x"
            )
        )
    summary = _job(sqlite_archive).capture_url(url)
    assert summary.interrupted == 1 and [c.outcome for c in summary.captures] == ["ok"]
    with sqlite_archive.session() as s:
        outcomes = sorted(c.outcome for c in s.scalars(select(Capture)))
    assert outcomes == ["interrupted", "ok"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_at_random_points_then_resume(tmp_path: Path, site: Site) -> None:
    """A real `archiver run` killed repeatedly at random moments; the next run repairs, resumes and completes."""
    import random
    import signal

    for i in range(60):
        site.add(f"/p{i}.html", f"<html><body><p>page {i}</p><img src='/img{i % 7}.png'></body></html>")
    for i in range(7):
        site.add(f"/img{i}.png", PNG * (50 + i * 400), "image/png")
    root = tmp_path / "storage"
    env_cli = [sys.executable, "-m", "archiver", "--root", str(root), "--collector", "kill-test"]
    subprocess.run([*env_cli, "init"], check=True, capture_output=True)
    settings_file = root / "settings.toml"
    settings_file.write_text(settings_file.read_text().replace("per_host_delay = 0.1", "per_host_delay = 0.0"))
    manifest = tmp_path / "m.yaml"
    lines = [MANIFEST.format(report=site.url("/p0.html")).replace("{{", "{").replace("}}", "}")]
    manifest.write_text(lines[0], encoding="utf-8")
    subprocess.run([*env_cli, "manifest", "load", str(manifest)], check=True, capture_output=True)
    for i in range(1, 60):
        subprocess.run(
            [*env_cli, "source", "add", site.url(f"/p{i}.html"), "--incident", "test-hospital-2017-03-25"],
            check=True,
            capture_output=True,
        )
    rng = random.Random(1234)
    kills = 0
    for _ in range(10):
        proc = subprocess.Popen([*env_cli, "run", "--workers", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.4, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run([*env_cli, "run", "--json"], capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr
    assert kills >= 3
    assert_completed_after_kills(root)


def assert_completed_after_kills(root: Path) -> None:
    """After kills and a final run: every source captured exactly once, nothing left running, every WARC file
    valid and matching the catalogue, the custody chain whole."""
    from collections import Counter

    from archiver.config import load_settings

    arch = Archive(load_settings(root, None, env={}))
    try:
        with arch.session() as s:
            statuses = {src.status for src in s.scalars(select(Source).where(Source.url.is_not(None)))}
            assert statuses == {"captured"}
            assert not s.scalars(select(Capture).where(Capture.outcome == "running")).all()
            # Nothing committed was captured again (a report also has its browser capture: one per method).
            ok = Counter((c.source_id, c.method) for c in s.scalars(select(Capture).where(Capture.outcome == "ok")))
            assert set(ok.values()) == {1}
        for w in arch.settings.warc_dir.glob("*.warc.gz"):
            check = subprocess.run([str(Path(sys.executable).parent / "warcio"), "check", str(w)], capture_output=True)
            assert check.returncode == 0, check.stdout
        _assert_catalogue_matches_warcs_allow_repaired(arch)
    finally:
        arch.close()


def _assert_catalogue_matches_warcs_allow_repaired(archive: Archive) -> None:
    warc_dir = archive.settings.warc_dir
    assert not list(warc_dir.glob("*.open"))
    with archive.session() as s:
        files = {w.id: w for w in s.scalars(select(WarcFile))}
        records = {}
        for w in files.values():
            assert w.status in ("closed", "repaired")
            assert w.sha256 == hashlib.sha256((warc_dir / w.name).read_bytes()).hexdigest()
            for rec in iter_records(warc_dir / w.name):
                records[rec.record_id] = (w.id, rec)
        for a in s.scalars(select(Artifact)):
            wid, rec = records[a.record_id]
            assert (wid, rec.offset, rec.length, rec.block_sha256) == (
                a.warc_file_id,
                a.offset,
                a.length,
                a.block_sha256,
            )
        assert custody.check_chain(s).ok


def test_recovery_records_a_file_closed_on_disk_but_not_in_the_catalogue(sqlite_archive: Archive) -> None:
    """kill -9 after the rename that closes a WARC file and before the catalogue recorded the close."""
    from archiver.clock import SequentialIds
    from archiver.warc.writer import WarcSink
    from tests.support.warc_files import http_pair

    sink = WarcSink(sqlite_archive.settings.warc_dir, prefix="t", clock=sqlite_archive.clock, ids=SequentialIds())
    sink.write_group(http_pair(sink, "http://127.0.0.1:9/x", b"body"))
    name = sink.current_name
    assert name is not None
    with sqlite_archive.session() as s:
        s.add(WarcFile(name=name, status="open", opened_at=sqlite_archive.clock.now()))
    closed = sink.close()  # on disk: closed and renamed; in the catalogue: still "open"
    assert closed is not None
    _job(sqlite_archive).recover()
    with sqlite_archive.session() as s:
        row = s.scalars(select(WarcFile).where(WarcFile.name == name)).one()
        assert (row.status, row.sha256, row.size, row.records) == ("closed", closed.sha256, closed.size, closed.records)
        assert [e.action for e in custody.iter_events(s)][-1] == "warc.closed"


def test_max_time_stops_starting_new_captures(sqlite_archive: Archive, site: Site) -> None:
    with sqlite_archive.store() as store:
        for i in range(30):
            store.ensure_source(SourceRequest(url=site.add(f"/m{i}.html", f"<p>{i}</p>")))
    job = CaptureJob(sqlite_archive, workers=1, gate=HostGate(1, 0.2), media=False)
    summary = job.run(max_time=0.5)
    assert summary.stopped_early and 0 < len(summary.captures) < 30
    assert len(_job(sqlite_archive).pending_sources()) == 30 - len(summary.captures)


def test_credentials_from_settings_reach_their_domain_only_and_are_redacted(tmp_path: Path, site: Site) -> None:
    from archiver.config import load_settings
    from archiver.warc.reader import iter_records as records_of

    root = tmp_path / "storage"
    root.mkdir()
    (root / "settings.toml").write_text(
        '[[credentials]]\ndomain = "127.0.0.1"\nheaders = { Cookie = "session=SECRET-VALUE" }\n', encoding="utf-8"
    )
    arch = Archive(load_settings(root, None, collector="t", env={}))
    arch.init()
    try:
        seen: list[str | None] = []
        url = site.add("/private.html", "<html><body>members only</body></html>")
        original = site.server.RequestHandlerClass.do_GET  # type: ignore[attr-defined]

        def spy(handler: Any) -> None:
            seen.append(handler.headers.get("Cookie"))
            original(handler)

        site.server.RequestHandlerClass.do_GET = spy  # type: ignore[attr-defined]
        other = url.replace("127.0.0.1", "localhost").replace("private", "public")
        site.add("/public.html", "<html><body>public</body></html>")
        with arch.store() as store:
            store.ensure_source(SourceRequest(url=url))
            store.ensure_source(SourceRequest(url=other))
        CaptureJob(arch, workers=1, gate=HostGate(1, 0.0), media=False).run()  # the archive's own settings
        assert seen == ["session=SECRET-VALUE", None]  # 127.0.0.1 gets it, localhost does not
        stored = b"".join(
            (arch.settings.warc_dir / w).read_bytes()
            for w in [p.name for p in arch.settings.warc_dir.glob("*.warc.gz")]
        )
        assert b"SECRET-VALUE" not in gzip_all(stored)
        requests_ = [
            r for p in arch.settings.warc_dir.glob("*.warc.gz") for r in records_of(p) if r.record_type == "request"
        ]
        assert any(dict(r.headers).get("X-Archiver-Redacted") for r in requests_)
    finally:
        arch.close()


def gzip_all(data: bytes) -> bytes:
    import zlib

    out, rest = [], data
    while rest:
        d = zlib.decompressobj(31)
        out.append(d.decompress(rest))
        rest = d.unused_data
    return b"".join(out)
