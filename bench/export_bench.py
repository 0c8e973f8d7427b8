"""Export benchmark: ``archiver export`` of an incident holding ``--size`` MB of captures, against ``cp -r`` of the
same WARC files and against the hashing a bag needs, in the same run.

The archive is built directly through the library, as the capture job writes it: one incident citing
``--sources`` video sources, each with one capture whose response record carries a video (a short real MP4
made by ffmpeg, moov atom first, padded with random bytes to its share of ``--size``: incompressible, as
video is, and a still can be made of it, as of a real one) written through
:class:`archiver.warc.writer.WarcSink` (rotating at 1 GB, like the default), its Artifact and MediaItem rows,
and the closed WARC files recorded. Then, each in a subprocess measured by the kernel (``wait4``: wall time,
user + system CPU of the process and the children it waited for, peak RSS), on the same page-cache state:

- ``cp -r`` of the WARC files, and ``cp -r`` then ``sync`` of the copied files (what durable copying costs);
- ``sha256sum`` and ``sha512sum`` of the WARC files (and ``openssl dgst``, the implementation ``hashlib`` uses):
  the digests of these bytes once;
- ``archiver export``: copies every record, extracts each video's payload (so the bag holds the WARC bytes
  twice), hashes everything with SHA-256 and SHA-512 while writing, a still per video with ffmpeg, fsyncs;
- the same over the bag's payload files: the least work any bag of these contents needs;
- ``archiver verify-bundle`` of the bag.

Every reader of the bag starts with the bag's files dropped from the page cache (``posix_fadvise``, which
touches no other file), as someone verifying it later would; the WARC files stay cached for every contender.

Reported for each: wall seconds, MB/s (WARC MB / wall), CPU seconds and CPU milliseconds per WARC MB, peak
RSS. On a shared machine wall time depends on what else runs; CPU time does not, so compare CPU ms/MB, and
wall times only within one run. ``--repeat`` runs each tool that many times and keeps the median.
``--also DIR`` measures the export and verify-bundle of another checkout (e.g. an older commit, made with
``git worktree add``) on the same archive, for before/after figures from one run.

    .venv/bin/python bench/export_bench.py --size 2000          # the issue's 2 GB
    .venv/bin/python bench/export_bench.py --size 400 --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
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
from bench.common import MB, Measured, mb, run_measured

PYTHON = sys.executable
SUMS = ("sha256sum", "sha512sum")
# The implementation hashlib uses (OpenSSL): on CPUs with SHA extensions much faster than coreutils' own.
OPENSSL = (("openssl", "dgst", "-sha256"), ("openssl", "dgst", "-sha512"))
CHUNK = 1 << 20


def video_head(work: Path) -> bytes:
    """A short real MP4 (moov atom first, so a still is made from its start), or nothing without ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return b""
    out = work / "head.mp4"
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-t", "2", "-c:v", "mpeg4", "-q:v", "5", "-movflags", "+faststart", "-y", str(out)],
                   check=True)  # fmt: skip
    return out.read_bytes()


def build(root: Path, size_mb: int, sources: int, head_video: bytes = b"") -> int:
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
            prefix = head_video if len(head_video) < per_source else b""
            builder.write_payload(prefix)
            left = per_source - len(prefix)
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


