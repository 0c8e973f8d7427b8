"""Crawl benchmark (issue 3): ``archiver run`` against ``wget --warc-file -p -i list`` on the same loopback site.

Both clients get the same list of page URLs and fetch each page with its requisites into a WARC file. The site
(:func:`common.serve_site`) answers every request after ``--latency`` seconds, so a client's throughput is set by
how many requests it keeps in flight: wget has one, the archiver ``workers`` (at most ``per_host`` per host).

Reported per client: pages/s, requests/s, wall and CPU seconds (the client's processes together), peak RSS (the
sum over all its processes at once, sampled from ``/proc``, never less than the kernel's high-water mark of the
largest), bytes written. For the archiver also its efficiency: requests/s against the ideal
``min(workers, hosts * per_host) / latency`` (:func:`ideal_requests_per_s`, lower with a ``per_host_delay``).
``--pipeline-bound`` runs the fetch and WARC writing alone, in-process, with no catalogue; ``--profile`` repeats the
archiver run under py-spy (every process of it).

Example::

    .venv/bin/python bench/crawl_bench.py            # 1,000 pages, 20 hosts, 32 workers, 20 ms
    .venv/bin/python bench/crawl_bench.py --quick    # 100 pages, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    Measured,
    Site,
    SiteSpec,
    interpreter_ms,
    mb,
    run_measured,
    serve_site,
    summarise_collapsed,
    tree_size,
)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Options:
    workers: int
    per_host: int
    per_host_delay: float
    timeout: float
    processes: int = 0  # archiver network.processes; 0: the archiver's own choice


@dataclass(frozen=True)
class ClientResult:
    name: str
    run: Measured
    pages: int  # pages the client reports as captured (archiver) or the site served (wget)
    requests: int  # requests the site answered for this client during the run
    bytes_written: int
    detail: dict[str, Any]

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.run.wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.run.wall_s


def _delta(after: Counter[str], before: Counter[str], client: str) -> tuple[int, int]:
    pages = after[f"{client}:page"] - before[f"{client}:page"]
    total = sum(
        after[k] - before[k] for k in after if k.startswith(f"{client}:") and not k.endswith((":bytes", ":connections"))
    )
    return pages, total


# -- the archiver --------------------------------------------------------------------------------------------------


def _archiver(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "archiver", "--root", str(root), *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ARCHIVER_COLLECTOR"] = "bench@localhost"
    env.pop("ARCHIVER_ROOT", None)
    env.pop("ARCHIVER_DB_URL", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def prepare_archive(root: Path, urls: list[str], opts: Options) -> dict[str, float]:
    """init, settings.toml with the benchmark's [network] values, one incident citing every URL: timed apart."""
    env = _env()
    init = run_measured(_archiver(root, "init", "--json"), env=env).check()
    (root / "settings.toml").write_text(
        "[archive]\n"
        'warc_prefix = "bench"\n'
        "[network]\n"
        f"workers = {opts.workers}\n"
        f"per_host = {opts.per_host}\n"
        f"per_host_delay = {float(opts.per_host_delay)}\n"
        f"processes = {opts.processes}\n"
        "connect_timeout = 10.0\n"
        "read_timeout = 30.0\n"
        "total_timeout = 120.0\n"
        "retries = 3\n",
        encoding="utf-8",
    )
    manifest = root / "bench-manifest.yaml"
    sources = "".join(f"      - url: {u}\n        kind: article\n" for u in urls)
    manifest.write_text(
        "version: 1\nincidents:\n"
        "  - id: crawl-benchmark\n"
        "    title: Crawl benchmark pages\n"
        "    when: {start: 2024-01-01}\n"
        "    place: {name: Loopback, country: SY}\n"
        "    summary: Synthetic pages served on 127.0.0.0/8 for the crawl benchmark.\n"
        "    sources:\n" + sources,
        encoding="utf-8",
    )
    load = run_measured(_archiver(root, "manifest", "load", str(manifest), "--json"), env=env).check()
    return {"init_s": init.wall_s, "manifest_load_s": load.wall_s}


