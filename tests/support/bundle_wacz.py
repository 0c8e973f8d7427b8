"""``wacz validate`` (py-wacz) in a throwaway virtualenv of its own, cached like pywb's (tests/support/pywb_env.py).

py-wacz depends on pywb (GPL-3.0), so it is never imported by the package or the test process: it runs as a
separate program. The fixture fails when it cannot be installed and ``CI`` is set, and skips otherwise.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pywb_env import COMPLETE_MARKER, INSTALL_TIMEOUT, cache_root, tool_env

WACZ_VERSION = "0.6.0"


class WaczUnavailable(Exception):
    pass


def ensure_wacz(version: str = WACZ_VERSION) -> Path:
    """The ``wacz`` program of a cached venv holding py-wacz ``version``, installing it first if needed."""
    root = cache_root()
    venv = root / f"wacz-venv-{version}-py{sys.version_info.major}{sys.version_info.minor}"
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / COMPLETE_MARKER).exists():
            shutil.rmtree(venv, ignore_errors=True)
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"wacz=={version}"],
                [str(venv / "bin" / "wacz"), "--version"],
            ]
            for args in steps:
                done = subprocess.run(args, env=tool_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
                if done.returncode != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    raise WaczUnavailable(f"installing wacz {version} failed at {args!r}: {done.stderr[-2000:]}")
            (venv / COMPLETE_MARKER).write_text(f"wacz=={version}\n")
    return venv / "bin" / "wacz"


@pytest.fixture(scope="session")
def wacz_tool() -> Path:
    try:
        return ensure_wacz()
    except (WaczUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc)
    if os.environ.get("CI"):
        pytest.fail(f"{reason}\nCI must run the wacz validate test", pytrace=False)
    pytest.skip(reason)


def validate(tool: Path, wacz: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool), "validate", "-f", str(wacz)], env=tool_env(), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
