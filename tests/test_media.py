"""yt-dlp media capture against a real video site on 127.0.0.1, with media made by real ffmpeg.

Every capture is written through a real WarcSink and read back with warcio; the tests compare stored
digests with the SHA-256 of the bytes the site served, and check that every request the site saw is a
response record (nothing yt-dlp or ffmpeg fetched escaped the archive).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from warcio.archiveiterator import ArchiveIterator
from yt_dlp.extractor import get_info_extractor

from archiver.capture.fetch import FetchSettings
from archiver.capture.media import (
    MediaCapturer,
    MediaResult,
    MediaSettings,
    classify_failure,
    media_candidate,
    plan_for,
    sweep_temp,
)
from archiver.capture.media_env import Workdir, check_ffmpeg
from archiver.clock import RandomIds, SystemClock
from archiver.errors import ToolMissingError
from archiver.warc.writer import WarcSink
from tests.support.media_site import MediaSite, media_site

__all__ = ["media_site"]  # a fixture, used by name

FAST = FetchSettings(connect_timeout=2.0, read_timeout=5.0, total_timeout=10.0, retries=0)


@dataclass
class Stored:
    """One record read back from the WARC with warcio."""

    type: str
    id: str
    target: str | None
    headers: list[tuple[str, str]]
    payload_sha256: str  # of the stored payload (the entity for HTTP records, the block otherwise)
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Captured:
    result: MediaResult
    records: list[Stored]
    roles: dict[str, str]  # record id -> role given by MediaResult
    warc_bytes: bytes  # every WARC file, decompressed

    def by_id(self, record_id: str | None) -> Stored:
        return next(r for r in self.records if r.id == record_id)

    def of_type(self, record_type: str) -> list[Stored]:
        return [r for r in self.records if r.type == record_type]

    def role(self, role: str) -> list[Stored]:
        return [r for r in self.records if self.roles.get(r.id) == role]


@pytest.fixture
def site(media_site: MediaSite) -> MediaSite:
    media_site.hits.clear()
    return media_site


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Any]:
    """``capture(url, **media_settings)``: capture, write every record to a WARC, read it back."""
    capturers: list[MediaCapturer] = []
    results: list[MediaResult] = []
    temp_parent = tmp_path / "media-tmp"

    def run(url: str, fetch: FetchSettings = FAST, **settings: Any) -> Captured:
        ids = RandomIds()
        capturer = MediaCapturer(
            fetch, MediaSettings(**settings), temp_parent=temp_parent, clock=SystemClock(), ids=ids
        )
        capturers.append(capturer)
        result = capturer.capture(url)
        results.append(result)
        assert list(temp_parent.iterdir()) == [], "a capture left files behind"
        warc_dir = tmp_path / f"warc-{len(results)}"
        with WarcSink(warc_dir, prefix="media", clock=SystemClock(), ids=ids, host="test") as sink:
            refs = sink.write_group([spec for _, _, spec in result.records])
        assert [r.record_id for r in refs] == [spec.record_id for _, _, spec in result.records]
        records, raw = [], b""
        for path in sorted(warc_dir.glob("*.warc.gz")):
            raw += gzip.decompress(path.read_bytes())
            with path.open("rb") as f:
                for rec in ArchiveIterator(f):
                    if rec.rec_type == "warcinfo":
                        continue
                    body = rec.raw_stream.read()
                    records.append(
                        Stored(
                            type=rec.rec_type,
                            id=rec.rec_headers.get_header("WARC-Record-ID"),
                            target=rec.rec_headers.get_header("WARC-Target-URI"),
                            headers=list(rec.rec_headers.headers),
                            payload_sha256=hashlib.sha256(body).hexdigest(),
                            body=body,
                        )
                    )
        for r in records:  # every payload digest the sink wrote is the SHA-256 of the payload warcio reads
            if r.type in ("response", "conversion", "resource"):
                assert r.header("WARC-Payload-Digest") == f"sha256:{r.payload_sha256}"
        roles = {spec.record_id or "": role for role, _, spec in result.records}
        return Captured(result, records, roles, raw)

    yield run
    for r in results:
        r.close()
    for c in capturers:
        c.close()


def assert_every_hit_recorded(site: MediaSite, cap: Captured) -> None:
    """Each request the site answered is exactly one response record, in the order the site saw them."""
    served = [site.url(path) for path in site.paths_hit()]
    recorded = [r.target for r in cap.of_type("response")]
    assert Counter(served) == Counter(recorded)
    assert [ex.url for ex in cap.result.exchanges] == served


def assert_info(cap: Captured, refers_to: str | None, item_id: str) -> dict[str, Any]:
    (meta,) = cap.of_type("metadata")
    assert meta.header("WARC-Refers-To") == refers_to
    assert meta.target is not None and meta.target.startswith("urn:archiver:media:")
    assert meta.target.endswith(":info.json")
    info: dict[str, Any] = json.loads(meta.body)
    assert info["id"] == item_id
    assert "filepath" not in info and "requested_downloads" not in info
    return info


# -- one file, no conversion -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "file", "item_id"),
    [
        ("/media/clip.mp4", "clip.mp4", "clip"),
        ("/media/clip.webm", "clip.webm", "clip"),
        ("/video-src.html", "clip.mp4", "video-src-1"),
        ("/source-tags.html", "clip.webm", "source-tags-1"),
        ("/og-video.html", "clip.mp4", "clip"),
    ],
)
def test_single_file_is_the_response_payload(capture: Any, site: MediaSite, path: str, file: str, item_id: str) -> None:
    cap = capture(site.url(path))
    assert cap.result.outcome == "ok", cap.result.evidence
    assert_every_hit_recorded(site, cap)
    (item,) = cap.result.items
    media = cap.by_id(item.media_record_id)
    # The video is the response payload itself: stored once, digest equal to the served file's.
    assert media.type == "response" and media.target == site.url(f"/media/{file}")
    assert media.payload_sha256 == site.file_sha256(file) == item.sha256
    assert cap.roles[media.id] == "media"
    assert item.stream_record_ids == (media.id,) and item.conversion_record_id is None
    assert cap.of_type("conversion") == [] and cap.result.conversions == []
    assert_info(cap, media.id, item_id)
    assert cap.result.identity is not None and cap.result.identity.item_id == item_id
    assert set(cap.result.tools) == {"yt-dlp", "ffmpeg"}
    assert cap.result.error is None and cap.result.evidence is None


def test_direct_video_is_fetched_once(capture: Any, site: MediaSite) -> None:
    """The extractor's GET and the downloader's GET are one exchange (answered from the recorded response)."""
    cap = capture(site.url("/media/clip.mp4"))
    assert site.paths_hit() == ["/media/clip.mp4"]
    assert [r.type for r in cap.records] == ["response", "request", "metadata"]
    response, request = cap.records[:2]
    assert response.header("WARC-Concurrent-To") == request.id


def test_subtitles_and_thumbnail_are_their_responses(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/video-src.html"))
    (subtitle,) = cap.role("subtitle")
    (thumbnail,) = cap.role("thumbnail")
    assert subtitle.target == site.url("/media/subs.en.vtt") and subtitle.type == "response"
    assert subtitle.payload_sha256 == site.file_sha256("subs.en.vtt")
    assert thumbnail.payload_sha256 == site.file_sha256("thumb.jpg")
    assert cap.of_type("resource") == []  # byte-identical files are not stored twice
    (page,) = cap.role("extractor")
    assert page.target == site.url("/video-src.html")


def test_redirect_hops_are_records_and_cookies_follow_per_hop(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/share/clip"))
    assert cap.result.outcome == "ok"
    assert_every_hit_recorded(site, cap)
    assert [r.target for r in cap.role("redirect")] == [site.url("/share/clip"), site.url("/go")]
    # The cookie set by the first hop went to the next hops (RFC 6265) and is redacted in the record.
    assert "hop=1" in site.hits[1].headers.get("Cookie", "")
    (request,) = [r for r in cap.of_type("request") if r.target == site.url("/go")]
    assert b"Cookie: [redacted]" in request.body or request.header("X-Archiver-Redacted") == "Cookie"
    assert len([p for p in site.paths_hit() if p == "/media/clip.mp4"]) == 1


# -- conversions -------------------------------------------------------------------------------------------------


def test_hls_page_segments_and_remux(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/hls.html"))
    assert cap.result.outcome == "ok", cap.result.evidence
    assert_every_hit_recorded(site, cap)
    segments = cap.role("media")
    assert [s.target for s in segments] == [site.url(f"/media/hls/seg{i}.ts") for i in range(4)]
    for s in segments:
        assert s.payload_sha256 == site.file_sha256(f"hls/{s.target.rsplit('/', 1)[1]}")  # type: ignore[union-attr]
    (manifest,) = cap.role("manifest")
    assert manifest.payload_sha256 == site.file_sha256("hls/index.m3u8")
    # yt-dlp concatenated the MPEG-TS segments and ffmpeg remuxed them into MP4: a conversion record.
    (conversion,) = cap.of_type("conversion")
    (item,) = cap.result.items
    assert item.media_record_id == item.conversion_record_id == conversion.id
    assert conversion.header("WARC-Refers-To") == segments[0].id
    assert conversion.header("X-Archiver-Inputs") == " ".join(s.id for s in segments)
    assert conversion.target == "urn:archiver:media:html5mediaembed:hls-1:mp4"
    assert conversion.header("Content-Type") == "video/mp4" and conversion.body[4:8] == b"ftyp"
    assert conversion.payload_sha256 == item.sha256
    (conv,) = cap.result.conversions
    assert conv["tool"] == "ffmpeg" and conv["version"] == check_ffmpeg().version
    assert "-c copy" in conv["arguments"] and "-f mp4" in conv["arguments"]
    assert str(Path.cwd()) not in conv["arguments"] and "media-" not in conv["arguments"]
    assert conv["output"] == conversion.id and conv["inputs"] == conversion.header("X-Archiver-Inputs")
    assert_info(cap, conversion.id, "hls-1")


def test_hls_separate_audio_and_video_are_merged(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/media/hls/master.m3u8"))
    assert cap.result.outcome == "ok", cap.result.evidence
    assert_every_hit_recorded(site, cap)
    names = [r.target.rsplit("/", 1)[1] for r in cap.role("media")]  # type: ignore[union-attr]
    assert names == [f"v{i}.ts" for i in range(4)] + [f"a{i}.ts" for i in range(5)]
    assert len(cap.role("manifest")) == 3
    (conversion,) = cap.of_type("conversion")
    inputs = (conversion.header("X-Archiver-Inputs") or "").split()
    assert inputs == [r.id for r in cap.role("media")]
    (conv,) = cap.result.conversions
    assert "-map 0:v:0 -map 1:a:0" in conv["arguments"]
    (item,) = cap.result.items
    assert item.format_id is not None and "+" in item.format_id


# -- finding the media, and not finding it -----------------------------------------------------------------------


def test_iframe_player_is_followed(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/iframe.html"))
    assert cap.result.outcome == "ok"
    assert_every_hit_recorded(site, cap)
    assert [a["outcome"] for a in cap.result.attempts] == ["no-media", "ok"]
    assert cap.result.attempts[1]["url"] == site.url("/player.html")
    media = cap.by_id(cap.result.items[0].media_record_id)
    assert media.payload_sha256 == site.file_sha256("clip.mp4")


def test_page_without_video(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/no-video.html"))
    assert cap.result.outcome == "no-media"
    assert cap.result.evidence is not None and "Unsupported URL" in cap.result.evidence
    assert [r.type for r in cap.records] == ["response", "request"]
    assert cap.result.items == [] and cap.result.identity is None


def test_missing_video_is_removed(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/media/missing.mp4"))
    assert cap.result.outcome == "removed"
    assert cap.result.evidence is not None and cap.result.evidence.startswith("HTTP 404 on ")
    (response,) = cap.of_type("response")
    assert response.body == b"<html><body>Not Found</body></html>"  # the 404 page is evidence too


@pytest.mark.parametrize(("path", "outcome"), [("/gone.html", "removed"), ("/overloaded.html", "failed")])
def test_http_status_of_the_post(capture: Any, site: MediaSite, path: str, outcome: str) -> None:
    cap = capture(site.url(path))
    assert cap.result.outcome == outcome
    assert cap.result.error == cap.result.evidence


def test_capped_download_is_truncated_and_failed(capture: Any, site: MediaSite) -> None:
    cap = capture(site.url("/media/clip.mp4"), max_filesize=10_000)
    assert cap.result.outcome == "failed"
    assert cap.result.evidence is not None and "max-filesize" in cap.result.evidence
    for response in cap.of_type("response"):
        assert response.header("WARC-Truncated") == "length" and len(response.body) == 10_000


def test_encrypted_hls_is_decrypted_through_the_recorded_path(capture: Any, site: MediaSite) -> None:
    """AES-128 HLS: with pycryptodomex installed yt-dlp decrypts itself, so the key and every segment are
    fetched through the archiver and recorded; ffmpeg (which may only open local files) fetches nothing."""
    cap = capture(site.url("/media/aes/index.m3u8"))
    assert cap.result.outcome == "ok", cap.result.evidence
    hit = site.paths_hit()
    assert hit[0] == "/media/aes/index.m3u8" and any(p.endswith(".key") or "key" in p for p in hit[1:])
    assert_every_hit_recorded(site, cap)


def test_post_and_head_are_recorded_with_their_bodies(site: MediaSite) -> None:
    """yt-dlp's API calls (YouTube's player API, X's guest token) are POSTs: sent and stored like any GET."""
    from http.cookiejar import CookieJar

    from archiver.capture.fetch import Fetcher
    from archiver.capture.ytdlp_transport import ExchangeLog, FetcherTransport

    fetcher = Fetcher(FetchSettings(max_redirects=0, retries=0), SystemClock(), RandomIds())
    log = ExchangeLog()
    transport = FetcherTransport(fetcher, log, max_redirects=5)
    try:
        response = transport.send(
            "POST", site.url("/api"), {"Content-Type": "application/json"}, b'{"q":1}', CookieJar()
        )
        assert response.status == 200 and json.loads(response.read()) == {"method": "POST", "body": '{"q":1}'}
        (post,) = log.exchanges
        assert post.method == "POST" and b"".join(post.request.payload_chunks()) == b'{"q":1}'
        assert post.request.payload_digest is not None
        # 303 after a POST: the next hop is a GET without the body (RFC 9110 §15.4.4).
        transport.send("POST", site.url("/api/see-other"), {}, b"x=1", CookieJar())
        assert [(ex.method, ex.status) for ex in log.exchanges[1:]] == [("POST", 303), ("GET", 200)]
        transport.send("HEAD", site.url("/media/clip.mp4"), {}, None, CookieJar())
        assert log.exchanges[-1].method == "HEAD" and log.exchanges[-1].status == 200
    finally:
        log.close()
        fetcher.close()


