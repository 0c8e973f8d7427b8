"""Interoperability: what CaptureJob writes replays in pywb, the reference wayback tool, and indexes with cdxj-indexer.

A real capture of a page served on 127.0.0.1 (an image, a stylesheet with a background image, a cited link)
into a real archive; its closed WARC files added to a pywb collection with ``wb-manager``; ``wayback`` serving
them on 127.0.0.1. pywb runs from its own virtualenv (it is GPL; see tests/support/pywb_env.py).

What is checked is what a reader of the archive relies on: the page's original bytes (``id_``) and its rewritten
replay come back, each requisite replays with the bytes that were served, and the capture receipt, a WARC
``metadata`` record with target ``urn:archiver:receipt:<id>``, does not stand in for the page: a sidecar whose
target URI were the page URL would make pywb replay JSON instead of the page.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob, RunSummary
from archiver.catalogue.models import Artifact, Capture
from archiver.catalogue.store import SourceRequest
from archiver.integrity.receipts import RECEIPT_ROLE
from tests.support.media_site import MediaSite
from tests.support.media_site import media_site as media_site
from tests.support.pywb_env import Wayback, http_session
from tests.support.pywb_env import pywb as pywb
from tests.support.pywb_env import wayback as wayback
from tests.support.site import Site
from tests.support.site import site as site

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
]  # the first run installs pywb: ~20 s here, more on slow links

CDXJ_INDEXER = Path(sys.executable).parent / "cdxj-indexer"
HTTP_TIMEOUT = 20.0  # seconds for one request to wayback

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + bytes(range(64))
BG_PNG = PNG + b"background"
STYLE = "body { color: #222; background: url(/bg.png) }"
HEADLINE = "Hospital struck in the night"
PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><title>Hospital struck</title>
<link rel="stylesheet" href="/style.css"></head>
<body><article><h1>{HEADLINE}</h1>
<p>The surgical hospital was hit by several airstrikes overnight and is out of service, according to local medics.
The health directorate <a href="/statement.html">issued a statement</a> mourning a doctor killed in the strike,
and a civil defence volunteer described the rescue to reporters at the scene in detail.</p>
<img src="/photo.png" alt="damage"></article></body></html>"""
STATEMENT = "<html><body><p>The directorate mourns a doctor.</p></body></html>"


@dataclass(frozen=True)
class Captured:
    """What one capture run stored, as the replay checks need it."""

    warcs: list[Path]
    timestamps: dict[str, str]  # target URI of each response or resource record -> its WARC-Date, 14 digits
    receipts: list[str]  # target URIs of the receipt records
    sidecars: list[str]  # target URIs of the locally made records (metadata, resource, conversion), receipts too


def _job(archive: Archive, *, media: bool) -> CaptureJob:
    settings = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=30, retries=0)
    return CaptureJob(archive, workers=2, fetch_settings=settings, gate=HostGate(4, 0.0), media=media)


def _capture(archive: Archive, *urls: str, media: bool) -> Captured:
    """One run capturing ``urls`` (each a source of its own); what it stored."""
    with archive.store() as store:
        sids = [store.ensure_source(SourceRequest(url=url))[0].id for url in urls]
    summary: RunSummary = _job(archive, media=media).run(sids)
    assert sorted(c.outcome for c in summary.captures) == ["ok"] * len(urls), summary.as_dict()
    warcs = sorted(archive.settings.warc_dir.glob("*.warc.gz"))
    assert warcs and not list(archive.settings.warc_dir.glob("*.open")), "the run leaves closed WARC files only"
    timestamps: dict[str, str] = {}
    with archive.session() as s:
        rows = s.scalars(select(Artifact).join(Capture).order_by(Artifact.id)).all()
        for a in rows:
            if a.target_uri and a.record_type in ("response", "resource"):
                timestamps.setdefault(a.target_uri, a.record_date.strftime("%Y%m%d%H%M%S"))
        receipts = [a.target_uri or "" for a in rows if a.role == RECEIPT_ROLE]
        sidecars = [a.target_uri or "" for a in rows if a.record_type not in ("request", "response")]
    assert receipts and all(r.startswith("urn:archiver:receipt:") for r in receipts)
    return Captured(warcs, timestamps, receipts, sidecars)