def run_archiver(
    site: Site, workdir: Path, opts: Options, *, profile: Path | None = None, mode: str = "gil"
) -> ClientResult:
    root = workdir / (f"archiver-profiled-{mode}" if profile else "archiver")
    setup = prepare_archive(root, site.urls(), opts)
    argv = _archiver(root, "run", "--json", "--no-follow-citations")
    if profile is not None:
        # gil: only the thread holding the GIL, i.e. what serialises the workers on the interpreter;
        # wall: every thread, idle or not, i.e. what the workers wait for (the socket, ideally).
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        flag = "--gil" if mode == "gil" else "--idle"
        spy_args = [flag, "--subprocesses", "--rate", "250", "--format", "raw", "-o", str(profile), "--"]
        argv = [spy, "record", *spy_args, *argv]
    before, cpu_before = site.stats(), site.cpu_seconds()
    run = run_measured(argv, env=_env(), timeout=opts.timeout).check()
    after, cpu_after = site.stats(), site.cpu_seconds()
    # py-spy adds its own lines around the archiver's JSON
    summary, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{") :])
    _, requests = _delta(after, before, "archiver")
    outcomes = Counter(c["outcome"] for c in summary["captures"])
    return ClientResult(
        name="archiver",
        run=run,
        pages=summary["captured"],
        requests=requests,
        bytes_written=tree_size(root / "warcs"),
        detail={
            **setup,
            "job_seconds": summary["seconds"],
            "outcomes": dict(outcomes),
            "records": summary["records"],
            "catalogue_bytes": sum(tree_size(p) for p in root.glob("catalogue.sqlite*")),
            "warc_files": len(summary["closed_warcs"]),
            "site_cpu_s": cpu_after - cpu_before,
            "connections": after["archiver:connections"] - before["archiver:connections"],
        },
    )


# -- wget ----------------------------------------------------------------------------------------------------------


def run_wget(site: Site, workdir: Path, timeout: float) -> ClientResult:
    wget = shutil.which("wget")
    if wget is None:
        raise SystemExit("wget is not installed: apt-get install -y wget (or pass --skip-wget)")
    out = workdir / "wget"
    out.mkdir()
    url_list = out / "urls.txt"
    url_list.write_text("\n".join(site.urls()) + "\n", encoding="utf-8")
    argv = [
        wget,
        "--quiet",
        "--page-requisites",
        "-e",
        "robots=off",  # the archiver does not read robots.txt either; same requests on both sides
        f"--warc-file={out / 'crawl'}",
        "--directory-prefix",
        str(out / "files"),
        "--input-file",
        str(url_list),
    ]
    before, cpu_before = site.stats(), site.cpu_seconds()
    run = run_measured(argv, timeout=timeout)
    after, cpu_after = site.stats(), site.cpu_seconds()
    if run.returncode not in (0, 8):  # 8: some server answered with an error (none should, but not fatal here)
        run.check()
    pages, requests = _delta(after, before, "wget")
    warc = out / "crawl.warc.gz"
    return ClientResult(
        name="wget",
        run=run,
        pages=pages,
        requests=requests,
        bytes_written=tree_size(warc) + tree_size(out / "files"),
        detail={
            "warc_bytes": tree_size(warc),
            "files_bytes": tree_size(out / "files"),
            "site_cpu_s": cpu_after - cpu_before,
            "connections": after["wget:connections"] - before["wget:connections"],
        },
    )


# -- the capture pipeline alone -------------------------------------------------------------------------------------


def pipeline_bound(site: Site, workdir: Path, opts: Options) -> dict[str, Any]:
    """Fetch, requisites and WARC writing as ``archiver run`` does them, in this process, with no catalogue.

    Built from the public pieces (Fetcher, HostGate, WebCapturer, WarcSink): the throughput the capture pipeline
    allows on this machine, i.e. what is left for the catalogue's bookkeeping to cost.
    """
    from archiver.capture.fetch import Fetcher, FetchSettings, exchange_records
    from archiver.capture.gate import HostGate
    from archiver.capture.web import WebCapturer
    from archiver.clock import RandomIds, SystemClock
    from archiver.warc.writer import WarcSink

    clock, ids = SystemClock(), RandomIds()
    fetcher = Fetcher(FetchSettings(), clock, ids)
    web = WebCapturer(fetcher, HostGate(opts.per_host, opts.per_host_delay))
    sink = WarcSink(workdir / "pipeline-warcs", prefix="bound", clock=clock, ids=ids)

    def one(url: str) -> None:
        page = web.capture(url)
        try:
            sink.write_group([spec for ex in page.exchanges for spec in exchange_records(ex, sink.new_record_id)])
        finally:
            page.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ThreadPoolExecutor(opts.workers) as pool:
        for future in as_completed([pool.submit(one, url) for url in site.urls()]):
            future.result()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    sink.close()
    fetcher.close()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    pages = site.spec.pages
    return {
        "pages": pages,
        "wall_s": round(wall, 2),
        "pages_per_s": round(pages / wall, 1),
        "cpu_ms_per_page": round(cpu / pages * 1000, 2),
        "bytes_written": tree_size(workdir / "pipeline-warcs"),
    }


# -- report --------------------------------------------------------------------------------------------------------


def ideal_requests_per_s(spec: SiteSpec, opts: Options, arch: ClientResult) -> float:
    """Requests per second with zero client cost: each worker runs one page's r requests back to back.

    A page's requests go to one host, so with ``per_host_delay`` they start that far apart: a page takes
    ``(r - 1) * max(delay, latency) + latency``. With no delay this is ``min(workers, hosts * per_host) / latency``.
    """
    r = arch.requests / max(1, arch.pages)
    concurrency = min(opts.workers, spec.hosts * opts.per_host)
    page_s = (r - 1) * max(opts.per_host_delay, spec.latency) + spec.latency
    ideal = concurrency * r / page_s
    if opts.per_host_delay > 0:
        ideal = min(ideal, spec.hosts / opts.per_host_delay)  # the delay also caps each host on its own
    return ideal


def report(
    spec: SiteSpec, opts: Options, results: list[ClientResult], archiver_runs: list[ClientResult]
) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    rows = []
    for r in results:
        rows.append(
            {
                "client": r.name,
                "pages": r.pages,
                "requests": r.requests,
                "wall_s": round(r.run.wall_s, 2),
                "pages_per_s": round(r.pages_per_s, 1),
                "requests_per_s": round(r.requests_per_s, 1),
                "cpu_s": round(r.run.user_s + r.run.sys_s, 2),
                # Interpreter start and imports included: the figure that bounds a GIL-bound process.
                "cpu_ms_per_page": round((r.run.user_s + r.run.sys_s) / max(1, r.pages) * 1000, 2),
                # All the processes of the client at once (archiver run forks capture processes): the sum of
                # their RSS, sampled, or the kernel's high-water mark of the largest, whichever is more.
                "peak_rss_mb": round(r.run.tree_rss / 1e6, 1),
                "peak_pss_mb": round(r.run.tree_pss / 1e6, 1),
                "largest_process_rss_mb": round(r.run.max_rss / 1e6, 1),
                "bytes_written": r.bytes_written,
                **r.detail,
            }
        )
    out: dict[str, Any] = {
        "site": {"pages": spec.pages, "hosts": spec.hosts, "latency_ms": spec.latency * 1000, "grouped": spec.grouped},
        "settings": opts.__dict__,
        "clients": rows,
    }
    arch = by_name.get("archiver")
    if arch is not None:
        out["archiver_ideal_requests_per_s"] = round(ideal_requests_per_s(spec, opts, arch), 1)
        ideal = out["archiver_ideal_requests_per_s"]
        out["archiver_efficiency"] = round(arch.requests_per_s / ideal, 3)
        # RSS summed over processes counts the pages a fork shares once per process; PSS splits them among
        # their users. Both are reported: the first is the conservative reading of "peak RSS < 200 MB".
        out["archiver_peak_rss_target_met"] = max(r.run.tree_rss for r in archiver_runs) < 200e6
        out["archiver_peak_pss_target_met"] = max(r.run.tree_pss for r in archiver_runs) < 200e6
        out["archiver_runs_pages_per_s"] = [round(r.pages_per_s, 1) for r in archiver_runs]
    if arch is not None and "wget" in by_name:
        out["speedup_pages_per_s"] = round(arch.pages_per_s / by_name["wget"].pages_per_s, 2)
        out["speedup_target_met"] = out["speedup_pages_per_s"] >= 10
    return out


def print_report(data: dict[str, Any]) -> None:
    site = data["site"]
    order = "grouped by host" if site["grouped"] else "round-robin over hosts"
    print(f"site: {site['pages']} pages on {site['hosts']} hosts ({order}), {site['latency_ms']:.0f} ms per request")
    print(f"archiver settings: {data['settings']}")
    header = f"{'client':<9} {'pages':>6} {'reqs':>6} {'wall s':>7} {'pages/s':>8} {'req/s':>7} {'cpu s':>6}"
    print(header + f" {'peak RSS':>9} {'written':>9}")
    for r in data["clients"]:
        print(
            f"{r['client']:<9} {r['pages']:>6} {r['requests']:>6} {r['wall_s']:>7.2f} {r['pages_per_s']:>8.1f} "
            f"{r['requests_per_s']:>7.1f} {r['cpu_s']:>6.2f} {r['peak_rss_mb']:>6.1f} MB {mb(r['bytes_written']):>9}"
        )
    for r in data["clients"]:
        extra = {k: v for k, v in r.items() if k not in ("client", "pages", "requests", "wall_s", "pages_per_s")}
        print(f"  {r['client']}: " + ", ".join(f"{k}={v}" for k, v in extra.items() if k not in ("requests_per_s",)))
    if "archiver_ideal_requests_per_s" in data:
        print(
            f"archiver efficiency: {data['archiver_efficiency']:.1%} of the ideal "
            f"{data['archiver_ideal_requests_per_s']:.0f} req/s; in every run, peak RSS (sum) < 200 MB: "
            f"{data['archiver_peak_rss_target_met']}, peak PSS < 200 MB: {data['archiver_peak_pss_target_met']}"
        )
    print(f"load average (1 min) at start and end: {data['load_average_1m_start_end']}")
    if "interpreter_ms_start_end" in data:
        print(
            f"machine speed at start and end: {data['interpreter_ms_start_end']} ms for common.interpreter_ms's "
            "fixed work (lower is faster)"
        )
    if len(data.get("archiver_runs_pages_per_s", [])) > 1:
        print(f"archiver runs (pages/s; the median run is shown above): {data['archiver_runs_pages_per_s']}")
    if "pipeline_bound" in data:
        b = data["pipeline_bound"]
        print(
            f"capture pipeline alone (no catalogue, in-process): {b['pages_per_s']:.1f} pages/s, "
            f"{b['cpu_ms_per_page']:.2f} ms CPU per page"
        )
    if "speedup_pages_per_s" in data:
        met = "met" if data["speedup_target_met"] else "MISSED"
        print(f"archiver / wget pages/s: {data['speedup_pages_per_s']:.1f}x (target >= 10x: {met})")


def print_profile(path: Path, mode: str) -> None:
    summary = summarise_collapsed(path, 15)
    what = "of the GIL holder" if mode == "gil" else "of every thread, idle or not"
    print(f"\nprofile ({mode}): {summary.samples} samples {what} ({path})")
    print("  self (the innermost frame of each sample):")
    for name, n in summary.self_top:
        print(f"    {n / summary.samples:6.1%}  {name}")
    ours = summarise_collapsed(path, 15, contains="archiver/")
    print("  inclusive, archiver functions:")
    for name, n in ours.total_top:
        print(f"    {n / summary.samples:6.1%}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--latency", type=float, default=20.0, help="per-request server delay in ms (20)")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=4, help="archiver network.per_host (4)")
    parser.add_argument("--per-host-delay", type=float, default=0.0, help="archiver network.per_host_delay, s (0)")
    parser.add_argument(
        "--processes", type=int, default=0, help="archiver network.processes (0: its own choice, one per core)"
    )
    parser.add_argument("--quick", action="store_true", help="100 pages: a smoke run")
    parser.add_argument(
        "--grouped", action="store_true", help="list each host's pages together instead of round-robin over hosts"
    )
    parser.add_argument("--skip-wget", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="archiver runs (fresh root each); the median counts")
    parser.add_argument(
        "--pipeline-bound", action="store_true", help="also run fetch + WARC writing alone, with no catalogue"
    )
    parser.add_argument(
        "--profile",
        choices=["gil", "wall"],
        help="repeat the archiver run under py-spy: gil = CPU under the GIL, wall = what every thread waits on",
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill a client run after this many s")
    args = parser.parse_args(argv)
    pages = 100 if args.quick else args.pages
    spec = SiteSpec(pages=pages, hosts=args.hosts, latency=args.latency / 1000, grouped=args.grouped)
    opts = Options(args.workers, args.per_host, args.per_host_delay, args.timeout, args.processes)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="crawl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_start = round(os.getloadavg()[0], 2)
    speed_start = interpreter_ms()
    try:
        with serve_site(spec) as site:
            print(f"site up on {spec.host(0)}..{spec.host(spec.hosts - 1)} port {site.port}; work dir {workdir}")
            runs = []
            for n in range(max(1, args.repeat)):
                runs.append(run_archiver(site, workdir / f"run{n}", opts))
                print(f"archiver: {runs[-1].pages} pages in {runs[-1].run.wall_s:.2f} s", flush=True)
            median = statistics.median_low(r.pages_per_s for r in runs)
            results = [next(r for r in runs if r.pages_per_s == median)]
            if not args.skip_wget:
                results.append(run_wget(site, workdir, args.timeout))
                print(f"wget: {results[-1].pages} pages in {results[-1].run.wall_s:.2f} s", flush=True)
            data = report(spec, opts, results, runs)
            # Other processes on the machine take cores from both clients; say how busy it was.
            data["load_average_1m_start_end"] = [load_start, round(os.getloadavg()[0], 2)]
            # The archiver's pages/s follows the machine's speed (it is CPU-bound here), wget's does not (it waits
            # on the site's latency): read the ratio beside this.
            data["interpreter_ms_start_end"] = [speed_start, interpreter_ms()]
            if args.pipeline_bound:
                data["pipeline_bound"] = pipeline_bound(site, workdir, opts)
            print()
            print_report(data)
            if args.profile:
                prof = workdir / f"archiver-run.{args.profile}.pyspy.txt"
                profiled = run_archiver(site, workdir, opts, profile=prof, mode=args.profile)
                print(f"\nprofiled run (slowed by sampling): {profiled.pages_per_s:.1f} pages/s")
                print_profile(prof, args.profile)
        if args.json_out:
            args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