def measured(
    argv: list[str],
    repeat: int,
    *,
    env: dict[str, str] | None = None,
    cleanup: Path | None = None,
    before: Callable[[], None] | None = None,
) -> Measured:
    """Run ``argv`` ``repeat`` times (removing ``cleanup``, calling ``before`` before each run); the run of
    median wall time."""
    runs = []
    for _ in range(repeat):
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        if before is not None:
            before()
        runs.append(run_measured(argv, env=env).check())
    return sorted(runs, key=lambda m: m.wall_s)[len(runs) // 2]


def evict(tree: Path) -> None:
    """Drop ``tree``'s files from the page cache (clean pages only; nobody else's), so that each reader of the
    bag starts cold, as someone verifying it later would."""
    for p in tree.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def row(name: str, m: Measured, warc_bytes: int) -> dict[str, Any]:
    cpu = m.user_s + m.sys_s
    return {
        "name": name,
        "wall_s": round(m.wall_s, 2),
        "mb_s": round(warc_bytes / MB / m.wall_s, 1),
        "cpu_s": round(cpu, 2),
        "user_s": round(m.user_s, 2),
        "sys_s": round(m.sys_s, 2),
        "cpu_ms_per_mb": round(1000 * cpu / (warc_bytes / MB), 2),
        "peak_rss": m.max_rss,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000, help="MB of captures in the incident (default 2000)")
    parser.add_argument("--sources", type=int, default=40, help="video sources sharing them (default 40)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, median kept (default 1)")
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another checkout whose export and verify-bundle are measured too")  # fmt: skip
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="export-bench-", dir=args.dir))
    rows: list[dict[str, Any]] = []
    bundle_bytes = 0
    try:
        root = work / "storage"
        print(f"building an archive with {args.size} MB of captures in {work} ...", flush=True)
        warc_bytes = build(root, args.size, args.sources, video_head(work))
        warcs = sorted(str(p) for p in (root / "warcs").glob("*.warc.gz"))
        load_before = os.getloadavg()[0]
        copy = work / "copy"
        n = args.repeat

        def add(name: str, m: Measured) -> None:
            rows.append(row(name, m, warc_bytes))
            r = rows[-1]
            print(f"{name:32} {r['wall_s']:7.2f} s {r['mb_s']:7.1f} MB/s   CPU {r['cpu_s']:6.2f} s"
                  f" (user {r['user_s']:6.2f} + sys {r['sys_s']:5.2f}) {r['cpu_ms_per_mb']:6.2f} ms/MB"
                  f"   peak RSS {mb(r['peak_rss'])}", flush=True)  # fmt: skip

        add("cp -r", measured(["cp", "-r", str(root / "warcs"), str(copy)], n, cleanup=copy))
        # coreutils sync with file arguments fsyncs just those files (and the folder), not the whole machine.
        durable = 'cp -r "$1" "$2" && sync "$2"/* "$2"'
        add("cp -r + sync", measured(["sh", "-c", durable, "sh", str(root / "warcs"), str(copy)], n, cleanup=copy))
        shutil.rmtree(copy, ignore_errors=True)
        add("sha256sum + sha512sum (WARC)", _sum([measured([tool, *warcs], n) for tool in SUMS]))
        add("openssl sha256 + sha512 (WARC)", _sum([measured([*tool, *warcs], n) for tool in OPENSSL]))
        bundle = work / "bundle"
        trees = [("", Path(__file__).resolve().parent.parent), *((f" @ {p.name}", p.resolve()) for p in args.also)]
        for label, tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            # -P: the checkout comes from PYTHONPATH, not from the current directory.
            base = [PYTHON, "-P", "-m", "archiver", "--root", str(root), "--collector", "bench"]
            cmd = [*base, "export", "--incident", "bench", "--out", str(bundle), "--json"]
            add(f"archiver export{label}", measured(cmd, n, env=env, cleanup=bundle))
            verify = [*base, "verify-bundle", str(bundle)]
            add(f"archiver verify-bundle{label}", measured(verify, n, env=env, before=lambda: evict(bundle)))
            if not label:
                payload = sorted(str(p) for p in (bundle / "data").rglob("*") if p.is_file())
                for name, tools in (("sha256sum + sha512sum (bag)", [[t] for t in SUMS]),
                                    ("openssl sha256 + sha512 (bag)", [list(t) for t in OPENSSL])):  # fmt: skip
                    add(name, _sum([measured([*t, *payload], n, before=lambda: evict(bundle)) for t in tools]))
                bundle_bytes = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        result = {
            "size_mb": args.size,
            "sources": args.sources,
            "warc_bytes": warc_bytes,
            "bundle_bytes": bundle_bytes,
            "cpus": os.cpu_count(),
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "rows": rows,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"WARC data {mb(warc_bytes)}, bag {mb(bundle_bytes)}; load average {result['load_average']} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _sum(runs: list[Measured]) -> Measured:
    """Two tools run one after the other, as one measurement."""
    a, b = runs
    return Measured(a.argv + b.argv, 0, a.wall_s + b.wall_s, a.user_s + b.user_s, a.sys_s + b.sys_s,
                    max(a.max_rss, b.max_rss), "", "")  # fmt: skip


if __name__ == "__main__":
    main()
