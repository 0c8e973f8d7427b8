"""Browser capture in Debian's headless Chromium: late JavaScript content in the DOM, the screenshot and the WARC.

One Chromium (module scope) renders the local JS pages of tests/support/js_site.py through the real capturer;
one test goes through CaptureJob into a real archive to check the records, artifacts, warcinfo and receipt.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from archiver.archive import Archive
from archiver.capture.browser import BrowserCapture, BrowserCapturer
from archiver.capture.browser_page import BANNER_HEIGHT, CONSENT_NAME
from archiver.capture.browser_settings import BrowserSettings, browser_settings
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact, Capture
from archiver.catalogue.store import SourceRequest
from archiver.clock import RandomIds, SystemClock
from archiver.errors import ConfigError
from archiver.warc.reader import iter_records
from tests.support.js_site import CONSENT_TEXT, FEED_PAGES, LATE_TEXT, JsSite
from tests.support.js_site import js_site as js_site
from tests.support.site import Site
from tests.support.site import site as site

CHROMIUM = "/usr/bin/chromium"
FAST_FETCH = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=10, retries=0)


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (.ci/run)")
        pytest.skip("Debian's chromium is not installed (apt install chromium)")


@pytest.fixture(scope="module")
def capturer() -> Iterator[BrowserCapturer]:
    need_chromium()
    ids = RandomIds()
    cap = BrowserCapturer(BrowserSettings(page_timeout=10), FAST_FETCH, HostGate(4, 0.0), SystemClock(), ids)
    yield cap
    cap.close()


def _new_id() -> str:
    return f"<urn:uuid:{RandomIds().uuid()}>"


def _by_role(result: BrowserCapture, role: str) -> list[Any]:
    return [spec for r, _, spec in result.specs if r == role]


def _bytes(spec: Any) -> bytes:
    return b"".join(spec.block.chunks())


def test_late_content_is_in_the_dom_the_screenshot_and_the_traffic(capturer: BrowserCapturer, js_site: JsSite) -> None:
    result = capturer.capture(js_site.url("/start"), _new_id)  # a 302 to /feed.html first
    try:
        assert result.outcome == "ok", result.error
        assert result.final_url == js_site.url("/feed.html") and result.http_status == 200
        dom = _bytes(_by_role(result, "dom")[0]).decode()
        # fetch() of JSON, the lazy image, every page of the infinite feed, and what the consent click loaded.
        assert LATE_TEXT in dom and 'src="/img/lazy.png"' in dom and CONSENT_TEXT in dom
        assert all(f"FEED-ITEM-{n}" in dom for n in range(1, FEED_PAGES + 1)), dom
        assert result.details["cookie_banner_clicked"] == "Accept all"
        # Each of those requests went through the fetcher and is a response record with the bytes served.
        responses = {s.target_uri: s for r, _, s in result.specs if s.type == "response"}
        assert json.loads(_bytes(responses[js_site.url("/api/post.json")]).split(b"\r\n\r\n", 1)[1]) == {
            "text": LATE_TEXT
        }
        assert js_site.url("/img/lazy.png") in responses and js_site.url(f"/api/feed?page={FEED_PAGES}") in responses
        roles = {s.target_uri: r for r, _, s in result.specs if s.type == "response"}
        assert roles[js_site.url("/start")] == "redirect" and roles[js_site.url("/feed.html")] == "page"
        # The browser's cookie went to the site, and is stored redacted.
        assert js_site.cookies["/api/feed"] == "consent=yes"
        feed_request = next(s for s in result.specs if s[2].type == "request" and "/api/feed" in s[2].target_uri)[2]
        assert b"Cookie: [redacted]" in _bytes(feed_request) and b"consent=yes" not in _bytes(feed_request)
        # The screenshot: the banner strip, then the whole (scrolled, grown) page.
        shot = Image.open(io.BytesIO(_bytes(_by_role(result, "screenshot")[0])))
        assert shot.height - BANNER_HEIGHT == result.details["page_height"] > 3 * capturer.settings.viewport_height
        assert shot.convert("RGB").getpixel((shot.width - 2, 2)) == (32, 32, 32)  # the strip, not the page
        assert _bytes(_by_role(result, "pdf")[0]).startswith(b"%PDF-")
    finally:
        result.close()


def test_resources_have_urn_targets_tied_to_the_page_response(capturer: BrowserCapturer, js_site: JsSite) -> None:
    result = capturer.capture(js_site.url("/gzip.html"), _new_id)
    try:
        assert result.outcome == "ok", result.error
        page = _by_role(result, "page")[0]
        # Stored as served (gzip), rendered decoded.
        assert b"Content-Encoding: gzip" in page.block.read_head()
        assert "GZIPPED-PAGE" in _bytes(_by_role(result, "dom")[0]).decode()
        url = js_site.url("/gzip.html")
        for role in ("screenshot", "pdf", "dom"):
            spec = _by_role(result, role)[0]
            assert spec.type == "resource" and spec.target_uri == f"urn:{role}:{url}"
            assert ("WARC-Concurrent-To", page.record_id) in spec.headers  # WARC 1.1 §5.7
        meta = _by_role(result, "metadata")[0]
        assert meta.target_uri == f"urn:browser-capture:{url}" and ("WARC-Refers-To", page.record_id) in meta.headers
        doc = json.loads(_bytes(meta))
        assert doc["browser"]["chromium"] == result.tools["chromium"]
        assert "--proxy-server=127.0.0.1:1" in result.tools["chromium-command-line"]
    finally:
        result.close()


def test_arabic_banner_is_dismissed_and_autoplay_media_is_not_downloaded(
    capturer: BrowserCapturer, js_site: JsSite
) -> None:
    arabic = capturer.capture(js_site.url("/arabic.html"), _new_id)
    video = capturer.capture(js_site.url("/video.html"), _new_id)
    try:
        assert arabic.details["cookie_banner_clicked"] == "موافق"
        assert CONSENT_TEXT in _bytes(_by_role(arabic, "dom")[0]).decode()
        assert video.outcome == "ok" and video.details["blocked"] == [f"Media {js_site.url('/stream.mp4')}"]
        assert "/stream.mp4" not in js_site.hits
    finally:
        arabic.close()
        video.close()


def test_consent_rule_matches_whole_names_only() -> None:
    for name in ("Accept all", "  accept  ", "OK", "Alle akzeptieren", "موافق", "قبول الكل", "Tout accepter"):
        assert CONSENT_NAME.match(name), name
    for name in ("Accept terms and delete my account", "Settings", "Reject all", "Book a table"):
        assert not CONSENT_NAME.match(name), name


def test_browser_settings_are_checked(tmp_path: Path) -> None:
    s = browser_settings({"kinds": ["report", "article"], "platforms": [], "page_timeout": 5}, tmp_path)
    assert s.page_timeout == 5.0 and s.wants("article", None) and not s.wants("video", "youtube")
    assert BrowserSettings().wants(None, "twitter") and not BrowserSettings().wants("article", None)
    for bad in ({"page_timeout": 0}, {"kinds": "report"}, {"enabled": "yes"}, {"colour": 1}, {"max_pages": True}):
        with pytest.raises(ConfigError, match=r"\[browser\]"):
            browser_settings(bad, tmp_path)


def _with_browser(archive: Archive, **changes: Any) -> Archive:
    archive.settings = replace(archive.settings, browser=replace(archive.settings.browser, **changes))
    return archive


def test_missing_chromium_warns_once_and_the_web_capture_goes_on(sqlite_archive: Archive, site: Site) -> None:
    _with_browser(sqlite_archive, executable=str(Path(shutil.which("true") or "/bin/true").parent / "no-chromium"))
    urls = [site.add(f"/r{i}.html", f"<html><body>report {i}</body></html>") for i in range(2)]
    with sqlite_archive.store() as store:
        sids = [store.ensure_source(SourceRequest(url=u, kind="report"))[0].id for u in urls]
    job = CaptureJob(sqlite_archive, fetch_settings=FAST_FETCH, gate=HostGate(4, 0.0), media=False, browser=None)
    summary = job.run(sids)
    assert [c.outcome for c in summary.captures] == ["ok", "ok"]
    assert len(summary.warnings) == 1 and "Chromium not found" in summary.warnings[0]
    with sqlite_archive.session() as s:
        assert {c.method for c in s.scalars(select(Capture))} == {"web"}


def test_capture_job_writes_the_browser_capture(sqlite_archive: Archive, js_site: JsSite) -> None:
    need_chromium()
    url = js_site.url("/arabic.html")
    with sqlite_archive.store() as store:
        sid = store.ensure_source(SourceRequest(url=url, kind="report"))[0].id
    job = CaptureJob(sqlite_archive, fetch_settings=FAST_FETCH, gate=HostGate(4, 0.0), media=False, browser=None)
    summary = job.run([sid])
    assert summary.captures[0].outcome == "ok" and summary.captures[0].methods == 2, summary.as_dict()
    with sqlite_archive.session() as s:
        cap = s.scalars(select(Capture).where(Capture.method == "browser")).one()
        assert cap.outcome == "ok" and cap.final_url == url and cap.http_status == 200
        assert cap.tools["chromium"] and "--js-flags" in cap.tools["chromium-command-line"]
        arts = {a.role: a for a in s.scalars(select(Artifact).where(Artifact.capture_id == cap.id))}
        assert {"page", "requisite", "request", "screenshot", "pdf", "dom", "metadata"} <= set(arts)
        assert arts["screenshot"].target_uri == f"urn:screenshot:{url}" and arts["pdf"].media_type == "application/pdf"
    records = [r for w in sorted(sqlite_archive.settings.warc_dir.glob("*.warc.gz")) for r in iter_records(w)]
    assert all(r.ok for r in records)  # digests recomputed from the stored bytes
    assert sum(r.record_type == "warcinfo" for r in records) >= 1
    by_id = {r.record_id: r for r in records}
    shot = next(r for r in records if r.target_uri == f"urn:screenshot:{url}")
    page = by_id[shot.header("WARC-Concurrent-To")]
    assert page.record_type == "response" and page.target_uri == url
    assert by_id[arts["screenshot"].record_id].payload_sha256 == arts["screenshot"].payload_sha256
    # The request the consent click caused is recorded like any other.
    assert any(r.record_type == "response" and r.target_uri == js_site.url("/api/after-consent") for r in records)
    # The receipt (a metadata record) names the browser and its exact command line.
    receipts = [
        (w, r)
        for w in sorted(sqlite_archive.settings.warc_dir.glob("*.warc.gz"))
        for r in iter_records(w)
        if (r.target_uri or "").startswith("urn:archiver:receipt:")
    ]
    assert any(_receipt_tools(w, r).get("chromium") == cap.tools["chromium"] for w, r in receipts)
    warcinfo_text = _warcinfo_text(sqlite_archive)
    assert "browser: Chromium" in warcinfo_text and "browser-flags: --proxy-server=127.0.0.1:1" in warcinfo_text


def _receipt_tools(warc: Path, record: Any) -> dict[str, str]:
    import gzip

    with open(warc, "rb") as f:
        f.seek(record.offset)
        data = gzip.decompress(f.read(record.length))
    doc = json.loads(data.split(b"\r\n\r\n", 1)[1].decode("utf-8").strip())
    tools: dict[str, str] = doc.get("capture", {}).get("tools", {})
    return tools


def _warcinfo_text(archive: Archive) -> str:
    import gzip

    first = sorted(archive.settings.warc_dir.glob("*.warc.gz"))[0]
    with gzip.open(first, "rb") as f:
        return f.read(4096).decode("utf-8", "replace")
