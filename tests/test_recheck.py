"""Re-checks against a real server on 127.0.0.1 whose pages change between checks (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from archiver import custody
from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact, Capture, CustodyEvent, Source, SourceCheck, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.clock import FixedClock
from archiver.recheck import Rechecker, RecheckSummary
from archiver.recheck_due import RecheckOptions, recheck_now, run_due
from archiver.warc.reader import iter_records
from tests.conftest import TEST_NOW

FAST = FetchSettings(connect_timeout=1, read_timeout=0.5, total_timeout=2, retries=0)
ARTICLE = """<!doctype html><html><head><title>Hospital struck</title>
<meta name="csrf-token" content="{token}"><script>window.session = "{token}";</script></head>
<body><nav><a href="/">Home</a> <a href="/news">News</a></nav>
<article><h1>Hospital struck in the night</h1>
<p>The surgical hospital was hit by several airstrikes overnight and is out of service, according to local
medics who spoke to reporters at the scene. {extra}</p>
<p>The health directorate issued a statement mourning a doctor who was killed in the strike, and a civil defence
volunteer described the rescue of patients from the basement in detail.</p></article>
<footer>Page generated {token} - Copyright the publisher</footer></body></html>"""


class Pages:
    """Path -> (status, body); a delay makes the server too slow for the fetcher's read timeout."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str]] = {}
        self.delay = 0.0
        pages = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if pages.delay:
                    time.sleep(pages.delay)
                status, body = pages.pages.get(self.path, (404, "<html><body>Not Found</body></html>"))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def set(self, path: str, body: str, status: int = 200) -> str:
        self.pages[path] = (status, body)
        return self.url(path)


@pytest.fixture
def pages() -> Iterator[Pages]:
    p = Pages()
    yield p
    p.server.shutdown()
    p.server.server_close()


def _captured(archive: Archive, url: str) -> int:
    with archive.store() as store:
        src, _ = store.ensure_source(SourceRequest(url=url))
        sid = src.id
    job = CaptureJob(archive, workers=2, fetch_settings=FAST, gate=HostGate(4, 0.0), media=False)
    (result,) = job.run([sid]).captures
    assert result.outcome == "ok"
    return sid


def _recheck(archive: Archive, *ids: int) -> RecheckSummary:
    return Rechecker(archive, workers=2, fetch_settings=FAST, gate=HostGate(4, 0.0), media=False).run(ids)


def _later(clock: FixedClock, days: float) -> None:
    clock.start += timedelta(days=days)


def _counts(archive: Archive, sid: int) -> tuple[int, int, list[str]]:
    with archive.reading() as s:
        caps = s.scalar(select(func.count(Capture.id)).where(Capture.source_id == sid)) or 0
        arts = s.scalar(select(func.count(Artifact.id))) or 0
        events = [e.action for e in custody.iter_events(s) if e.subject == f"source:{sid}"]
    return caps, arts, events


def test_unchanged_page_is_still_online_without_new_bytes(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    caps, arts, events = _counts(archive, sid)
    warcs = sorted(p.name for p in archive.settings.warc_dir.iterdir())
    _later(clock, 1)
    summary = _recheck(archive, sid)
    (check,) = summary.checks
    assert check.result == "still-online" and check.captures == () and check.reasons == ("web: same payload",)
    caps2, arts2, events2 = _counts(archive, sid)
    assert (caps2, arts2) == (caps, arts), "an unchanged source costs no capture and no record"
    assert sorted(p.name for p in archive.settings.warc_dir.iterdir()) == warcs
    assert events2 == [*events, "still-online"]
    with archive.reading() as s:
        row = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid)).one()
        page = s.scalars(select(Artifact).where(Artifact.role == "page")).one()
        assert row.result == "still-online" and row.method == "web" and row.http_status == 200
        assert row.payload_sha256 == row.previous_sha256 == page.payload_sha256
        src = s.get(Source, sid)
        assert src is not None and src.check_errors == 0 and src.last_checked_at is not None
        # Captured at TEST_NOW, checked a day later: the next slot of "daily for 7 days" is day 2.
        assert src.last_captured_at is not None and src.next_check_at == src.last_captured_at + timedelta(days=2)
        assert custody.check_chain(s).ok


def test_dynamic_bytes_with_the_same_main_text_are_still_online(
    archive: Archive, clock: FixedClock, pages: Pages
) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    pages.set("/a.html", ARTICLE.format(token="a-new-session-token-2", extra=""))
    _later(clock, 1)
    (check,) = _recheck(archive, sid).checks
    assert check.result == "still-online", check.reasons
    assert check.reasons == ("web: payload differs, main text the same",)
    with archive.reading() as s:
        row = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid)).one()
        assert row.payload_sha256 != row.previous_sha256
        # The earlier text digest was read back from the WARC record; the same text gives the same digest.
        assert row.text_sha256 is not None and row.text_sha256 == row.previous_text_sha256


