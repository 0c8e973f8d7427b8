"""Pages that never finish, open many windows or crash the renderer are recorded failures; the run goes on; and
no Chromium outlives the archiver, not even ``kill -9`` of it (a real ``archiver capture`` subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from archiver.archive import Archive
from archiver.capture.fetch import FetchSettings
from archiver.capture.gate import HostGate
from archiver.capture.job import CaptureJob
from archiver.catalogue.models import Capture
from archiver.catalogue.store import SourceRequest
from tests.support.js_site import JsSite
from tests.support.js_site import js_site as js_site
from tests.test_browser import need_chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FETCH = FetchSettings(connect_timeout=2, read_timeout=5, total_timeout=5, retries=0)
BROWSER_NAMES = ("chromium", "chrome", "chrome_crashpad", "node")  # node: Playwright's driver


def _browser_processes(root: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in root.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(n in p.name() for n in BROWSER_NAMES):
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


def _cmdlines(root: psutil.Process) -> list[str]:
    out = []
    for p in _browser_processes(root):
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return out


def _launched(root: psutil.Process) -> bool:
    return any("--remote-debugging-pipe" in c for c in _cmdlines(root))


def _has_renderer(root: psutil.Process) -> bool:
    return any("--type=renderer" in c for c in _cmdlines(root))


def test_never_loading_many_windows_and_crash_are_recorded_and_the_run_goes_on(
    sqlite_archive: Archive, js_site: JsSite
) -> None:
    need_chromium()
    sqlite_archive.settings = replace(
        sqlite_archive.settings, browser=replace(sqlite_archive.settings.browser, page_timeout=3.0, js_heap_mb=64)
    )
    paths = ["/never.html", "/windows.html", "/crash.html", "/gzip.html"]
    with sqlite_archive.store() as store:
        sids = [store.ensure_source(SourceRequest(url=js_site.url(p), kind="report"))[0].id for p in paths]
    started = time.monotonic()
    summary = CaptureJob(
        sqlite_archive, fetch_settings=FETCH, gate=HostGate(4, 0.0), media=False, workers=2, browser=None
    ).run(sids)
    assert len(summary.captures) == 4 and time.monotonic() - started < 90
    with sqlite_archive.session() as s:
        browser = {c.requested_url: c for c in s.scalars(select(Capture).where(Capture.method == "browser"))}
        web = {c.requested_url: c.outcome for c in s.scalars(select(Capture).where(Capture.method == "web"))}
        never, windows, crash, fine = (browser[js_site.url(p)] for p in paths)
        assert never.outcome == "failed" and never.error == "page did not finish loading within 3 s"
        assert crash.outcome == "failed" and "crashed" in (crash.error or "")
        # Windows a page opens are never rendered (popup blocker, then closed); the page itself is captured.
        assert windows.outcome == "ok" and windows.details["windows_closed"] <= 1
        assert fine.outcome == "ok" and web[js_site.url("/gzip.html")] == "ok"
        # A failure still keeps what the browser was sent: the traffic and the capture's metadata record.
        assert never.details["failed_requests"] == [f"timeout {js_site.url('/hang.png')}"]
    # The run closed its browsers: nothing of them is left under this process.
    deadline = time.monotonic() + 10
    while _browser_processes(psutil.Process()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _browser_processes(psutil.Process()) == []


def test_no_chromium_survives_kill_9_of_the_archiver(tmp_path: Path, js_site: JsSite) -> None:
    need_chromium()
    root = tmp_path / "storage"
    cli = [sys.executable, "-m", "archiver", "--root", str(root), "--collector", "kill-test"]
    subprocess.run([*cli, "init"], check=True, capture_output=True)
    settings = root / "settings.toml"
    settings.write_text(settings.read_text().replace("page_timeout = 30.0", "page_timeout = 120.0"))
    # The page's script waits for an answer that never comes: the archiver is killed while Chromium renders it.
    proc = subprocess.Popen(
        [*cli, "capture", js_site.url("/hang-js.html"), "--browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        # The browser Playwright launched (not `chromium --version`), with a renderer: the page is being rendered.
        while time.monotonic() < deadline and not (_launched(me) and _has_renderer(me)):
            time.sleep(0.2)
        assert _launched(me) and _has_renderer(me), "Chromium never started rendering"
        tree = me.children(recursive=True)
        assert proc.poll() is None, "the capture ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, p.name()) for p in _alive(tree)]
        assert left == [], f"left running after kill -9 of the archiver: {left}"
        assert len(tree) >= 3  # the driver, Chromium and its helpers were there to be checked
    finally:
        if proc.poll() is None:
            proc.kill()
