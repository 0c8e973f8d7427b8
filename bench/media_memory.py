"""Peak memory of capturing one large video through yt-dlp, the Fetcher and the WARC sink.

Serves a file of random bytes as ``video/mp4`` on 127.0.0.1, captures it with :class:`MediaCapturer` (the
generic extractor and yt-dlp's HTTP downloader, every byte through the Fetcher's spool), writes every record
through a real :class:`WarcSink`, and reports the peak resident set size. The bodies stream through spools
on disk, so the peak should stay under 150 MB whatever the size of the video.

Usage::

    .venv/bin/python bench/media_memory.py            # 1 GiB
    .venv/bin/python bench/media_memory.py --size-mib 64 --level 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archiver.capture.fetch import FetchSettings
from archiver.capture.media import MediaCapturer, MediaSettings
from archiver.clock import RandomIds, SystemClock
from archiver.warc.writer import WarcSink
from tests.support.media_site import MediaSite

MIB = 1 << 20


class PeakSampler:
    """Samples this process's RSS every few milliseconds (ru_maxrss only gives the peak of the whole run)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakSampler:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def random_video(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(4 * MIB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--level", type=int, default=6, help="gzip level of the WARC sink (6 is the default)")
    parser.add_argument("--limit-mb", type=float, default=150.0)
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp:
        root = Path(tmp)
        (root / "site").mkdir()
        served_sha = random_video(root / "site" / "big.mp4", size)
        site = MediaSite(root / "site").start()
        baseline = psutil.Process().memory_info().rss
        settings = MediaSettings(max_filesize=size + MIB)
        ids = RandomIds()
        fetch = FetchSettings(total_timeout=600.0, retries=0)
        capturer = MediaCapturer(fetch, settings, temp_parent=root / "media-tmp", clock=SystemClock(), ids=ids)
        try:
            with PeakSampler() as during_capture:
                t0 = time.monotonic()
                result = capturer.capture(site.url("/media/big.mp4"))
                t1 = time.monotonic()
            with PeakSampler() as during_write:
                sink = WarcSink(root / "warc", prefix="bench", clock=SystemClock(), ids=ids, compress_level=args.level)
                with sink:
                    refs = sink.write_group([spec for _, _, spec in result.records])
                t2 = time.monotonic()
            item = result.items[0] if result.items else None
            media = next((r for r in refs if item is not None and r.record_id == item.media_record_id), None)
            result.close()
        finally:
            capturer.close()
            site.stop()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        warc_size = sum(p.stat().st_size for p in (root / "warc").glob("*.warc.gz"))
    report = {
        "video_bytes": size,
        "outcome": result.outcome,
        "records": len(refs),
        "media_record_payload_matches_served_sha256": media is not None
        and media.payload_digest is not None
        and media.payload_digest.hex == served_sha,
        "capture_seconds": round(t1 - t0, 1),
        "warc_write_seconds": round(t2 - t1, 1),
        "warc_bytes": warc_size,
        "rss_baseline_mb": round(baseline / 1e6, 1),
        "rss_peak_capture_mb": round(during_capture.peak / 1e6, 1),
        "rss_peak_warc_write_mb": round(during_write.peak / 1e6, 1),
        "rss_peak_process_mb": round(peak / 1e6, 1),
        "limit_mb": args.limit_mb,
    }
    print(json.dumps(report, indent=2))
    ok = report["media_record_payload_matches_served_sha256"] and peak / 1e6 < args.limit_mb
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