def _get(wayback: Wayback, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    with http_session() as session:
        try:
            return session.get(url, headers=headers, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise AssertionError(f"GET {url} failed: {exc}\n{wayback.logs()}") from exc


def _replays(wayback: Wayback, url: str) -> requests.Response:
    resp = _get(wayback, url)
    assert resp.status_code == 200, f"GET {url}: {resp.status_code}\n{resp.text[:2000]}\n{wayback.logs()}"
    return resp


CdxjLine = tuple[str, str, dict[str, str]]  # SURT key (or the URI itself, for urn:), timestamp, JSON fields


def _parse_cdxj(text: str) -> list[CdxjLine]:
    lines = []
    for line in text.splitlines():
        key, timestamp, fields = line.split(" ", 2)
        lines.append((key, timestamp, json.loads(fields)))
    return lines


def _cdxj_indexer(warcs: list[Path]) -> list[CdxjLine]:
    """``cdxj-indexer`` (the indexer of ReplayWeb.page and WACZ) over the files."""
    done = subprocess.run([str(CDXJ_INDEXER), *map(str, warcs)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return _parse_cdxj(done.stdout)


def _assert_page_not_shadowed(index: list[CdxjLine], page_url: str, captured: Captured) -> None:
    """The page is indexed, only the page's exchanges share its key, the receipts are indexed, and each locally
    made record (receipt, info.json, ...) has a urn: target and, where the indexer files it, sits under that urn:.

    A replay tool looks a URL up by its key: a metadata or resource record filed under the page's key could be
    chosen instead of the page (design: WARC conventions).
    """
    page_keys = {key for key, _ts, f in index if f.get("url") == page_url}
    assert len(page_keys) == 1, (page_url, index)
    under_page = [f for key, _ts, f in index if key in page_keys]
    assert all(f.get("url") == page_url and f.get("mime") == "text/html" for f in under_page), under_page
    keys_of = {f.get("url"): key for key, _ts, f in index}
    assert set(captured.receipts) <= set(keys_of), (captured.receipts, index)
    for uri in captured.sidecars:
        assert uri.startswith("urn:") and keys_of.get(uri, uri) == uri, (uri, index)


@pytest.fixture
def report_site(site: Site) -> Iterator[Site]:
    site.add("/style.css", STYLE, "text/css")
    site.add("/bg.png", BG_PNG, "image/png")
    site.add("/photo.png", PNG, "image/png")
    site.add("/statement.html", STATEMENT)
    site.add("/report.html", PAGE)
    yield site


def test_captured_page_replays_in_pywb(sqlite_archive: Archive, report_site: Site, wayback: Wayback) -> None:
    page_url = report_site.url("/report.html")
    cited_url = report_site.url("/statement.html")
    # A source without an incident has its citations extracted but not queued: capture the cited page too.
    captured = _capture(sqlite_archive, page_url, cited_url, media=False)
    ts = captured.timestamps
    assert {page_url, cited_url, report_site.url("/photo.png"), report_site.url("/bg.png")} <= set(ts)

    wayback.add(captured.warcs)
    wayback.start()

    # The original bytes, exactly as the site served them.
    original = _replays(wayback, wayback.url(ts[page_url], page_url, "id_"))
    assert original.content == PAGE.encode(), wayback.logs()
    # The rewritten replay: pywb's frame around the page, then the page itself (``mp_``, what the frame loads):
    # the page, not the receipt's JSON, with its links pointing into the collection.
    frame = _replays(wayback, wayback.url(ts[page_url], page_url))
    assert page_url in frame.text and ts[page_url] in frame.text
    replay = _replays(wayback, wayback.url(ts[page_url], page_url, "mp_"))
    assert replay.headers.get("Content-Type", "").startswith("text/html"), replay.headers
    assert HEADLINE in replay.text and "archiver/capture-receipt" not in replay.text
    assert f"/{wayback.collection}/{ts[page_url]}mp_/{cited_url}" in replay.text, replay.text
    # Requisites replay with the bytes that were served: the image, the stylesheet and what the stylesheet uses.
    for path, body in (("/photo.png", PNG), ("/bg.png", BG_PNG), ("/style.css", STYLE.encode())):
        url = report_site.url(path)
        assert _replays(wayback, wayback.url(ts[url], url, "id_")).content == body, url
    assert _replays(wayback, wayback.url(ts[page_url], report_site.url("/photo.png"), "im_")).content == PNG
    # The cited link, followed as a reader would from the replayed page, leads to the cited page's capture.
    assert "mourns a doctor" in _replays(wayback, wayback.url(ts[page_url], cited_url, "mp_")).text

    # Both indexes, pywb's own and cdxj-indexer's, file the receipts under their urn: and the page under its URL.
    _assert_page_not_shadowed(_parse_cdxj(wayback.index_text()), page_url, captured)
    _assert_page_not_shadowed(_cdxj_indexer(captured.warcs), page_url, captured)


def test_video_page_and_its_media_replay_in_pywb(
    sqlite_archive: Archive, media_site: MediaSite, wayback: Wayback
) -> None:
    page_url = media_site.url("/video-src.html")
    video_url = media_site.url("/media/clip.mp4")
    captured = _capture(sqlite_archive, page_url, media=True)
    ts = captured.timestamps
    assert video_url in ts, sorted(ts)

    wayback.add(captured.warcs)
    wayback.start()

    replay = _replays(wayback, wayback.url(ts[page_url], page_url, "mp_"))
    assert "Video src" in replay.text and replay.headers.get("Content-Type", "").startswith("text/html")
    video = _replays(wayback, wayback.url(ts[video_url], video_url, "id_"))
    clip = (media_site.media_dir / "clip.mp4").read_bytes()
    assert video.content == clip, (len(video.content), len(clip), wayback.logs())
    # A browser plays a video with range requests (RFC 9110 §14); pywb answers them from the stored 200.
    part = _get(wayback, wayback.url(ts[video_url], video_url, "id_"), headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == clip[:100], (part.status_code, part.headers, wayback.logs())

    # yt-dlp's info.json and merged output are sidecars too: none may be filed under the page's URL.
    assert any(uri.endswith("info.json") for uri in captured.sidecars), captured.sidecars
    _assert_page_not_shadowed(_parse_cdxj(wayback.index_text()), page_url, captured)
    _assert_page_not_shadowed(_cdxj_indexer(captured.warcs), page_url, captured)
