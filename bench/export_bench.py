"""Export benchmark: ``archiver export`` of an incident holding ``--size`` MB of captures, against ``cp -r`` of the
same WARC files in the same run.

The archive is built directly through the library, as the capture job writes it: one incident citing
``--sources`` video sources, each with one capture whose response record carries an incompressible body (as
video is) written through :class:`archiver.warc.writer.WarcSink` (rotating at 1 GB, like the default), its
Artifact rows, closed WARC files recorded, and a signed receipt per capture (receipts stay pending: no TSA).
Then, each in a subprocess measured by the kernel (``wait4``: wall time, peak RSS):

- ``cp -r warcs/ copy/`` — the disk's speed for these bytes on this machine, now;
- ``archiver export --incident bench --out bundle`` — copies every record, extracts each video's payload (a
  MediaItem row per source, as a media capture makes), so it writes twice the WARC bytes, hashing everything
  with SHA-256 and SHA-512 while writing, then writes the tag files;
- ``archiver verify-bundle bundle`` — for information.

Reported: MB/s of each (WARC bytes / wall time), the export's ratio to ``cp``, and peak RSS (constant memory
means it does not grow with ``--size``). Page-cache state matters: the WARC files were just written, so both
``cp`` and the export read them from memory on a machine with enough RAM; the comparison is fair because both
run on the same cache state (``cp`` first, then export).

    .venv/bin/python bench/export_bench.py --size 2000          # the issue's 2 GB
    .venv/bin/python bench/export_bench.py --size 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archiver.archive import Archive
from archiver.catalogue.models import Capture, MediaItem, WarcFile
from archiver.catalogue.warcs import artifact_from_ref, record_closed_warc
from archiver.config import load_settings
from archiver.manifest import parse_text
from archiver.warc.block import BlockBuilder
from archiver.warc.records import HTTP_RESPONSE_TYPE, RESPONSE, ClosedWarc, RecordSpec
from archiver.warc.writer import WarcSink
from bench.common import MB, mb, run_measured

PYTHON = sys.executable
CHUNK = 1 << 20


def build(root: Path, size_mb: int, sources: int) -> int:
    """An initialised archive whose incident ``bench`` holds about ``size_mb`` MB of video records."""
    settings = load_settings(root, None, collector="bench", env={})
    archive = Archive(settings)
    archive.init()
    urls = "\n".join(f"      - url: http://127.0.0.1:9/video-{i}.mp4\n        kind: video" for i in range(sources))
    manifest = (
        "version: 1\nincidents:\n  - id: bench\n    title: Export benchmark\n    when: {start: 2024-01-01}\n"
        f"    place: {{name: Bench, country: SY}}\n    summary: Generated.\n    sources:\n{urls}\n"
    )
    with archive.store() as store:
        store.load(parse_text(manifest, "bench.yaml", date(2026, 1, 1)))

    def closed(c: ClosedWarc) -> None:
        with archive.session() as s:
            record_closed_warc(s, archive.clock, actor="bench", name=c.name, sha256=c.sha256, size=c.size,
                               records=c.records, opened_at=c.opened_at, closed_at=c.closed_at)  # fmt: skip

    per_source = size_mb * MB // sources
    sink = WarcSink(settings.warc_dir, prefix="bench", clock=archive.clock, ids=archive.ids,
                    max_size=settings.warc_max_size, on_close=closed)  # fmt: skip
    with sink:
        for i in range(sources):
            head = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {per_source}\r\n\r\n".encode()
            builder = BlockBuilder()
            builder.write_head(head)
            left = per_source
            while left > 0:
                piece = os.urandom(min(CHUNK, left))
                builder.write_payload(piece)
                left -= len(piece)
            with builder.finish() as block:
                (ref,) = sink.write_group([RecordSpec(RESPONSE, block, HTTP_RESPONSE_TYPE,
                                                      f"http://127.0.0.1:9/video-{i}.mp4")])  # fmt: skip
            now = datetime.now(UTC)
            with archive.session() as s:
                cap = Capture(source_id=i + 1, method="media", started_at=now, ended_at=now, outcome="ok",
                              requested_url=ref.target_uri, final_url=ref.target_uri, http_status=200,
                              collector="bench", tools={}, details={})  # fmt: skip
                s.add(cap)
                warc = s.query(WarcFile).filter_by(name=ref.warc_file).one_or_none()
                if warc is None:
                    warc = WarcFile(name=ref.warc_file, status="open", opened_at=now)
                    s.add(warc)
                s.flush()
                s.add(artifact_from_ref(ref, capture_id=cap.id, role="media", warc_file_id=warc.id,
                                        media_type="video/mp4"))  # fmt: skip
                payload = ref.payload_digest.hex if ref.payload_digest else None
                s.add(MediaItem(capture_id=cap.id, source_id=i + 1, platform="generic", extractor="generic",
                                item_id=f"video-{i}", format_id="mp4", sha256=payload, size=per_source,
                                media_record_id=ref.record_id, captured_at=now))  # fmt: skip
    archive.close()
    return sum(p.stat().st_size for p in settings.warc_dir.glob("*.warc.gz"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000, help="MB of captures in the incident (default 2000)")
    parser.add_argument("--sources", type=int, default=40, help="video sources sharing them (default 40)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="export-bench-", dir=args.dir))
    try:
        root = work / "storage"
        print(f"building an archive with {args.size} MB of captures in {work} ...", flush=True)
        warc_bytes = build(root, args.size, args.sources)
        cp = run_measured(["cp", "-r", str(root / "warcs"), str(work / "copy")]).check()
        base = [PYTHON, "-m", "archiver", "--root", str(root), "--collector", "bench"]
        export = run_measured([*base, "export", "--incident", "bench", "--out", str(work / "bundle"), "--json"]).check()
        verify = run_measured([*base, "verify-bundle", str(work / "bundle")]).check()
        result = {
            "size_mb": args.size,
            "warc_bytes": warc_bytes,
            "cp_s": round(cp.wall_s, 2),
            "cp_mb_s": round(warc_bytes / MB / cp.wall_s, 1),
            "export_s": round(export.wall_s, 2),
            "export_mb_s": round(warc_bytes / MB / export.wall_s, 1),
            "export_vs_cp": round(cp.wall_s / export.wall_s, 2),
            "export_peak_rss": export.max_rss,
            "verify_bundle_s": round(verify.wall_s, 2),
            "verify_bundle_peak_rss": verify.max_rss,
            "bundle_bytes": sum(p.stat().st_size for p in (work / "bundle").rglob("*") if p.is_file()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"WARC data        {mb(warc_bytes)}")
    print(f"cp -r            {result['cp_s']} s  {result['cp_mb_s']} MB/s")
    print(f"archiver export  {result['export_s']} s  {result['export_mb_s']} MB/s  ({result['export_vs_cp']}x cp)"
          f"  peak RSS {mb(export.max_rss)}")  # fmt: skip
    print(f"verify-bundle    {result['verify_bundle_s']} s  peak RSS {mb(verify.max_rss)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
