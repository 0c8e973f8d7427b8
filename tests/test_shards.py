"""``archiver run`` over several capture processes (archiver.capture.shards): same result as one process, hosts
kept in one process each, a process killed alone or with its parent leaves a catalogue the next run completes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from archiver import jobs
from archiver.archive import Archive
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob, CaptureSummary, RunSummary
from archiver.capture.shards import HostPool, ShardOptions, per_host_shares, processes_for, run_sharded
from archiver.catalogue.models import Artifact, Capture, Source, WarcFile
from archiver.catalogue.store import SourceRequest
from archiver.config import load_settings
from archiver.manifest import parse_text
from tests.conftest import TEST_TODAY
from tests.support.site import Site
from tests.test_capture_job import (
    MANIFEST,
    PNG,
    REPORT,
    _assert_catalogue_matches_warcs,
    _assert_catalogue_matches_warcs_allow_repaired,
    assert_completed_after_kills,
)

INCIDENT = "test-hospital-2017-03-25"


@pytest.fixture
def sites() -> Iterator[list[Site]]:
    """Three sites: three hosts (one port each) as far as the per-host limits and the dealing are concerned."""
    made = [Site() for _ in range(3)]
    yield made
    for s in made:
        s.close()


def test_the_pool_hands_out_whole_hosts_busiest_first() -> None:
    pairs = [(100 + i, f"h{i % 4}:80") for i in range(12)] + [(i, "big:80") for i in range(10)]
    pool = HostPool(pairs)
    order = [pool.take(i % 2) for i in range(5)]
    assert pool.take(0) is None
    assert [host for host, _ in order if host] == ["big:80", "h0:80", "h1:80", "h2:80", "h3:80"]  # ties by name
    assert order[0] == ("big:80", list(range(10)))
    assert order[1] == ("h0:80", [100, 104, 108])  # a host's sources in the given order
    assert sorted(pool.given[0] + pool.given[1]) == sorted(sid for sid, _ in pairs)
    assert pool.given[0] == [*range(10), 101, 105, 109, 103, 107, 111]  # big, h1 and h3


def test_with_no_delay_the_pool_splits_every_host() -> None:
    pairs = [(100 + i, f"h{i % 2}:80") for i in range(6)] + [(i, "big:80") for i in range(5)]
    pool = HostPool(pairs)
    shares = pool.split(2)
    # One by one, busiest host first, then by name; each host's sources in the given order. The dealing goes on
    # where the last host's ended: big's fifth source went to the first process, so h0's first goes to the second.
    assert shares == [[0, 2, 4, 102, 101, 105], [1, 3, 100, 104, 103]]
    assert pool.take(0) is None and pool.given == {0: shares[0], 1: shares[1]}
    assert per_host_shares(4, 0.0, 2) == [2, 2]
    assert per_host_shares(5, 0.0, 2) == [3, 2]  # never more than per_host in all
    assert per_host_shares(2, 0.1, 2) is None  # a delay cannot be kept by two processes apart
    assert per_host_shares(1, 0.0, 2) is None  # nor one request split in two
    assert per_host_shares(4, 0.0, 1) is None


def test_processes_for() -> None:
    cores = os.cpu_count() or 1
    assert processes_for(0, 10, 20, 8) == 1  # too few sources to be worth a fork
    assert processes_for(0, 1000, 20, 32) == min(cores, 4)
    assert processes_for(3, 10, 20, 8) == 3  # asked for: even a small run
    assert processes_for(3, 10, 2, 8) == 2  # never more processes than hosts
    assert processes_for(6, 1000, 20, 4) == 4  # nor than workers


def _load(archive: Archive, sites: list[Site], per_site: int, delay: float = 0) -> tuple[list[str], str, list[str]]:
    urls = []
    for k, s in enumerate(sites):
        s.add("/logo.png", PNG, "image/png")
        urls += [
            s.add(
                f"/p{i}.html", f"<html><body><p>site {k} page {i}</p><img src='/logo.png'></body></html>", delay=delay
            )
            for i in range(per_site)
        ]
    # A report on the first site cites pages on the others: citations on hosts another process owns.
    cited = [s.add("/cited.html", "<html><body><p>cited</p></body></html>") for s in sites[1:]]
    report = REPORT.replace("/footage.html", cited[0]).replace("/statement.html", cited[1])
    sites[0].add("/style.css", "body { color: black }", "text/css")
    sites[0].add("/photo.png", PNG, "image/png")
    report_url = sites[0].add("/report.html", report)
    with archive.store() as store:
        store.load(parse_text(MANIFEST.format(report=report_url), "m.yaml", TEST_TODAY))
        for u in urls:
            store.add_source(INCIDENT, SourceRequest(url=u))
    return urls, report_url, cited


def test_a_run_over_two_processes_captures_each_source_once(archive: Archive, sites: list[Site]) -> None:
    urls, report_url, cited = _load(archive, sites, 5)
    summary = jobs.run(archive, jobs.RunOptions(processes=2, workers=4))
    assert summary.warnings == []
    captured = Counter(c.url for c in summary.captures)
    assert set(captured) == {*urls, report_url, *cited} and set(captured.values()) == {1}
    assert {c.outcome for c in summary.captures} == {"ok"}
    for s in sites:
        assert s.hits["/logo.png"] == 5  # one per page: every capture is self-contained
    with archive.session() as s:
        assert {src.status for src in s.scalars(select(Source).where(Source.url.is_not(None)))} == {"captured"}
        per_source = Counter(c.source_id for c in s.scalars(select(Capture).where(Capture.method == "web")))
        assert set(per_source.values()) == {1}
        report = s.scalars(select(Source).where(Source.url == report_url)).one()
        found = s.scalars(select(Source).where(Source.discovered_from_id == report.id)).all()
        assert sorted(f.url or "" for f in found) == sorted(cited)
        # Two processes wrote at once, each into files of its own (named with its pid); the citations on hosts
        # another process held were taken by a second round (in this process alone when they are on one host:
        # its file is named without a pid, as in a run of one process).
        tags = {w.name.removesuffix(".warc.gz").rsplit("-", 1)[1] for w in s.scalars(select(WarcFile))}
        assert len({t for t in tags if t.isdigit()}) >= 2
    _assert_catalogue_matches_warcs(archive)
    assert not multiprocessing.active_children()


def _capture_over_two_processes(archive: Archive, urls: dict[str, list[str]], *, workers: int) -> RunSummary:
    with archive.store() as store:
        for u in [u for group in urls.values() for u in group]:
            store.ensure_source(SourceRequest(url=u))
    options = ShardOptions(processes=2, workers=workers, follow_citations=None, browser=False)
    return run_sharded(archive, options, lambda kind, data: None, max_time=None)


def _page_processes(archive: Archive) -> list[tuple[str, str]]:
    """Each page record's URL with the tag of the WARC file it is in (the pid of the process that wrote it)."""
    with archive.session() as s:
        stored = s.execute(
            select(Source.url, WarcFile.name)
            .join(Capture, Capture.source_id == Source.id)
            .join(Artifact, Artifact.capture_id == Capture.id)
            .join(WarcFile, WarcFile.id == Artifact.warc_file_id)
            .where(Artifact.role == "page")
        ).all()
    return [(url, name.removesuffix(".warc.gz").rsplit("-", 1)[1]) for url, name in stored]


