"""Tool versions asked once per process (archiver.capture.probes), ahead of the job that names them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from archiver.capture import probes
from archiver.capture.media_env import check_ffmpeg
from archiver.errors import ToolMissingError


def _tool(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_threads_asking_at_once_start_the_tool_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    chromium = _tool(tmp_path / "chromium", f"echo run >> {runs}; sleep 0.3; echo 'Chromium 1.2.3 built here'")
    answers: list[str] = []

    def ask() -> None:
        answers.append(probes.chromium_version(str(chromium)))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert answers == ["Chromium 1.2.3 built here"] * 4
    assert probes.chromium_version(str(chromium)) == "Chromium 1.2.3 built here"
    assert runs.read_text().splitlines() == ["run"]


def test_a_failure_reaches_the_waiting_callers_and_is_asked_again(tmp_path: Path) -> None:
    key = ("failing", str(tmp_path))
    asked: list[int] = []
    started = threading.Event()

    def fail() -> str:
        asked.append(1)
        started.set()
        time.sleep(0.2)
        raise ValueError("the tool crashed")

    errors: list[BaseException] = []

    def wait_for_it() -> None:
        started.wait(5)
        try:
            probes.once(key, fail)
        except ValueError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    with pytest.raises(ValueError, match="crashed"):
        probes.once(key, fail)
    waiter.join(timeout=10)
    assert len(errors) == 1 and len(asked) == 1  # the waiter got the first asker's error, not a second run
    assert probes.once(key, lambda: "answered") == "answered"  # the failure was not remembered


def test_a_forked_child_keeps_its_parents_answers_and_asks_again_what_was_under_way(tmp_path: Path) -> None:
    probes.once(("known", str(tmp_path)), lambda: "parent's answer")
    release = threading.Event()
    under_way = threading.Event()

    def slow() -> str:
        under_way.set()
        release.wait(10)
        return "parent's late answer"

    asking = threading.Thread(target=probes.once, args=(("open", str(tmp_path)), slow))
    asking.start()
    assert under_way.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: nothing may wait for the parent's thread, which does not exist here
        code = 1
        try:
            import signal

            signal.alarm(5)
            known = probes.once(("known", str(tmp_path)), lambda: "asked again")
            fresh = probes.once(("open", str(tmp_path)), lambda: "child's answer")
            code = 0 if (known, fresh) == ("parent's answer", "child's answer") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    asking.join(timeout=10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert probes.once(("open", str(tmp_path)), lambda: "asked again") == "parent's late answer"


def test_what_is_asked_ahead_is_not_asked_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    monkeypatch.setenv("PATH", str(tmp_path))
    _tool(tmp_path / "ffprobe", "exit 0")
    _tool(tmp_path / "ffmpeg", f"echo ffmpeg >> {runs}; sleep 0.2; echo 'ffmpeg version 9.9-ahead Copyright'")
    chromium = _tool(tmp_path / "chromium", f"echo chromium >> {runs}; echo 'Chromium 9.9 ahead'")
    threads = probes.ask_ahead(ffmpeg=True, chromium=str(chromium))
    assert len(threads) == 2
    assert check_ffmpeg().version == "9.9-ahead"  # waits for the question under way instead of asking again
    assert probes.chromium_version(str(chromium)) == "Chromium 9.9 ahead"
    for t in threads:
        t.join(timeout=10)
    assert sorted(runs.read_text().splitlines()) == ["chromium", "ffmpeg"]


def test_a_missing_tool_is_left_for_the_job_to_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no chromium
    threads = probes.ask_ahead(ffmpeg=True, chromium="chromium")
    for t in threads:
        t.join(timeout=10)
    assert len(threads) == 1  # Chromium is not found: not asked
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(ToolMissingError, match="ffmpeg and ffprobe are required"):
        check_ffmpeg()