# -- credentials ---------------------------------------------------------------------------------------------------


def test_credentials_are_used_but_never_stored(capture: Any, site: MediaSite, tmp_path: Path) -> None:
    cookie_secret, token = "s3cr3t-cookie-value", "tok-very-secret-123"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\t{cookie_secret}\n")
    before = cookies.read_bytes()
    fetch = FetchSettings(
        connect_timeout=2.0, read_timeout=5.0, total_timeout=10.0, retries=0,
        headers_by_domain={"127.0.0.1": {"Authorization": f"Bearer {token}"}},
    )  # fmt: skip
    cap = capture(site.url("/video-src.html"), fetch=fetch, cookies_file=cookies)
    assert cap.result.outcome == "ok"
    for hit in site.hits:  # the site got both credentials on every request ...
        assert f"session={cookie_secret}" in hit.headers.get("Cookie", "")
        assert hit.headers.get("Authorization") == f"Bearer {token}"
    # ... and neither is anywhere in the archive: not in request records, not in info.json.
    assert cookie_secret.encode() not in cap.warc_bytes and token.encode() not in cap.warc_bytes
    for request in cap.of_type("request"):
        assert request.header("X-Archiver-Redacted") == "Authorization, Cookie"
    (meta,) = cap.of_type("metadata")
    assert b"[redacted]" in meta.body
    assert cookies.read_bytes() == before  # yt-dlp never wrote its jar back into the user's file