def test_a_process_held_up_by_a_slow_host_leaves_the_other_hosts_to_the_others(
    sqlite_archive: Archive, sites: list[Site]
) -> None:
    """Hosts are handed out when a process would idle, not dealt ahead: dealt by their number of sources, the
    slow host and one fast host would share a process while the other process waited."""
    slow, *fast = sorted(sites, key=lambda s: HostGate.host_of(s.base))  # the pool's order for equal counts
    urls = {s.base: [s.add(f"/p{i}.html", f"<html><body>{i}</body></html>") for i in range(4)] for s in fast}
    urls[slow.base] = [slow.add(f"/p{i}.html", f"<html><body>{i}</body></html>", delay=0.4) for i in range(4)]
    summary = _capture_over_two_processes(sqlite_archive, urls, workers=2)
    assert len(summary.captures) == 12 and summary.warnings == []
    process_of = dict(_page_processes(sqlite_archive))
    tags = {base: {process_of[u] for u in group} for base, group in urls.items()}
    assert all(len(t) == 1 for t in tags.values())  # a host stays in one process
    assert tags[fast[0].base] == tags[fast[1].base] != tags[slow.base]
    _assert_catalogue_matches_warcs(sqlite_archive)


def test_with_no_delay_each_process_takes_a_share_of_every_host_within_its_limit(
    tmp_path: Path, sites: list[Site]
) -> None:
    """per_host_delay = 0: every host's sources are split over the processes, each with its part of per_host, so
    both processes capture from every host and no host ever answers more than per_host requests at once."""
    root = tmp_path / "storage"
    made = Archive(load_settings(root, None, collector="test-collector", env={}))
    made.init()
    made.close()
    settings_file = root / "settings.toml"
    text = settings_file.read_text()
    assert "per_host_delay = 0.1" in text and "per_host = 2" in text
    settings_file.write_text(text.replace("per_host_delay = 0.1", "per_host_delay = 0.0"))
    archive = Archive(load_settings(root, None, collector="test-collector", env={}))
    try:
        urls = {
            s.base: [s.add(f"/p{i}.html", f"<html><body>{i}</body></html>", delay=0.15) for i in range(6)]
            for s in sites
        }
        summary = _capture_over_two_processes(archive, urls, workers=8)
        assert len(summary.captures) == 18 and {c.outcome for c in summary.captures} == {"ok"}
        assert summary.warnings == []
        stored = _page_processes(archive)
        assert len(stored) == 18
        process_of = dict(stored)
        for group in urls.values():
            assert len({process_of[u] for u in group}) == 2  # both processes took a share of the host
        assert [s.most_at_once for s in sites] == [2, 2, 2]  # per_host = 2 for the host, not per process
        _assert_catalogue_matches_warcs(archive)
    finally:
        archive.close()


