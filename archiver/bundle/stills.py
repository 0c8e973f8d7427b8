"""Stills of the bundle's videos for the report, made by ffmpeg while the export goes on copying.

Each still is one decoded frame (``-frames:v 1``, the first), scaled to 320 pixels wide and written with
bit-exact flags and no metadata, so exporting twice gives the same bytes. ffmpeg is optional: without it, or
when it cannot read a file, the report simply has no still for that video.

Most of an ffmpeg run's cost is starting the process (about 0.1 CPU second, as much as copying and hashing
10 MB), so videos are taken ``BATCH`` at a time by one ffmpeg process with one input and one output per video
(the output for a video is the same bytes either way: the same decoder, filter and encoder settings apply to
each pair). If the batch fails, say because one input is not a video, each of its videos gets a run of its own,
so one bad file costs no other video its still. Batches run on background threads as soon as they are full,
while the export goes on; :meth:`Stills.results` runs the last one and waits, and answers in a fixed order.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

FFMPEG_TIMEOUT = 60  # seconds per video
WORKERS = 2
BATCH = 8

# Per input: a small probe, one decoding thread (one frame is wanted; frame threads would decode ahead).
_INPUT = ["-threads", "1", "-probesize", "5M", "-analyzeduration", "5M"]
_OUTPUT = ["-frames:v", "1", "-vf", "scale=320:-2", "-map_metadata", "-1", "-fflags", "+bitexact",
           "-flags", "+bitexact"]  # fmt: skip


class Stills:
    def __init__(self, bag: Path, *, workers: int = WORKERS, batch: int = BATCH) -> None:
        self.bag = bag
        self.batch = batch
        self.ffmpeg = shutil.which("ffmpeg")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bundle-still") if self.ffmpeg else None
        self._pending: list[str] = []
        self._seen: set[str] = set()
        self._futures: list[Future[dict[str, bytes]]] = []
        self._lock = threading.Lock()  # submit is called from the copying threads
        self._names = itertools.count()

    def submit(self, video: str) -> None:
        """Queue the complete file ``video`` (relative to the bag); a full batch starts at once."""
        with self._lock:
            if self._pool is None or video in self._seen:
                return
            self._seen.add(video)
            self._pending.append(video)
            if len(self._pending) >= self.batch:
                self._start()

    def _start(self) -> None:
        assert self._pool is not None
        videos, self._pending = self._pending, []
        self._futures.append(self._pool.submit(self._run, videos))

    def results(self, videos: list[str]) -> dict[str, bytes]:
        """The JPEG still of each of ``videos`` that has one (submitted ones only), waiting for them."""
        with self._lock:
            if self._pending:
                self._start()
            futures = list(self._futures)
        made: dict[str, bytes] = {}
        for f in futures:
            made.update(f.result())
        return {v: made[v] for v in videos if made.get(v)}

    def _run(self, videos: list[str]) -> dict[str, bytes]:
        if len(videos) > 1:
            made = self._ffmpeg(videos)
            if made is not None:
                return made
        out: dict[str, bytes] = {}
        for v in videos:
            out.update(self._ffmpeg([v]) or {})
        return out

    def _ffmpeg(self, videos: list[str]) -> dict[str, bytes] | None:
        """One ffmpeg process making the still of each of ``videos``; None if it fails."""
        assert self.ffmpeg is not None
        scratch = [self.bag / f".still-{next(self._names)}.jpg" for _ in videos]  # outside data/, removed at once
        args = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        for v in videos:
            args += [*_INPUT, "-i", str(self.bag / v)]
        for n, s in enumerate(scratch):
            args += ["-map", f"{n}:V:0", *_OUTPUT, str(s)]  # V: a video stream, not cover art
        try:
            done = subprocess.run(args, capture_output=True, timeout=FFMPEG_TIMEOUT * len(videos),
                                  stdin=subprocess.DEVNULL)  # fmt: skip
            if done.returncode != 0:
                return None
            return {v: s.read_bytes() for v, s in zip(videos, scratch, strict=True)}
        except (OSError, subprocess.TimeoutExpired):
            return None
        finally:
            for s in scratch:
                with contextlib.suppress(FileNotFoundError):
                    s.unlink()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Stills:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
