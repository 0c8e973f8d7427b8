"""A small video site on 127.0.0.1 for the yt-dlp media tests, with media made by real ffmpeg.

:func:`make_media` renders tiny clips from ffmpeg's lavfi sources (``testsrc`` and ``sine``): an MP4, a WebM,
an HLS stream with muxed segments, and an HLS stream whose video and audio are separate renditions (so that
yt-dlp must merge them). :class:`MediaSite` serves those files and a few HTML pages that reference them the ways
real pages do (``<video src>``, ``<source>``, ``og:video``, an ``<iframe>`` player, an HLS ``<source>``).

The server logs every request it answers, so a test can check that each one the site saw is also in the
WARC: nothing yt-dlp (or ffmpeg) fetched may escape the record. It answers byte ranges (RFC 9110 §14) as a
real video server does, and keeps the SHA-256 of every file it serves for comparison with stored digests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHUNK = 1 << 16
LAVFI_VIDEO = "testsrc=duration={d}:size=64x48:rate=10"
LAVFI_AUDIO = "sine=frequency=440:duration={d}:sample_rate=22050"
SUBTITLES_VTT = b"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nA hospital in Hama\n"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=60)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def make_media(out: Path, seconds: int = 2) -> Path:
    """Render every test file into ``out`` (about 0.5 s of ffmpeg in all). Returns ``out``."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt-get install -y ffmpeg)")
    out.mkdir(parents=True, exist_ok=True)
    video = ["-f", "lavfi", "-i", LAVFI_VIDEO.format(d=seconds)]
    audio = ["-f", "lavfi", "-i", LAVFI_AUDIO.format(d=seconds)]
    # A key frame every 0.5 s (rate 10, -g 5) so that HLS can cut 0.5 s segments without re-encoding.
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "5", "-pix_fmt", "yuv420p"]
    ffmpeg(*video, *audio, *h264, "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(out / "clip.mp4"))
    ffmpeg(*video, *audio, "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "100k", "-c:a", "libopus",
           "-shortest", str(out / "clip.webm"))  # fmt: skip
    ffmpeg(*video, "-frames:v", "1", str(out / "thumb.jpg"))
    hls = out / "hls"
    hls.mkdir(exist_ok=True)
    segment = ["-f", "hls", "-hls_time", "0.5", "-hls_list_size", "0", "-hls_playlist_type", "vod"]
    ffmpeg("-i", str(out / "clip.mp4"), "-c", "copy", *segment,
           "-hls_segment_filename", str(hls / "seg%d.ts"), str(hls / "index.m3u8"))  # fmt: skip
    # Separate renditions: video-only and audio-only segment lists under one master playlist.
    ffmpeg("-i", str(out / "clip.mp4"), "-an", "-c", "copy", *segment,
           "-hls_segment_filename", str(hls / "v%d.ts"), str(hls / "video.m3u8"))  # fmt: skip
    ffmpeg("-i", str(out / "clip.mp4"), "-vn", "-c", "copy", *segment,
           "-hls_segment_filename", str(hls / "a%d.ts"), str(hls / "audio.m3u8"))  # fmt: skip
    (hls / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,'
        'URI="audio.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=64x48,CODECS="avc1.42c00a,mp4a.40.2",AUDIO="aud"\n'
        "video.m3u8\n"
    )
    # AES-128 segments: without pycryptodomex yt-dlp wants ffmpeg to fetch these itself, which must be refused.
    aes = out / "aes"
    aes.mkdir(exist_ok=True)
    (aes / "enc.key").write_bytes(bytes(range(16)))
    (aes / "key.info").write_text(f"enc.key\n{aes / 'enc.key'}\n")
    ffmpeg("-i", str(out / "clip.mp4"), "-c", "copy", *segment, "-hls_key_info_file", str(aes / "key.info"),
           "-hls_segment_filename", str(aes / "e%d.ts"), str(aes / "index.m3u8"))  # fmt: skip
    (out / "subs.en.vtt").write_bytes(SUBTITLES_VTT)
    return out


def _page(title: str, head: str = "", body: str = "") -> bytes:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{head}</head>'
        f"<body><h1>{title}</h1>{body}</body></html>"
    ).encode()