# -- the plan table, candidates, classification ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cited", "primary", "fallbacks", "extractors"),
    [
        ("https://youtu.be/dQw4w9WgXcQ?si=abc", "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
         ["https://www.youtube.com/watch?v=dQw4w9WgXcQ youtube:player_client=tv,web_embedded"], ["Youtube", "Youtube"]),
        ("https://m.youtube.com/shorts/dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
         ["https://www.youtube.com/watch?v=dQw4w9WgXcQ youtube:player_client=tv,web_embedded"], ["Youtube", "Youtube"]),
        ("https://twitter.com/SyriaCivilDef/status/851374489224318976?s=20",
         "https://x.com/SyriaCivilDef/status/851374489224318976",
         ["https://x.com/SyriaCivilDef/status/851374489224318976 twitter:api=syndication"], ["Twitter", "Twitter"]),
        ("https://t.me/s/SyrianCivilDefence/1234", "https://t.me/SyrianCivilDefence/1234",
         ["https://t.me/SyrianCivilDefence/1234?embed=1&mode=tme"], ["TelegramEmbed", "TelegramEmbed"]),
        ("https://t.me/c/1234567/89", "https://t.me/c/1234567/89", [], ["TelegramEmbed"]),
        ("https://m.facebook.com/watch/?v=1234567890", "https://www.facebook.com/watch/?v=1234567890",
         ["https://www.facebook.com/plugins/video.php?show_text=0&href=https%3A%2F%2Fwww.facebook.com%2Fwatch%2F%3Fv%3D1234567890"],
         ["Facebook", "FacebookPluginsVideo"]),
        ("https://www.instagram.com/reel/Cabc123/?igsh=x", "https://www.instagram.com/reel/Cabc123/", [],
         ["Instagram"]),
        ("https://www.tiktok.com/@someone/video/7301234567890123456?is_from_webapp=1",
         "https://www.tiktok.com/@someone/video/7301234567890123456", [], ["TikTok"]),
        ("https://vimeo.com/123456789/abcdef1234", "https://vimeo.com/123456789/abcdef1234",
         ["https://player.vimeo.com/video/123456789?h=abcdef1234"], ["Vimeo", "Vimeo"]),
        ("https://dai.ly/x8abcde", "https://www.dailymotion.com/video/x8abcde",
         ["https://www.dailymotion.com/embed/video/x8abcde"], ["Dailymotion", "Dailymotion"]),
        ("https://rumble.com/v4abcde-strike.html", "https://rumble.com/v4abcde-strike.html", [], ["Rumble"]),
        ("https://example.org/news/2017/04/04/report.html", "https://example.org/news/2017/04/04/report.html", [],
         ["Generic"]),
        ("https://cdn.example.org/clips/strike.mp4", "https://cdn.example.org/clips/strike.mp4", [], ["Generic"]),
    ],
)  # fmt: skip
def test_platform_plan(cited: str, primary: str, fallbacks: list[str], extractors: list[str]) -> None:
    plan = plan_for(cited)
    assert plan.url == primary
    shown = []
    for attempt in plan.fallbacks:
        args = ";".join(f"{ie}:{k}={','.join(v)}" for ie, kv in attempt.extractor_args for k, v in kv)
        shown.append(f"{attempt.url} {args}".strip())
    assert shown == fallbacks
    for attempt, name in zip(plan.attempts, extractors, strict=True):  # yt-dlp has an extractor for each form
        assert get_info_extractor(name).suitable(attempt.url), (name, attempt.url)
        assert attempt.why