def test_changed_content_is_captured_again(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    with archive.reading() as s:
        (first,) = s.scalars(select(Capture.id).where(Capture.source_id == sid)).all()
    edited = "A correction: the hospital director later said that two surgeons were killed, not one."
    pages.set("/a.html", ARTICLE.format(token="t2", extra=edited))
    _later(clock, 3)
    (check,) = _recheck(archive, sid).checks
    assert check.result == "changed" and len(check.captures) == 1 and check.captures[0] != first
    with archive.reading() as s:
        new = s.get(Capture, check.captures[0])
        assert new is not None and new.outcome == "ok" and new.method == "web"
        page = s.scalars(select(Artifact).where(Artifact.capture_id == new.id, Artifact.role == "page")).one()
        warc = s.get(WarcFile, page.warc_file_id)
        assert warc is not None and warc.status == "closed"
        event = s.scalars(select(CustodyEvent).where(CustodyEvent.action == "recaptured")).one()
        details = json.loads(event.details)
        assert details["previous_captures"] == [first] and details["captures"] == [new.id]
        assert details["returned"] is False
        row = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid)).one()
        assert row.capture_id == new.id and row.previous_capture_id == first and row.result == "changed"
        src = s.get(Source, sid)
        assert src is not None and src.status == "captured" and src.last_captured_at == new.ended_at
        # The schedule starts again from the new capture: daily for a week.
        assert src.next_check_at == new.ended_at + timedelta(days=1)
        assert custody.check_chain(s).ok
    (stored,) = [r for r in iter_records(archive.settings.warc_dir / warc.name) if r.record_id == page.record_id]
    assert stored.payload_sha256 == page.payload_sha256 != row.previous_sha256


@pytest.mark.parametrize("status", [404, 410])
def test_removed_page_marks_the_source_gone_with_evidence(
    archive: Archive, clock: FixedClock, pages: Pages, status: int
) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    pages.set("/a.html", "<html><body>This post was removed.</body></html>", status=status)
    _later(clock, 2)
    (check,) = _recheck(archive, sid).checks
    assert check.result == "gone" and check.http_status == status and len(check.captures) == 1
    with archive.reading() as s:
        src = s.get(Source, sid)
        assert src is not None and src.status == "gone"
        cap = s.get(Capture, check.captures[0])
        assert cap is not None and cap.outcome == "gone" and cap.http_status == status
        assert src.gone_at == cap.ended_at and src.gone_at >= TEST_NOW + timedelta(days=2)
        # The removal response itself is evidence: stored, with its digest, in the WARC.
        page = s.scalars(select(Artifact).where(Artifact.capture_id == cap.id, Artifact.role == "page")).one()
        assert page.payload_sha256 is not None
        gone = [e for e in custody.iter_events(s) if e.action == "gone" and e.subject == f"source:{sid}"]
        assert len(gone) == 1 and f'"http_status":{status}' in gone[0].details
        row = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid)).one()
        assert row.result == "gone" and row.http_status == status and row.capture_id == cap.id
        # Gone sources follow the slow schedule (monthly) from when they went.
        assert src.next_check_at == src.gone_at + timedelta(days=30)


