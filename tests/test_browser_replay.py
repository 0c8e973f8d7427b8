"""What the browser fetched replays in pywb: a page whose content arrives only by JavaScript, captured through
CaptureJob, is opened in pywb by a real Chromium (no interception, the site itself shut down) and its late
content appears, served from the WARC. The screenshot, PDF and DOM sidecars do not stand in for the page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact
from archiver.catalogue.store import SourceRequest
from tests.support.js_site import CONSENT_TEXT, LATE_TEXT, JsSite
from tests.support.pywb_env import Wayback, http_session
from tests.support.pywb_env import pywb as pywb
from tests.support.pywb_env import wayback as wayback
from tests.test_browser import CHROMIUM, need_chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # the first run installs pywb


@pytest.fixture
def own_site() -> Iterator[JsSite]:
    s = JsSite()
    yield s
    s.close()


async def _rendered_text(url: str, wanted: str) -> str:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page()
            # Loaded at the top, pywb shows its frame and loads the page (``mp_``) inside it.
            await page.goto(url, wait_until="load", timeout=30000)
            for _ in range(100):
                inner = [f for f in page.frames if "mp_/" in f.url]
                if inner:
                    break
                await asyncio.sleep(0.1)
            frame = inner[0] if inner else page.main_frame
            try:
                await frame.wait_for_function(f"document.body.innerText.includes({wanted!r})", timeout=15000)
            except Exception:  # the assertion below shows what was there instead
                pass
            text: str = await frame.inner_text("body")
            return text
        finally:
            await browser.close()


def test_late_javascript_content_replays_in_pywb(sqlite_archive: Archive, own_site: JsSite, wayback: Wayback) -> None:
    need_chromium()
    url = own_site.url("/feed.html")
    with sqlite_archive.store() as store:
        sid = store.ensure_source(SourceRequest(url=url, kind="report"))[0].id
    fetch = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=10, retries=0)
    summary = CaptureJob(sqlite_archive, fetch_settings=fetch, gate=HostGate(4, 0.0), media=False, browser=None).run(
        [sid]
    )
    assert summary.captures[0].outcome == "ok", summary.as_dict()
    with sqlite_archive.session() as s:
        dates = {
            a.target_uri: a.record_date.strftime("%Y%m%d%H%M%S")
            for a in s.scalars(select(Artifact))
            if a.record_type in ("response", "resource")
        }
    api = own_site.url("/api/post.json")
    assert api in dates and f"urn:screenshot:{url}" in dates
    own_site.close()  # from here on, only the archive can answer

    wayback.add(sorted(sqlite_archive.settings.warc_dir.glob("*.warc.gz")))
    wayback.start()
    ts = dates[url]
    with http_session() as session:
        original = session.get(wayback.url(dates[api], api, "id_"), timeout=20)
        assert original.status_code == 200 and LATE_TEXT in original.text, wayback.logs()
        page = session.get(wayback.url(ts, url, "id_"), timeout=20)
        assert page.headers.get("Content-Type", "").startswith("text/html") and "Incident report" in page.text
    # A real browser on the replay: the page's script fetches the JSON (rewritten into the collection) and the
    # late text appears; what the consent click loaded replays too when the script asks for it.
    text = asyncio.run(_rendered_text(wayback.url(ts, url, "mp_"), LATE_TEXT))
    assert LATE_TEXT in text, text[:2000] + "\n" + wayback.logs()
    with http_session() as session:
        consent = session.get(wayback.url(ts, own_site.url("/api/after-consent"), "id_"), timeout=20)
        assert consent.status_code == 200 and consent.text == CONSENT_TEXT
