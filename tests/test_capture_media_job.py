"""Media through the capture run: the page, the video's own exchanges and the catalogue rows that say so."""

from __future__ import annotations

from sqlalchemy import select

from archiver import custody
from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Artifact, Capture, MediaItem, Source
from archiver.catalogue.store import SourceRequest
from tests.support.media_site import MediaSite, media_site

__all__ = ["media_site"]  # a fixture, used by name


def _job(archive: Archive) -> CaptureJob:
    settings = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=30, retries=0)
    return CaptureJob(archive, workers=2, fetch_settings=settings, gate=HostGate(4, 0.0))


def _add(archive: Archive, url: str, **kw: object) -> int:
    with archive.store() as store:
        src, _ = store.ensure_source(SourceRequest(url=url, **kw))  # type: ignore[arg-type]
        return src.id


def test_page_with_video_gets_web_and_media_captures(sqlite_archive: Archive, media_site: MediaSite) -> None:
    sid = _add(sqlite_archive, media_site.url("/video-src.html"))
    (summary,) = _job(sqlite_archive).run([sid]).captures
    assert summary.outcome == "ok" and summary.methods == 2
    with sqlite_archive.session() as s:
        caps = s.scalars(select(Capture).where(Capture.source_id == sid).order_by(Capture.id)).all()
        assert [(c.method, c.outcome) for c in caps] == [("web", "ok"), ("media", "ok")]
        assert "yt-dlp" in caps[1].tools and "ffmpeg" in caps[1].tools
        media = s.scalars(select(Artifact).where(Artifact.capture_id == caps[1].id, Artifact.role == "media")).all()
        assert media_site.file_sha256("clip.mp4") in {a.payload_sha256 for a in media}
        assert caps[1].details["identity"] is not None
        (item,) = s.scalars(select(MediaItem).where(MediaItem.source_id == sid)).all()
        assert item.capture_id == caps[1].id and item.sha256 == media_site.file_sha256("clip.mp4")
        assert item.item_id and item.platform
        assert item.size == (media_site.media_dir / "clip.mp4").stat().st_size
        events = [e.action for e in custody.iter_events(s) if e.subject == f"source:{sid}"]
        assert events == ["source.added", "collected", "stored", "signed", "collected", "stored", "signed"]
        assert custody.check_chain(s).ok


def test_direct_media_url_is_downloaded_once(sqlite_archive: Archive, media_site: MediaSite) -> None:
    media_site.hits.clear()
    sid = _add(sqlite_archive, media_site.url("/media/clip.webm"))
    (summary,) = _job(sqlite_archive).run([sid]).captures
    assert summary.outcome == "ok" and summary.methods == 1
    gets = [h for h in media_site.hits if h.method == "GET" and h.path.startswith("/media/clip.webm")]
    assert len(gets) == 1


def test_removed_platform_video_marks_the_source_gone(sqlite_archive: Archive, media_site: MediaSite) -> None:
    sid = _add(sqlite_archive, media_site.url("/gone.html"), kind="video")
    (summary,) = _job(sqlite_archive).run([sid]).captures
    assert summary.outcome == "gone"
    with sqlite_archive.session() as s:
        src = s.get(Source, sid)
        assert src is not None and src.status == "gone" and src.gone_at is not None


def test_page_without_video_gets_no_media_capture(sqlite_archive: Archive, media_site: MediaSite) -> None:
    sid = _add(sqlite_archive, media_site.url("/no-video.html"))
    (summary,) = _job(sqlite_archive).run([sid]).captures
    assert summary.outcome == "ok" and summary.methods == 1