@pytest.mark.parametrize(
    ("url", "mtype", "page", "expected"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", None, None, True),
        ("https://x.com/user/status/123", "text/html", b"<html></html>", True),
        ("https://x.com/user", "text/html", b"<html></html>", False),  # a profile, not a post
        ("https://example.org/a/clip.MP4", None, None, True),
        ("https://example.org/stream", "application/vnd.apple.mpegurl", None, True),
        ("https://example.org/stream", "video/webm; codecs=vp8", None, True),
        ("https://example.org/a", "text/html", b"<p>text</p><video src=v.mp4></video>", True),
        ("https://example.org/a", "text/html", b'<video><source src="v.webm" type="video/webm"></video>', True),
        ("https://example.org/a", "text/html", b'<picture><source srcset="a.webp"><img src=a.jpg></picture>', False),
        ("https://example.org/a", "text/html", '<meta property="og:video" content="https://e.org/v.mp4">', True),
        ("https://example.org/a", "text/html", b'<a href="/live/index.m3u8">stream</a>', True),
        ("https://example.org/a", "text/html", b'<iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ">', True),
        ("https://example.org/a", "text/html", b'<iframe src="/player/42"></iframe>', True),
        ("https://example.org/a", "text/html", b'<iframe src="https://ads.example.net/banner"></iframe>', False),
        ("https://example.org/a", "text/html", b"<p>An article with no media at all.</p>", False),
        ("https://example.org/a", "text/html", b"<P>Upper case</P><VIDEO SRC=v.mp4></VIDEO>", True),
        ("https://example.org/a", "text/html", b'<Audio controls><Source SRC="a.ogg"></Audio>', True),
        ("https://example.org/a", "text/html", b'<META PROPERTY="OG:VIDEO" CONTENT="https://e.org/v">', True),
        ("https://example.org/a", "text/html", b'<a href="/dash/Manifest.MPD">stream</a>', True),
        ("https://example.org/a", "text/html", b"<p>the .mpdx file, a <sources> list, videos</p>", False),
        ("https://example.org/report.pdf", "application/pdf", None, False),
    ],
)
def test_media_candidate(url: str, mtype: str | None, page: bytes | str | None, expected: bool) -> None:
    assert media_candidate(url, mtype, page) is expected


