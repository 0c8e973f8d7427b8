"""Worker scaling benchmark (issue 7): captures per second with 1, 2 and 4 ``archiver worker`` processes.

Each configuration gets a fresh storage root, a fresh PostgreSQL schema and a fresh Redis queue, the same list of
pages on the loopback site of :mod:`common` (``--hosts`` addresses from 127.0.0.2, ``--latency`` ms per request,
pages with 2-3 images each), and N workers started with ``archiver worker --pool solo`` (N separate processes,
one capture at a time each, as N small machines would run). Then ``archiver run --executor celery --json`` is
timed: it enqueues one task per page and waits until every claim is done.

Reported per N: captures/s (captured / the run's own seconds, enqueue to last claim), speed-up against N=1, CPU
seconds used by the workers, PostgreSQL, Redis and the coordinator during the run (from ``/proc`` via psutil),
and the CPU cost of one capture. ``cores / cpu_per_capture`` is the ceiling the machine puts on the rate,
``N / (seconds one capture waits on the network)`` the ceiling the latency puts on it; scaling stops at the
lower of the two.

Example::

    .venv/bin/python bench/worker_scaling.py --quick       # 40 pages per configuration
    .venv/bin/python bench/worker_scaling.py --pages 300 --workers 1 2 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from common import SiteSpec, run_measured, serve_site

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("ARCHIVER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_DB = 12


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("ARCHIVER_ROOT", "ARCHIVER_DB_URL", "ARCHIVER_BROKER_URL", "ARCHIVER_QUEUE"):
        env.pop(key, None)
    env["ARCHIVER_COLLECTOR"] = "bench@localhost"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _archiver(root: Path, db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "archiver", "--root", str(root), "--db", db, *args]


def _schema(action: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}" if action == "create" else f"DROP SCHEMA {name} CASCADE"))
    engine.dispose()


def _cpu(names: tuple[str, ...]) -> float:
    """CPU seconds used so far by every process whose name starts with one of ``names`` (PostgreSQL backends
    come and go; those that ended between two readings are missed, which understates PostgreSQL a little)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        name = p.info["name"] or ""
        if name.startswith(names) and p.info["cpu_times"] is not None:
            total += p.info["cpu_times"].user + p.info["cpu_times"].system
    return total


def _tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def prepare(root: Path, db: str, queue: str, urls: list[str]) -> None:
    env = _env()
    run_measured(_archiver(root, db, "init", "--json"), env=env).check()
    (root / "settings.toml").write_text(
        '[archive]\nwarc_prefix = "bench"\n'
        "[network]\nper_host = 4\nper_host_delay = 0.0\nconnect_timeout = 10.0\nread_timeout = 30.0\n"
        "total_timeout = 120.0\nretries = 3\n"
        f'[celery]\nbroker_url = "redis://127.0.0.1:6379/{REDIS_DB}"\nqueue = "{queue}"\nidle_close = 600\n',
        encoding="utf-8",
    )
    manifest = root / "bench-manifest.yaml"
    sources = "".join(f"      - url: {u}\n        kind: article\n" for u in urls)
    manifest.write_text(
        "version: 1\nincidents:\n  - id: worker-scaling\n    title: Worker scaling pages\n"
        "    when: {start: 2024-01-01}\n    place: {name: Loopback, country: SY}\n"
        "    summary: Synthetic pages served on 127.0.0.0/8.\n    sources:\n" + sources,
        encoding="utf-8",
    )
    run_measured(_archiver(root, db, "manifest", "load", str(manifest), "--json"), env=env).check()


