"""WARC overhead benchmark (issue 3): SHA-256 + WARC writing against writing the same bytes to plain files.

The same bodies (many small HTML pages, a few MB-size incompressible media payloads) are written, in one run:

* ``plain``: each body to its own file, in 64 KiB writes; ``plain+fsync`` also fsyncs each file, as the sink
  fsyncs each record group;
* ``warc-N``: the way the fetcher stores an exchange: a :class:`BlockBuilder` spools the HTTP response head and
  body while hashing them (block and payload SHA-256), then :meth:`WarcSink.write_group` writes the response and
  request records (re-hashing both as it copies, gzip level N, one member per record) and fsyncs.

Throughput is body bytes per second. For the WARC runs the time is split into the spool pass (``build``) and the
sink pass (``write``), and the component costs (SHA-256, zlib at each level, on both kinds of data) are measured
alone so that the split can be read against them.

Example::

    .venv/bin/python bench/warc_overhead.py                 # ~1 GB of bodies
    .venv/bin/python bench/warc_overhead.py --total-mb 200  # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import MB, mb

from archiver.capture.httpwire import Exchange, exchange_records, serialise_request_head, serialise_response_head
from archiver.clock import RandomIds, SystemClock
from archiver.warc.block import CHUNK, BlockBuilder
from archiver.warc.writer import WarcSink, deflater

POOL_BYTES = 32 << 20  # random bytes the media bodies are cut from, made before any timing


@dataclass(frozen=True)
class Body:
    name: str
    media_type: str
    offset: int  # into the pool of its kind
    size: int


@dataclass(frozen=True)
class Corpus:
    bodies: list[Body]
    media_pool: bytes
    html_pool: bytes

    @property
    def total(self) -> int:
        return sum(b.size for b in self.bodies)

    def chunks(self, body: Body) -> Iterator[memoryview]:
        pool = memoryview(self.html_pool if body.media_type == "text/html" else self.media_pool)
        start, end = body.offset, body.offset + body.size
        for at in range(start, end, CHUNK):
            yield pool[at : min(at + CHUNK, end)]


def make_corpus(total_mb: int, media_share: float, seed: int = 3) -> Corpus:
    """Bodies totalling ``total_mb`` MB: ``media_share`` of the bytes in 2-8 MB media, the rest 5-60 KB HTML."""
    rng = random.Random(seed)
    media_pool = rng.randbytes(POOL_BYTES)
    words = [b"hospital", b"airstrike", b"witness", b"<p>", b"</p>", b"report", b"district", b"<a href='#'>"]
    # 2 MB of text repeated: deflate's 32 KB window never sees the repetition, and memory stays small.
    text = b" ".join(rng.choices(words, k=(2 << 20) // 7))
    html_pool = (text * (POOL_BYTES // len(text) + 1))[:POOL_BYTES]
    bodies: list[Body] = []
    media_left, html_left = int(total_mb * MB * media_share), int(total_mb * MB * (1 - media_share))
    while media_left > 0:
        size = min(media_left, rng.randint(2 * MB, 8 * MB))
        bodies.append(Body(f"m{len(bodies)}.mp4", "video/mp4", rng.randrange(POOL_BYTES - size), size))
        media_left -= size
    while html_left > 0:
        size = min(html_left, rng.randint(5_000, 60_000))
        bodies.append(Body(f"h{len(bodies)}.html", "text/html", rng.randrange(POOL_BYTES - size), size))
        html_left -= size
    rng.shuffle(bodies)  # interleaved as a crawl would meet them
    return Corpus(bodies, media_pool, html_pool)


@dataclass(frozen=True)
class Result:
    variant: str
    seconds: float
    output_bytes: int
    build_s: float = 0.0
    write_s: float = 0.0


def write_plain(corpus: Corpus, out: Path, *, fsync: bool) -> Result:
    out.mkdir()
    started = time.perf_counter()
    for body in corpus.bodies:
        fd = os.open(out / body.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for chunk in corpus.chunks(body):
                os.write(fd, chunk)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - started
    return Result("plain+fsync" if fsync else "plain", seconds, sum(p.stat().st_size for p in out.iterdir()))


def _store(corpus: Corpus, bodies: list[Body], sink: WarcSink) -> tuple[float, float]:
    """Store ``bodies`` as the fetcher stores exchanges; returns seconds spent spooling and in the sink."""
    clock = SystemClock()
    build_s = write_s = 0.0
    for body in bodies:
        t0 = time.perf_counter()
        url = f"http://127.0.0.1:8080/{body.name}"
        request, _ = serialise_request_head("GET", url, [("User-Agent", "bench"), ("Accept", "*/*")])
        req = BlockBuilder(has_payload=False)
        req.write_head(request)
        headers = (("Content-Type", body.media_type), ("Content-Length", str(body.size)))
        resp = BlockBuilder()
        resp.write_head(serialise_response_head(11, 200, "OK", headers))
        for chunk in corpus.chunks(body):
            resp.write_payload(bytes(chunk))  # the fetcher hands over bytes from the socket
        now = clock.now()
        ex = Exchange(
            method="GET", url=url, request=req.finish(), response=resp.finish(), status=200, reason="OK",
            headers=headers, peer_ip="127.0.0.1", proxy=None, started_at=now, ended_at=now,
        )  # fmt: skip
        t1 = time.perf_counter()
        try:
            sink.write_group(exchange_records(ex, sink.new_record_id))
        finally:
            ex.close()
        build_s += t1 - t0
        write_s += time.perf_counter() - t1
    return build_s, write_s


def write_warc(corpus: Corpus, out: Path, level: int, *, threads: int = 1, sinks: int = 1) -> Result:
    """The bodies through ``sinks`` WarcSinks by ``threads`` threads (capture workers share one sink today)."""
    made = [
        WarcSink(out, prefix=f"bench{n}", clock=SystemClock(), ids=RandomIds(), compress_level=level, host="bench")
        for n in range(sinks)
    ]
    shares = [corpus.bodies[n::threads] for n in range(threads)]
    started = time.perf_counter()
    if threads == 1:
        build_s, write_s = _store(corpus, shares[0], made[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(_store, corpus, share, made[n % sinks]) for n, share in enumerate(shares)]
            build_s, write_s = (sum(f.result()[i] for f in futures) for i in (0, 1))
    for sink in made:
        sink.close()
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.iterdir())
    name = f"warc-{level}" if threads == 1 else f"warc-{level} {threads}t/{sinks}s"
    return Result(name, seconds, size, build_s if threads == 1 else 0.0, write_s if threads == 1 else 0.0)


def component_rates(corpus: Corpus, sample_mb: int = 64) -> dict[str, float]:
    """MB/s of each piece alone over ``sample_mb`` MB of each kind of data: what a pass of it costs."""
    rates: dict[str, float] = {}
    for kind, pool in (("media", corpus.media_pool), ("html", corpus.html_pool)):
        view = memoryview(pool)
        n = min(sample_mb * MB, len(pool))

        def passes(fn: Any, _view: memoryview = view, _n: int = n) -> float:
            t = time.perf_counter()
            for at in range(0, _n, CHUNK):
                fn(_view[at : at + CHUNK])
            return _n / MB / (time.perf_counter() - t)

        rates[f"sha256 {kind}"] = passes(hashlib.sha256().update)
        for level in (0, 1, 6):
            comp = zlib.compressobj(level, zlib.DEFLATED, 31)
            rates[f"zlib-{level} {kind}"] = passes(comp.compress)
            comp.flush()
        # What WarcSink deflates with when python-isal is installed: zlib's levels 1-3 are ISA-L's 1, 4-6 its 2.
        for level in (1, 6):
            make = deflater(level)
            if make.func is zlib.compressobj:
                continue
            comp = make()
            rates[f"isa-l-{make.args[0]} (for {level}) {kind}"] = passes(comp.compress)
            comp.flush()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-mb", type=int, default=1000, help="MB of bodies written by each variant (1000)")
    parser.add_argument("--media-share", type=float, default=0.9, help="share of the bytes in media bodies (0.9)")
    parser.add_argument("--levels", default="0,1,6", help="gzip levels to run (0,1,6)")
    parser.add_argument("--threads", type=int, default=2, help="also write the last level with N threads (2)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir on $TMPDIR's disk)")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    corpus = make_corpus(args.total_mb, args.media_share)
    media = sum(1 for b in corpus.bodies if b.media_type != "text/html")
    print(
        f"corpus: {len(corpus.bodies)} bodies, {mb(corpus.total)} ({media} media bodies of 2-8 MB, "
        f"{len(corpus.bodies) - media} HTML of 5-60 KB)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="warc-overhead-", dir=args.dir))
    results: list[Result] = []
    try:
        runs: list[tuple[str, Any]] = [
            ("plain", lambda out: write_plain(corpus, out, fsync=False)),
            ("plain+fsync", lambda out: write_plain(corpus, out, fsync=True)),
        ]
        runs += [(f"warc-{lv}", lambda out, lv=int(lv): write_warc(corpus, out, lv)) for lv in args.levels.split(",")]
        if args.threads > 1:
            # Do more threads help? Through one sink (as capture workers share one today) and through one each.
            lv, n = int(args.levels.split(",")[-1]), args.threads
            runs += [
                (f"warc-{lv} {n}t/1s", lambda out: write_warc(corpus, out, lv, threads=n, sinks=1)),
                (f"warc-{lv} {n}t/{n}s", lambda out: write_warc(corpus, out, lv, threads=n, sinks=n)),
            ]
        # Untimed warm-up: the first writer of a run pays for page-cache and inode allocation the others reuse.
        write_plain(
            Corpus(corpus.bodies[: len(corpus.bodies) // 10], corpus.media_pool, corpus.html_pool),
            workdir / "w",
            fsync=False,
        )
        shutil.rmtree(workdir / "w")
        for name, run in runs:
            out = workdir / name
            os.sync()  # start every variant with no dirty pages left over from the one before (not timed)
            result = run(out)
            results.append(result)
            shutil.rmtree(out)  # keep the disk footprint to one variant
            print(f"  {name}: {result.seconds:.2f} s", flush=True)
        rates = component_rates(corpus)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base = next(r for r in results if r.variant == "plain+fsync")
    print(f"\n{'variant':<14} {'seconds':>8} {'MB/s':>7} {'vs plain+fsync':>15} {'output':>10}", end="")
    print(f" {'build s':>8} {'write s':>8}")
    for r in results:
        rate = corpus.total / MB / r.seconds
        split = f"{r.build_s:>8.2f} {r.write_s:>8.2f}" if r.build_s else ""
        print(
            f"{r.variant:<14} {r.seconds:>8.2f} {rate:>7.1f} {r.seconds / base.seconds:>14.2f}x "
            f"{mb(r.output_bytes):>10} {split}"
        )
    print("\ncomponents alone (MB/s, one pass over in-memory data):")
    for name, rate in rates.items():
        print(f"  {name:<14} {rate:>8.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\npeak RSS of this process: {mb(peak)} (includes the {mb(2 * POOL_BYTES)} of source pools)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    if args.json_out:
        data = {
            "when": datetime.now(UTC).isoformat(),
            "corpus": {"bodies": len(corpus.bodies), "bytes": corpus.total, "media_bodies": media},
            "results": [{**r.__dict__, "mb_per_s": corpus.total / MB / r.seconds} for r in results],
            "components_mb_per_s": rates,
            "peak_rss": peak,
        }
        args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