PAGES: dict[str, bytes] = {
    "/video-src.html": _page(
        "Video src",
        '<meta property="og:image" content="{base}/media/thumb.jpg">',
        '<video src="/media/clip.mp4" controls><track kind="subtitles" srclang="en" src="/media/subs.en.vtt"></video>',
    ),
    "/source-tags.html": _page(
        "Source tags",
        body='<video controls><source src="/media/clip.webm" type="video/webm"></video>',
    ),
    "/og-video.html": _page(
        "Open Graph video",
        '<meta property="og:title" content="Open Graph video">'
        '<meta property="og:video" content="{base}/media/clip.mp4">'
        '<meta property="og:video:type" content="video/mp4">',
    ),
    "/hls.html": _page(
        "HLS page",
        body='<video controls><source src="/media/hls/index.m3u8" type="application/x-mpegURL"></video>',
    ),
    "/iframe.html": _page("Iframe page", body='<iframe src="/player.html" width="640" height="360"></iframe>'),
    "/player.html": _page("Player", body='<video src="/media/clip.mp4" controls></video>'),
    "/no-video.html": _page("No video here", body="<p>Only text: the clip was never published.</p>"),
}
# Open Graph wants absolute URLs; "{base}" in a page becomes the server's own origin when it is served.
REDIRECTS = {"/go": "/media/clip.mp4", "/share/clip": "/go"}
FAILING = {"/overloaded.html": 503, "/gone.html": 410}
TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".jpg": "image/jpeg",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".vtt": "text/vtt",
    ".key": "application/octet-stream",
    ".bin": "video/mp4",  # the memory benchmark serves random bytes as a video
}


@dataclass(frozen=True)
class Hit:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class MediaSite:
    """Serves ``media_dir`` under ``/media/`` and :data:`PAGES`; logs every request in :attr:`hits`."""

    media_dir: Path
    hits: list[Hit] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def file_sha256(self, relative: str) -> str:
        return sha256_file(self.media_dir / relative)

    def paths_hit(self) -> list[str]:
        with self._lock:
            return [h.path for h in self.hits]

    def start(self) -> MediaSite:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with site._lock:
                    site.hits.append(Hit("GET", self.path, dict(self.headers.items())))
                path = urlsplit(self.path).path
                if path == "/api":
                    self._send_bytes(json.dumps({"method": "GET"}).encode(), "application/json")
                    return
                if path in PAGES:
                    self._send_bytes(PAGES[path].replace(b"{base}", site.base.encode()), "text/html; charset=utf-8")
                    return
                if path in REDIRECTS:
                    self.send_response(302)
                    self.send_header("Location", REDIRECTS[path])
                    self.send_header("Set-Cookie", "hop=1; Path=/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in FAILING:
                    self._send_bytes(b"<html><body>Sorry</body></html>", "text/html", status=FAILING[path])
                    return
                target = (site.media_dir / path.removeprefix("/media/")).resolve()
                if (
                    not path.startswith("/media/")
                    or not target.is_relative_to(site.media_dir.resolve())
                    or not target.is_file()
                ):
                    self._send_bytes(b"<html><body>Not Found</body></html>", "text/html", status=404)
                    return
                self._send_file(target, TYPES.get(target.suffix, "application/octet-stream"))

            def do_HEAD(self) -> None:
                with site._lock:
                    site.hits.append(Hit("HEAD", self.path, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                with site._lock:
                    site.hits.append(Hit("POST", self.path, dict(self.headers.items())))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/see-other":
                    self.send_response(303)
                    self.send_header("Location", "/api")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = json.dumps({"method": "POST", "body": body.decode()}).encode()
                self._send_bytes(answer, "application/json")

            def _send_bytes(self, body: bytes, ctype: str, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_file(self, path: Path, ctype: str) -> None:
                size = path.stat().st_size
                start, end = 0, size - 1
                spec = self.headers.get("Range", "")
                if spec.startswith("bytes=") and "," not in spec:
                    first, _, last = spec[6:].partition("-")
                    start = int(first) if first else max(0, size - int(last))
                    end = min(int(last), size - 1) if first and last else size - 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                with path.open("rb") as f:
                    f.seek(start)
                    left = end - start + 1
                    while left > 0 and (chunk := f.read(min(CHUNK, left))):
                        self.wfile.write(chunk)
                        left -= len(chunk)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval makes shutdown (fixture teardown) prompt.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def media_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaSite]:
    media = make_media(tmp_path_factory.mktemp("media-site"))
    site = MediaSite(media).start()
    try:
        yield site
    finally:
        site.stop()