def test_a_capture_process_killed_alone_is_repaired_and_the_run_goes_on(
    sqlite_archive: Archive, sites: list[Site]
) -> None:
    fast, slow = sites[0], sites[1]
    fast_urls = [fast.add(f"/f{i}.html", f"<html><body>fast {i}</body></html>") for i in range(6)]
    # Fewer sources: handed to the child (the parent starts with the busiest host). Each answers after 2 s.
    slow_urls = [slow.add(f"/s{i}.html", f"<html><body>slow {i}</body></html>", delay=2.0) for i in range(3)]
    with sqlite_archive.store() as store:
        for u in fast_urls + slow_urls:
            store.ensure_source(SourceRequest(url=u))
    killed: list[int] = []

    def kill_the_child_mid_capture() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            children = multiprocessing.active_children()
            if children and any(slow.hits.get(f"/s{i}.html") for i in range(3)):
                os.kill(children[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
                killed.append(children[0].pid)  # type: ignore[arg-type]
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_child_mid_capture)
    killer.start()
    summary = jobs.run(sqlite_archive, jobs.RunOptions(processes=2, workers=4))
    killer.join()
    assert killed, "the capture process was never seen working"
    assert any(f"capture process {killed[0]} ended with signal 9" in w for w in summary.warnings)
    assert {c.url for c in summary.captures} == set(fast_urls)  # the parent's share is all there
    assert summary.interrupted >= 1  # the child's captures in flight, found at the end of the round
    with sqlite_archive.session() as s:
        assert not s.scalars(select(Capture).where(Capture.outcome == "running")).all()
        pending = {src.url for src in s.scalars(select(Source).where(Source.status == "pending"))}
        assert pending == set(slow_urls)
    assert not list(sqlite_archive.settings.warc_dir.glob("*.open"))
    for u in slow_urls:
        slow.delays[u.removeprefix(slow.base)] = 0
    again = jobs.run(sqlite_archive, jobs.RunOptions(processes=2, workers=4))
    assert {c.url for c in again.captures} == set(slow_urls) and again.warnings == []
    with sqlite_archive.session() as s:
        assert {src.status for src in s.scalars(select(Source))} == {"captured"}
    _assert_catalogue_matches_warcs_allow_repaired(sqlite_archive)


def _orphans(root: Path) -> list[int]:
    """Processes still running ``archiver --root <root> run`` (capture processes that outlived their parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(root).encode() in cmd and b"run" in cmd:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_of_a_run_over_two_processes_then_resume(tmp_path: Path, sites: list[Site]) -> None:
    """A real `archiver run --processes 2` killed repeatedly: no capture process outlives it, and the next run
    repairs every process's file, resumes and completes."""
    import random

    root = tmp_path / "storage"
    cli = [sys.executable, "-m", "archiver", "--root", str(root), "--collector", "kill-test"]
    subprocess.run([*cli, "init"], check=True, capture_output=True)
    settings_file = root / "settings.toml"
    settings_file.write_text(settings_file.read_text().replace("per_host_delay = 0.1", "per_host_delay = 0.0"))
    arch = Archive(load_settings(root, None, env={}))
    try:
        _load(arch, sites, 25, delay=0.1)  # a run takes a few seconds: kills land while it captures
    finally:
        arch.close()
    rng = random.Random(4321)
    kills = with_child = 0
    for _ in range(8):
        proc = subprocess.Popen([*cli, "run", "--processes", "2", "--workers", "4"], stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 2.5))
        if proc.poll() is None:
            with_child += len(_orphans(root)) > 1  # the run and a capture process it forked
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        for _ in range(100):  # the kernel kills the capture processes with their parent (PR_SET_PDEATHSIG)
            if not _orphans(root):
                break
            time.sleep(0.05)
        assert _orphans(root) == []
    final = subprocess.run([*cli, "run", "--processes", "2", "--json"], capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert kills >= 3 and with_child >= 2
    assert_completed_after_kills(root)


class _FailsInChildren(CaptureJob):
    """A capture job with a bug that shows only in a forked capture process."""

    parent = os.getpid()

    def capture_source(self, source_id: int, **kwargs: Any) -> CaptureSummary:
        if os.getpid() != self.parent:
            raise RuntimeError("a bug in a capture process")
        return super().capture_source(source_id, **kwargs)


def test_a_bug_in_a_capture_process_is_logged_not_shown(
    sqlite_archive: Archive, sites: list[Site], capfd: pytest.CaptureFixture[str]
) -> None:
    with sqlite_archive.store() as store:
        for k, s in enumerate(sites[:2]):
            for i in range(3 + k):  # the busier host stays in this process
                store.ensure_source(SourceRequest(url=s.add(f"/b{i}.html", f"<html><body>{k} {i}</body></html>")))
    events: list[tuple[str, object]] = []
    _FailsInChildren.parent = os.getpid()
    with jobs.run_log(sqlite_archive.settings.root):
        summary = run_sharded(
            sqlite_archive,
            ShardOptions(processes=2, workers=2, follow_citations=None, browser=False),
            lambda kind, data: events.append((kind, data)),
            max_time=None,
            job_factory=_FailsInChildren,
        )
    assert len(summary.captures) == 4 and {c.outcome for c in summary.captures} == {"ok"}
    errors = [str(d) for k, d in events if k == "error"]
    assert len(errors) == 1 and "RuntimeError: a bug in a capture process" in errors[0]
    assert any("ended with exit status 70" in w for w in summary.warnings)
    log = (sqlite_archive.settings.root / "logs" / "archiver.log").read_text(encoding="utf-8")
    assert "Traceback" in log and "a bug in a capture process" in log
    # Nothing of it on the terminal (the test sites' own threads may print a BrokenPipe from killed clients).
    err = capfd.readouterr().err
    assert "a bug in a capture process" not in err and "_FailsInChildren" not in err
    with sqlite_archive.session() as s:
        assert not s.scalars(select(Capture).where(Capture.outcome == "running")).all()
        assert len(s.scalars(select(Source).where(Source.status == "pending")).all()) == 3


@pytest.mark.timeout(120)
def test_a_failing_progress_display_does_not_stop_the_relay(sqlite_archive: Archive, sites: list[Site]) -> None:
    """The parent relays its children's progress and answers their requests for hosts on one thread: a display
    that fails on a relayed message is logged, and the children still get their hosts and report back."""
    ordered = sorted(sites, key=lambda s: HostGate.host_of(s.base))
    for k, s in enumerate(ordered):
        with sqlite_archive.store() as store:
            for i in range(4 - k):  # the child starts with the second host and finishes before the first
                store.ensure_source(SourceRequest(url=s.add(f"/r{i}.html", f"<html><body>{i}</body></html>")))
    relay_failures: list[str] = []

    def display(kind: str, data: object) -> None:
        if kind == "captured" and threading.current_thread() is not threading.main_thread():
            relay_failures.append(kind)
            raise BrokenPipeError("the terminal went away")

    with jobs.run_log(sqlite_archive.settings.root):
        summary = run_sharded(
            sqlite_archive,
            ShardOptions(processes=2, workers=2, follow_citations=None, browser=False),
            display,
            max_time=None,
        )
    assert relay_failures, "no message was relayed from the capture process"
    assert summary.warnings == [] and len(summary.captures) == 9
    assert {c.outcome for c in summary.captures} == {"ok"}
    log = (sqlite_archive.settings.root / "logs" / "archiver.log").read_text(encoding="utf-8")
    assert "relaying captured from capture process" in log and "the terminal went away" in log