def test_server_errors_and_timeouts_are_not_gone(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    _, arts, events = _counts(archive, sid)
    pages.set("/a.html", "<html><body>Overloaded</body></html>", status=503)
    for _ in (1, 2):
        _later(clock, 1)
        (check,) = _recheck(archive, sid).checks
        assert check.result == "error" and check.http_status == 503 and check.captures == ()
    pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    pages.delay = 1.0  # longer than the read timeout (0.5 s)
    _later(clock, 1)
    summary = _recheck(archive, sid)
    (check,) = summary.checks
    assert check.result == "error" and check.http_status is None and check.error
    # Three failures in a row (settings: report_errors_after = 3): listed as failing.
    assert [f["source_id"] for f in summary.failing] == [sid]
    _, arts2, events2 = _counts(archive, sid)
    assert arts2 == arts and events2 == events, "errors leave no record and no custody event"
    with archive.reading() as s:
        src = s.get(Source, sid)
        assert src is not None and src.status == "captured" and src.gone_at is None and src.check_errors == 3
        assert src.next_check_at == src.last_captured_at + timedelta(days=4)  # retried at the next slot
        results = s.scalars(select(SourceCheck.result).where(SourceCheck.source_id == sid)).all()
        assert results == ["error", "error", "error"]
    pages.delay = 0.0
    _later(clock, 1)
    (check,) = _recheck(archive, sid).checks
    assert check.result == "still-online" and not _recheck_failing(archive)


def _recheck_failing(archive: Archive) -> list[dict[str, object]]:
    return Rechecker(archive, media=False).failing()


def test_gone_source_that_returns_is_captured_again(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    pages.pages.pop("/a.html")
    _later(clock, 1)
    assert _recheck(archive, sid).checks[0].result == "gone"
    _later(clock, 30)
    (still,) = _recheck(archive, sid).checks
    assert still.result == "gone" and still.was_gone and still.captures == ()
    pages.set("/a.html", ARTICLE.format(token="t1", extra="Reinstated after an appeal."))
    _later(clock, 30)
    (back,) = _recheck(archive, sid).checks
    assert back.result == "changed" and back.was_gone and len(back.captures) == 1
    with archive.reading() as s:
        src = s.get(Source, sid)
        assert src is not None and src.status == "captured" and src.gone_at is None


def test_due_selection_follows_the_schedule(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    """Daily for 7 days, then weekly, counted from the capture; checks happen only when a slot has come."""
    url = pages.set("/a.html", ARTICLE.format(token="t1", extra=""))
    sid = _captured(archive, url)
    with archive.reading() as s:
        captured_at = s.get(Source, sid).last_captured_at  # type: ignore[union-attr]
    assert captured_at is not None
    checked_days = []
    for hour in range(0, 24 * 30, 6):  # a run every 6 hours for 30 days
        clock.start = captured_at + timedelta(hours=hour, minutes=1)
        summary = run_due(
            archive, lambda: Rechecker(archive, workers=2, fetch_settings=FAST, gate=HostGate(4, 0.0), media=False)
        )
        if summary.checks:
            assert [c.result for c in summary.checks] == ["still-online"]
            checked_days.append(hour / 24)
    assert checked_days == [1, 2, 3, 4, 5, 6, 7, 14, 21, 28]


def test_recheck_now_names_sources_and_refuses_uncaptured_ones(
    archive: Archive, clock: FixedClock, pages: Pages
) -> None:
    from archiver.errors import ArchiverError

    with archive.store() as store:
        pending, _ = store.ensure_source(SourceRequest(url=pages.url("/never.html")))
        pid = pending.id
    with pytest.raises(ArchiverError, match="is pending"):
        recheck_now(archive, RecheckOptions(source_ids=(pid,)))
    with pytest.raises(ArchiverError, match="no source 999"):
        recheck_now(archive, RecheckOptions(source_ids=(999,)))


def test_max_time_leaves_unchecked_sources_due(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    sid = _captured(archive, pages.set("/a.html", ARTICLE.format(token="t1", extra="")))
    _later(clock, 1)
    with archive.reading() as s:
        due_before = s.get(Source, sid).next_check_at  # type: ignore[union-attr]
    rechecker = Rechecker(archive, workers=1, fetch_settings=FAST, gate=HostGate(4, 0.0), media=False)
    summary = rechecker.run([sid], max_time=1e-9)
    assert summary.checks == [] and summary.skipped == 1 and summary.stopped_early
    with archive.reading() as s:
        assert s.get(Source, sid).next_check_at == due_before  # type: ignore[union-attr]
        assert s.scalar(select(func.count(SourceCheck.id))) == 0


def test_recheck_waits_for_no_one_while_a_run_holds_the_lock(archive: Archive, pages: Pages) -> None:
    from archiver import jobs
    from archiver.errors import LockedError

    sid = _captured(archive, pages.set("/a.html", ARTICLE.format(token="t1", extra="")))
    with jobs.run_lock(archive.settings.root), pytest.raises(LockedError):
        recheck_now(archive, RecheckOptions(source_ids=(sid,)))
    summary, integrity = recheck_now(archive, RecheckOptions(source_ids=(sid,)))
    assert [c.result for c in summary.checks] == ["still-online"] and "checkpoint" in integrity


def test_reschedule_applies_a_new_schedule_to_every_source(archive: Archive, clock: FixedClock, pages: Pages) -> None:
    from archiver.recheck_due import schedule_new
    from archiver.recheck_schedule import RecheckSettings, Schedule

    sid = _captured(archive, pages.set("/a.html", ARTICLE.format(token="t1", extra="")))
    with archive.session() as s:
        assert schedule_new(s, archive.settings.recheck) == 1
        assert schedule_new(s, archive.settings.recheck) == 0, "scheduled once, not rescanned"
    hourly = RecheckSettings(schedule=Schedule.parse("every 6 hours for 2 days, then daily"))
    with archive.session() as s:
        assert schedule_new(s, hourly) == 0, "a changed schedule waits for --reschedule"
        assert schedule_new(s, hourly, everything=True) == 1
        src = s.get(Source, sid)
        assert src is not None and src.last_captured_at is not None
        assert src.next_check_at == src.last_captured_at + timedelta(hours=6)