@pytest.mark.parametrize(
    ("message", "status", "outcome"),
    [
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", 200, "removed"),
        ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", 200, "removed"),
        ("ERROR: [youtube] abc: This video is no longer available because the YouTube account associated with "
         "this video has been terminated.", 200, "removed"),
        ("ERROR: [twitter] 123: This account has been suspended", 200, "removed"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", 404, "removed"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 410: Gone", 410, "removed"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests", 429, "failed"),
        ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable", 503, "failed"),
        ("ERROR: [youtube] abc: Sign in to confirm you're not a bot", 200, "failed"),
        ("ERROR: [generic] x: Unable to download webpage: timed out", None, "failed"),
        ("ERROR: [twitter] 123: Rate-limit exceeded; the post is unavailable for now", 200, "failed"),
        ("ERROR: [instagram] abc: Unable to extract shared data; please report this issue", 200, "failed"),
        ("ERROR: Unsupported URL: https://example.org/a", 200, "no-media"),
        ("ERROR: [twitter] 123: No video could be found in this tweet", 200, "no-media"),
    ],
)  # fmt: skip
def test_removed_or_failed(message: str, status: int | None, outcome: str) -> None:
    got, evidence = classify_failure(message, status, "https://example.org/post")
    assert got == outcome
    assert "ERROR:" not in evidence and message.removeprefix("ERROR: ")[:20] in evidence


# -- tools and temporary files -------------------------------------------------------------------------------------


def test_ffmpeg_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="ffmpeg") as err:
        MediaCapturer(FAST, MediaSettings(), temp_parent=tmp_path, clock=SystemClock(), ids=RandomIds())
    assert err.value.hint is not None and "install ffmpeg" in err.value.hint


