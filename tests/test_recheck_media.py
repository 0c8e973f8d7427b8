"""Media re-checks with real yt-dlp against the local video site: identity without download, and removal."""

from __future__ import annotations

import shutil

from sqlalchemy import select

from archiver import custody
from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact, Capture, Source, SourceCheck
from archiver.catalogue.store import SourceRequest
from archiver.recheck import Rechecker
from tests.support.media_site import MediaSite, media_site

__all__ = ["media_site"]  # a fixture, used by name

SETTINGS = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=30, retries=0)


def _captured(archive: Archive, url: str, **kw: object) -> int:
    with archive.store() as store:
        src, _ = store.ensure_source(SourceRequest(url=url, **kw))  # type: ignore[arg-type]
        sid = src.id
    (summary,) = CaptureJob(archive, workers=2, fetch_settings=SETTINGS, gate=HostGate(4, 0.0)).run([sid]).captures
    assert summary.outcome == "ok"
    return sid


def _rechecker(archive: Archive) -> Rechecker:
    return Rechecker(archive, workers=2, fetch_settings=SETTINGS, gate=HostGate(4, 0.0))


def test_page_with_video_still_online_downloads_no_video(sqlite_archive: Archive, media_site: MediaSite) -> None:
    sid = _captured(sqlite_archive, media_site.url("/video-src.html"))
    with sqlite_archive.reading() as s:
        before = s.scalar(select(Artifact.id).order_by(Artifact.id.desc()).limit(1))
    media_site.hits.clear()
    (check,) = _rechecker(sqlite_archive).run([sid]).checks
    assert check.result == "still-online", check.reasons
    assert check.reasons == ("web: same payload", "media: same items (id, title, duration)")
    # yt-dlp read the page for the metadata and never fetched the video.
    assert "/media/clip.mp4" not in media_site.paths_hit() and "/video-src.html" in media_site.paths_hit()
    with sqlite_archive.reading() as s:
        assert s.scalar(select(Artifact.id).order_by(Artifact.id.desc()).limit(1)) == before
        rows = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid).order_by(SourceCheck.id)).all()
        assert [(r.method, r.result) for r in rows] == [("web", "still-online"), ("media", "still-online")]
        media = rows[1].details
        assert media["identities"] == media["previous_identities"] and media["identities"][0]["item_id"]


def test_removed_video_marks_the_source_gone_with_the_evidence(sqlite_archive: Archive, media_site: MediaSite) -> None:
    # A file of its own, so that other tests on the module's site keep theirs.
    shutil.copy(media_site.media_dir / "clip.webm", media_site.media_dir / "recheck-clip.webm")
    url = media_site.url("/media/recheck-clip.webm")
    sid = _captured(sqlite_archive, url, kind="video")
    (media_site.media_dir / "recheck-clip.webm").unlink()  # taken down: the server answers 404
    (check,) = _rechecker(sqlite_archive).run([sid]).checks
    assert check.result == "gone" and len(check.captures) == 1
    assert check.reasons[0].startswith("media: HTTP 404 on ")
    with sqlite_archive.reading() as s:
        src = s.get(Source, sid)
        cap = s.get(Capture, check.captures[0])
        assert src is not None and src.status == "gone" and src.gone_at is not None
        assert cap is not None and cap.method == "media" and cap.outcome == "gone"
        # The 404 the platform answered is in the WARC, and the gone event quotes it.
        assert s.scalars(select(Artifact).where(Artifact.capture_id == cap.id)).first() is not None
        (event,) = [e for e in custody.iter_events(s) if e.action == "gone" and e.subject == f"source:{sid}"]
        assert "HTTP 404 on " in event.details
        row = s.scalars(select(SourceCheck).where(SourceCheck.source_id == sid)).one()
        assert row.method == "media" and row.result == "gone" and row.capture_id == cap.id
