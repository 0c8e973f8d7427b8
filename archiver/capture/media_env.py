"""What media capture needs from the machine, without importing yt-dlp: ffmpeg, temporary directories, cookies.

:mod:`archiver.capture.ytdlp_transport` imports yt-dlp (about 0.2 s of CPU, most of it its AES and cookie
modules); a job that never meets a video must not pay for it at every start, so these helpers live apart.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from http.cookiejar import Cookie, LoadError
from importlib.metadata import version
from pathlib import Path

from archiver.capture import probes
from archiver.errors import ConfigError, ToolMissingError
from archiver.warc.block import CHUNK, Block, Digest

TEMP_PREFIX = "media-"
LOCK_NAME = ".lock"
STALE_UNLOCKED = 60.0  # seconds: a directory without its lock file younger than this may be being created


@dataclass(frozen=True)
class FfmpegTool:
    path: str
    version: str


def check_ffmpeg() -> FfmpegTool:
    """ffmpeg and ffprobe, or :class:`ToolMissingError`: without them yt-dlp silently leaves HLS downloads as
    raw MPEG-TS under an .mp4 name and cannot merge separate video and audio streams.

    ``ffmpeg -version`` runs once per binary (a replaced or upgraded binary is run again): every capture job
    checks, and a run over several processes builds one job per process."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise ToolMissingError(
            "ffmpeg and ffprobe are required for video capture but were not found on PATH",
            hint="install ffmpeg (for example: apt-get install -y ffmpeg) and run again",
        )
    try:
        stat = Path(ffmpeg).stat()
    except OSError as exc:
        raise ToolMissingError(f"ffmpeg at {ffmpeg} cannot be read: {exc}", hint="reinstall ffmpeg") from exc
    return FfmpegTool(ffmpeg, _ffmpeg_version(ffmpeg, (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)))


def _ffmpeg_version(ffmpeg: str, identity: tuple[int, int, int, int]) -> str:
    """The version ``ffmpeg -version`` prints (asked once per binary: ``identity`` changes with the file)."""

    def ask() -> str:
        try:
            out = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolMissingError(f"ffmpeg at {ffmpeg} does not run: {exc}", hint="reinstall ffmpeg") from exc
        words = out.split()
        return words[2] if len(words) > 2 and words[:2] == ["ffmpeg", "version"] else "unknown"

    return probes.once(("ffmpeg", ffmpeg, identity), ask)


def ytdlp_version() -> str:
    """The installed yt-dlp's version, read from its distribution metadata (importing yt-dlp costs 0.2 s)."""
    return version("yt-dlp")


def load_cookies(path: Path | None) -> list[Cookie]:
    """The cookies of a Netscape cookies.txt, read once; the file is never written back (yt-dlp would save
    its jar into ``cookiefile`` on close)."""
    if path is None:
        return []
    from yt_dlp.cookies import YoutubeDLCookieJar

    jar = YoutubeDLCookieJar(str(path))
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except (OSError, LoadError) as exc:
        raise ConfigError(f"cannot read cookies file {path}: {exc}", hint="export it in Netscape format") from exc
    return list(jar)


class Workdir:
    """A capture's own temporary directory under ``parent`` (yt-dlp skips files that exist, and ids collide
    across sites). An exclusive ``flock`` on its lock file marks it live; a killed process drops the lock, so
    :func:`sweep_temp` can tell leftovers from directories another worker is using."""

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
        self._fd = os.open(self.path / LOCK_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def remove(self) -> None:
        try:
            shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self._fd)


def sweep_temp(parent: Path) -> list[Path]:
    """Remove capture directories left under ``parent`` by a killed run; returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in sorted(parent.glob(TEMP_PREFIX + "*")):
        if not path.is_dir() or path.is_symlink():
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if time.time() - path.stat().st_mtime < STALE_UNLOCKED:
                continue  # just made by mkdtemp, its owner is about to lock it
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live capture holds it
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def file_sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def file_block(path: Path) -> Block:
    """A block over a local file, hashed in one pass, without copying it: the open handle keeps the bytes
    readable after the temporary directory is removed (POSIX unlink semantics), so a 1 GiB merge costs no
    second 1 GiB spool. The sink re-hashes as it copies (block.DigestPass), so the digest is still checked."""
    f = path.open("rb")
    try:
        h, size = hashlib.sha256(), 0
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    except BaseException:
        f.close()
        raise
    digest = Digest(h.hexdigest())
    return Block(f, size, digest, digest, 0, size)
