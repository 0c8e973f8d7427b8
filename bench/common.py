"""Shared helpers for the benchmarks: a measured subprocess, a loopback test site, sizes and profile summaries.

Nothing here reaches beyond 127.0.0.0/8. The site is the one :mod:`bench.crawl_bench` crawls: pages with images
spread over several loopback addresses, one threaded server per address on one port, each answering every request
after a fixed delay (a sleep in the handler thread, so concurrent requests overlap their latency as they would
against real servers).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import multiprocessing
import os
import random
import subprocess
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MB = 1_000_000


# -- measured subprocesses -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One finished subprocess: wall time, CPU time and peak resident memory from the kernel (``wait4``)."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss: int  # bytes; Linux reports ru_maxrss in KiB; the largest single process of the tree
    stdout: str
    stderr: str
    tree_rss: int = 0  # bytes: the largest sum of VmRSS over the process and its descendants (sampled)
    tree_pss: int = 0  # bytes: the same for PSS (shared pages counted once, split among their users)

    def check(self) -> Measured:
        if self.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.returncode}:\n{self.stderr[-4000:]}")
        return self


def run_measured(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float | None = None) -> Measured:
    """Run ``argv`` to completion; its peak RSS is the kernel's own high-water mark, not a sampled guess."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env)
        killer = threading.Timer(timeout, proc.kill) if timeout else None
        if killer is not None:
            killer.start()
        sampler = TreeMemory(proc.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            sampler.stop()
            if killer is not None:
                killer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; stop Popen from waiting again
        out.seek(0)
        err.seek(0)
        return Measured(
            argv=tuple(argv),
            returncode=proc.returncode,
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss=usage.ru_maxrss * 1024,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            tree_rss=max(sampler.peak_rss, usage.ru_maxrss * 1024),
            tree_pss=sampler.peak_pss,
        )


class TreeMemory(threading.Thread):
    """Samples the memory of a process and all its descendants every ``interval`` s (``/proc``).

    ``wait4``'s ``ru_maxrss`` is the high-water mark of the largest single process, which says nothing of a
    parent and its children working at once; this sums them. Sampling can miss a short peak between samples.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = 0
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            rss = pss = 0
            for pid in self._tree():
                rss += _proc_kib(f"/proc/{pid}/status", "VmRSS:")
                pss += _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss * 1024), max(self.peak_pss, pss * 1024)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found


def _proc_kib(path: str, key: str) -> int:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_size(path: Path) -> int:
    """Bytes in the regular files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB"


# -- py-spy profiles -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    self_top: list[tuple[str, int]]  # leaf frames: where the CPU is actually spent
    total_top: list[tuple[str, int]]  # frames anywhere on the stack: which call paths cost the most


def summarise_collapsed(path: Path, top: int = 15, *, contains: str = "") -> ProfileSummary:
    """Aggregate py-spy ``--format raw`` output (collapsed stacks, ``frame;frame;... count``) per function.

    Line numbers are dropped so that one function is one row. ``contains`` limits the inclusive list to frames
    whose text contains it (``archiver/`` shows which of our functions sit on the costly paths).
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            if contains in f:
                total_counts[f] += count
    return ProfileSummary(samples, self_counts.most_common(top), total_counts.most_common(top))


def _frame_name(frame: str) -> str:
    # "send (requests/adapters.py:667)" -> "send (requests/adapters.py)"; paths shortened after site-packages.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


# -- how fast the machine is ---------------------------------------------------------------------------------------


def interpreter_ms(rounds: int = 5) -> float:
    """Milliseconds a fixed piece of pure-Python work takes here (the best of ``rounds``): the same code gives
    a different figure on a slower machine, or on a virtual machine whose host is busier, so a result is read
    beside it. The work is of the kind a capture does per page: calls, small dicts, string formatting, JSON,
    hashing of a few KB."""
    blob = bytes(range(256)) * 16
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(20_000):
            row = {"id": i, "url": f"http://127.0.0.{i % 20 + 2}/p/{i}.html", "size": len(blob), "tags": [i, i + 1]}
            text = json.dumps(row, sort_keys=True)
            hashlib.sha256(text.encode() + blob).hexdigest()
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


# -- the loopback site ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteSpec:
    """``pages`` HTML pages spread round-robin (or, ``grouped``, in runs) over ``hosts`` loopback addresses
    starting at ``first_host``.

    Page ``i`` references 2 or 3 images: one of ``shared_images`` images shared by the pages of its host, and one
    or two of its own, each 2-8 KB of incompressible bytes.
    """

    pages: int = 1000
    hosts: int = 20
    latency: float = 0.020
    first_host: str = "127.0.0.2"
    shared_images: int = 4

    def host(self, index: int) -> str:
        return str(ipaddress.IPv4Address(self.first_host) + index)

    grouped: bool = False  # pages of one host consecutive in the list, as when a report cites one site a lot

    def host_of_page(self, i: int) -> int:
        return i * self.hosts // self.pages if self.grouped else i % self.hosts

    def page_url(self, i: int, port: int) -> str:
        return f"http://{self.host(self.host_of_page(i))}:{port}/p/{i}.html"

    def page_images(self, i: int) -> list[str]:
        shared = f"/img/shared-{(i // self.hosts) % self.shared_images}.png"
        return [shared, *(f"/img/{i}-{j}.jpg" for j in range(1 + i % 2))]


def page_html(spec: SiteSpec, i: int) -> bytes:
    rng = random.Random(i)
    words = ["hospital", "strike", "report", "witness", "district", "clinic", "video", "source", "evidence"]
    paragraphs = "\n".join(
        "<p>" + " ".join(rng.choice(words) for _ in range(60)) + ".</p>" for _ in range(rng.randint(3, 6))
    )
    images = "\n".join(f'<img src="{path}" alt="figure {n}">' for n, path in enumerate(spec.page_images(i)))
    nxt = (i + 1) % spec.pages
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>Page {i}</title></head>\n'
        f"<body><h1>Incident report {i}</h1>\n{paragraphs}\n{images}\n"
        f'<p><a href="/p/{nxt}.html">next report</a></p></body></html>\n'
    ).encode()


def image_bytes(path: str) -> bytes:
    seed = zlib.crc32(path.encode())
    return random.Random(seed).randbytes(2048 + seed % 6144)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers and both clients use it
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK of the
    # headers (up to 40 ms on Linux), which would add to every request a latency the benchmark did not ask for.
    disable_nagle_algorithm = True
    spec: SiteSpec
    counts: Counter[str]
    cache: dict[str, bytes]

    def do_GET(self) -> None:
        if self.path == "/__stats":  # not delayed, not counted: the benchmark reads the request counts here
            self._send(200, "application/json", json.dumps(dict(self.counts)).encode())
            return
        time.sleep(self.spec.latency)
        agent = self.headers.get("User-Agent", "")
        client = "wget" if agent.startswith("Wget") else "archiver" if "archiver" in agent else "other"
        body = self.cache.get(self.path)
        if body is None:
            body = self._make(self.path)
            if body is not None:
                self.cache[self.path] = body
        kind = "page" if self.path.startswith("/p/") else "image" if self.path.startswith("/img/") else "other"
        self.counts[f"{client}:{kind}"] += 1  # Counter += under the GIL: good enough for counts
        self.counts[f"{client}:bytes"] += len(body or b"")
        if not getattr(self, "_counted", False):  # one handler per TCP connection
            self._counted = True
            self.counts[f"{client}:connections"] += 1
        if body is None:
            self._send(404, "text/plain", b"not found\n")
        elif kind == "page":
            self._send(200, "text/html; charset=utf-8", body)
        else:
            self._send(200, "image/png" if self.path.endswith(".png") else "image/jpeg", body)

    def _make(self, path: str) -> bytes | None:
        if path.startswith("/p/") and path.endswith(".html"):
            number = path[3:-5]
            if number.isdigit() and int(number) < self.spec.pages:
                return page_html(self.spec, int(number))
        if path.startswith("/img/"):
            return image_bytes(path)
        return None

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections when 32 clients connect at once


def site_content(spec: SiteSpec) -> dict[str, bytes]:
    """Every page and image of the site, made before it answers: the first client to crawl it must not pay,
    on the cores the clients share, for content the later ones get from a cache."""
    content: dict[str, bytes] = {}
    for i in range(spec.pages):
        content[f"/p/{i}.html"] = page_html(spec, i)
        for path in spec.page_images(i):
            if path not in content:
                content[path] = image_bytes(path)
    return content


def _serve(spec: SiteSpec, conn: Connection) -> None:
    """Child process: bind one server per address on one shared port, report the port, serve until killed."""
    handler = type("Handler", (_Handler,), {"spec": spec, "counts": Counter(), "cache": site_content(spec)})
    for _ in range(20):
        servers: list[_Server] = []
        try:
            first = _Server((spec.host(0), 0), handler)
            servers.append(first)
            port = first.server_address[1]
            servers += [_Server((spec.host(h), port), handler) for h in range(1, spec.hosts)]
        except OSError:
            for s in servers:
                s.server_close()
            continue  # the port was taken on another address: try another one
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        conn.send(port)
        conn.recv()  # blocks until the parent says stop (or goes away)
        return
    conn.send(None)


@dataclass
class Site:
    spec: SiteSpec
    port: int
    pid: int
    _conn: Connection = field(repr=False)

    def urls(self) -> list[str]:
        return [self.spec.page_url(i, self.port) for i in range(self.spec.pages)]

    def stats(self) -> Counter[str]:
        import urllib.request

        with urllib.request.urlopen(f"http://{self.spec.host(0)}:{self.port}/__stats", timeout=10) as resp:
            return Counter(json.loads(resp.read()))

    def cpu_seconds(self) -> float:
        """CPU time the site's process has used so far (Linux ``/proc``: utime and stime, fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()  # after "(comm)", which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve_site(spec: SiteSpec) -> Iterator[Site]:
    """Run the site in its own process, so its handler threads never compete for the benchmark's GIL."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(spec, child), daemon=True)
    proc.start()
    try:
        port = parent.recv()
        if port is None:
            raise RuntimeError(f"could not bind {spec.hosts} loopback addresses from {spec.first_host} on one port")
        assert proc.pid is not None
        yield Site(spec, port, proc.pid, parent)
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