def start_workers(root: Path, db: str, n: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        out = (logs / f"worker-{i}.log").open("wb")
        argv = _archiver(root, db, "worker", "--pool", "solo", "--loglevel", "info")
        procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env()))
        out.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited {p.returncode}; see {logs}")
        if all(" ready." in (logs / f"worker-{i}.log").read_text(errors="replace") for i in range(n)):
            return procs
        time.sleep(0.2)
    raise RuntimeError(f"workers not ready after 120 s; see {logs}")


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure(n: int, urls: list[str], work: Path) -> dict[str, Any]:
    schema = "bench_" + secrets.token_hex(4)
    queue = "archiver-bench-" + secrets.token_hex(4)
    db = f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    root = work / f"workers-{n}"
    logs = work / f"logs-{n}"
    logs.mkdir(parents=True)
    _schema("create", schema)
    try:
        prepare(root, db, queue, urls)
        procs = start_workers(root, db, n, logs)
        try:
            pids = [p.pid for p in procs]
            cpu0 = (_tree_cpu(pids), _cpu(("postgres",)), _cpu(("redis-server",)))
            run = run_measured(_archiver(root, db, "run", "--executor", "celery", "--json"), env=_env()).check()
            cpu1 = (_tree_cpu(pids), _cpu(("postgres",)), _cpu(("redis-server",)))
        finally:
            stop_workers(procs)
    finally:
        _schema("drop", schema)
    summary = json.loads(run.stdout)
    captured = summary["captured"]
    seconds = summary["seconds"]
    workers_cpu, pg_cpu, redis_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    coordinator_cpu = run.user_s + run.sys_s
    total_cpu = workers_cpu + pg_cpu + redis_cpu + coordinator_cpu
    return {
        "workers": n,
        "captured": captured,
        "failed": summary["failed"],
        "claims": summary["claims"]["states"],
        "run_seconds": seconds,
        "wall_seconds": round(run.wall_s, 3),
        "captures_per_s": round(captured / seconds, 2) if seconds else None,
        "cpu_s": {
            "workers": round(workers_cpu, 2),
            "postgresql": round(pg_cpu, 2),
            "redis": round(redis_cpu, 2),
            "coordinator": round(coordinator_cpu, 2),
        },
        "cpu_ms_per_capture": round(1000 * total_cpu / captured, 1) if captured else None,
        "cpu_busy_cores": round(total_cpu / seconds, 2) if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=300, help="pages captured per configuration (300)")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--latency", type=float, default=20.0, help="per-request server delay in ms (20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker process counts (1 2 4)")
    parser.add_argument("--quick", action="store_true", help="40 pages: a smoke run")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    pages = 40 if args.quick else args.pages
    spec = SiteSpec(pages=pages, hosts=args.hosts, latency=args.latency / 1000)
    load_start = round(os.getloadavg()[0], 2)
    results = []
    with tempfile.TemporaryDirectory(prefix="worker-scaling-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with serve_site(spec) as site:
            urls = site.urls()
            for n in args.workers:
                results.append(measure(n, urls, work))
                print(json.dumps(results[-1]), file=sys.stderr)
    base = results[0]["captures_per_s"] or 0
    for r in results:
        r["speedup"] = round(r["captures_per_s"] / base, 2) if base and r["captures_per_s"] else None
    data = {
        "pages": pages,
        "hosts": args.hosts,
        "latency_ms": args.latency,
        "cores": os.cpu_count(),
        "load_average_1m_start_end": [load_start, round(os.getloadavg()[0], 2)],
        "results": results,
    }
    print(f"{pages} pages, {args.hosts} hosts, {args.latency:g} ms latency, {os.cpu_count()} cores, "
          f"load {data['load_average_1m_start_end']}")  # fmt: skip
    print(f"{'workers':>7} {'captures/s':>10} {'speed-up':>8} {'run s':>7} {'CPU ms/capture':>14} "
          f"{'busy cores':>10}  CPU s: workers / PostgreSQL / Redis / coordinator")  # fmt: skip
    for r in results:
        c = r["cpu_s"]
        print(
            f"{r['workers']:>7} {r['captures_per_s']:>10} {r['speedup']:>8} {r['run_seconds']:>7} "
            f"{r['cpu_ms_per_capture']:>14} {r['cpu_busy_cores']:>10}  "
            f"{c['workers']} / {c['postgresql']} / {c['redis']} / {c['coordinator']}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
