"""Fixity speed: ``verify`` at file level against ``sha256sum``, and ``verify --deep`` against ``warcio check``.

Builds a real archive (SQLite catalogue, ~4 GB of ``.warc.gz`` in 4 files, written by :class:`WarcSink` with
receipts issued and recorded as the capture job does): captures of an HTML page (compressible text) and a
"video" of random bytes (incompressible, as real video is). Then, on the same files in the same run, with the
page cache warm for every contender (each is run ``--repeat`` times, the best time kept):

- ``verify_archive(deep=False)``, against ``sha256sum`` over the same files (one process, one file after the
  other, as ``sha256sum -c`` runs) and ``xargs -P2 sha256sum`` (two at once, as verify hashes);
  target: verify at least 3x faster than ``sha256sum``;
- ``verify_archive(deep=True)`` (file hashes, every record's digests, artifacts, receipts, custody chain)
  against ``warcio check`` (record digests only); target: at least 1.5x faster.

Not part of the test run. Usage::

    .venv/bin/python bench/verify_bench.py              # ~4 GB, a few minutes
    .venv/bin/python bench/verify_bench.py --quick      # ~400 MB
    .venv/bin/python bench/verify_bench.py --size-gb 8 --dir /srv/scratch --keep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select

from archiver import keys
from archiver.archive import Archive
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile
from archiver.catalogue.warcs import artifact_from_ref, record_closed_warc
from archiver.clock import RandomIds, SystemClock
from archiver.config import load_settings
from archiver.integrity.receipts import CaptureFacts, record_receipt, write_receipt
from archiver.verify import verify_archive
from archiver.warc.block import block_from_bytes
from archiver.warc.records import HTTP_RESPONSE_TYPE, RESOURCE, RESPONSE, ClosedWarc, RecordRef, RecordSpec
from archiver.warc.writer import WarcSink

BIN = Path(sys.executable).parent
MB = 1_000_000
VIDEO = 24 * MB  # bytes of random "video" per capture
PAGE = (b"<p>An incident report: the hospital was struck at dawn; witnesses describe the damage.</p>\n" * 700)[:60_000]


def _closed(archive: Archive, closed: ClosedWarc) -> None:
    with archive.session() as s:
        record_closed_warc(
            s,
            archive.clock,
            actor=archive.actor,
            name=closed.name,
            sha256=closed.sha256,
            size=closed.size,
            records=closed.records,
            opened_at=closed.opened_at,
            closed_at=closed.closed_at,
        )


def _warc_id(archive: Archive, name: str, cache: dict[str, int]) -> int:
    if name not in cache:
        with archive.session() as s:
            row = s.scalar(select(WarcFile).where(WarcFile.name == name))
            if row is None:
                row = WarcFile(name=name, status="open", opened_at=archive.clock.now())
                s.add(row)
                s.flush()
            cache[name] = row.id
    return cache[name]


def build(root: Path, total: int) -> Archive:
    """An archive of about ``total`` bytes of WARC in 4 files, every capture with its receipt."""
    settings = load_settings(root, None, collector="bench", env={})
    archive = Archive(settings, clock=SystemClock(), ids=RandomIds())
    archive.init()
    signer = keys.load_signer(settings.key_dir)
    rng = open("/dev/urandom", "rb")  # noqa: SIM115 - closed below
    sink = WarcSink(
        settings.warc_dir,
        prefix="bench",
        clock=archive.clock,
        ids=archive.ids,
        max_size=max(total // 4, 1 << 16),
        host="bench",
        on_close=lambda c: _closed(archive, c),
    )
    warc_ids: dict[str, int] = {}
    written, n = 0, 0
    try:
        while written < total:
            n += 1
            url = f"https://example.org/incident/{n}"
            with archive.session() as s:
                src = Source(identity_key=url, url=url, kind="video", status="captured", created_at=archive.clock.now())
                s.add(src)
                s.flush()
                cap = Capture(
                    source_id=src.id,
                    method="web",
                    started_at=archive.clock.now(),
                    outcome="ok",
                    collector="bench",
                    egress="direct",
                    tools={"bench": "1"},
                )
                s.add(cap)
                s.flush()
                source_id, capture_id = src.id, cap.id
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(PAGE)}\r\n\r\n".encode()
            specs = [
                RecordSpec(RESPONSE, block_from_bytes(PAGE, head=head), HTTP_RESPONSE_TYPE, url),
                RecordSpec(RESOURCE, block_from_bytes(rng.read(VIDEO)), "video/mp4", f"urn:bench:video:{n}"),
            ]
            refs = sink.write_group(specs)
            for spec in specs:
                spec.block.close()
            ended = archive.clock.now()
            with archive.session() as s:
                cap_row = s.get(Capture, capture_id)
                src_row = s.get(Source, source_id)
                assert cap_row is not None and src_row is not None
                cap_row.ended_at = ended  # committed before the receipt is written, as the facts say
                facts = CaptureFacts.of(cap_row, src_row, [])
            issued = write_receipt(sink, signer, facts, refs)
            ids = {r.warc_file: _warc_id(archive, r.warc_file, warc_ids) for r in [*refs, issued.ref]}
            with archive.session() as s:
                for role, ref in zip(("page", "media"), refs, strict=True):
                    s.add(_artifact(capture_id, role, ref, ids[ref.warc_file]))
                record_receipt(s, archive.clock, issued, warc_file_id=ids[issued.ref.warc_file], actor="bench")
            written += sum(r.length for r in refs) + issued.ref.length
    finally:
        sink.close()
        rng.close()
    return archive


def _artifact(capture_id: int, role: str, ref: RecordRef, warc_id: int) -> Artifact:
    return artifact_from_ref(ref, capture_id=capture_id, role=role, warc_file_id=warc_id)


def best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=4.0)
    parser.add_argument("--quick", action="store_true", help="about 400 MB")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the archive (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the archive afterwards")
    args = parser.parse_args()
    total = int((0.4 if args.quick else args.size_gb) * 1000 * MB)
    base = Path(tempfile.mkdtemp(prefix="verify-bench-", dir=args.dir))
    try:
        started = time.perf_counter()
        archive = build(base / "storage", total)
        build_s = time.perf_counter() - started
        files = sorted(str(p) for p in archive.settings.warc_dir.glob("*.warc.gz"))
        size = sum(os.path.getsize(f) for f in files)

        def verify_files() -> None:
            assert verify_archive(archive).ok

        def verify_deep() -> None:
            report = verify_archive(archive, deep=True)
            assert report.ok, [str(p) for p in report.errors][:5]

        results = {
            "sha256sum": best(args.repeat, lambda: run(["sha256sum", *files])),
            "sha256sum_P2": best(
                args.repeat, lambda: run(["sh", "-c", 'printf "%s\\n" "$@" | xargs -P2 -n1 sha256sum', "sh", *files])
            ),
            "verify": best(args.repeat, verify_files),
            "warcio_check": best(args.repeat, lambda: run([str(BIN / "warcio"), "check", *files])),
            "verify_deep": best(args.repeat, verify_deep),
        }
        summary = {
            "files": len(files),
            "bytes": size,
            "build_s": round(build_s, 1),
            **{f"{k}_s": round(v, 3) for k, v in results.items()},
            "verify_MBps": round(size / MB / results["verify"]),
            "sha256sum_over_verify": round(results["sha256sum"] / results["verify"], 2),
            "warcio_check_over_verify_deep": round(results["warcio_check"] / results["verify_deep"], 2),
        }
        # Every contender needs the CPU: other work on the machine skews the two-thread verify the most.
        summary["loadavg_1min"] = round(os.getloadavg()[0], 2)
        print(
            f"{len(files)} files, {size / MB:.0f} MB (built in {build_s:.0f} s), load average {os.getloadavg()[0]:.2f}"
        )
        for name, seconds in results.items():
            print(f"  {name:<14} {seconds:8.2f} s  {size / MB / seconds:8.0f} MB/s")
        print(f"  verify is {summary['sha256sum_over_verify']}x sha256sum's speed (target 3x)")
        print(f"  verify --deep is {summary['warcio_check_over_verify_deep']}x warcio check's speed (target 1.5x)")
        print(json.dumps(summary))
        archive.close()
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    main()
