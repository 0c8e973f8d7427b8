"""The external tools' versions that a capture job names in its warcinfo, each asked once per process.

Asking is a process start: ``ffmpeg -version`` loads ffmpeg's codec libraries, and Debian's ``chromium`` is a
shell script that runs ``find``, ``grep`` and more before the browser prints its version; 70-200 ms each.
``archiver run`` asks for both in threads as it starts (:func:`ask_ahead_for_run`), so that they answer while
it imports the capture code and repairs and reads the catalogue (0.3 s or more; Chromium's first start after a
while reads its binary from disk, 0.7 s and more); a job that asks later waits for that answer instead of
starting the tool again.

A forked child (a capture process) keeps the answers its parent had and drops any question still open: the
thread asking it does not exist in the child.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from archiver.capture.httpwire import one_line

if TYPE_CHECKING:
    from archiver.config import Settings

T = TypeVar("T")

_lock = threading.Lock()
_known: dict[Hashable, Any] = {}  # answers
_asking: dict[Hashable, Future[Any]] = {}  # questions under way, for the threads that want the same answer


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by a thread the child does not have
    _asking.clear()  # nor is anyone in the child asking them


os.register_at_fork(after_in_child=_after_fork_in_child)


def once(key: Hashable, ask: Callable[[], T]) -> T:
    """``ask()``'s answer for ``key``: asked once per process, however many threads want it at the same time
    (they wait for the first), for as long as the key is the same (make it change with what would change the
    answer, such as the binary's identity). What ``ask`` raised is raised to the callers that waited for it
    and forgotten: the next caller asks again."""
    with _lock:
        if key in _known:
            known: T = _known[key]
            return known
        asking = _asking.get(key)
        if asking is None:
            mine = _asking[key] = Future()
    if asking is not None:
        waited: T = asking.result()
        return waited
    try:
        value = ask()
    except BaseException as exc:  # raised here and to every caller waiting, then forgotten
        with _lock:
            _asking.pop(key, None)
        mine.set_exception(exc)
        raise
    with _lock:
        _known[key] = value
        _asking.pop(key, None)
    mine.set_result(value)
    return value


def find_executable(name: str) -> str | None:
    """The path ``name`` runs as (absolute, or found on PATH), if it exists and may be executed."""
    path = name if Path(name).is_absolute() else shutil.which(name)
    return path if path is not None and os.access(path, os.X_OK) else None


def chromium_version(executable: str) -> str:
    """What ``chromium --version`` says, or "unknown"."""

    def ask() -> str:
        try:
            out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return one_line(out.stdout) or "unknown"

    return once(("chromium", executable), ask)


def ask_ahead_for_run(settings: Settings, browser: bool | None) -> list[threading.Thread]:
    """:func:`ask_ahead` what the capture jobs of ``archiver run`` will ask: ffmpeg always (media capture),
    Chromium when browser capture may happen (``browser``: the run's override; None follows the settings)."""
    wants_browser = browser is not False and (bool(browser) or settings.browser.enabled)
    return ask_ahead(ffmpeg=True, chromium=settings.browser.executable if wants_browser else None)


def ask_ahead(*, ffmpeg: bool, chromium: str | None) -> list[threading.Thread]:
    """Start asking, each in a daemon thread, what a capture job built next will want: ffmpeg's version
    (``ffmpeg``), Chromium's (``chromium``: its executable, when the job may render pages). What fails is left
    for the job to find and report, as it would without this."""
    from archiver.capture.media_env import check_ffmpeg
    from archiver.errors import ToolMissingError

    def ask_ffmpeg() -> None:
        try:
            check_ffmpeg()
        except ToolMissingError:
            pass  # the job checks again, and refuses to start with the reason

    asks: list[Callable[[], object]] = []
    if ffmpeg:
        asks.append(ask_ffmpeg)
    if chromium is not None and find_executable(chromium) is not None:
        asks.append(lambda: chromium_version(chromium))
    threads = [threading.Thread(target=a, name="tool-version", daemon=True) for a in asks]
    for t in threads:
        t.start()
    return threads