def _tool(path: Path, script: str) -> None:
    path.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    path.chmod(0o755)


def test_ffmpeg_runs_once_per_binary_and_again_when_it_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    monkeypatch.setenv("PATH", str(tmp_path))
    _tool(tmp_path / "ffprobe", "exit 0")
    _tool(tmp_path / "ffmpeg", f"echo run >> {runs}; exit 1")
    with pytest.raises(ToolMissingError, match="does not run"):
        check_ffmpeg()
    with pytest.raises(ToolMissingError, match="does not run"):  # a failure is never remembered
        check_ffmpeg()
    _tool(tmp_path / "ffmpeg", f"echo run >> {runs}; echo 'ffmpeg version 9.9-test Copyright'")
    assert check_ffmpeg().version == "9.9-test"
    assert check_ffmpeg().version == "9.9-test"
    assert runs.read_text().splitlines() == ["run"] * 3  # twice failing, then once for the working binary


def test_sweep_removes_only_dead_capture_directories(tmp_path: Path) -> None:
    live = Workdir(tmp_path)
    (live.path / "clip.part").write_bytes(b"in progress")
    dead = tmp_path / "media-killed"  # a kill released its lock
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "clip.f137.mp4.part").write_bytes(b"partial")
    unlocked_old = tmp_path / "media-old"  # killed between mkdtemp and locking
    unlocked_old.mkdir()
    os.utime(unlocked_old, (0, 0))
    unlocked_new = tmp_path / "media-new"  # being created right now by another worker
    unlocked_new.mkdir()
    other = tmp_path / "warc"
    other.mkdir()
    assert sorted(sweep_temp(tmp_path)) == sorted([dead, unlocked_old])
    assert live.path.exists() and unlocked_new.exists() and other.exists()
    live.remove()
    assert not live.path.exists()
    assert sweep_temp(tmp_path / "absent") == []
