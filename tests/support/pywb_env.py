"""pywb, the reference replay tool, run as a separate program to show that our WARC files replay.

pywb is GPL-3.0: it is never imported, neither by the package nor by the test process. :func:`ensure_pywb`
installs it with pip into a virtualenv of its own, cached under ``~/.cache/evidence-archiver/`` (or
``$ARCHIVER_TEST_CACHE``, or ``$XDG_CACHE_HOME/evidence-archiver``) and keyed by the pywb and Python versions,
so a developer or CI machine pays the install once. The venv is built in place under a file lock (several
pytest-xdist workers may ask at once; a venv cannot be moved after creation, its scripts name their
interpreter by absolute path) and marked complete only after ``wayback --version`` answers; an unmarked
directory is the remnant of an interrupted install and is built again.

:class:`Wayback` is one collection in a temporary directory: ``wb-manager init`` and ``wb-manager add`` it,
then serve it with ``wayback`` bound to 127.0.0.1 on a free port, as a subprocess in its own session, stopped
by :meth:`Wayback.stop`. Its output goes to a log file; :meth:`Wayback.logs` returns the tail so that a failed
assertion can show what pywb said.

The ``pywb`` fixture fails when pywb cannot be installed and ``CI`` is set (CI must run the replay tests), and
skips with the reason otherwise. The ``wayback`` fixture gives a :class:`Wayback` that is always stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PYWB_VERSION = "2.10.0"
INSTALL_TIMEOUT = 900.0  # seconds for `pip install pywb` (gevent and friends are wheels; this is generous)
TOOL_TIMEOUT = 120.0  # seconds for one wb-manager command
START_TIMEOUT = 60.0  # seconds for wayback to answer its first request
COMPLETE_MARKER = ".installed"
LOG_TAIL = 8000  # characters of wayback's log attached to an assertion message

# Variables that would make the venv's Python load the project's packages instead of its own.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONNOUSERSITE")


class PywbUnavailable(Exception):
    """pywb could not be installed or run here; the message says why and what to do."""


@dataclass(frozen=True)
class PywbEnv:
    """An installed pywb: the ``bin`` directory of its virtualenv."""

    bin_dir: Path
    version: str

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def cache_root() -> Path:
    explicit = os.environ.get("ARCHIVER_TEST_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "evidence-archiver"


def tool_env() -> dict[str, str]:
    """The environment for pywb's programs: ours, less what would point them at the project's venv."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args: list[str], *, timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _tail(text: str, limit: int = 3000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def ensure_pywb(version: str = PYWB_VERSION, root: Path | None = None) -> PywbEnv:
    """The cached pywb ``version`` for this Python, installing it first if needed. Raises PywbUnavailable."""
    root = root or cache_root()
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    venv = root / f"pywb-venv-{version}-{py}"
    bin_dir = venv / "bin"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with (root / f"{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (venv / COMPLETE_MARKER).exists():
                _install(venv, version)
    except OSError as exc:
        raise PywbUnavailable(f"cannot prepare the pywb cache in {root}: {exc}") from exc
    return PywbEnv(bin_dir, version)


def _install(venv: Path, version: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # an interrupted install: start over
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"pywb=={version}"],
        [str(venv / "bin" / "wayback"), "--version"],
    ]
    for args in steps:
        try:
            done = _run(args, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            raise PywbUnavailable(f"installing pywb {version} failed at {' '.join(args)!r}: {exc}") from exc
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise PywbUnavailable(
                f"installing pywb {version} failed at {' '.join(args)!r} (exit {done.returncode}); "
                f"is PyPI reachable?\n{_tail(done.stdout + done.stderr)}"
            )
    (venv / COMPLETE_MARKER).write_text(f"pywb=={version}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_session() -> requests.Session:
    """A session that goes straight to 127.0.0.1: no proxy from the environment, no .netrc."""
    session = requests.Session()
    session.trust_env = False
    return session


class Wayback:
    """One pywb collection in ``root`` and the ``wayback`` server replaying it."""

    def __init__(self, env: PywbEnv, root: Path, collection: str = "coll") -> None:
        self.env = env
        self.root = root
        self.collection = collection
        self.log_path = root / "wayback.log"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._inited = False

    def manage(self, *args: str) -> str:
        """Run ``wb-manager ARGS`` in the collection's directory; its output, or AssertionError with it."""
        try:
            done = _run([self.env.tool("wb-manager"), *args], timeout=TOOL_TIMEOUT, cwd=self.root)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"wb-manager {' '.join(args)} took more than {TOOL_TIMEOUT} s") from exc
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"wb-manager {' '.join(args)} exited {done.returncode}:\n{_tail(output)}"
        return output

    def add(self, warcs: Iterable[Path]) -> None:
        """Copy the WARC files into the collection and index them (pywb's own CDXJ indexer)."""
        if not self._inited:
            self.manage("init", self.collection)
            self._inited = True
        files = [str(w) for w in warcs]
        assert files, "no WARC file to add"
        self.manage("add", self.collection, *files)

    def index_text(self) -> str:
        """The collection's CDXJ index as ``wb-manager add`` wrote it: what wayback looks records up in."""
        indexes = sorted((self.root / "collections" / self.collection / "indexes").glob("*.cdxj"))
        return "".join(path.read_text() for path in indexes)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start ``wayback`` on 127.0.0.1 and wait until it answers; on failure, raise with its log."""
        assert self._proc is None, "already started"
        for _attempt in range(3):  # a free port can be taken between our probe and wayback's bind
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.env.tool("wayback"), "--bind", "127.0.0.1", "--port", str(self.port)],
                    cwd=self.root,
                    env=tool_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # so stop() can end it and anything it spawned, and nothing else
                )
            if self._wait_ready(timeout):
                return
            if self._proc.poll() is None:
                break  # running but not answering: not a port clash
            self._proc = None
        self.stop()
        raise AssertionError(f"wayback did not answer on 127.0.0.1:{self.port} within {timeout} s\n{self.logs()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        with http_session() as session:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False
                with contextlib.suppress(requests.RequestException):
                    if session.get(self.base, timeout=2).status_code < 500:
                        return True
                time.sleep(0.1)
        return False

    @property
    def base(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def url(self, timestamp: str, target: str, modifier: str = "") -> str:
        """The replay URL of ``target`` as captured at ``timestamp`` (14 digits); ``id_`` for original bytes."""
        return f"{self.base}/{self.collection}/{timestamp}{modifier}/{target}"

    def logs(self) -> str:
        """The tail of wayback's output (and a note if it has exited), for assertion messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        state = ""
        if self._proc is not None and self._proc.poll() is not None:
            state = f" (exited {self._proc.returncode})"
        return f"--- wayback log{state} ---\n{_tail(text, LOG_TAIL)}"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session (start_new_session): only what we started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def pywb() -> PywbEnv:
    try:
        return ensure_pywb()
    except PywbUnavailable as exc:
        reason = str(exc)
    if os.environ.get("CI"):
        pytest.fail(f"{reason}\nCI must run the pywb replay tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def wayback(pywb: PywbEnv, tmp_path: Path) -> Iterator[Wayback]:
    root = tmp_path / "pywb"
    root.mkdir()
    server = Wayback(pywb, root)
    try:
        yield server
    finally:
        server.stop()
